"""A Hugging Face-compatible hub (huggingface.co, an internal mirror, or the local olah) as a resource.

The real `huggingface_hub.snapshot_download` runs unchanged; only the endpoint differs, so what works
against the local stack works against the real hub.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
from pydantic import Field

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


class HubError(RuntimeError):
    """The hub could not give us the snapshot; the message says why and what to do."""


class HubResource(dg.ConfigurableResource):
    """Downloads model snapshots at a catalog revision into a project-local cache."""

    endpoint: str | None = Field(None, description="HF_ENDPOINT; None means https://huggingface.co")
    token: str | None = Field(None, description="HF_TOKEN for gated/private repos (never logged)")
    cache_dir: str = Field(description="HF_HUB_CACHE-style folder the snapshots are kept in")

    def _where(self) -> str:
        return self.endpoint or "https://huggingface.co"

    def snapshot(self, repo_id: str, revision: str = "main") -> tuple[Path, str]:
        """Download (or reuse) `repo_id@revision`; return (snapshot folder, resolved commit sha)."""
        from huggingface_hub import HfApi, snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
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
            raise HubError(
                f"revision {revision!r} of {repo_id} does not exist on {self._where()}: "
                "fix `revision` in the catalog (a branch, tag or commit sha)"
            ) from None
        except GatedRepoError:
            raise HubError(f"{repo_id} is gated on {self._where()}: accept its licence and set HF_TOKEN") from None
        except RepositoryNotFoundError:
            raise HubError(
                f"{repo_id} is not on {self._where()} (or needs a token): check `repo_id` in the catalog; "
                "on the local stack run `pooling-pipeline stack up`, which seeds the mirror"
            ) from None
        except LocalEntryNotFoundError as exc:
            raise HubError(
                f"cannot reach the hub at {self._where()} to fetch {repo_id}@{revision} ({exc.__class__.__name__}): "
                "start it (`pooling-pipeline stack up`) or set HF_ENDPOINT to a reachable mirror"
            ) from None

        # snapshot_download returns <cache>/models--org--name/snapshots/<commit sha>.
        sha = path.name
        if not _SHA_RE.match(sha):
            sha = HfApi(endpoint=self.endpoint, token=self.token or False).model_info(repo_id, revision=revision).sha
        if _SHA_RE.match(revision) and revision != sha:
            raise HubError(f"{repo_id}: asked for commit {revision} but the hub served {sha}; the mirror is out of date")
        return path, sha
