"""The local Hugging Face hub: olah serving the git mirror (hub_mirror.py) offline on loopback.

`huggingface_hub.snapshot_download(..., endpoint=HF_ENDPOINT)` and `SentenceTransformer(repo_id)` run
unchanged against it. Known olah gaps, and how the stack lives with them:
- a path missing from a repo answers 401, not 404: each mirror repo carries
  `additional_chat_templates/.gitkeep` (see hub_mirror.PLACEHOLDER_FILES);
- no HTTP Range requests: an interrupted download starts again from zero (huggingface_hub accepts the
  200 answer to its Range request and rewrites the file), which is fine on loopback for small models;
- `GET /api/models/<repo>` (model info without a revision, as `HfApi().model_info(repo_id)` asks) does
  not look at the mirrors when offline: it takes the newest commit from olah's own metadata cache
  (`<repos-path>/api/models/<org>/<repo>/revision/*/meta_head.json`) and answers 401 when there is none.
  `record_latest_commits` writes that file for every seeded repo;
- it reads a whole LFS file into memory per request (and hashes it on HEAD): keep models small.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import (
    ManagedProcess,
    StackError,
    read_pid,
    start_detached,
    stop_from_pid_file,
    wait_http_ok,
)
from pooling_pipeline.stack.state import LOOPBACK, StackState, check_port_free, process_cmdline

NAME = "olah"


def pid_file(layout: StackLayout) -> Path:
    return layout.run_dir / "olah.pid"


def log_path(layout: StackLayout) -> Path:
    return layout.logs_dir / "olah.log"


def config_path(layout: StackLayout) -> Path:
    return layout.hub_root / "olah.toml"


def render_config(layout: StackLayout, port: int) -> str:
    """olah's TOML: offline, serving only the local mirrors, on loopback."""
    netloc = f"{LOOPBACK}:{port}"
    lines = [
        "[basic]",
        f'host = "{LOOPBACK}"',
        f"port = {port}",
        # Its own cache is unused offline but must be a folder of ours, not ./repos in the cwd.
        f'repos-path = "{cache_dir(layout)}"',
        f'mirrors-path = ["{layout.hub_mirrors}"]',
        'mirror-scheme = "http"',
        f'mirror-netloc = "{netloc}"',
        f'mirror-lfs-netloc = "{netloc}"',
        # Re-seeding changes `main`; with the default 600 s metadata cache olah would keep serving the
        # old commit for ten minutes. Offline there is no upstream rate limit to protect.
        "metadata-cache-ttl = 0",
        "",
        "[accessibility]",
        "offline = true",
        "",
    ]
    return "\n".join(lines)


def cache_dir(layout: StackLayout) -> Path:
    return layout.hub_root / "cache"


def record_latest_commits(layout: StackLayout, repos: Iterable[tuple[str, str]]) -> None:
    """Tell olah the newest commit of each (repo_id, commit sha), for model info without a revision."""
    for repo_id, sha in repos:
        meta = cache_dir(layout) / "api" / "models" / repo_id / "revision" / "main" / "meta_head.json"
        meta.parent.mkdir(parents=True, exist_ok=True)
        # The fixed commit date of hub_mirror's commits; olah only compares dates between revisions.
        meta.write_text(json.dumps({"sha": sha, "lastModified": "2024-01-01T00:00:00+00:00"}))


def running_pid(layout: StackLayout) -> int | None:
    """PID of the olah we started, if it is still alive (and still olah, not a recycled PID)."""
    pid = read_pid(pid_file(layout))
    if pid is None or "olah" not in process_cmdline(pid):
        return None
    return pid


def health_url(state: StackState) -> str:
    # The model-info API of a seeded repo: proves olah is up AND reads the mirror.
    return f"{state.hub_endpoint}/api/models/sentence-transformers/all-MiniLM-L6-v2/revision/main"


def is_healthy(state: StackState, *, wait_s: float = 0.0) -> bool:
    """olah answers model info for a seeded repo (polling up to `wait_s`)."""
    try:
        wait_http_ok(health_url(state), timeout_s=max(wait_s, 0.1))
        return True
    except StackError:
        return False


def start(layout: StackLayout, state: StackState, *, timeout_s: float = 60.0) -> ManagedProcess:
    """Start olah (the mirror must be seeded first) and wait until it serves the seeded model."""
    if importlib.util.find_spec("olah") is None:
        raise StackError(f"olah is not installed in {sys.prefix}: run `make setup` (or `pip install olah`)")
    check_port_free(state.hub_port, "the hub (olah)", "--hub-port or POOLING_HUB_PORT")
    layout.hub_root.mkdir(parents=True, exist_ok=True)
    cache_dir(layout).mkdir(parents=True, exist_ok=True)
    cfg = config_path(layout)
    cfg.write_text(render_config(layout, state.hub_port))
    argv = [sys.executable, "-m", "olah.server", "-c", str(cfg), "--log-path", str(layout.logs_dir / "olah")]
    # olah writes its own log files relative to the cwd in places: run it inside its folder.
    proc = start_detached(NAME, argv, pid_file=pid_file(layout), log_path=log_path(layout), cwd=layout.hub_root)
    try:
        wait_http_ok(health_url(state), timeout_s=timeout_s, process=proc)
    except StackError:
        stop_from_pid_file(pid_file(layout))
        raise
    return proc


def stop(layout: StackLayout) -> bool:
    return stop_from_pid_file(pid_file(layout))
