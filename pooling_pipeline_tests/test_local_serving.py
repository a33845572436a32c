"""The local target for real: vLLM-CPU processes started from the rendered KServe manifests, models from S3.

Slow (each server takes ~30-60 s to start on 2 cores) but in CI: the servers are session fixtures
(fixtures/serving.py) shared with the quality and load tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from pooling_pipeline.ingest.s3_transfer import MANIFEST_NAME
from pooling_pipeline.serving.cpu_adaptation import get_flag
from pooling_pipeline.serving.local_runtime import current_deployment, rss_bytes
from pooling_pipeline.serving.manifests import render_all_templates
from pooling_pipeline.serving.target import RolloutError
from pooling_pipeline.stack.cpu_placement import plan_placement
from pooling_pipeline.stack.processes import group_members, pid_alive

pytestmark = pytest.mark.slow


def _post(url: str, body: dict) -> dict:
    resp = httpx.post(url, json=body, timeout=60.0)
    assert resp.status_code == 200, f"{url}: HTTP {resp.status_code} {resp.text[:500]}"
    return resp.json()


def test_minilm_from_s3_answers_embeddings_with_384_dims(minilm_deployment, minilm_ingested):
    dep = minilm_deployment
    assert dep.ready and dep.applied and dep.target == "local"
    assert dep.url.startswith("http://127.0.0.1:")
    assert dep.cold_start_s is not None and dep.cold_start_s > 0
    assert pid_alive(dep.details["pid"])
    # The storage initializer wrote the verified revision (with its manifest) where --model points.
    model_dir = dep.details["model_dir"]
    assert get_flag(dep.args, "--model") == model_dir
    assert minilm_ingested.location.commit_sha in model_dir
    assert (Path(model_dir) / MANIFEST_NAME).is_file()
    assert any(a["item"] == "--gpu-memory-utilization" for a in dep.details["adaptations"])

    body = _post(
        f"{dep.url}/v1/embeddings",
        {"model": dep.served_model_name, "input": ["A man is eating food.", "Ein Mann isst."]},
    )
    vectors = [item["embedding"] for item in body["data"]]
    assert len(vectors) == 2
    assert all(len(v) == 384 for v in vectors)
    assert vectors[0] != vectors[1]
    print(f"MiniLM cold start {dep.cold_start_s:.1f} s, RSS {rss_bytes(dep.details['pid']) / 2**20:.0f} MiB")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="placement needs two cores to split")
def test_the_model_threads_own_their_cores_and_everything_else_runs_on_the_service_cores(minilm_deployment):
    """The local rollout's CPU placement (stack/cpu_placement.py), checked on the real vLLM-CPU process tree:
    VLLM_CPU_OMP_THREADS_BIND took (its worker's threads are on the model cores) and no other thread of the
    server may run there."""
    dep = minilm_deployment
    placement = plan_placement(os.sched_getaffinity(0))
    assert placement is not None
    assert dep.details["service_cores"] == list(placement.service_cores)
    assert dep.details["cpu_placement_problem"] is None
    assert dep.details["cpu_placement"]["model_threads"] > 0
    model, service = set(placement.model_cores), set(placement.service_cores)
    on_model = on_service = 0
    for pid in group_members(dep.details["pid"]):
        for tid in (int(t) for t in os.listdir(f"/proc/{pid}/task")):
            cores = os.sched_getaffinity(tid)
            assert cores in (model, service), f"thread {tid} of process {pid} may run on {cores}"
            on_model += cores == model
            on_service += cores == service
    assert on_model > 0 and on_service > 0
    # The API server itself (the process the PID file names) is on the service side.
    assert os.sched_getaffinity(dep.details["pid"]) == service


def test_cross_encoder_answers_score_and_both_rerank_apis(cross_encoder_deployment):
    dep = cross_encoder_deployment
    name = dep.served_model_name
    docs = ["Paris is the capital of France.", "Bananas are yellow.", "France's capital city is Paris."]

    score = _post(f"{dep.url}/v1/score", {"model": name, "text_1": "capital of France", "text_2": docs})
    assert len(score["data"]) == 3
    assert all(isinstance(item["score"], float) for item in score["data"])

    for path in ("/v1/rerank", "/v2/rerank"):
        rerank = _post(f"{dep.url}{path}", {"model": name, "query": "capital of France", "documents": docs})
        results = rerank["results"]
        assert sorted(r["index"] for r in results) == [0, 1, 2], path
        scores = [r["relevance_score"] for r in results]
        assert scores == sorted(scores, reverse=True), f"{path} must return results best first"


def test_redeploy_with_unchanged_spec_is_a_noop(local_serving_target, minilm_ingested, minilm_deployment):
    again = local_serving_target.deploy(minilm_ingested.manifests, vllm_version=minilm_deployment.vllm_version)
    assert again.applied is False
    assert again.cold_start_s is None
    assert again.details["pid"] == minilm_deployment.details["pid"]
    assert again.url == minilm_deployment.url
    assert again.spec_hash == minilm_deployment.spec_hash
    assert httpx.get(f"{again.url}/health", timeout=5).status_code == 200


def test_max_model_len_above_the_model_limit_is_refused_with_its_diagnosis(local_serving_target, minilm_ingested):
    """hf_snapshot would stop 512 for MiniLM (limit 256); here the guard is bypassed on purpose by editing
    the rendered InferenceService, to prove the real server refuses it and the rollout says why."""
    manifests = minilm_ingested.manifests.model_copy(deep=True)
    assert minilm_ingested.snapshot.facts.effective_max_model_len == 256
    manifests.model = "minilm-too-long"  # its own deployment: the shared MiniLM server stays up
    isvc = manifests.inference_service
    isvc["metadata"]["name"] = "minilm-too-long"
    model = isvc["spec"]["predictor"]["model"]
    model["args"] = ["--max-model-len=512" if a.startswith("--max-model-len") else a for a in model["args"]]

    with pytest.raises(RolloutError) as caught:
        local_serving_target.deploy(manifests, vllm_version="0.32.0")
    error = caught.value
    assert error.diagnosis is not None, str(error)
    assert "max_model_len" in error.diagnosis
    assert "512" in error.diagnosis and "greater than the derived max_model_len" in error.diagnosis
    assert "max_position_embeddings=256" in error.diagnosis  # the limit, quoted from the server
    assert "max_model_len" in str(error) and "catalog" in str(error)  # names the fix
    assert "User-specified max_model_len (512)" in error.evidence
    layout = local_serving_target.layout()
    key = f"{local_serving_target.namespace}.minilm-too-long"
    assert current_deployment(layout, key) is None  # the failed process is gone, not left half-alive


def test_register_runtimes_checks_the_templates_run_in_the_vllm_env(local_serving_target, vllm_python):
    templates = render_all_templates("0.32.0", local_serving_target.render_settings())
    registration = local_serving_target.register_runtimes(templates, "0.32.0")
    assert registration.target == "local"
    assert registration.runtimes == ["vllm-embedding-runtime", "vllm-reranker-runtime"]
    assert registration.image == str(vllm_python.parent.parent)
    assert registration.details["vllm_reported_version"].startswith("0.32")


def test_serving_assets_roll_out_through_the_local_target_without_restarting_a_running_model(
    local_stack, local_serving_target, minilm_deployment
):
    """serving_runtime + inference_service as Dagster runs them: same manifests as the fixture rendered, so
    the running server is found unchanged (no second vLLM start) and its URL is the asset's value."""
    import dagster as dg

    from pooling_pipeline.ingest.assets import hf_snapshot, s3_model
    from pooling_pipeline.resources.hub import HubResource
    from pooling_pipeline.serving.assets import inference_service, serving_runtime

    resources = {
        "s3": local_serving_target.s3,
        "hub": HubResource(
            endpoint=local_stack.state.hub_endpoint, token=None, cache_dir=str(local_stack.layout.hf_cache)
        ),
        "serving": local_serving_target,
    }
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("vllm_releases", ["0.32.0"])
    assets = [hf_snapshot, s3_model, serving_runtime, inference_service]
    dg.materialize(
        assets,
        selection=[hf_snapshot, s3_model],
        partition_key="all-minilm-l6-v2",
        resources=resources,
        instance=instance,
    )
    runtime = dg.materialize(
        assets, selection=[serving_runtime], partition_key="0.32.0", resources=resources, instance=instance
    )
    assert runtime.output_for_node("serving_runtime").target == "local"
    result = dg.materialize(
        assets, selection=[inference_service], partition_key="all-minilm-l6-v2", resources=resources, instance=instance
    )
    deployment = result.output_for_node("inference_service")
    assert deployment.applied is False, "an unchanged spec must not restart the running server"
    assert deployment.url == minilm_deployment.url
    assert deployment.details["pid"] == minilm_deployment.details["pid"]


def test_a_rollout_failure_a_finding_explains_names_the_finding_and_its_workaround(tmp_path) -> None:
    from pooling_pipeline.serving.local_runtime import _rollout_error

    # vLLM's root cause sits far above the last lines it prints ("see root cause above").
    log = tmp_path / "vllm.log"
    cause = "ValueError: Cannot resolve attention scaling expression 'self.head_dim ** (-0.5)' in ModernBertAttention"
    log.write_text("\n".join(["INFO starting", cause, *[f"  frame {i}" for i in range(200)], "RuntimeError: x"]))
    error = _rollout_error("modernbert-base", log, "exited before it became healthy", "modernbert-base")
    assert "known finding modernbert-mlm-checkpoint-refused" in str(error)
    assert "--hf-overrides" in str(error) and error.diagnosis
    # Another model's log with the same text is not explained by a finding recorded for ModernBERT.
    other = _rollout_error("bge-base-en-v1.5", log, "exited before it became healthy", "bge-base-en-v1.5")
    assert "known finding" not in str(other) and "no known cause" in str(other)
