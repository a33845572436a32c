"""Which local cores do model compute, and which carry everything else (vLLM's front end, the load generator).

Why this exists: on a small machine, where processes ran was a source of the benchmark's noise.
vLLM-CPU's automatic binding (VLLM_CPU_OMP_THREADS_BIND=auto) pins the model's OpenMP threads to one core
and "reserves" the other, but nothing keeps its API server, its engine core or the load generator off
the model's core (`benchmarks/vllm_cpu_placement.py`). Where the scheduler happened to put
them decided how often the model thread was preempted, so the same server's capacity per repeat
spanned 2-3 grid steps on the small embedding twins (stop 17 of issue 11), while single-process Caikit
stayed within one.

The placement makes that a decision: the model's OpenMP threads own `model_cores` (VLLM_CPU_OMP_THREADS_BIND);
once the server is healthy, every other thread of its processes is confined to `service_cores`
(`confine_server`); the load generator runs there too (`run_on`). The server cannot simply be started on
the service cores: vLLM binds through OMP_PLACES, and libgomp drops places outside the process's initial
affinity ("None of the places contain usable logical CPUs"), which would leave the model on the service
core with everything else. Caikit (one process, its torch threads already limited to the same count as
vLLM's, stack/caikit.compute_threads) keeps every core, so each server has the whole machine and only
vLLM's model compute is placed. The benchmark's `conditions` table states the cores each side used.

Local only: on a cluster the pod's CPU limits and the kubelet decide, and vLLM's default binding stays.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, Field

# vLLM-CPU's own variable: a core list ("0-2,5") per rank, ranks separated by "|".
OMP_BIND_VAR = "VLLM_CPU_OMP_THREADS_BIND"


class CpuPlacement(BaseModel, frozen=True):
    """A split of this machine's cores: the model's OpenMP threads on one side, the rest on the other."""

    model_cores: tuple[int, ...] = Field(min_length=1, description="cores vLLM's OpenMP model threads are bound to")
    service_cores: tuple[int, ...] = Field(
        min_length=1, description="cores of vLLM's API server and engine core, and of the load generator"
    )

    def omp_bind(self) -> str:
        """The model cores in VLLM_CPU_OMP_THREADS_BIND's list form (one rank)."""
        return format_cpu_list(self.model_cores)

    def describe(self) -> str:
        return (
            f"model threads on core(s) {format_cpu_list(self.model_cores)}; vLLM's API server and engine core "
            f"and the load generator on {format_cpu_list(self.service_cores)}"
        )


def plan_placement(allowed: Iterable[int], *, smt: bool = False) -> CpuPlacement | None:
    """The split of `allowed` cores: the last one for the service side, the others for the model; None
    with fewer than two cores (nothing to split) or with SMT (`smt`: logical CPUs share physical cores).
    Without SMT this is the shape of vLLM's autobind, which keeps one core per rank for its scheduler, so
    the model keeps the threads it has by default and Caikit's thread count (physical cores - 1) still
    matches. With SMT, autobind takes one logical CPU per physical core and a split of logical CPUs would
    give vLLM twice Caikit's threads, so vLLM's own binding stays."""
    cores = sorted(set(allowed))
    if len(cores) < 2 or smt:
        return None
    return CpuPlacement(model_cores=tuple(cores[:-1]), service_cores=(cores[-1],))


def machine_placement(enabled: bool = True) -> CpuPlacement | None:
    """The placement for this process's cores (those it may run on), or None when disabled, on one core or
    on an SMT machine."""
    if not enabled:
        return None
    import psutil

    logical, physical = psutil.cpu_count() or 1, psutil.cpu_count(logical=False) or 1
    return plan_placement(os.sched_getaffinity(0), smt=logical > physical)


def format_cpu_list(cores: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(set(cores)))


@contextlib.contextmanager
def run_on(cores: Iterable[int] | None) -> Iterator[None]:
    """Run the calling thread, and the threads and processes it starts meanwhile, on `cores` (those of them
    this process may use), then restore its affinity. None, or no usable core: leave the affinity alone.
    Linux sets affinity per thread: threads that already run elsewhere in the process keep theirs."""
    wanted = set(cores or ())
    before = os.sched_getaffinity(0)
    if not wanted or not wanted & before:
        yield
        return
    os.sched_setaffinity(0, wanted & before)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class Confinement(BaseModel):
    """What `confine_server` found and did: the deployment's metadata states it."""

    model_threads: int = Field(
        description="threads bound to the model cores: vLLM's model worker process, whose threads inherit the "
        "binding libgomp gives its main thread"
    )
    confined_threads: int = Field(description="threads moved to the service cores")
    placement: str

    def problem(self) -> str | None:
        """Why the placement did not take, or None."""
        if self.model_threads == 0:
            return (
                f"no thread of the server is bound to the model cores: vLLM did not apply {OMP_BIND_VAR}, so "
                "nothing was moved (confining every thread would put the model on the service core) and the "
                "load generator is not placed"
            )
        return None


def _threads(pid: int) -> list[int]:
    try:
        return [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return []


def confine_server(pids: Iterable[int], placement: CpuPlacement) -> Confinement:
    """Move every thread of these processes that is not bound to the model cores onto the service cores.

    Call it once the server is healthy: its processes and its model's OpenMP threads exist by then, and
    threads started later inherit the affinity of the thread that starts them (the API server's event
    loop, the engine core's busy loop), so they stay on the service side. A thread that ends meanwhile
    is skipped. When no thread is on the model cores (the binding did not take), nothing is moved."""
    model, service = set(placement.model_cores), set(placement.service_cores)
    threads: list[tuple[int, set[int]]] = []
    for pid in pids:
        for tid in _threads(pid):
            with contextlib.suppress(OSError):
                threads.append((tid, os.sched_getaffinity(tid)))
    bound = sum(1 for _, cores in threads if cores <= model)
    moved = 0
    if bound:
        for tid, cores in threads:
            if not cores <= model and cores != service:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(tid, service)
                    moved += 1
    return Confinement(model_threads=bound, confined_threads=moved, placement=placement.describe())
