"""The host lock (stack/host_lock.py): rollouts and quality probes share the host, a load benchmark has it alone.

Real flock(2) on a file in tmp_path: threads of this process hold it through their own open files (flock
conflicts between open files, not processes), and a child process shows that a holder that dies releases it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import threading
import time

import pytest

from pooling_pipeline.stack.host_lock import HostUse, hold_host, hold_host_for_run, hold_local_host


def _wait_for(condition, timeout_s: float = 5.0) -> None:
    """Wait for another thread or process to reach a state (an ordering, not a timing, assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the other holder never got there"
        time.sleep(0.01)


def _gate_busy(path) -> bool:
    """Someone (a benchmark waiting for the lock) holds the gate."""
    fd = os.open(f"{path}.gate", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _hold_in_thread(use: HostUse, path, logs: list[str]):
    """Start a thread that takes the lock for `use`; returns (thread, got-it event, waited seconds)."""
    got, release, waited = threading.Event(), threading.Event(), []

    def holder() -> None:
        with hold_host(use, f"{use} holder", logs.append, path=path) as w:
            waited.append(w)
            got.set()
            release.wait(10)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    return thread, got, release, waited


def test_shared_holders_overlap(tmp_path):
    path, logs = tmp_path / "host.lock", []
    with hold_host(HostUse.SHARED, "rollout a", logs.append, path=path):
        thread, got, release, waited = _hold_in_thread(HostUse.SHARED, path, logs)
        assert got.wait(5), "a second shared holder (another model's rollout) waited for the first"
        release.set()
        thread.join(5)
    assert waited == [0.0] and logs == []


def test_a_benchmark_waits_for_every_shared_holder_and_then_has_the_host_alone(tmp_path):
    path, logs = tmp_path / "host.lock", []
    shared = contextlib.ExitStack()
    shared.enter_context(hold_host(HostUse.SHARED, "rollout b", path=path))
    thread, got, release, waited = _hold_in_thread(HostUse.EXCLUSIVE, path, logs)
    assert not got.wait(0.5), "the benchmark started while a rollout held the host"
    _wait_for(lambda: bool(logs))
    assert logs == [
        "exclusive holder: waiting for the host (a rollout, quality probe, model run or another benchmark has it; "
        "see stack/host_lock.py)"
    ]
    shared.close()
    assert got.wait(5)
    assert waited[0] > 0 and logs[-1].startswith("exclusive holder: had the host after")
    # While the benchmark holds it, a rollout waits, and says why.
    later, later_got, later_release, _ = _hold_in_thread(HostUse.SHARED, path, logs)
    assert not later_got.wait(0.5)
    _wait_for(lambda: "shared holder: waiting" in logs[-1])
    assert "shared holder: waiting for the host (a load benchmark is running or next" in logs[-1]
    release.set()
    assert later_got.wait(5)
    later_release.set()
    thread.join(5)
    later.join(5)


def test_a_waiting_benchmark_goes_before_a_rollout_that_arrives_after_it(tmp_path):
    # Writer preference: without it a stream of rollouts could keep a benchmark waiting, and the demo's rollouts
    # would each run alone instead of in pairs.
    path, logs = tmp_path / "host.lock", []
    first, first_got, first_release, _ = _hold_in_thread(HostUse.SHARED, path, logs)
    assert first_got.wait(5)
    bench, bench_got, bench_release, _ = _hold_in_thread(HostUse.EXCLUSIVE, path, logs)
    assert not bench_got.wait(0.3)
    late, late_got, late_release, _ = _hold_in_thread(HostUse.SHARED, path, logs)
    assert not late_got.wait(0.3), "a rollout that came after a waiting benchmark went in front of it"
    first_release.set()
    assert bench_got.wait(5) and not late_got.is_set()
    bench_release.set()
    assert late_got.wait(5)
    late_release.set()
    for thread in (first, bench, late):
        thread.join(5)


def test_a_holder_that_dies_leaves_no_stale_lock(tmp_path):
    path = tmp_path / "host.lock"
    code = (
        "import sys, time\n"
        "from pooling_pipeline.stack.host_lock import HostUse, hold_host\n"
        f"with hold_host(HostUse.EXCLUSIVE, 'benchmark', path={str(path)!r}):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        thread, got, release, _ = _hold_in_thread(HostUse.SHARED, path, [])
        assert not got.wait(0.3)  # the child has it
        child.kill()
        assert got.wait(5), "the lock outlived the process that held it"
        release.set()
        thread.join(5)
    finally:
        child.kill()
        child.wait()


def test_a_cluster_step_takes_no_host_lock():
    # On a cluster each step is its own pod and the servers run on the cluster's nodes.
    with hold_local_host("cluster", HostUse.EXCLUSIVE, "benchmark") as waited:
        assert waited == 0.0
    assert isinstance(hold_local_host("cluster", HostUse.SHARED, "rollout"), contextlib.nullcontext)


def _run_in_thread(path, logs: list[str], name: str):
    """A demo run in a child process: holds the host for the run, then benchmarks (converts to exclusive).
    Returns the process and a reader of the lines it prints."""
    code = (
        "import sys, time\n"
        "from pooling_pipeline.stack.host_lock import HostUse, hold_host, hold_host_for_run\n"
        f"path = {str(path)!r}\n"
        f"with hold_host_for_run({name!r}, path=path):\n"
        "    print('run', flush=True)\n"
        "    with hold_host(HostUse.SHARED, 'rollout', path=path):\n"
        "        print('rolled out', flush=True)\n"
        "    sys.stdin.readline()\n"
        "    with hold_host(HostUse.EXCLUSIVE, 'bench', print, path=path):\n"
        "        print('benchmarking', flush=True)\n"
        "        sys.stdin.readline()\n"
        "    print('after', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )


@pytest.mark.timeout(60)
def test_two_model_runs_share_the_host_and_their_benchmarks_wait_for_each_other_and_for_the_runs(tmp_path):
    # The demo's two worker processes: each holds the host shared for its run (its steps' own shared holds go
    # through it without waiting on themselves), and a benchmark waits for the other run to let go.
    path = tmp_path / "host.lock"
    a, b = _run_in_thread(path, [], "run a"), _run_in_thread(path, [], "run b")
    try:
        assert a.stdout and b.stdout and a.stdin and b.stdin
        for proc in (a, b):
            assert proc.stdout.readline().strip() == "run"
            assert proc.stdout.readline().strip() == "rolled out"  # no self-deadlock on the step's hold
        a.stdin.write("\n")  # a benchmarks: waits for b's run
        assert "waiting for the host" in a.stdout.readline()
        b.stdin.write("\n")  # b benchmarks too: drops its run hold, queues behind a
        assert "had the host after" in a.stdout.readline()
        assert a.stdout.readline().strip() == "benchmarking"
        assert "waiting for the host" in b.stdout.readline()
        # Work that arrives now, while b's benchmark waits (b holds the gate), goes after it: writer preference.
        _wait_for(lambda: _gate_busy(path))
        third, third_got, third_release, _ = _hold_in_thread(HostUse.SHARED, path, [])
        assert not third_got.wait(0.3)
        # a's benchmark ends, then its run. Back to shared, a may finish its run before b benchmarks, or wait
        # for b's benchmark (flock does not promise an atomic downgrade): either way b benchmarks alone.
        a.stdin.write("\n\n")
        assert "had the host after" in b.stdout.readline()
        assert b.stdout.readline().strip() == "benchmarking"
        assert not third_got.is_set()
        b.stdin.write("\n")
        assert a.stdout.readline().strip() == "after" and a.wait(10) == 0
        assert b.stdout.readline().strip() == "after"
        assert third_got.wait(5)  # b back to shared: a shared holder gets in beside it
        third_release.set()
        third.join(5)
        b.stdin.write("\n")
        assert b.wait(10) == 0
    finally:
        for proc in (a, b):
            proc.kill()
            proc.wait()


def test_a_run_hold_does_not_nest(tmp_path):
    with hold_host_for_run("run", path=tmp_path / "host.lock"):
        try:
            with hold_host_for_run("again"):
                raise AssertionError("a second run hold in one process was allowed")
        except RuntimeError as exc:
            assert "already holds the host for a run" in str(exc)
