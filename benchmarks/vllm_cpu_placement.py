"""Where vLLM-CPU's processes may run on this machine, and what each costs at idle.

vLLM-CPU's automatic binding (VLLM_CPU_OMP_THREADS_BIND=auto) pins the model's OpenMP worker and "reserves"
a core for the rest, but reserving does not keep other processes off the worker's core. Which processes can
land beside the pinned worker decides how much of it the generator, the API server and the incumbent take
in a benchmark on shared cores. This script starts vLLM-CPU the way `vllm_vs_caikit.py` does, waits
`--settle` seconds, then prints each process of its tree with its CPU affinity and its CPU use over
`--seconds` of idle, `--samples` times (the spread, not one figure).

    .venv/bin/python benchmarks/vllm_cpu_placement.py
    .venv/bin/python benchmarks/vllm_cpu_placement.py --seconds 5 --samples 3
    .venv/bin/python benchmarks/vllm_cpu_placement.py --placement off   # vLLM's own binding only

With `--placement on` (the default, as a local rollout does: stack/cpu_placement.py) the model's threads
own all cores but the last and every other thread is confined to the last. Each thread's affinity is
printed, so the split can be checked, not assumed.
"""

import argparse
import contextlib
import os
import sys
import time

import psutil
from vllm_vs_caikit import start_vllm

from pooling_pipeline.evaluation.benchmark.conditions import process_tree
from pooling_pipeline.stack.cpu_placement import format_cpu_list, machine_placement
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import stop_pid


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after /health before sampling")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one idle sample")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--placement", choices=["on", "off"], default="on")
    args = parser.parse_args()

    print(f"cores: {psutil.cpu_count(logical=False)} physical, {psutil.cpu_count()} logical", flush=True)
    url, pid = start_vllm(StackLayout.default(), machine_placement(args.placement == "on"))
    try:
        time.sleep(args.settle)
        procs = process_tree([pid])
        use: dict[int, list[float]] = {p.pid: [] for p in procs}
        for _ in range(args.samples):
            before = {p.pid: cpu_s(p) for p in procs}
            time.sleep(args.seconds)
            for p in procs:
                use[p.pid].append(100.0 * (cpu_s(p) - before[p.pid]) / args.seconds)
        print(f"vLLM-CPU at {url}, idle, {args.samples} x {args.seconds:g} s:")
        print(f"{'pid':>7}  {'process':<40} {'affinity':<12} idle CPU % (min / median / max)")
        for p in procs:
            # python children: the interpreter's arguments (`-m vllm.entrypoints...`) say which one it is
            name = " ".join(p.cmdline()[1:3])[:40] if p.name().startswith("python") else p.name()
            values = sorted(use[p.pid])
            spread = f"{values[0]:.1f} / {values[len(values) // 2]:.1f} / {values[-1]:.1f}"
            print(f"{p.pid:>7}  {name:<40} {p.cpu_affinity()!s:<12} {spread}")
        print("threads by affinity (pid: {cores: count}):")
        for p in procs:
            by_cores: dict[str, int] = {}
            for t in p.threads():
                with contextlib.suppress(OSError):  # a thread that ended meanwhile
                    key = format_cpu_list(os.sched_getaffinity(t.id))
                    by_cores[key] = by_cores.get(key, 0) + 1
            print(f"{p.pid:>7}  {by_cores}")
        return 0
    finally:
        stop_pid(pid)


if __name__ == "__main__":
    sys.exit(main())
