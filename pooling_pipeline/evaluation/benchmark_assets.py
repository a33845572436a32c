"""load_benchmark: vLLM against the incumbent (Caikit), capacity at an SLO, repeated, with intervals.

The measurement lives in evaluation/benchmark/ (runner, search, stats, report; the contract with readiness
is benchmark/schemas.py); this module is the Dagster asset over it and its run config.
"""

from pathlib import Path
from typing import Any, Literal, get_args

import dagster as dg
from pydantic import Field, field_validator

from pooling_pipeline.catalog import active_catalog
from pooling_pipeline.evaluation import plots
from pooling_pipeline.evaluation.benchmark import report
from pooling_pipeline.evaluation.benchmark.profiles import BenchmarkPlan, default_profile, plan_for
from pooling_pipeline.evaluation.benchmark.runner import plan_targets, run_load_benchmark
from pooling_pipeline.evaluation.benchmark.schemas import LoadBenchmarkResult
from pooling_pipeline.evaluation.loadgen import Arrival
from pooling_pipeline.partitions import model_partitions
from pooling_pipeline.resources.config import default_gpu_hour_price, readiness_defaults
from pooling_pipeline.resources.k8s_tags import benchmark_op_tags
from pooling_pipeline.resources.s3 import S3Resource
from pooling_pipeline.resources.scratch import ScratchResource
from pooling_pipeline.serving.target import Deployment
from pooling_pipeline.stack.host_lock import HostUse, hold_local_host


class LoadBenchmarkConfig(dg.Config):
    """The profile (DEMO on the embedded stack, NIGHTLY on a cluster) and any override of its numbers
    (fields of benchmark/profiles.BenchmarkPlan; an override makes the profile `custom` in the report)."""

    profile: str | None = Field(None, description="demo | nightly; default: demo locally, nightly on a cluster")
    repeats: int | None = Field(None, description="capacity searches per server and workload (>= 2)")
    max_repeats: int | None = Field(None, description="repeats at most where the ratio straddles the bar (6)")
    decision_bar: float = Field(
        default_factory=lambda: readiness_defaults().min_capacity_ratio,
        gt=0,
        description="the capacity ratio readiness decides on (POOLING_READINESS_MIN_CAPACITY_RATIO): a ratio "
        "interval that straddles it gets the extra repeats",
    )
    resolution: float | None = Field(None, description="search resolution: 0.05 = within 5 %")
    requests_per_point: int | None = None
    min_window_s: float | None = None
    max_window_s: float | None = None
    warmup_s: float | None = None
    knee_window_s: float | None = None
    arrival: str | None = Field(
        None,
        description="poisson | constant; default: the profile's (both: poisson). constant spaces sends evenly: on "
        "the 2-core demo machine Caikit then gained where vLLM did not and verdicts agreed less (README)",
    )
    slo_p99_ms: float | None = Field(None, description="single-text embeddings SLO (default 100 ms)")
    batch_slo_p99_ms: float | None = Field(None, description="embeddings batches SLO (default 500 ms)")
    rerank_slo_p99_ms: float | None = Field(None, description="rerank of N documents SLO (default 500 ms)")
    batch_sizes: list[int] | None = Field(None, description="inputs per embeddings request (nightly 1/16/32/64)")
    documents_per_query: list[int] | None = None
    max_workers: int | None = Field(None, description="generator processes at most (default: CPU count)")
    incumbent: Literal["auto", "required", "skip"] = "auto"
    gpus_per_server: float | None = Field(None, description="GPUs each server holds (default 1 on a cluster)")
    gpu_hour_price: float | None = Field(
        default_factory=default_gpu_hour_price,
        description="price of one GPU-hour, for cost per million inputs (default: POOLING_GPU_HOUR_PRICE)",
    )
    results_dir: str | None = Field(None, description="where plots and JSON go (default: the scratch resource's)")
    dcgm_metrics_url: str | None = Field(None, description="cluster: DCGM exporter /metrics URL for GPU numbers")

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str | None) -> str | None:
        if value is not None and value not in ("demo", "nightly"):
            raise ValueError(f"profile {value!r} is not a benchmark profile: use demo or nightly (or leave it unset)")
        return value

    @field_validator("arrival")
    @classmethod
    def _known_arrival(cls, value: str | None) -> str | None:
        # A plain optional string: Dagster's config cannot resolve an optional Literal, and unset must mean
        # the profile's arrivals, as every other override here does.
        allowed = get_args(Arrival)
        if value is not None and value not in allowed:
            choices = " or ".join(map(repr, allowed))
            raise ValueError(f"arrival {value!r} is not an arrival process: use {choices} (or leave it unset)")
        return value

    def plan(self, target: str) -> BenchmarkPlan:
        keys = set(BenchmarkPlan.model_fields) - {"profile"}
        overrides = {k: v for k, v in self.model_dump().items() if k in keys}
        return plan_for(self.profile or default_profile(target), **overrides)


def benchmark_metadata(result: LoadBenchmarkResult, out_dir: Path, plot_paths: list[Path]) -> dict[str, Any]:
    """Tables for people, plottable numbers under fixed keys (the worst workload's), the plots."""
    meta: dict[str, Any] = {
        "profile": dg.MetadataValue.text(result.profile.value),
        "summary": dg.MetadataValue.md(report.summary_table(result)),
        "points": dg.MetadataValue.md(report.points_table(result)),
        "conditions": dg.MetadataValue.md(report.conditions_table(result)),
        "success_rate": dg.MetadataValue.float(result.success_rate),
        "results_dir": dg.MetadataValue.path(str(out_dir)),
        "duration_s": dg.MetadataValue.float(float(result.duration_s or 0.0)),
    }
    worst = result.worst_ratio() or (result.workloads[0] if result.workloads else None)
    if worst is not None:
        meta["vllm_capacity_inputs_per_s"] = dg.MetadataValue.float(worst.vllm.capacity_inputs_per_s.median)
        if worst.incumbent is not None:
            meta["incumbent_capacity_inputs_per_s"] = dg.MetadataValue.float(
                worst.incumbent.capacity_inputs_per_s.median
            )
        if worst.capacity_ratio is not None:
            for part in ("median", "low", "high"):
                meta[f"capacity_ratio_{part}"] = dg.MetadataValue.float(getattr(worst.capacity_ratio, part))
    for key, value in (
        ("results_json", result.results_uri),
        ("incumbent", result.incumbent_error and f"not compared: {result.incumbent_error}"),
        ("server_crashed", result.server_crashed),
    ):
        if value:
            meta[key] = dg.MetadataValue.text(value)
    if result.generator_limited:
        meta["generator_limited"] = dg.MetadataValue.md("\n".join(f"- {x}" for x in result.generator_limited))
    for path in plot_paths:
        meta[f"plot_{path.stem}"] = dg.MetadataValue.md(plots.markdown_image(path, path.stem.replace("_", " ")))
    return meta


@dg.asset(
    group_name="evaluation",
    partitions_def=model_partitions,
    ins={"inference_service": dg.AssetIn()},
    # A dependency, not an input: its value is not needed, only that it (and its blocking checks) passed.
    deps=["quality_report"],
    pool="gpu",
    # On the cluster (k8s_job_executor) this step is its own pod, placed next to the predictor it measures.
    op_tags=benchmark_op_tags(),
    kinds={"python"},
)
def load_benchmark(
    context: dg.AssetExecutionContext,
    config: LoadBenchmarkConfig,
    inference_service: Deployment,
    s3: S3Resource,
    scratch: ScratchResource,
) -> dg.MaterializeResult:
    """Capacity at the SLO of one model (partition) on vLLM vs its Caikit incumbent, repeated, alternating.

    Runs after quality_report (blocking checks: a wrong model is not benchmarked) and whenever the
    deployment changes. The value is benchmark/schemas.LoadBenchmarkResult; plots and JSON go to the
    results dir, and one JSON per run to S3 at <prefix>/<model>/benchmarks/<timestamp>.json.
    """
    entry, target = active_catalog().get(context.partition_key), inference_service.target
    plan = config.plan(target)
    workloads = plan.workloads(entry.kind)
    gpus = config.gpus_per_server or (1.0 if target == "cluster" else None)
    try:
        targets, why = plan_targets(entry, inference_service, workloads[0], incumbent=config.incumbent, gpus=gpus)
    except RuntimeError as exc:  # vLLM does not answer, or a required incumbent (IncumbentRequired) is missing
        raise dg.Failure(str(exc)) from exc
    if why:
        context.log.warning(f"no incumbent comparison: {why}")
    pod = inference_service.details.get("pod") or (f"{entry.k8s_name}-predictor" if target == "cluster" else None)
    # Exclusive on the local host: no other model's rollout, probe or benchmark shares its cores.
    with hold_local_host(target, HostUse.EXCLUSIVE, f"{entry.name} load benchmark", context.log.info):
        result, samples = run_load_benchmark(
            entry.name, targets, workloads, plan, log=context.log.info, incumbent_error=why,
            cold_start_s=inference_service.cold_start_s, gpu_hour_price=config.gpu_hour_price,
            dcgm_url=config.dcgm_metrics_url, dcgm_pod=pod, decision_bar=config.decision_bar,
            generator_cores=inference_service.details.get("service_cores"),
        )  # fmt: skip
    out_dir = Path(config.results_dir) if config.results_dir else scratch.benchmark_dir(entry.name, result.started_at)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_paths = report.make_plots(result, samples, out_dir)
    key = report.results_key(s3.prefix, entry.name, result.started_at)
    result.plot_files, result.results_uri = [str(p) for p in plot_paths], f"s3://{s3.bucket}/{key}"
    payload = result.model_dump_json(indent=2)
    (out_dir / "results.json").write_text(payload)
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=payload.encode(), ContentType="application/json")
    context.log.info(report.headline(result))
    return dg.MaterializeResult(value=result, metadata=benchmark_metadata(result, out_dir, plot_paths))


BENCHMARK_ASSETS = [load_benchmark]
