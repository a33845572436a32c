"""The readiness report: rows from the instance (blocked models included), hybrid rule, regressions."""

from __future__ import annotations

import json

import dagster as dg

from pooling_pipeline.catalog import ModelKind, active_catalog
from pooling_pipeline.readiness.assets import READINESS_JSON, gather_rows, readiness_data_version
from pooling_pipeline.readiness.report import (
    ModelReadiness,
    ReportRow,
    apply_catalog_rule,
    benchmark_plot_png,
    find_regressions,
    render_markdown,
    to_dataframe,
)
from pooling_pipeline.readiness.verdict import (
    CheckOutcome,
    PerformanceInputs,
    ReadinessInputs,
    ReadinessThresholds,
    Verdict,
    decide,
)


def readiness(model: str, kind: ModelKind, vllm: str, throughput: float = 100.0, cosine: float = 0.999,
              sha: str = "a" * 40) -> ModelReadiness:
    endpoints = {"/v1/embeddings": True} if kind is ModelKind.EMBEDDING else {"/rerank": True, "/score": True}
    inputs = ReadinessInputs(
        model=model, kind=kind, commit_sha=sha, vllm_version=vllm, rollout_ready=True, endpoints=endpoints,
        quality_checks=[CheckOutcome(name="parity", passed=True)], quality_metrics={"min_cosine": cosine},
        performance=PerformanceInputs(success_rate=1.0, throughput_per_s=throughput, p99_ms=20.0,
                                      throughput_ratio=1.1, p99_ratio=0.9),
    )
    return ModelReadiness(inputs=inputs, decision=decide(inputs), dimension=384, max_model_len=256)


def report_materialization(instance: dg.DagsterInstance, r: ModelReadiness) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "migration_readiness", partition=r.inputs.model,
        metadata={READINESS_JSON: dg.MetadataValue.json(json.loads(r.model_dump_json()))}))


def test_data_version_changes_with_the_revision_or_the_vllm_release() -> None:
    emb = active_catalog().models[0]
    base = readiness_data_version(readiness(emb.name, emb.kind, "0.32.0"))
    assert readiness_data_version(readiness(emb.name, emb.kind, "0.32.0")) == base
    assert readiness_data_version(readiness(emb.name, emb.kind, "0.33.0")) != base
    assert readiness_data_version(readiness(emb.name, emb.kind, "0.32.0", sha="b" * 40)) != base


def test_blocked_model_shows_as_revisit_with_the_failing_check_and_others_go_hybrid() -> None:
    emb, rr = active_catalog().models[0], active_catalog().models[1]
    assert emb.kind is ModelKind.EMBEDDING and rr.kind is ModelKind.RERANKER
    with dg.instance_for_test() as instance:
        report_materialization(instance, readiness(emb.name, emb.kind, "0.32.0"))
        # The reranker's blocking check failed, so migration_readiness never ran for it.
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("quality_report"), check_name="reranker_parity", passed=False,
            partition=rr.name, description="spearman 0.41 < 0.99"))
        rows, previous = gather_rows(instance)
    rows = apply_catalog_rule(rows)
    by_model = {r.model: r for r in rows}
    assert by_model[rr.name].verdict is Verdict.REVISIT
    assert by_model[rr.name].status == "blocked by quality"
    assert by_model[rr.name].reasons == ["quality check reranker_parity failed: spearman 0.41 < 0.99"]
    assert by_model[emb.name].verdict is Verdict.HYBRID
    assert previous == {}
    md = render_markdown(rows, [], ReadinessThresholds())
    assert "Catalog verdict: `hybrid`" in md and "blocked by quality" in md


def test_regression_against_the_previous_vllm_version_is_reported() -> None:
    emb = active_catalog().models[0]
    with dg.instance_for_test() as instance:
        report_materialization(instance, readiness(emb.name, emb.kind, "0.32.0", throughput=100.0, cosine=0.999))
        report_materialization(instance, readiness(emb.name, emb.kind, "0.33.0", throughput=70.0, cosine=0.990))
        rows, previous = gather_rows(instance)
    assert previous[emb.name].vllm_version == "0.32.0"
    regressions = find_regressions(rows, previous, quality_tolerance=0.005, throughput_tolerance=0.10)
    assert {(g.model, g.metric) for g in regressions} == {(emb.name, "min_cosine"), (emb.name, "throughput_per_s")}
    assert "0.32.0" in regressions[0].text and "0.33.0" in regressions[0].text
    # Within tolerance: nothing reported.
    assert find_regressions(rows, previous, quality_tolerance=0.05, throughput_tolerance=0.5) == []


def test_unevaluated_model_still_has_a_row() -> None:
    with dg.instance_for_test() as instance:
        rows, _ = gather_rows(instance)
    assert [r.model for r in rows] == active_catalog().names()
    assert all(r.status == "not evaluated" and r.verdict is Verdict.REVISIT for r in rows)


def test_table_and_plot_render() -> None:
    rows = [ReportRow(model="m", kind=ModelKind.EMBEDDING, status="ok", verdict=Verdict.MIGRATE,
                      quality={"min_cosine": 0.99}, throughput_ratio=1.2, p99_ratio=0.8),
            ReportRow(model="r", kind=ModelKind.RERANKER, status="not evaluated", verdict=Verdict.REVISIT)]
    frame = to_dataframe(rows)
    assert list(frame["verdict"]) == ["migrate", "revisit"]
    assert "quality_min_cosine" in frame.columns
    assert benchmark_plot_png(rows, ReadinessThresholds()).startswith(b"\x89PNG")


def test_evaluation_results_are_read_into_the_verdict_inputs() -> None:
    """The contract with evaluation/: LoadBenchmarkResult and QualityReport as the assets produce them."""
    from pooling_pipeline.evaluation.benchmark_assets import LoadBenchmarkResult
    from pooling_pipeline.evaluation.quality import CheckOutcome as QualityCheck
    from pooling_pipeline.evaluation.quality import QualityReport
    from pooling_pipeline.readiness.assets import checks_of, performance_of, quality_metrics_of

    bench = LoadBenchmarkResult(
        model="m", started_at="2026-11-23T00:00:00Z", vllm_url="http://127.0.0.1:1", valid=False,
        invalid_reasons=["lag p99 12 ms > 5 ms"], success_rate=0.995, peak_inputs_per_s=250.0,
        p99_ms_at_reference=30.0, incumbent_peak_inputs_per_s=200.0, incumbent_p99_ms_at_reference=40.0,
        throughput_ratio=1.25, p99_ratio=0.75, incumbent_error=None)
    perf = performance_of(bench)
    assert (perf.valid, perf.invalid_reason) == (False, "lag p99 12 ms > 5 ms")
    assert (perf.throughput_per_s, perf.incumbent_throughput_per_s, perf.throughput_ratio) == (250.0, 200.0, 1.25)
    assert (perf.p99_ms, perf.incumbent_p99_ms, perf.p99_ratio) == (30.0, 40.0, 0.75)

    report = QualityReport(model="m", kind=ModelKind.EMBEDDING, commit_sha="a" * 40, served_url="http://x",
                           served_model_name="m", min_cosine=0.9991, mean_cosine=0.9995,
                           checks={"embedding_parity": QualityCheck(passed=False, reason="cosine 0.91 < 0.99"),
                                   "dimension_matches": QualityCheck(passed=True, reason="384")})
    checks = checks_of(report)
    assert [(c.name, c.passed) for c in checks] == [("embedding_parity", False), ("dimension_matches", True)]
    assert checks[0].reason == "cosine 0.91 < 0.99"
    assert quality_metrics_of(report)["min_cosine"] == 0.9991


def test_model_whose_rollout_failed_shows_as_keep_incumbent_with_the_cause() -> None:
    from pooling_pipeline.partitions import model_partitions
    from pooling_pipeline.serving.target import RolloutError

    emb = active_catalog().models[0]

    @dg.asset(name="inference_service", partitions_def=model_partitions)
    def failing_rollout() -> None:
        raise RolloutError(f"{emb.name}: vLLM exited before it became healthy: OSError: [Errno 98] Address in use")

    job = dg.define_asset_job("model_pipeline_job", selection=[failing_rollout], partitions_def=model_partitions)
    defs = dg.Definitions(assets=[failing_rollout], jobs=[job])
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("model_pipeline_job").execute_in_process(
            instance=instance, partition_key=emb.name, raise_on_error=False)
        assert not result.success
        rows, _ = gather_rows(instance)
    row = next(r for r in rows if r.model == emb.name)
    assert (row.status, row.verdict) == ("rollout failed", Verdict.KEEP_INCUMBENT)
    assert row.reasons == [f"loads and serves: rollout failed: {emb.name}: vLLM exited before it became healthy: "
                           "OSError: [Errno 98] Address in use"]


def test_plot_shows_vllm_numbers_when_no_incumbent_was_compared() -> None:
    """Without an incumbent the ratio bars would all be empty: the plot switches to vLLM's own numbers."""
    alone = [ReportRow(model="m", kind=ModelKind.EMBEDDING, status="ok", verdict=Verdict.MIGRATE,
                       throughput_per_s=80.0, p99_ms=250.0)]
    faster = [alone[0].model_copy(update={"throughput_per_s": 160.0})]
    png = benchmark_plot_png(alone, ReadinessThresholds())
    assert png.startswith(b"\x89PNG")
    # The measured number is what is drawn (a zero-filled ratio plot would not change with it).
    assert png != benchmark_plot_png(faster, ReadinessThresholds())
