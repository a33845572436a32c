"""Cluster rollout diagnosis branches at the wire (issue 13): `FailedToLoad`, `lastFailureInfo`, a stale
`observedGeneration`, API errors other than 403, and the previous container's logs.

The real `kubernetes` client talks to kmock (fixtures/cluster.py), whose stand-in KServe controller keeps
`metadata.generation` as an API server does and sets status (conditions, `modelStatus`,
`observedGeneration`) after a write and while the client polls. Each test checks what the user reads
(the cause, the fix, no secret) and what the target did (it stopped waiting at once, it read the right log).
"""

from __future__ import annotations

from typing import Any

import pytest

from pooling_pipeline.catalog import CLUSTER_CATALOG, load_catalog
from pooling_pipeline.serving.kubernetes_target import KubernetesTarget, RenderConfig
from pooling_pipeline.serving.manifests import render_model_manifests
from pooling_pipeline.serving.target import RolloutError
from pooling_pipeline_tests.fixtures.cluster import ISVC, NAMESPACE, PODS, TEMPLATES_NAMESPACE, FakeCluster
from pooling_pipeline_tests.test_manifests import MINILM_FACTS

VLLM = "0.32.0"
NAME = "all-minilm-l6-v2"
POD = f"{NAME}-predictor-7d9f-abcde"
SECRET = "example-secret-value"
MAX_LEN_ERROR = (
    "ValueError: User-specified max_model_len (512) is greater than the derived max_model_len "
    "(max_position_embeddings=256 in model's config.json)."
)
ISVC_PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices/{NAME}"


@pytest.fixture()
def target(kube_cluster: FakeCluster) -> KubernetesTarget:
    return KubernetesTarget(
        kubeconfig=str(kube_cluster.kubeconfig),
        render=RenderConfig(
            namespace=NAMESPACE, templates_namespace=TEMPLATES_NAMESPACE, s3_endpoint="https://s3.example.internal"
        ),
        s3_access_key_id="AKIAEXAMPLEKEY",
        s3_secret_access_key=SECRET,
        ready_timeout_s=1,
        poll_interval_s=0.05,
    )


def manifests(target: KubernetesTarget, commit: str | None = None):
    facts = MINILM_FACTS if commit is None else MINILM_FACTS.model_copy(update={"commit_sha": commit})
    entry = load_catalog(CLUSTER_CATALOG).get(NAME)
    uri = f"s3://pooling-models/models/{NAME}/{facts.commit_sha}/"
    return render_model_manifests(entry, facts, uri, VLLM, target.render_settings())


def isvc_gets(cluster: FakeCluster) -> int:
    return sum(1 for method, path in cluster.requests() if method == "GET" and path == ISVC_PATH)


def status(*, ready: bool, observed: int | None = None, model_status: dict | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "conditions": [
            {"type": "Ready", "status": str(ready), "reason": None if ready else "PredictorNotReady"},
            {"type": "PredictorReady", "status": str(ready)},
        ],
        "url": f"http://{NAME}-predictor.{NAMESPACE}.svc.cluster.local",
    }
    if observed is not None:
        body["observedGeneration"] = observed
    if model_status is not None:
        body["modelStatus"] = model_status
    return {"status": body}


def pod(containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": NAMESPACE, "labels": {"serving.kserve.io/inferenceservice": NAME}},
        "status": {"phase": "Running", "containerStatuses": containers, "initContainerStatuses": []},
    }


# ------------------------------------------------------------------------ FailedToLoad and lastFailureInfo


def test_failed_to_load_stops_the_wait_at_once_and_quotes_last_failure_info(kube_cluster, target):
    failed = {
        "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
        "lastFailureInfo": {"reason": "ModelLoadFailed", "message": MAX_LEN_ERROR},
        "transitionStatus": "BlockedByFailedLoad",
    }
    kube_cluster.controller = lambda isvc: status(ready=False, observed=1, model_status=failed)
    slow = target.model_copy(update={"ready_timeout_s": 120})  # the failure, not the timeout, must end it
    with pytest.raises(RolloutError) as caught:
        slow.deploy(manifests(slow), vllm_version=VLLM)
    error = caught.value
    assert "failed: model failed to load (modelStatus FailedToLoad)" in str(error)
    assert f"modelStatus.lastFailureInfo ModelLoadFailed: {MAX_LEN_ERROR}" in error.evidence
    assert error.diagnosis == "max_model_len_too_long"  # recognised from lastFailureInfo alone (no pod, no log)
    assert "Fix: set max_model_len in the catalog" in str(error)
    # The apply looks the object up once; then a single poll sees FailedToLoad and the wait ends.
    assert isvc_gets(kube_cluster) == 2, "a model that failed to load is not polled until the timeout"
    assert SECRET not in str(error)


def test_last_failure_info_without_failed_to_load_is_evidence_when_the_wait_times_out(kube_cluster, target):
    info = {"reason": "InvalidPredictorSpec", "message": "must provide only one of storageUri and storage.path"}
    kube_cluster.controller = lambda isvc: status(
        ready=False, observed=1, model_status={"states": {"targetModelState": "Pending"}, "lastFailureInfo": info}
    )
    with pytest.raises(RolloutError, match=r"not Ready after 1 s") as caught:
        target.deploy(manifests(target), vllm_version=VLLM)
    assert f"modelStatus.lastFailureInfo InvalidPredictorSpec: {info['message']}" in caught.value.evidence
    assert "condition Ready=False PredictorNotReady" in caught.value.evidence


# ------------------------------------------------------------------------ observedGeneration


def test_generation_is_kept_by_the_stand_in_api_server(kube_cluster, target):
    """The fixture's own control: a create is generation 1, a spec change 2, a write without one keeps it."""
    kube_cluster.controller = lambda isvc: status(ready=True, observed=isvc["metadata"]["generation"])
    target.deploy(manifests(target), vllm_version=VLLM)
    assert kube_cluster.get(ISVC, NAMESPACE, NAME)["metadata"]["generation"] == 1
    target.deploy(manifests(target, commit="1" * 40), vllm_version=VLLM)
    assert kube_cluster.get(ISVC, NAMESPACE, NAME)["metadata"]["generation"] == 2


def test_ready_condition_of_the_previous_generation_is_not_taken_for_the_new_spec(kube_cluster, target):
    kube_cluster.controller = lambda isvc: status(ready=True, observed=isvc["metadata"]["generation"])
    target.deploy(manifests(target), vllm_version=VLLM)

    # The spec changes; the controller has not acted yet: Ready=True still describes generation 1 for a
    # few polls, then it reconciles generation 2.
    kube_cluster.controller = None

    def lagging(isvc: dict[str, Any], reads: int) -> dict[str, Any]:
        generation = isvc["metadata"]["generation"]
        return status(ready=True, observed=generation if reads > 3 else generation - 1)

    kube_cluster.reader = lagging
    kube_cluster.reset_requests()
    slow = target.model_copy(update={"ready_timeout_s": 30})
    deployment = slow.deploy(manifests(slow, commit="1" * 40), vllm_version=VLLM)
    assert deployment.ready and deployment.applied
    assert isvc_gets(kube_cluster) >= 4, "returned on the stale Ready condition of generation 1"
    live = kube_cluster.get(ISVC, NAMESPACE, NAME)
    assert live["status"]["observedGeneration"] == live["metadata"]["generation"] == 2


def test_timeout_on_a_stale_generation_says_the_controller_has_not_acted_on_the_change(kube_cluster, target):
    kube_cluster.controller = lambda isvc: status(ready=True, observed=isvc["metadata"]["generation"])
    target.deploy(manifests(target), vllm_version=VLLM)
    kube_cluster.controller = lambda isvc: status(ready=True, observed=1)  # stuck on generation 1
    with pytest.raises(RolloutError) as caught:
        target.deploy(manifests(target, commit="1" * 40), vllm_version=VLLM)
    message = str(caught.value)
    assert "observedGeneration 1" in message and "generation 2" in message
    assert "KServe controller" in message  # where to look: the controller has not picked the change up


# ------------------------------------------------------------------------ the previous container's logs


def test_crashed_and_restarted_container_is_diagnosed_from_its_previous_log(kube_cluster, target):
    kube_cluster.controller = lambda isvc: status(ready=False, observed=1)
    container = {
        "name": "kserve-container",
        "image": "img",
        "imageID": "",
        "ready": False,
        "restartCount": 3,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},  # restarted, loading again
        "lastState": {"terminated": {"reason": "Error", "exitCode": 1}},
    }
    kube_cluster.put(PODS, NAMESPACE, pod([container]))
    kube_cluster.logs[POD, "kserve-container"] = "INFO Starting vLLM API server\nINFO loading weights\n"
    kube_cluster.previous_logs[POD, "kserve-container"] = f"INFO loading weights\n{MAX_LEN_ERROR}\n"
    with pytest.raises(RolloutError) as caught:
        target.deploy(manifests(target), vllm_version=VLLM)
    assert (POD, "kserve-container", True) in kube_cluster.log_requests
    assert caught.value.diagnosis == "max_model_len_too_long"
    assert "restarts=3" in caught.value.evidence and "last=terminated(Error 1" in caught.value.evidence


def test_missing_previous_log_does_not_hide_the_other_evidence(kube_cluster, target):
    """The previous instance's log can be gone (node restarted, log rotated): the rest still counts."""
    kube_cluster.controller = lambda isvc: status(ready=False, observed=1)
    container = {
        "name": "kserve-container",
        "image": "img",
        "imageID": "",
        "ready": False,
        "restartCount": 2,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
    }
    kube_cluster.put(PODS, NAMESPACE, pod([container]))
    with pytest.raises(RolloutError) as caught:
        target.deploy(manifests(target), vllm_version=VLLM)
    assert (POD, "kserve-container", True) in kube_cluster.log_requests
    assert "last=terminated(OOMKilled 137" in caught.value.evidence
    assert "condition Ready=False" in caught.value.evidence


# ------------------------------------------------------------------------ API errors other than 403


def test_transient_server_error_while_polling_does_not_fail_the_rollout(kube_cluster, target):
    kube_cluster.controller = lambda isvc: status(ready=False, observed=1)
    kube_cluster.reader = lambda isvc, reads: status(ready=reads > 2, observed=1)
    kube_cluster.fail(
        "get",
        "serving.kserve.io",
        "inferenceservices",
        503,
        "ServiceUnavailable",
        "etcdserver: leader changed",
        times=1,
    )
    slow = target.model_copy(update={"ready_timeout_s": 30})
    assert slow.deploy(manifests(slow), vllm_version=VLLM).ready


ADMISSION_DENIED = (
    'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: '
    "must provide only one of storageUri and storage.path"
)


@pytest.mark.parametrize(
    ("verb", "plural", "status_code", "reason", "message", "names"),
    [
        ("create", "inferenceservices", 422, "Invalid", ADMISSION_DENIED, ("InferenceService", "storage.path")),
        ("create", "inferenceservices", 409, "AlreadyExists", f'inferenceservices "{NAME}" already exists', ("409",)),
        ("get", "inferenceservices", 401, "Unauthorized", "Unauthorized", ("401", "kubeconfig")),
        ("create", "secrets", 500, "InternalError", "etcdserver: request timed out", ("Secret", "500")),
    ],
    ids=["admission-webhook-422", "conflict-409", "expired-token-401", "server-error-500"],
)
def test_api_errors_other_than_403_name_the_object_the_status_and_the_fix(
    kube_cluster, target, verb, plural, status_code, reason, message, names
):
    kube_cluster.controller = lambda isvc: status(ready=True, observed=1)
    group = "" if plural == "secrets" else "serving.kserve.io"
    kube_cluster.fail(verb, group, plural, status_code, reason, message)
    with pytest.raises(RolloutError) as caught:
        target.deploy(manifests(target), vllm_version=VLLM)
    text = str(caught.value)
    assert all(name in text for name in names), text
    assert "HTTP response headers" not in text and SECRET not in text


@pytest.mark.parametrize(
    ("verb", "plural", "status_code", "reason", "message"),
    [
        ("create", "inferenceservices", 422, "Invalid", ADMISSION_DENIED),
        ("get", "inferenceservices", 401, "Unauthorized", "Unauthorized"),
        ("create", "secrets", 500, "InternalError", "etcdserver: request timed out"),
    ],
    ids=["admission-webhook-422", "expired-token-401", "server-error-500"],
)
def test_api_errors_other_than_403_stop_the_rollout_without_leaking_the_secret(
    kube_cluster, target, verb, plural, status_code, reason, message
):
    """Today's floor, whatever the message: the rollout stops with the API's status, and the data
    connection's secret value is not in what the user reads."""
    kube_cluster.controller = lambda isvc: status(ready=True, observed=1)
    group = "" if plural == "secrets" else "serving.kserve.io"
    kube_cluster.fail(verb, group, plural, status_code, reason, message)
    with pytest.raises(RolloutError) as caught:
        target.deploy(manifests(target), vllm_version=VLLM)
    text = str(caught.value)
    assert str(status_code) in text and SECRET not in text
