"""load_benchmark: vLLM against the incumbent (Caikit), same workload, same machine, one run.

One partition is one catalog model. It runs after quality_report (whose blocking checks stop it: a
model that answers wrongly is not worth timing) on the deployment inference_service produced, and
re-runs whenever that deployment changes. Every load point is run against vLLM and the incumbent back
to back, alternating which goes first, so both see the same machine state; the ratios the verdict uses
(throughput vLLM/incumbent, p99 vLLM/incumbent) come from the same run.

Load points per workload (batch size for embeddings, documents per query for rerankers):
  - open loop at each `rates` value (Poisson or constant, seeded): latency vs offered load, and the
    p99 at the reference (lowest) rate;
  - closed loop at each `concurrency`: throughput vs concurrency, and the peak inputs/s.
Server-side latency (vLLM /metrics histogram deltas), CPU and RSS of each server's process tree, and
GPU utilisation/memory (NVML, when a GPU is visible) are recorded beside the client-side numbers.
"""


import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import httpx
from pydantic import BaseModel, Field

from pooling_pipeline.catalog import CatalogEntry, ModelKind, active_catalog
from pooling_pipeline.evaluation import plots
from pooling_pipeline.evaluation.loadgen import (
    Dialect,
    LoadSummary,
    Workload,
    WorkloadKind,
    constant_schedule,
    poisson_schedule,
    prepare,
    run_closed_loop,
    run_open_loop,
    summarize,
)
from pooling_pipeline.evaluation.resources_sampler import (
    ResourceSample,
    ResourceSampler,
    ResourceSummary,
    listener_pid,
    summarize_resources,
    tree_cpu_seconds,
)
from pooling_pipeline.evaluation.server_metrics import ServerSideSummary, scrape, server_side_summary
from pooling_pipeline.partitions import model_partitions
from pooling_pipeline.resources.config import target_name
from pooling_pipeline.resources.k8s_tags import benchmark_op_tags
from pooling_pipeline.serving.target import Deployment
from pooling_pipeline.stack.layout import StackLayout

VLLM, INCUMBENT = "vllm", "incumbent"


class Target(BaseModel):
    """An endpoint under test."""

    name: str  # "vllm" | "incumbent"
    url: str
    model: str  # served model name (vLLM) or Caikit model_id
    dialect: Dialect
    pids: list[int] = Field(default_factory=list)  # local server processes to sample (empty on a cluster)


class LoadPointResult(BaseModel):
    target: str
    workload: str  # e.g. "embeddings x16"
    batch_size: int  # inputs per request
    mode: Literal["open", "closed"]
    load: float  # offered requests/s (open) or concurrency (closed)
    summary: LoadSummary
    server_side: ServerSideSummary | None = None
    cpu_ms_per_request: float | None = None  # server process tree CPU time / successful requests


class LoadBenchmarkResult(BaseModel):
    """What migration_readiness needs from the benchmark (plus the detail behind it)."""

    model: str
    started_at: str
    vllm_url: str
    incumbent_url: str | None = None
    incumbent_error: str | None = None  # why there is no comparison, when there is none
    valid: bool  # every open-loop point kept its schedule (lag p99 within bound)
    invalid_reasons: list[str] = Field(default_factory=list)
    success_rate: float  # vLLM, all measured requests
    peak_inputs_per_s: float  # vLLM, best point of the first workload
    p99_ms_at_reference: float | None = None  # vLLM, latency from planned send, reference rate
    reference_rate: float | None = None
    incumbent_peak_inputs_per_s: float | None = None
    incumbent_p99_ms_at_reference: float | None = None
    incumbent_success_rate: float | None = None
    throughput_ratio: float | None = None  # vLLM/incumbent peak inputs/s, worst workload (>= 1 is good)
    p99_ratio: float | None = None  # vLLM/incumbent p99 at the reference rate, worst workload (<= 1 is good)
    ratios_by_workload: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    cold_start_s: float | None = None  # passed through from the rollout
    resources: dict[str, ResourceSummary] = Field(default_factory=dict)
    points: list[LoadPointResult] = Field(default_factory=list)
    results_uri: str | None = None
    plot_files: list[str] = Field(default_factory=list)


class LoadBenchmarkConfig(dg.Config):
    """Defaults are sized for the CPU demo stack: a few seconds per load point, about a minute in all."""

    duration_s: float = Field(3.0, description="measured seconds per load point (after warm-up)")
    warmup_s: float = Field(0.5, description="seconds sent first at each point and not reported")
    rates: list[float] = Field([4.0, 8.0], description="open-loop offered loads, requests/s")
    arrival: Literal["poisson", "constant"] = "poisson"
    concurrency: list[int] = Field([1, 4], description="closed-loop concurrency levels (throughput sweep)")
    batch_sizes: list[int] = Field([1, 16], description="inputs per embeddings request (16/32/64 on a GPU)")
    documents_per_query: list[int] = Field([16], description="documents per rerank request (rerankers)")
    seed: int = 0
    workers: int = Field(1, description="load generator processes (raise on big machines, high rates)")
    lag_bound_ms: float | None = Field(
        None, description="an open-loop point whose send lag p99 exceeds this is invalid; default 5 ms on a "
                          "cluster, POOLING_LOCAL_LAG_BOUND_MS (20 ms) on the embedded stack")
    timeout_s: float = 60.0
    incumbent: Literal["auto", "required", "skip"] = Field(
        "auto", description="auto: compare when the catalog's incumbent answers; required: fail when it does not")
    results_dir: str | None = Field(None, description="where plots and JSON go locally (default under the stack)")
    dcgm_metrics_url: str | None = Field(
        None, description="cluster: the DCGM exporter's /metrics URL for GPU utilisation/memory of the predictor "
                          "pod (e.g. http://nvidia-dcgm-exporter.nvidia-gpu-operator.svc:9400/metrics)")


def lag_bound_ms(config: LoadBenchmarkConfig) -> float:
    """The schedule-lag bound that makes an open-loop point invalid.

    On a cluster the generator has its own pod (k8s_tags.benchmark_op_tags): 5 ms. On the embedded stack the
    generator and vLLM-CPU share the same two cores, so the generator's lag is dominated by the server's
    CPU use; a wider bound there keeps the comparison possible, and the lag is still measured and shown.
    """
    if config.lag_bound_ms is not None:
        return config.lag_bound_ms
    if target_name() == "cluster":
        return 5.0
    return float(os.environ.get("POOLING_LOCAL_LAG_BOUND_MS", "20"))


# ---------------------------------------------------------------------------------------------- plan


def workloads_for(entry: CatalogEntry, config: LoadBenchmarkConfig) -> list[Workload]:
    if entry.kind == ModelKind.RERANKER:
        return [Workload(kind=WorkloadKind.RERANK, documents_per_query=n, seed=config.seed)
                for n in config.documents_per_query]
    return [Workload(kind=WorkloadKind.EMBEDDINGS, batch_size=b, seed=config.seed) for b in config.batch_sizes]


def probe(target: Target, workload: Workload, timeout_s: float = 30.0) -> str | None:
    """One real request; None when it succeeds, else what went wrong (for 'why no comparison')."""
    req = prepare(workload, target.dialect, target.model, distinct=1)[0]
    try:
        resp = httpx.post(target.url.rstrip("/") + req.path, content=req.body,
                          headers={"Content-Type": "application/json"}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"{target.url} unreachable ({type(exc).__name__})"
    if resp.status_code >= 400:
        return f"{target.url}{req.path} answered HTTP {resp.status_code}: {resp.text[:200]}"
    return None


def run_point(
    target: Target, workload: Workload, mode: Literal["open", "closed"], load: float, config: LoadBenchmarkConfig,
    sampler: ResourceSampler | None = None,
) -> LoadPointResult:
    requests = prepare(workload, target.dialect, target.model)
    if sampler is not None:
        sampler.phase = f"{target.name} {workload.label} {mode} {load:g}"
    before = scrape(target.url) if target.dialect is Dialect.OPENAI else None
    cpu_before = tree_cpu_seconds(target.pids)
    label = f"{target.name} {workload.label} {mode} {load:g}"
    if mode == "open":
        make = poisson_schedule if config.arrival == "poisson" else constant_schedule
        kwargs: dict[str, Any] = {"seed": config.seed} if config.arrival == "poisson" else {}
        schedule = make(load, duration_s=config.duration_s, warmup_s=config.warmup_s, **kwargs)
        result = run_open_loop(target.url, requests, schedule, workers=config.workers, timeout_s=config.timeout_s,
                               label=label)
    else:
        result = run_closed_loop(target.url, requests, concurrency=int(load), duration_s=config.duration_s,
                                 warmup_s=config.warmup_s, workers=config.workers, timeout_s=config.timeout_s,
                                 label=label)
    cpu_after = tree_cpu_seconds(target.pids)
    summary = summarize(result, lag_bound_ms=lag_bound_ms(config))
    after = scrape(target.url) if before is not None else None
    cpu_ms = None
    if cpu_before is not None and cpu_after is not None and result.records:
        ok = sum(1 for r in result.records if r.error is None)  # warm-up included: CPU was spent on it too
        cpu_ms = 1000.0 * (cpu_after - cpu_before) / ok if ok else None
    return LoadPointResult(
        target=target.name, workload=workload.label, batch_size=workload.inputs_per_request, mode=mode, load=load,
        summary=summary, server_side=server_side_summary(before, after) if before and after else None,
        cpu_ms_per_request=cpu_ms,
    )


def run_benchmark(
    targets: list[Target], workloads: list[Workload], config: LoadBenchmarkConfig, log: Any = None,
    dcgm_pod: str | None = None,
) -> tuple[list[LoadPointResult], dict[str, list[ResourceSample]], list[str]]:
    """Every (workload, load point) against every target, alternating who goes first point by point.
    Returns the points, resource samples per target and the GPU names seen."""
    points: list[LoadPointResult] = []
    # GPU numbers once (first target: vLLM): local NVML, or the cluster's DCGM exporter when configured.
    samplers = {t.name: ResourceSampler(t.pids, interval_s=0.25, gpu=(i == 0),
                                        dcgm_url=config.dcgm_metrics_url if i == 0 else None, dcgm_pod=dcgm_pod)
                for i, t in enumerate(targets)}
    for s in samplers.values():
        s.start()
    try:
        k = 0
        for workload in workloads:
            loads = [("open", float(r)) for r in config.rates] + [("closed", float(c)) for c in config.concurrency]
            for mode, load in loads:
                order = targets if k % 2 == 0 else list(reversed(targets))
                k += 1
                for target in order:
                    point = run_point(target, workload, mode, load, config, samplers[target.name])  # type: ignore[arg-type]
                    points.append(point)
                    if log is not None:
                        s = point.summary
                        log.info(f"{target.name} {workload.label} {mode} {load:g}: {s.inputs_per_s:.1f} inputs/s, "
                                 f"p99 {s.latency.p99_ms:.1f} ms, success {s.success_rate:.3f}"
                                 + ("" if s.valid else f" INVALID ({s.invalid_reason})"))
    finally:
        samples = {name: s.stop() for name, s in samplers.items()}
    gpus = next(iter(samplers.values())).gpu_names if samplers else []
    return points, samples, gpus


# ------------------------------------------------------------------------------------ pure reporting


def _peak(points: list[LoadPointResult], target: str, workload: str) -> float | None:
    """Capacity: the best closed-loop point (an open-loop point only shows the rate it was offered);
    open-loop points count only when no closed-loop sweep was run."""
    mine = [p for p in points if p.target == target and p.workload == workload and p.summary.valid]
    closed = [p.summary.inputs_per_s for p in mine if p.mode == "closed"]
    values = closed or [p.summary.inputs_per_s for p in mine]
    return max(values) if values else None


def _p99_at(points: list[LoadPointResult], target: str, workload: str, rate: float | None) -> float | None:
    for p in points:
        if p.target == target and p.workload == workload and p.mode == "open" and p.load == rate and p.summary.valid:
            lat = p.summary.latency_from_planned or p.summary.latency
            return None if math.isnan(lat.p99_ms) else lat.p99_ms
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def build_result(
    model: str, started_at: str, targets: list[Target], workloads: list[Workload], points: list[LoadPointResult],
    config: LoadBenchmarkConfig, *, incumbent_error: str | None = None, cold_start_s: float | None = None,
    resources: dict[str, ResourceSummary] | None = None,
) -> LoadBenchmarkResult:
    """The verdict's numbers from the points: worst workload wins (performance must hold for all)."""
    reference = min(config.rates) if config.rates else None
    labels = [w.label for w in workloads]
    by_workload: dict[str, dict[str, float | None]] = {}
    for label in labels:
        by_workload[label] = {
            "vllm_peak_inputs_per_s": _peak(points, VLLM, label),
            "incumbent_peak_inputs_per_s": _peak(points, INCUMBENT, label),
            "vllm_p99_ms": _p99_at(points, VLLM, label, reference),
            "incumbent_p99_ms": _p99_at(points, INCUMBENT, label, reference),
        }
        w = by_workload[label]
        w["throughput_ratio"] = _ratio(w["vllm_peak_inputs_per_s"], w["incumbent_peak_inputs_per_s"])
        w["p99_ratio"] = _ratio(w["vllm_p99_ms"], w["incumbent_p99_ms"])
    t_ratios = [w["throughput_ratio"] for w in by_workload.values() if w["throughput_ratio"] is not None]
    p_ratios = [w["p99_ratio"] for w in by_workload.values() if w["p99_ratio"] is not None]
    invalid = [f"{p.target} {p.workload} {p.mode} {p.load:g}: {p.summary.invalid_reason}"
               for p in points if not p.summary.valid]

    def success(target: str) -> float | None:
        mine = [p.summary for p in points if p.target == target]
        total = sum(s.requests for s in mine)
        return sum(s.succeeded for s in mine) / total if total else None

    first = labels[0] if labels else ""
    incumbent = next((t for t in targets if t.name == INCUMBENT), None)
    return LoadBenchmarkResult(
        model=model,
        started_at=started_at,
        vllm_url=next(t.url for t in targets if t.name == VLLM),
        incumbent_url=incumbent.url if incumbent else None,
        incumbent_error=incumbent_error,
        valid=not invalid,
        invalid_reasons=invalid,
        success_rate=success(VLLM) or 0.0,
        peak_inputs_per_s=by_workload.get(first, {}).get("vllm_peak_inputs_per_s") or 0.0,
        p99_ms_at_reference=by_workload.get(first, {}).get("vllm_p99_ms"),
        reference_rate=reference,
        incumbent_peak_inputs_per_s=by_workload.get(first, {}).get("incumbent_peak_inputs_per_s"),
        incumbent_p99_ms_at_reference=by_workload.get(first, {}).get("incumbent_p99_ms"),
        incumbent_success_rate=success(INCUMBENT) if incumbent else None,
        throughput_ratio=min(t_ratios) if t_ratios else None,
        p99_ratio=max(p_ratios) if p_ratios else None,
        ratios_by_workload=by_workload,
        cold_start_s=cold_start_s,
        resources=resources or {},
        points=points,
    )


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def summary_table(points: list[LoadPointResult]) -> str:
    """Markdown: one row per (workload, mode, load point, target)."""
    rows = [
        "| workload | mode | load | target | req/s | inputs/s | p50 ms | p90 ms | p95 ms | p99 ms | max ms "
        "| p99 from plan ms | success | errors | server e2e mean/p99 ms | CPU ms/req | valid |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for p in sorted(points, key=lambda p: (p.batch_size, p.workload, p.mode, p.load, p.target)):
        s, lat = p.summary, p.summary.latency
        planned = s.latency_from_planned.p99_ms if s.latency_from_planned else None
        server = (f"{_fmt(p.server_side.e2e.mean_ms)}/{_fmt(p.server_side.e2e.p99_ms)}"
                  if p.server_side and p.server_side.e2e else "–")
        errors = ", ".join(f"{k}: {v}" for k, v in s.errors.items()) or "–"
        load = f"{p.load:g} req/s" if p.mode == "open" else f"c={int(p.load)}"
        rows.append(
            f"| {p.workload} | {p.mode} | {load} | {p.target} | {s.requests_per_s:.1f} | {s.inputs_per_s:.1f} "
            f"| {_fmt(lat.p50_ms)} | {_fmt(lat.p90_ms)} | {_fmt(lat.p95_ms)} | {_fmt(lat.p99_ms)} | {_fmt(lat.max_ms)} "
            f"| {_fmt(planned)} | {s.success_rate:.3f} | {errors} | {server} | {_fmt(p.cpu_ms_per_request)} "
            f"| {'yes' if s.valid else 'NO: lag p99 ' + _fmt(s.lag.p99_ms if s.lag else None) + ' ms'} |"
        )
    return "\n".join(rows)


def make_plots(points: list[LoadPointResult], samples: dict[str, list[ResourceSample]], out_dir: Path) -> list[Path]:
    throughput: dict[str, list[tuple[float, float]]] = {}
    latency: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for p in points:
        name = f"{p.target} {p.workload}"
        if p.mode == "closed":
            throughput.setdefault(name, []).append((p.load, p.summary.inputs_per_s))
        else:
            lat = p.summary.latency_from_planned or p.summary.latency
            for pct in ("p50", "p99"):
                latency.setdefault(name, {}).setdefault(pct, []).append((p.load, getattr(lat, f"{pct}_ms")))
    paths = []
    if throughput:
        paths.append(plots.throughput_vs_concurrency(throughput, out_dir / "throughput_vs_concurrency.png"))
    if latency:
        paths.append(plots.latency_vs_offered_load(latency, out_dir / "latency_vs_offered_load.png"))
    if any(samples.values()):
        paths.append(plots.resources_over_time(samples, out_dir / "resources_over_time.png"))
    return paths


def results_key(prefix: str, model: str, started_at: str) -> str:
    return "/".join(p for p in (prefix.strip("/"), model, "benchmarks", f"{started_at}.json") if p)


# ----------------------------------------------------------------------------------------------- asset


@dg.asset(
    group_name="evaluation",
    partitions_def=model_partitions,
    ins={"inference_service": dg.AssetIn()},
    # A dependency, not an input: its value is not needed, only that it (and its blocking checks) passed.
    deps=["quality_report"],
    required_resource_keys={"s3"},
    pool="gpu",
    # On the cluster (k8s_job_executor) this step is its own pod, placed next to the predictor it measures.
    op_tags=benchmark_op_tags(),
    kinds={"python"},
)
def load_benchmark(
    context: dg.AssetExecutionContext,
    config: LoadBenchmarkConfig,
    inference_service: Deployment,
) -> dg.MaterializeResult:
    """Throughput and latency of one model (partition) on vLLM vs its Caikit incumbent, in one run.

    Runs after quality_report (blocking checks: a wrong model is not benchmarked) and whenever the
    deployment changes. Results: metadata (table, plottable numbers, plots), PNG/JSON files under the
    results dir, and one JSON per run in S3 at <prefix>/<model>/benchmarks/<timestamp>.json so the
    history survives the Dagster instance.
    """
    entry = active_catalog().get(context.partition_key)
    started_at = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workloads = workloads_for(entry, config)
    vllm_pid = inference_service.details.get("pid")
    targets = [Target(name=VLLM, url=inference_service.url, model=inference_service.served_model_name,
                      dialect=Dialect.OPENAI, pids=[int(vllm_pid)] if vllm_pid else [])]
    incumbent_error = None
    if config.incumbent == "skip":
        incumbent_error = "skipped by config (incumbent: skip)"
    elif entry.incumbent is None:
        incumbent_error = f"catalog entry {entry.name!r} has no incumbent: add `incumbent: {{url, model_id}}` to compare"
    else:
        inc = Target(name=INCUMBENT, url=entry.incumbent.url, model=entry.incumbent.model_id, dialect=Dialect.CAIKIT)
        incumbent_error = probe(inc, workloads[0])
        if incumbent_error is None:
            pid = listener_pid(inc.url)
            inc.pids = [pid] if pid else []
            targets.append(inc)
        elif config.incumbent == "required":
            raise dg.Failure(
                f"incumbent {entry.incumbent.url} (model_id {entry.incumbent.model_id}) is not usable: "
                f"{incumbent_error}. Start it (local stack: `pooling-pipeline stack up --with-incumbent`) or run "
                "with incumbent: auto/skip."
            )
        else:
            context.log.warning(f"no incumbent comparison: {incumbent_error}")
    error = probe(targets[0], workloads[0])
    if error:
        raise dg.Failure(f"vLLM endpoint of {entry.name} does not answer the benchmark workload: {error}. "
                         "Re-materialize inference_service, then retry.")

    t0 = time.monotonic()
    # On a cluster the predictor pods are named <isvc>-predictor-...; DCGM labels GPUs with the pod name.
    dcgm_pod = inference_service.details.get("pod") or (
        f"{entry.k8s_name}-predictor" if inference_service.target == "cluster" else None)
    points, samples, gpus = run_benchmark(targets, workloads, config, log=context.log, dcgm_pod=dcgm_pod)
    resources = {name: summarize_resources(ss, gpus if name == VLLM else []) for name, ss in samples.items()}
    result = build_result(entry.name, started_at, targets, workloads, points, config,
                          incumbent_error=incumbent_error, cold_start_s=inference_service.cold_start_s,
                          resources=resources)

    out_dir = Path(config.results_dir) if config.results_dir else (
        StackLayout.default().root / "benchmarks" / entry.name / started_at)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_paths = make_plots(points, samples, out_dir)
    result.plot_files = [str(p) for p in plot_paths]

    s3 = context.resources.s3
    key = results_key(s3.prefix, entry.name, started_at)
    result.results_uri = f"s3://{s3.bucket}/{key}"
    payload = result.model_dump_json(indent=2)
    (out_dir / "results.json").write_text(payload)
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=payload.encode(), ContentType="application/json")

    metadata: dict[str, Any] = {
        "valid": result.valid,
        "peak_inputs_per_s": dg.MetadataValue.float(float(result.peak_inputs_per_s)),
        "success_rate": dg.MetadataValue.float(float(result.success_rate)),
        "summary": dg.MetadataValue.md(summary_table(points)),
        "results_json": dg.MetadataValue.text(result.results_uri),
        "results_dir": dg.MetadataValue.path(str(out_dir)),
        "duration_s": dg.MetadataValue.float(round(time.monotonic() - t0, 1)),
    }
    if result.p99_ms_at_reference is not None:
        # One fixed key (and the rate beside it), so the UI plots one series over time.
        metadata["p99_ms_at_reference"] = dg.MetadataValue.float(result.p99_ms_at_reference)
        metadata["reference_rate"] = dg.MetadataValue.float(float(result.reference_rate or 0.0))
    for name in ("throughput_ratio", "p99_ratio", "incumbent_peak_inputs_per_s", "cold_start_s"):
        value = getattr(result, name)
        if value is not None:
            metadata[name] = dg.MetadataValue.float(float(value))
    if incumbent_error:
        metadata["incumbent"] = dg.MetadataValue.text(f"not compared: {incumbent_error}")
    if result.invalid_reasons:
        metadata["invalid_points"] = dg.MetadataValue.md("\n".join(f"- {r}" for r in result.invalid_reasons))
    vr = resources.get(VLLM)
    if vr is not None:
        for field in ("cpu_percent_mean", "rss_mb_max", "gpu_util_percent_mean", "gpu_mem_used_mb_max"):
            value = getattr(vr, field)
            if value is not None:
                metadata[f"vllm_{field}"] = dg.MetadataValue.float(float(value))
    for path in plot_paths:
        metadata[f"plot_{path.stem}"] = dg.MetadataValue.md(plots.markdown_image(path, path.stem.replace("_", " ")))
    context.log.info(f"results written to {result.results_uri} and {out_dir}")
    return dg.MaterializeResult(value=result, metadata=metadata)


BENCHMARK_ASSETS = [load_benchmark]

