"""Where new vLLM releases are announced, and how to read each announcement.

Three kinds of feed, any number of each, configured by URL so a mirror (Artifactory, Nexus, a Quay
proxy) works the same as the public source:

- `pypi`:  the PyPI JSON API, `<index>/pypi/vllm/json`. Every release in `releases` is considered;
           pre-/dev-releases and releases whose files are all yanked are ignored (PyPI's own
           `info.version` is the fallback when a mirror omits `releases`).
- `github`: `/repos/vllm-project/vllm/releases/latest` (`tag_name` "v0.11.0"; drafts and pre-releases
           ignored).
- `image`: container image tags, either a registry's `/v2/<repo>/tags/list` (`{"tags": [...]}`) or
           Docker Hub's `/v2/repositories/<repo>/tags` (`{"results": [{"name": ...}]}`); only tags
           matching `^v\\d+\\.\\d+\\.\\d+$` count (no `latest`, `nightly`, `v0.11.0rc1`, `...-cu126`).

POOLING_VLLM_RELEASE_FEEDS configures them: comma-separated `kind=url` pairs, e.g.
`pypi=https://pypi.org/pypi/vllm/json,github=https://api.github.com/repos/vllm-project/vllm/releases/latest`.
Parsing is pure (tested on documents); `fetch_latest` is the only function that does I/O.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

import httpx
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel

FEEDS_ENV = "POOLING_VLLM_RELEASE_FEEDS"
DEFAULT_FEEDS = "pypi=https://pypi.org/pypi/vllm/json"
IMAGE_TAG_RE = re.compile(r"^v\d+\.\d+\.\d+$")

FeedKind = Literal["pypi", "github", "image"]


class FeedError(RuntimeError):
    """A feed could not be read or understood; the message names the feed and what to check."""


class ReleaseFeed(BaseModel):
    kind: FeedKind
    url: str


class LatestRelease(BaseModel):
    version: str
    source: str  # "pypi https://..." for the UI / logs


def parse_feeds(spec: str | None = None) -> list[ReleaseFeed]:
    """`kind=url,kind=url` (from POOLING_VLLM_RELEASE_FEEDS by default) into feeds."""
    spec = (spec if spec is not None else os.environ.get(FEEDS_ENV, "")).strip() or DEFAULT_FEEDS
    feeds = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, sep, url = part.partition("=")
        if not sep or kind.strip() not in ("pypi", "github", "image") or not url.strip():
            raise FeedError(
                f"{FEEDS_ENV}: {part!r} is not `kind=url`: use pypi=<.../pypi/vllm/json>, "
                "github=<.../repos/vllm-project/vllm/releases/latest> or image=<.../tags/list>"
            )
        feeds.append(ReleaseFeed(kind=kind.strip(), url=url.strip()))  # type: ignore[arg-type]
    return feeds


def _stable(text: str) -> Version | None:
    try:
        version = Version(text.removeprefix("v"))
    except InvalidVersion:
        return None
    return None if version.is_prerelease or version.is_devrelease else version


def latest_from_pypi(doc: dict[str, Any]) -> str | None:
    releases = doc.get("releases")
    if isinstance(releases, dict) and releases:
        candidates = []
        for text, files in releases.items():
            version = _stable(text)
            # A release with no files cannot be installed; one whose every file is yanked was withdrawn.
            if version is None or not files or all(f.get("yanked") for f in files):
                continue
            candidates.append((version, text))
        return str(max(candidates)[0]) if candidates else None
    info = doc.get("info") or {}
    text = info.get("version")
    if not isinstance(text, str) or info.get("yanked"):
        return None
    version = _stable(text)
    return str(version) if version else None


def latest_from_github(doc: dict[str, Any]) -> str | None:
    if doc.get("draft") or doc.get("prerelease"):
        return None
    tag = doc.get("tag_name")
    version = _stable(tag) if isinstance(tag, str) else None
    return str(version) if version else None


def latest_from_image_tags(doc: dict[str, Any]) -> str | None:
    tags = doc.get("tags")
    if tags is None and isinstance(doc.get("results"), list):
        tags = [r.get("name") for r in doc["results"] if isinstance(r, dict)]
    versions = [Version(t[1:]) for t in tags or [] if isinstance(t, str) and IMAGE_TAG_RE.match(t)]
    return str(max(versions)) if versions else None


PARSERS = {"pypi": latest_from_pypi, "github": latest_from_github, "image": latest_from_image_tags}


def fetch_latest(feed: ReleaseFeed, client: httpx.Client) -> str | None:
    """The newest stable release the feed announces (None: it announces none); FeedError when unreadable."""
    try:
        response = client.get(feed.url, headers={"Accept": "application/json"})
        response.raise_for_status()
        doc = response.json()
    except httpx.HTTPStatusError as exc:
        raise FeedError(f"{feed.kind} feed {feed.url} answered HTTP {exc.response.status_code}: "
                        f"check the URL in {FEEDS_ENV} (or the mirror)") from None
    except httpx.HTTPError as exc:
        raise FeedError(f"{feed.kind} feed {feed.url} is unreachable ({type(exc).__name__}: {exc}): "
                        "check the network or point the feed at a mirror") from None
    except ValueError:
        raise FeedError(f"{feed.kind} feed {feed.url} did not return JSON: check that the URL is the API "
                        "endpoint, not a web page") from None
    if not isinstance(doc, dict):
        raise FeedError(f"{feed.kind} feed {feed.url} returned {type(doc).__name__}, expected a JSON object")
    return PARSERS[feed.kind](doc)


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


def is_newer(candidate: str, than: str | None) -> bool:
    if not than:
        return True
    try:
        return Version(candidate) > Version(than)
    except InvalidVersion:
        return candidate != than
