"""The local CPU placement: the split of cores, vLLM's core-list format, and that the affinity really
reaches the processes it is meant for (the server started detached, the load generator's process and the
processes it starts). Fast: no model server."""

import os
import subprocess
import sys
import time

import pytest

from pooling_pipeline.evaluation.benchmark.conditions import configured
from pooling_pipeline.serving.cpu_adaptation import CpuSettings
from pooling_pipeline.serving.local_runtime import LocalRollout, deployment_key, local_spec_hash
from pooling_pipeline.stack.cpu_placement import (
    OMP_BIND_VAR,
    CpuPlacement,
    confine_server,
    format_cpu_list,
    plan_placement,
    run_on,
)
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import group_members, start_detached, stop_pid
from pooling_pipeline_tests.test_cpu_adaptation import PY, _adapt, _changed, _manifests

two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="placement needs two cores to split")


def test_the_last_core_serves_and_the_others_compute():
    assert plan_placement([0, 1]) == CpuPlacement(model_cores=(0,), service_cores=(1,))
    assert plan_placement({3, 0, 2, 1}) == CpuPlacement(model_cores=(0, 1, 2), service_cores=(3,))
    # A cgroup may hand out any cores, not 0..n-1.
    assert plan_placement([4, 9]) == CpuPlacement(model_cores=(4,), service_cores=(9,))
    assert plan_placement([0]) is None  # one core: nothing to split, vLLM binds as it would
    # SMT: vLLM's autobind takes one logical CPU per physical core; a split of logical CPUs would not match.
    assert plan_placement([0, 1, 2, 3], smt=True) is None
    assert plan_placement([]) is None


def test_the_model_cores_are_written_in_vllms_core_list_format():
    assert format_cpu_list((2, 0, 1)) == "0,1,2"
    assert CpuPlacement(model_cores=(0, 1, 2), service_cores=(3,)).omp_bind() == "0,1,2"


def test_a_placement_binds_the_model_threads_and_is_part_of_the_spec(tmp_path):
    placement = CpuPlacement(model_cores=(0,), service_cores=(1,))
    placed = _adapt(settings=CpuSettings(placement=placement))
    assert placed.env[OMP_BIND_VAR] == "0"
    assert placed.placement == placement
    change = next(a for a in placed.adaptations if a.item == f"env {OMP_BIND_VAR}")
    assert change.cluster is None and change.local == "0" and "load generator" in change.why

    # Placing a running server (or un-placing it) is a new spec: the next rollout restarts it.
    layout = StackLayout(tmp_path)
    rollout = LocalRollout(manifests=_manifests(), vllm_version="0.32.0", python=PY)
    key = deployment_key(rollout.manifests)
    placed_rollout = rollout.model_copy(update={"cpu": CpuSettings(placement=placement)})
    assert local_spec_hash(placed_rollout, layout, key) != local_spec_hash(rollout, layout, key)

    unplaced = _adapt(settings=CpuSettings())
    assert OMP_BIND_VAR not in unplaced.env and unplaced.placement is None
    assert f"env {OMP_BIND_VAR}" not in _changed(unplaced)


def _affinity_of_child(script: str) -> set[int]:
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return {int(c) for c in out.split()}


@two_cores
def test_run_on_moves_this_process_and_what_it_starts_then_restores_it():
    before = os.sched_getaffinity(0)
    target = max(before)
    with run_on([target]):
        assert os.sched_getaffinity(0) == {target}
        assert _affinity_of_child("import os; print(*os.sched_getaffinity(0))") == {target}
    assert os.sched_getaffinity(0) == before
    with run_on(None):
        assert os.sched_getaffinity(0) == before
    with run_on([max(before) + 64]):  # a core this process may not use: left alone, not an error
        assert os.sched_getaffinity(0) == before


@two_cores
def test_confining_a_server_leaves_its_model_threads_and_moves_every_other_thread(tmp_path):
    # A stand-in server: one process whose model thread binds itself to the model core (as libgomp does
    # with vLLM's OMP_PLACES) and whose other threads float, plus a child process that floats.
    cores = sorted(os.sched_getaffinity(0))
    placement = plan_placement(cores)
    assert placement is not None
    model = format_cpu_list(placement.model_cores)
    script = (
        "import os, subprocess, sys, threading, time\n"
        f"def model():\n    os.sched_setaffinity(0, {{{model}}})\n    time.sleep(60)\n"
        "threading.Thread(target=model, daemon=True).start()\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('ready', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = start_detached(
        "server", [sys.executable, "-c", script], pid_file=tmp_path / "s.pid", log_path=tmp_path / "s.log"
    )
    try:
        for _ in range(500):
            if "ready" in (tmp_path / "s.log").read_text():
                break
            time.sleep(0.02)
        child = int((tmp_path / "s.log").read_text().split()[1])
        placed = confine_server(group_members(proc.pid), placement)
        assert placed.model_threads == 1 and placed.problem() is None
        assert placed.confined_threads >= 3  # the main thread, the floating thread, the child
        affinities = {(pid, tid): os.sched_getaffinity(tid) for pid in (proc.pid, child) for tid in _tids(pid)}
        assert list(affinities.values()).count(set(placement.model_cores)) == 1
        assert all(a in (set(placement.model_cores), set(placement.service_cores)) for a in affinities.values())
        assert all(os.sched_getaffinity(tid) == set(placement.service_cores) for tid in _tids(child))
        # The benchmark's conditions table says where the server's threads may run, per set of cores.
        n_service = sum(1 for a in affinities.values() if a == set(placement.service_cores))
        service = format_cpu_list(placement.service_cores)
        assert configured([proc.pid])["cores"] == f"{model}: 1 thread; {service}: {n_service} threads"
        # Idempotent: a second pass finds everything in place.
        again = confine_server(group_members(proc.pid), placement)
        assert again.model_threads == 1 and again.confined_threads == 0
    finally:
        stop_pid(proc.pid)


@two_cores
def test_a_server_whose_binding_did_not_take_is_reported_and_left_alone(tmp_path):
    # Confining every thread would put the model itself on the service core, beside the load generator.
    placement = plan_placement(os.sched_getaffinity(0))
    assert placement is not None
    script = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); time.sleep(60)"
    proc = start_detached(
        "unbound", [sys.executable, "-c", script], pid_file=tmp_path / "u.pid", log_path=tmp_path / "u.log"
    )
    try:
        time.sleep(0.5)
        before = {tid: os.sched_getaffinity(tid) for tid in _tids(proc.pid)}
        placed = confine_server(group_members(proc.pid), placement)
        assert placed.model_threads == 0 and placed.confined_threads == 0
        assert "did not apply VLLM_CPU_OMP_THREADS_BIND" in (placed.problem() or "")
        assert {tid: os.sched_getaffinity(tid) for tid in _tids(proc.pid)} == before
    finally:
        stop_pid(proc.pid)


def _tids(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


@two_cores
def test_the_load_generator_runs_on_the_generator_cores_and_the_report_says_so():
    from pooling_pipeline.evaluation.benchmark.profiles import BenchmarkProfile, plan_for
    from pooling_pipeline.evaluation.benchmark.runner import VLLM, Target, run_load_benchmark
    from pooling_pipeline.evaluation.loadgen import Dialect, Workload
    from pooling_pipeline.evaluation.loadgen.loopback import Behaviour, LoopbackServer

    before = os.sched_getaffinity(0)
    service = max(before)
    plan = plan_for(BenchmarkProfile.DEMO, knee_max_concurrency=2, repeats=2, max_repeats=2, max_points_per_search=3)
    seen: set[frozenset[int]] = set()  # the affinity of the thread that runs the benchmark, at each log line

    def log(_: str) -> None:
        seen.add(frozenset(os.sched_getaffinity(0)))

    with LoopbackServer(Behaviour(servers=4, service_s=0.01)) as url:
        target = Target(name=VLLM, url=url, model="m", dialect=Dialect.OPENAI)
        result, _ = run_load_benchmark("m", [target], [Workload()], plan, log=log, generator_cores=[service])
    assert seen == {frozenset({service})}
    assert os.sched_getaffinity(0) == before
    assert result.conditions["load generator cores"] == str(service)
    assert result.workloads and result.workloads[0].vllm.capacity_rps.median > 0
