"""Starting, finding and stopping the local stack's server processes (SeaweedFS, olah, vLLM, Caikit).

Servers outlive the command that started them (a Dagster run deploys vLLM, the next run evaluates it),
so each one is started in its own session with a PID file, and stopped by that PID, never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx


class StackError(RuntimeError):
    """A local-stack server could not be started or reached; the message says what to do."""


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    pid: int
    log_path: Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by us) is not alive for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def start_detached(
    name: str,
    argv: Sequence[str],
    *,
    pid_file: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start `argv` in a new session (so it survives our exit), logging to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=str(cwd) if cwd else None,
                start_new_session=True,
            )
    except FileNotFoundError as exc:
        raise StackError(f"cannot start {name}: {argv[0]} not found ({exc}); run `make setup` first") from None
    pid_file.write_text(str(proc.pid))
    return ManagedProcess(name=name, pid=proc.pid, log_path=log_path)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`: a server and every child it started."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            # /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def stop_pid(pid: int, *, timeout_s: float = 20.0) -> bool:
    """SIGTERM the process group, wait until every member is gone, SIGKILL what is left after `timeout_s`.

    Every server we start leads its own session (start_detached), so its group is everything it started:
    vLLM's engine core and workers, and multiprocessing's resource tracker, which ignores SIGTERM and
    exits on its own once it has unlinked the shared memory the others leaked. Waiting for the whole
    group (not just the leader) is what makes "stopped" mean "its memory is free".
    True if something was stopped.
    """
    if not pid_alive(pid) and not group_members(pid):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_alive(pid) and not group_members(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return True


def stop_from_pid_file(pid_file: Path, *, timeout_s: float = 20.0) -> bool:
    pid = read_pid(pid_file)
    stopped = stop_pid(pid, timeout_s=timeout_s) if pid else False
    pid_file.unlink(missing_ok=True)
    return stopped


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def wait_http_ok(
    url: str,
    *,
    timeout_s: float,
    process: ManagedProcess | None = None,
    ok_statuses: tuple[int, ...] = (200,),
    interval_s: float = 0.5,
) -> float:
    """Poll `url` until it answers one of `ok_statuses`; returns seconds waited.

    Fails fast, quoting the log, if `process` dies first (a server that exits is not "slow to start").
    """
    start = time.monotonic()
    last_error = ""
    while time.monotonic() - start < timeout_s:
        if process is not None and not pid_alive(process.pid):
            raise StackError(
                f"{process.name} exited before it became healthy at {url}; last log lines "
                f"({process.log_path}):\n{tail(process.log_path)}"
            )
        try:
            resp = httpx.get(url, timeout=2.0)
            if resp.status_code in ok_statuses:
                return time.monotonic() - start
            last_error = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            last_error = type(exc).__name__
        time.sleep(interval_s)
    where = f"; log {process.log_path}:\n{tail(process.log_path)}" if process else ""
    raise StackError(f"{url} not healthy after {timeout_s:.0f}s (last: {last_error}){where}")
