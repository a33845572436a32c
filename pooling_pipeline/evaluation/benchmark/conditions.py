"""The conditions both servers were measured under, as the report states them (dtype, CPU threads, cores).

Equal footing on the local stack means the same dtype and the same CPU thread budget for vLLM-CPU and
Caikit, with only the server under test carrying load. What is *configured* is read from each server
(vLLM's `--dtype`; Caikit-NLP's embedding config, float32 unless autocast is on; OMP/MKL thread variables
and the CPU affinity of each process tree); what was *used* is measured: the threads of each tree that
did >= 10 % of its busiest thread's CPU work during that server's windows. Nothing here changes how a
server is started (serving/ and stack/ do that); a mismatch is written into the result, never hidden.
"""

from __future__ import annotations

import contextlib
import os

import psutil

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")
BUSY_SHARE = 0.10


def process_tree(pids: list[int]) -> list[psutil.Process]:
    """The processes with these pids and all their descendants (those that have ended are left out)."""
    procs: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            procs.extend([root, *root.children(recursive=True)])
    return procs


def thread_cpu(pids: list[int]) -> dict[tuple[int, int], float]:
    """(pid, thread id) -> CPU seconds so far, for every thread of the process trees."""
    out: dict[tuple[int, int], float] = {}
    for proc in process_tree(pids):
        with contextlib.suppress(psutil.Error):
            for t in proc.threads():
                out[proc.pid, t.id] = t.user_time + t.system_time
    return out


def busy_threads(before: dict[tuple[int, int], float], after: dict[tuple[int, int], float]) -> int:
    """Threads that did at least BUSY_SHARE of the busiest thread's work between two snapshots."""
    deltas = [cpu - before.get(key, 0.0) for key, cpu in after.items()]
    top = max(deltas, default=0.0)
    return sum(1 for d in deltas if top > 0 and d >= BUSY_SHARE * top)


def configured(pids: list[int]) -> dict[str, str]:
    """Thread variables set in the trees' environments, and where the trees' threads may run: each set of
    cores with its thread count ("0: 46 threads; 1: 24 threads" for a placed vLLM, whose model threads
    own core 0; one entry for a server whose threads may run anywhere)."""
    out: dict[str, str] = {}
    by_cores: dict[tuple[int, ...], int] = {}
    for proc in process_tree(pids):
        with contextlib.suppress(psutil.Error):
            env = proc.environ()
            for var in THREAD_VARS:
                if var in env:
                    out.setdefault(var, env[var])
            if var_true(env.get("EMBEDDING_AUTOCAST")):
                out.setdefault("EMBEDDING_AUTOCAST", env["EMBEDDING_AUTOCAST"])
        with contextlib.suppress(psutil.Error):
            for thread in proc.threads():
                with contextlib.suppress(OSError):
                    key = tuple(sorted(os.sched_getaffinity(thread.id)))
                    by_cores[key] = by_cores.get(key, 0) + 1
    if by_cores:
        out["cores"] = "; ".join(
            f"{','.join(map(str, cores))}: {n} thread{'s' if n != 1 else ''}" for cores, n in sorted(by_cores.items())
        )
    return out


def var_true(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def flag_value(args: list[str], flag: str) -> str | None:
    """`--flag value` or `--flag=value` from a command line."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def describe(server: str, *, pids: list[int], dtype: str | None, busy: int | None) -> dict[str, str]:
    """`conditions` entries of one server: '<server> dtype', '<server> threads', '<server> cores'."""
    conf = configured(pids) if pids else {}
    out = {f"{server} dtype": dtype or "unknown"}
    if "EMBEDDING_AUTOCAST" in conf:
        out[f"{server} dtype"] = f"{dtype or 'float32'} with autocast (bfloat16) on"
    threads = ", ".join(f"{k}={conf[k]}" for k in THREAD_VARS if k in conf) or "no thread variables set"
    if busy is not None:
        threads = f"{busy} busy during its windows ({threads})"
    out[f"{server} threads"] = threads
    if "cores" in conf:
        out[f"{server} cores"] = conf["cores"]
    return out


def mismatches(conditions: dict[str, str], servers: list[str]) -> list[str]:
    """What differs between the servers (dtype, busy threads): the report prints it as a caveat."""
    if len(servers) < 2:
        return []
    out = []
    for what in ("dtype", "threads"):
        values = {s: conditions.get(f"{s} {what}", "") for s in servers}
        firsts = {s: v.split(" ")[0] for s, v in values.items()}
        if len(set(firsts.values())) > 1:
            out.append(f"{what} differ: " + "; ".join(f"{s} {v}" for s, v in values.items()))
    return out
