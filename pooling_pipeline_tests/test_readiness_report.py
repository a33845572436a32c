"""The readiness report: rows from the instance (blocked models included), the catalog rule, regressions,
and what the report shows per model (capacity intervals, ratio, p99 at a common load, cost, profile)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pooling_pipeline.catalog import ModelKind, Role, active_catalog
from pooling_pipeline.evaluation.benchmark.schemas import KneePoint, WorkloadComparison
from pooling_pipeline.evaluation.quality import CHECKS_METADATA_KEY, CheckName, CheckOutcome, QualityReport
from pooling_pipeline.ingest.model_facts import ModelFacts, Snapshot
from pooling_pipeline.readiness.catalog_rule import decide_catalog
from pooling_pipeline.readiness.history import READINESS_JSON, gather_rows
from pooling_pipeline.readiness.inputs import readiness_inputs
from pooling_pipeline.readiness.plots import capacity_plot_png, knee_plot_png
from pooling_pipeline.readiness.report import (
    ModelReadiness,
    ReportRow,
    apply_catalog_rule,
    benchmarks_of,
    find_regressions,
    render_html,
    render_markdown,
    render_performance,
    to_dataframe,
)
from pooling_pipeline.readiness.verdict import ReadinessInputs, ReadinessThresholds, Verdict, decide
from pooling_pipeline.serving.target import Deployment
from pooling_pipeline_tests.test_verdict import bench, interval, server, workload

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def readiness(
    model: str, kind: ModelKind, vllm: str, capacity: float = 100.0, cosine: float = 0.999, sha: str = "a" * 40
) -> ModelReadiness:
    endpoints = {"/v1/embeddings": True} if kind is ModelKind.EMBEDDING else {"/rerank": True, "/score": True}
    inputs = ReadinessInputs(
        model=model,
        kind=kind,
        commit_sha=sha,
        vllm_version=vllm,
        rollout_ready=True,
        endpoints=endpoints,
        quality_checks=[CheckOutcome(name=CheckName.RANKING_CORRECT, passed=True)],
        quality_metrics={"min_cosine": cosine},
        benchmark=bench(workload(vllm=(capacity, capacity * 0.9, capacity * 1.1))),
    )
    return ModelReadiness(inputs=inputs, decision=decide(inputs), dimension=384, max_model_len=256)


def report_materialization(instance: dg.DagsterInstance, r: ModelReadiness) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "migration_readiness",
            partition=r.inputs.model,
            metadata={READINESS_JSON: dg.MetadataValue.json(json.loads(r.model_dump_json()))},
        )
    )


@pytest.fixture
def two_model_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MiniLM and the cross-encoder only: one embedding role and the reranker role, nothing unevaluated."""
    entries = [m.model_dump(mode="json", exclude_none=True) for m in active_catalog().models]
    keep = [e for e in entries if e["name"] in {"all-minilm-l6-v2", "minilm-l6-cross-encoder"}]
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": keep}))
    monkeypatch.setenv("POOLING_CATALOG", str(path))


@pytest.mark.usefixtures("two_model_catalog")
def test_blocked_model_shows_as_revisit_with_the_failing_check_and_others_go_hybrid() -> None:
    models = active_catalog().models
    emb = next(m for m in models if m.kind is ModelKind.EMBEDDING)
    rr = next(m for m in models if m.kind is ModelKind.RERANKER)
    with dg.instance_for_test() as instance:
        report_materialization(instance, readiness(emb.name, emb.kind, "0.32.0"))
        # The reranker's blocking check failed, so migration_readiness never ran for it: quality_report's own
        # materialisation carries the outcome.
        failed = CheckOutcome(name=CheckName.RERANKER_PARITY, passed=False, reason="spearman 0.41 < 0.99")
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                "quality_report",
                partition=rr.name,
                metadata={CHECKS_METADATA_KEY: dg.MetadataValue.json({failed.name.value: failed.model_dump()})},
            )
        )
        rows, previous = gather_rows(instance, active_catalog())
    rows, decision = apply_catalog_rule(rows, NOW)
    by_model = {r.model: r for r in rows}
    assert by_model[rr.name].verdict is Verdict.REVISIT
    assert by_model[rr.name].status == "blocked by quality"
    assert by_model[rr.name].reasons == ["quality check reranker_parity failed: spearman 0.41 < 0.99"]
    assert by_model[emb.name].verdict is Verdict.HYBRID and decision.verdict is Verdict.HYBRID
    assert previous == {}
    md = render_markdown(rows, decision, [], ReadinessThresholds())
    assert "Catalog verdict: `hybrid`" in md and "blocked by quality" in md
    assert "Hybrid: vLLM for embeddings, Caikit for reranker" in md


def test_regression_against_the_previous_vllm_version_is_reported() -> None:
    emb = active_catalog().models[0]
    with dg.instance_for_test() as instance:
        report_materialization(instance, readiness(emb.name, emb.kind, "0.32.0", capacity=100.0, cosine=0.999))
        report_materialization(instance, readiness(emb.name, emb.kind, "0.33.0", capacity=70.0, cosine=0.990))
        rows, previous = gather_rows(instance, active_catalog())
    assert previous[emb.name].vllm_version == "0.32.0"
    regressions = find_regressions(rows, previous, quality_tolerance=0.005, capacity_tolerance=0.10)
    assert {(g.model, g.metric) for g in regressions} == {
        (emb.name, "min_cosine"),
        (emb.name, "capacity_inputs_per_s[embeddings x1]"),
    }
    assert "0.32.0" in regressions[0].text and "0.33.0" in regressions[0].text
    # Within tolerance: nothing reported.
    assert find_regressions(rows, previous, quality_tolerance=0.05, capacity_tolerance=0.5) == []


def test_unevaluated_model_still_has_a_row_and_the_catalog_is_not_judged() -> None:
    with dg.instance_for_test() as instance:
        rows, _ = gather_rows(instance, active_catalog())
    assert [r.model for r in rows] == active_catalog().names()
    assert all(r.status == "not evaluated" and r.verdict is Verdict.REVISIT and not r.evaluated for r in rows)
    assert apply_catalog_rule(rows, NOW)[1].verdict is Verdict.REVISIT


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
            instance=instance, partition_key=emb.name, raise_on_error=False
        )
        assert not result.success
        rows, _ = gather_rows(instance, active_catalog())
    row = next(r for r in rows if r.model == emb.name)
    assert (row.status, row.verdict, row.works) == ("rollout failed", Verdict.KEEP_INCUMBENT, False)
    assert row.reasons == [
        f"loads and serves: rollout failed: {emb.name}: vLLM exited before it became healthy: "
        "OSError: [Errno 98] Address in use"
    ]


def test_upstream_models_are_read_into_the_verdict_inputs() -> None:
    """The contract with ingest, serving and evaluation: their own models, no field read by name."""
    entry = active_catalog().models[0]
    facts = ModelFacts.model_construct(commit_sha="c" * 40, dimension=384, effective_max_model_len=256)
    deployment = Deployment.model_construct(vllm_version="0.32.0", ready=True, cold_start_s=12.5)
    quality = QualityReport(
        model=entry.name,
        kind=entry.kind,
        commit_sha="c" * 40,
        served_url="http://x",
        served_model_name=entry.name,
        min_cosine=0.9991,
        mean_cosine=0.9995,
        checks={CheckName.EMBEDDING_PARITY: CheckOutcome(name=CheckName.EMBEDDING_PARITY, passed=True, reason="ok")},
    )
    benchmark = bench(workload(ratio=(1.3, 1.2, 1.4)))
    benchmark.workloads[0].vllm.searches = []  # compacted away either way
    probe = ({"/v1/embeddings": True}, {})
    inputs = readiness_inputs(entry, Snapshot(facts=facts, local_path="/gone"), deployment, quality, benchmark, probe)
    assert (inputs.commit_sha, inputs.vllm_version, inputs.cold_start_s) == ("c" * 40, "0.32.0", 12.5)
    assert inputs.quality_checks[0].name is CheckName.EMBEDDING_PARITY
    assert inputs.quality_metrics["min_cosine"] == 0.9991
    assert inputs.benchmark is not None and inputs.benchmark.workloads[0].capacity_ratio == interval(1.3, 1.2, 1.4)
    assert decide(inputs).verdict is Verdict.MIGRATE


def _measured_row() -> ReportRow:
    w = workload(ratio=(1.25, 1.1, 1.4))
    w = WorkloadComparison.model_validate(
        w.model_dump()
        | {
            "common_load_rps": 8.0,
            "p99_at_common_load_ms": {"vllm": 41.0, "incumbent": 63.5},
            "vllm": server("vllm", interval(12.0, 11.0, 13.0)).model_dump()
            | {
                "cost_per_million_inputs": 0.42,
                "knee": [
                    KneePoint(concurrency=c, requests_per_s=r, inputs_per_s=r, p99_ms=p).model_dump()
                    for c, r, p in [(1, 8, 20), (2, 12, 40), (4, 13, 90)]
                ],
            },
        }
    )
    return ReportRow(
        model="m",
        kind=ModelKind.EMBEDDING,
        role=Role.PRIMARY_EMBEDDING,
        status="served on vLLM 0.32.0",
        verdict=Verdict.MIGRATE,
        works=True,
        quality={"min_cosine": 0.99},
        benchmark=bench(w, conditions={"dtype": "float32", "cpu_threads": "2"}),
    )


def test_the_report_shows_capacity_intervals_ratio_p99_cost_and_profile() -> None:
    rows = [
        _measured_row(),
        ReportRow(
            model="r", kind=ModelKind.RERANKER, role=Role.RERANKER, status="not evaluated", verdict=Verdict.REVISIT
        ),
    ]
    performance = render_performance(benchmarks_of(rows))
    assert "| m | embeddings x1 | 100.0 | 12.0 [11.0, 13.0] | 10.0 [9.0, 11.0] | 1.25 [1.10, 1.40] |" in performance
    assert "incumbent 63.5 ms / vllm 41.0 ms at 8.0 req/s" in performance and "0.42 / —" in performance
    assert performance.rstrip(" |").endswith("demo")
    frame = to_dataframe(rows)
    assert list(frame["verdict"]) == ["migrate", "revisit"]
    assert (frame.loc[0, "capacity_ratio_low"], frame.loc[0, "profile"]) == (1.1, "demo")
    assert "quality_min_cosine" in frame.columns
    rows, decision = apply_catalog_rule(rows, NOW)
    page = render_html(rows, decision, [], {"knee": "data:image/png;base64,AAAA"})
    assert "<table" in page and "1.25 [1.10, 1.40]" in page and 'src="data:image/png;base64,AAAA"' in page
    assert "(profile demo, 3 repeats, started 2026-11-23T00:00:00Z): dtype float32; cpu_threads 2" in page


def test_the_catalog_verdict_and_its_revisit_date_are_in_the_report() -> None:
    row = _measured_row()
    rows = [row, row.model_copy(update={"model": "r", "kind": ModelKind.RERANKER, "role": Role.RERANKER})]
    rows[1] = rows[1].model_copy(update={"verdict": Verdict.KEEP_INCUMBENT, "works": False})
    decision = decide_catalog([r.outcome() for r in rows], NOW)
    md = render_markdown(rows, decision, [], ReadinessThresholds())
    assert "Catalog verdict: `hybrid`" in md
    only_minilm = [rows[0].model_copy(update={"role": Role.PRIMARY_EMBEDDING}), rows[1]]
    only_minilm.append(
        rows[1].model_copy(update={"model": "ml", "kind": ModelKind.EMBEDDING, "role": Role.MULTILINGUAL_EMBEDDING})
    )
    rows, decision = apply_catalog_rule(only_minilm, NOW)
    md = render_markdown(rows, decision, [], ReadinessThresholds())
    assert "Keep Caikit, revisit on 2027-05-23" in md and "revisit on **2027-05-23**" in md
    assert "Keep Caikit, revisit on 2027-05-23" in render_html(rows, decision, [], {})


def test_plots_render_and_follow_the_numbers() -> None:
    rows = [_measured_row()]
    png = capacity_plot_png(rows, ReadinessThresholds())
    assert png.startswith(b"\x89PNG")
    knee = knee_plot_png(rows)
    assert knee is not None and knee.startswith(b"\x89PNG")
    # Without a closed-loop sweep there is no knee to draw.
    bare = rows[0].model_copy(update={"benchmark": bench()})
    assert knee_plot_png([bare]) is None


def test_capacity_plot_shows_vllm_numbers_when_no_incumbent_was_compared() -> None:
    """Without an incumbent the ratio bars would all be empty: the plot switches to vLLM's own capacity."""
    alone = _measured_row().model_copy(update={"benchmark": bench(workload(ratio=None, incumbent=None))})
    faster = alone.model_copy(
        update={"benchmark": bench(workload(ratio=None, incumbent=None, vllm=(24.0, 22.0, 26.0)))}
    )
    png = capacity_plot_png([alone], ReadinessThresholds())
    assert png.startswith(b"\x89PNG")
    # The measured number is what is drawn (a zero-filled ratio plot would not change with it).
    assert png != capacity_plot_png([faster], ReadinessThresholds())


def test_report_files_and_metadata_name_every_output() -> None:
    from pooling_pipeline.readiness.metadata import readiness_metadata, report_files, report_metadata

    rows, decision = apply_catalog_rule([_measured_row()], NOW)
    thresholds = ReadinessThresholds()
    files = report_files(rows, decision, [], thresholds)
    assert set(files) == {
        "readiness.csv",
        "readiness.parquet",
        "readiness.md",
        "readiness.html",
        "capacity.png",
        "knee.png",
    }
    assert b"1.25 [1.10, 1.40]" in files["readiness.html"] and files["knee.png"].startswith(b"\x89PNG")
    assert b"![knee.png](knee.png)" in files["readiness.md"]  # the plots sit beside the markdown in S3
    uris = {
        f"{folder}/{name}": f"s3://b/reports/readiness/{folder}/{name}"
        for folder in ("20261123T0000Z", "latest")
        for name in files
    }
    meta = report_metadata(rows, decision, [], thresholds, files, uris)
    assert meta["catalog_verdict"].value == "migrate" and meta["catalog_action"].value == "Migrate to vLLM"
    assert meta["html"].value == "s3://b/reports/readiness/latest/readiness.html"
    assert meta["dated_copy"].value == "s3://b/reports/readiness/20261123T0000Z/"
    assert "data:image/png;base64," in meta["knee_plot"].value
    model = readiness("m", ModelKind.EMBEDDING, "0.32.0")
    per_model = readiness_metadata(model)
    assert per_model["verdict"].value == "migrate" and per_model["capacity_ratio_low"].value == 1.1
    assert "(profile demo)" in per_model["reasons"].value and "| m | embeddings x1 |" in per_model["performance"].value


def test_console_table_prints_every_model_and_the_catalog_verdict() -> None:
    from pooling_pipeline.readiness.report import console_table

    row = _measured_row().model_copy(update={"reasons": ["performance vs incumbent: all criteria pass"]})
    rows, decision = apply_catalog_rule([row], NOW)
    text = console_table(rows, decision)
    assert text.splitlines()[1].startswith("m ") and text.splitlines()[1].endswith("1.25 [1.10, 1.40]  migrate")
    assert text.splitlines()[2].strip() == "- performance vs incumbent: all criteria pass"
    assert text.splitlines()[-1].startswith("catalog: Migrate to vLLM (migrate): every role works")


def test_data_version_changes_with_the_revision_or_the_vllm_release() -> None:
    from pooling_pipeline.readiness.assets import readiness_data_version

    emb = active_catalog().models[0]
    base = readiness_data_version(readiness(emb.name, emb.kind, "0.32.0"))
    assert readiness_data_version(readiness(emb.name, emb.kind, "0.32.0")) == base
    assert readiness_data_version(readiness(emb.name, emb.kind, "0.33.0")) != base
    assert readiness_data_version(readiness(emb.name, emb.kind, "0.32.0", sha="b" * 40)) != base


def test_a_cluster_verdict_requires_the_incumbent_by_default(monkeypatch) -> None:
    from pooling_pipeline.readiness.assets import ReadinessConfig, ReportConfig

    monkeypatch.delenv("POOLING_READINESS_REQUIRE_INCUMBENT", raising=False)
    monkeypatch.setenv("POOLING_TARGET", "local")
    assert ReadinessConfig().require_incumbent is False
    assert ReadinessConfig().min_capacity_ratio == 1.0 and ReportConfig().revisit_months == 6
    monkeypatch.setenv("POOLING_TARGET", "cluster")
    assert ReadinessConfig().thresholds().require_incumbent is True


@pytest.mark.slow
def test_readiness_report_writes_every_file_to_s3_and_names_them(local_stack) -> None:
    from pooling_pipeline.readiness.assets import readiness_report
    from pooling_pipeline.resources.s3 import S3Resource

    state = local_stack.state
    s3 = S3Resource(
        endpoint_url=state.s3_endpoint,
        access_key_id=state.access_key,
        secret_access_key=state.secret_key,
        bucket=state.bucket,
    )
    # The session's bucket is shared: another test's report (test_benchmark_crash.py) may already sit under
    # reports/readiness/. Start from none, so what is counted below is this run's own output.
    client = local_stack.s3_client()
    old = client.list_objects_v2(Bucket=state.bucket, Prefix="reports/readiness/").get("Contents", [])
    for obj in old:
        client.delete_object(Bucket=state.bucket, Key=obj["Key"])
    emb = active_catalog().models[0]
    with dg.instance_for_test() as instance:
        report_materialization(instance, readiness(emb.name, emb.kind, "0.32.0"))
        result = dg.materialize([readiness_report], instance=instance, resources={"s3": s3})
        meta = result.asset_materializations_for_node("readiness_report")[0].metadata
    assert meta["html"].value == f"s3://{state.bucket}/reports/readiness/latest/readiness.html"
    keys = {o["Key"] for o in local_stack.s3_client().list_objects_v2(Bucket=state.bucket)["Contents"]}
    latest = {k.rsplit("/", 1)[1] for k in keys if k.startswith("reports/readiness/latest/")}
    assert latest == {"readiness.csv", "readiness.parquet", "readiness.md", "readiness.html", "capacity.png"}
    assert len([k for k in keys if k.startswith("reports/readiness/")]) == 2 * len(latest)  # dated copy too
    # The local reranker was never evaluated: the matrix cannot be read yet.
    assert meta["catalog_verdict"].value == "revisit" and meta["catalog_action"].value == "Evaluate the catalog"
    assert "| all-minilm-l6-v2 | embeddings x1 |" in meta["performance"].value
