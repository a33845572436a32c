"""A Hugging Face-compatible hub (huggingface.co, an internal mirror, or the local olah) as a resource.

The real `huggingface_hub.snapshot_download` runs unchanged; only the endpoint differs, so what works
against the local stack works against the real hub.

Errors are told apart by asking the hub a second question when its first answer is ambiguous: the Hub
answers 401 "RepoNotFound" for a private or missing repo, and olah does so for a missing *revision* of a
repo it has (and 500 for a commit it does not know). Whether the repo itself exists decides which fix the
message names. A pinned commit is checked against what the hub says it serves before anything is
downloaded, so a mirror that serves another commit fails here instead of leaving an empty snapshot.
When the hub cannot be reached, a snapshot already in the cache is used (huggingface_hub's own offline
fallback); only a cold cache fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
from pydantic import Field

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


class HubError(RuntimeError):
    """The hub could not give us the snapshot; the message says why and what to do."""


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's connection-level errors: huggingface_hub >= 1 sends with httpx2 (earlier: httpx)."""
    import httpx

    errors: list[type[Exception]] = [httpx.TransportError]
    try:
        import httpx2

        errors.append(httpx2.TransportError)
    except ImportError:
        pass
    return tuple(errors)


_TRANSPORT_ERRORS = _transport_errors()


class HubResource(dg.ConfigurableResource):
    """Downloads model snapshots at a catalog revision into a project-local cache."""

    endpoint: str | None = Field(None, description="HF_ENDPOINT; None means https://huggingface.co")
    token: str | None = Field(None, description="HF_TOKEN for gated/private repos (never logged)")
    cache_dir: str = Field(description="HF_HUB_CACHE-style folder the snapshots are kept in")

    def _where(self) -> str:
        return self.endpoint or "https://huggingface.co"

    def _api(self):
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token or False)

    def snapshot(self, repo_id: str, revision: str = "main") -> tuple[Path, str]:
        """Download (or reuse) `repo_id@revision`; return (snapshot folder, resolved commit sha)."""
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
        if _SHA_RE.match(revision):
            self._check_pinned_commit(repo_id, revision)
        try:
            path = Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    cache_dir=self.cache_dir,
                    token=self.token or False,
                    endpoint=self.endpoint,
                )
            )
        except RevisionNotFoundError:
            raise self._revision_missing(repo_id, revision) from None
        except GatedRepoError:
            raise self._gated(repo_id) from None
        except RepositoryNotFoundError:
            raise self._not_found(repo_id, revision) from None
        except LocalEntryNotFoundError as exc:
            raise self._unreachable_or_failing(repo_id, revision, exc.__cause__) from None
        except HfHubHTTPError as exc:
            raise self._http_error(repo_id, revision, exc) from None
        except _TRANSPORT_ERRORS as exc:
            # A connection refused or reset mid-request, before huggingface_hub could fall back to the cache.
            raise self._unreachable_or_failing(repo_id, revision, exc) from None

        # snapshot_download returns <cache>/models--org--name/snapshots/<commit sha>.
        sha = path.name
        if not _SHA_RE.match(sha):
            resolved = self._api().model_info(repo_id, revision=revision).sha
            if not resolved:
                raise HubError(
                    f"{self._where()} names no commit for {repo_id}@{revision}: the mirror's metadata is incomplete; "
                    "re-seed it (`pooling-pipeline stack up`) or pin a commit sha in the catalog"
                )
            sha = resolved
        if _SHA_RE.match(revision) and revision != sha:
            raise self._mismatch(repo_id, revision, sha)
        return path, sha

    # ------------------------------------------------------------ telling the errors apart

    def _repo_exists(self, repo_id: str) -> bool | None:
        """True/False when the hub says so; None when it cannot tell (unreachable, failing)."""
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        try:
            self._api().model_info(repo_id)
        except GatedRepoError:
            return True
        except RepositoryNotFoundError:
            return False
        except Exception:  # noqa: BLE001 - any other failure (refused, timeout, 5xx) means "cannot tell"
            return None
        return True

    def _served_sha(self, repo_id: str, revision: str) -> str | None:
        """The commit the hub resolves `revision` to; None when it cannot tell (the cache may still have it)."""
        try:
            return self._api().model_info(repo_id, revision=revision).sha
        except Exception:  # noqa: BLE001 - refused, timeout, 4xx/5xx: the hub cannot tell us here
            return None

    def _check_pinned_commit(self, repo_id: str, revision: str) -> None:
        served = self._served_sha(repo_id, revision)
        if served is not None and served != revision:
            raise self._mismatch(repo_id, revision, served)

    # ------------------------------------------------------------ messages (never the token)

    def _mismatch(self, repo_id: str, revision: str, served: str) -> HubError:
        return HubError(
            f"{repo_id}: the catalog pins commit {revision} but the hub at {self._where()} serves {served} for it: "
            "the mirror is out of date or rewrites revisions; update the mirror, or set HF_ENDPOINT to a hub that "
            "has the commit"
        )

    def _revision_missing(self, repo_id: str, revision: str) -> HubError:
        return HubError(
            f"revision {revision!r} of {repo_id} does not exist on {self._where()}: "
            "fix `revision` in the catalog (a branch, tag or commit sha)"
        )

    def _gated(self, repo_id: str) -> HubError:
        if self.token:
            return HubError(
                f"{repo_id} is gated on {self._where()} and the account of HF_TOKEN has not been granted access: "
                "accept its licence on the model page with that account, or use a token of an account that has"
            )
        return HubError(f"{repo_id} is gated on {self._where()}: accept its licence and set HF_TOKEN")

    def _not_found(self, repo_id: str, revision: str) -> HubError:
        if self._repo_exists(repo_id):
            # olah answers RepoNotFound for a missing revision of a repo it has.
            return self._revision_missing(repo_id, revision)
        return self._repo_missing(repo_id)

    def _repo_missing(self, repo_id: str) -> HubError:
        token_hint = "HF_TOKEN has no access to it" if self.token else "it is private and needs HF_TOKEN"
        return HubError(
            f"{repo_id} is not on {self._where()} (or {token_hint}): check `repo_id` in the catalog; "
            "on the local stack run `pooling-pipeline stack up`, which seeds the mirror"
        )

    def _unreachable_or_failing(self, repo_id: str, revision: str, cause: BaseException | None) -> HubError:
        from huggingface_hub.errors import HfHubHTTPError

        if isinstance(cause, HfHubHTTPError):
            # It answered, with an error: not "unreachable".
            return self._http_error(repo_id, revision, cause)
        reason = type(cause).__name__ if cause is not None else "no answer"
        # A busy mirror sometimes drops one connection (olah resets it) yet answers the next: ask it once more
        # before calling it unreachable, so a missing repo is still named as missing.
        exists = self._repo_exists(repo_id)
        if exists is False:
            return self._repo_missing(repo_id)
        if exists:
            return HubError(
                f"the hub at {self._where()} has {repo_id} but dropped the download of {revision!r} ({reason}) and "
                f"the cache {self.cache_dir} has no copy of it: it is overloaded; retry (re-materialize hf_snapshot)"
            )
        return HubError(
            f"cannot reach the hub at {self._where()} to fetch {repo_id}@{revision} ({reason}), and the cache "
            f"{self.cache_dir} has no copy of it: start it (`pooling-pipeline stack up`) or set HF_ENDPOINT to a "
            "reachable mirror"
        )

    def _http_error(self, repo_id: str, revision: str, exc: Exception) -> HubError:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status == 401:
            return HubError(
                f"the hub at {self._where()} rejected HF_TOKEN (HTTP 401, invalid credentials) while fetching "
                f"{repo_id}: set HF_TOKEN to a valid token (or unset it for public models)"
            )
        if status == 403:
            return HubError(
                f"the hub at {self._where()} refused {repo_id} to this token (HTTP 403): give the token read "
                "access to the repo (a fine-grained token needs it listed), or use another token"
            )
        # olah answers 404 or 500 (no error code) for a commit it does not have, while the repo answers.
        if status in (404, 500) and self._repo_exists(repo_id) and self._served_sha(repo_id, revision) is None:
            return self._revision_missing(repo_id, revision)
        return HubError(
            f"the hub at {self._where()} failed to serve {repo_id}@{revision} (HTTP {status}): it is down or "
            "overloaded; retry later, or check the mirror's log (locally `pooling-pipeline stack status`)"
        )
