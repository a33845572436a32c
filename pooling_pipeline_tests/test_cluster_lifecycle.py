"""A model's life on the cluster after its first rollout, at the wire (real `kubernetes` client, kmock):
promote / rollback of the user-facing runtime Templates, a runtime-only change rolling the
InferenceService, the GPU released after evaluation and deployed again, and the token-auth objects."""

import pytest

from pooling_pipeline.serving.kubernetes_target import KubernetesTarget, RenderConfig
from pooling_pipeline.serving.manifests import (
    RUNTIME_HASH_ANNOTATION,
    SPEC_HASH_ANNOTATION,
    STOP_ANNOTATION,
    render_all_templates,
    render_release_templates,
)
from pooling_pipeline.serving.runtimes import PREVIOUS_ANNOTATION, PROMOTED_ANNOTATION, PromotionError
from pooling_pipeline.serving.target import ReleaseAction
from pooling_pipeline_tests.fixtures.cluster import (
    ISVC,
    NAMESPACE,
    RUNTIMES,
    SECRETS,
    TEMPLATES,
    TEMPLATES_NAMESPACE,
    ready_status,
)
from pooling_pipeline_tests.test_kubernetes_target import NAME, VLLM, _manifests

USER_FACING = ("vllm-embedding-runtime", "vllm-reranker-runtime")


def _target(kube_cluster, **render) -> KubernetesTarget:
    return KubernetesTarget(
        kubeconfig=str(kube_cluster.kubeconfig),
        render=RenderConfig(
            namespace=NAMESPACE,
            templates_namespace=TEMPLATES_NAMESPACE,
            s3_endpoint="https://s3.example.internal",
            **render,
        ),
        s3_access_key_id="AKIAEXAMPLEKEY",
        s3_secret_access_key="example-secret-value",
        ready_timeout_s=1,
        poll_interval_s=0.05,
    )


@pytest.fixture()
def target(kube_cluster) -> KubernetesTarget:
    return _target(kube_cluster)


def _register(target: KubernetesTarget, version: str, **render_changes) -> None:
    settings = target.render_settings().model_copy(update=render_changes)
    target.register_runtimes(render_release_templates(version, settings), version)


def _user_facing(kube_cluster, name: str = USER_FACING[0]) -> dict | None:
    return kube_cluster.get(TEMPLATES, TEMPLATES_NAMESPACE, name)


# ---------------------------------------------------------------- promote and rollback


def test_promote_copies_the_validated_release_into_the_user_facing_templates(kube_cluster, target):
    _register(target, VLLM)
    assert target.promoted_version() is None and _user_facing(kube_cluster) is None

    record = target.promote(VLLM)

    assert record.promoted == VLLM and record.previous is None and record.changed
    for name in USER_FACING:
        live = _user_facing(kube_cluster, name)
        assert live["metadata"]["labels"]["opendatahub.io/dashboard"] == "true"
        assert live["metadata"]["annotations"][PROMOTED_ANNOTATION] == VLLM
        assert PREVIOUS_ANNOTATION not in live["metadata"]["annotations"]
        assert live["objects"][0]["metadata"]["name"] == name
    # What users get is the release's runtime as registered: the same as a fresh user-facing render.
    fresh = render_all_templates(VLLM, target.render_settings())[0]
    assert _user_facing(kube_cluster)["objects"][0]["spec"] == fresh["objects"][0]["spec"]
    assert target.promoted_version() == VLLM  # read back from the cluster, the record


def test_a_registered_but_unpromoted_release_never_reaches_the_user_facing_templates(kube_cluster, target):
    _register(target, VLLM)
    target.promote(VLLM)
    _register(target, "0.33.0")
    live = _user_facing(kube_cluster)
    assert live["metadata"]["annotations"][PROMOTED_ANNOTATION] == VLLM
    assert live["objects"][0]["spec"]["containers"][0]["image"].endswith(f":v{VLLM}")


def test_rollback_returns_to_the_previous_release_which_stayed_registered(kube_cluster, target):
    _register(target, VLLM)
    target.promote(VLLM)
    _register(target, "0.33.0")
    promoted = target.promote("0.33.0")
    assert (promoted.promoted, promoted.previous) == ("0.33.0", VLLM)
    assert _user_facing(kube_cluster)["objects"][0]["spec"]["containers"][0]["image"].endswith(":v0.33.0")

    back = target.rollback()

    assert (back.promoted, back.previous) == (VLLM, "0.33.0")
    for name in USER_FACING:
        live = _user_facing(kube_cluster, name)
        assert live["metadata"]["annotations"][PROMOTED_ANNOTATION] == VLLM
        assert live["objects"][0]["spec"]["containers"][0]["image"].endswith(f":v{VLLM}")
    assert kube_cluster.get(TEMPLATES, TEMPLATES_NAMESPACE, "vllm-embedding-runtime-v0-33-0") is not None


def test_promoting_the_promoted_release_again_writes_nothing_and_keeps_the_record(kube_cluster, target):
    _register(target, VLLM)
    target.promote(VLLM)
    _register(target, "0.33.0")
    target.promote("0.33.0")
    kube_cluster.reset_requests()
    again = target.promote("0.33.0")
    assert not again.changed and again.previous == VLLM
    assert kube_cluster.writes() == []


def test_promoting_an_unregistered_release_is_refused_and_changes_nothing(kube_cluster, target):
    _register(target, VLLM)
    target.promote(VLLM)
    kube_cluster.reset_requests()
    with pytest.raises(PromotionError, match=r"vLLM 0\.99\.0 is not registered.*serving_runtime"):
        target.promote("0.99.0")
    assert kube_cluster.writes() == []


def test_rollback_without_a_previous_release_says_so(kube_cluster, target):
    _register(target, VLLM)
    target.promote(VLLM)
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        target.rollback()


# ---------------------------------------------------------------- a runtime-only change rolls the model


def test_a_runtime_only_change_patches_the_inference_service(kube_cluster, target):
    kube_cluster.controller = lambda isvc: ready_status()
    target.deploy(_manifests(target), vllm_version=VLLM)
    before = kube_cluster.get(ISVC, NAMESPACE, NAME)
    kube_cluster.reset_requests()

    changed = _target(kube_cluster, gpu_memory_utilization=0.5)
    changed.deploy(_manifests(changed), vllm_version=VLLM)

    paths = [path for method, path in kube_cluster.writes() if method == "PATCH"]
    assert any(path.endswith("/servingruntimes/vllm-embedding-runtime-v0-32-0") for path in paths)
    # The InferenceService is patched too (its runtime-hash annotation moved): raw mode copies it to the pod
    # template, so the Deployment rolls even where KServe ignores ServingRuntime changes (< 3.2).
    assert any(path.endswith(f"/inferenceservices/{NAME}") for path in paths)
    after = kube_cluster.get(ISVC, NAMESPACE, NAME)
    key = RUNTIME_HASH_ANNOTATION
    assert after["metadata"]["annotations"][key] != before["metadata"]["annotations"][key]
    runtime = kube_cluster.get(RUNTIMES, NAMESPACE, "vllm-embedding-runtime-v0-32-0")
    assert "--gpu-memory-utilization=0.5" in runtime["spec"]["containers"][0]["args"]


# ---------------------------------------------------------------- GPUs released after evaluation


def test_release_deletes_the_validation_inference_service_and_a_revalidation_deploys_again(kube_cluster, target):
    kube_cluster.controller = lambda isvc: ready_status()
    deployment = target.deploy(_manifests(target), vllm_version=VLLM)
    assert deployment.gpus == 1 and deployment.held_since is not None

    record = target.release(deployment)

    assert record.action is ReleaseAction.DELETED
    assert kube_cluster.get(ISVC, NAMESPACE, NAME) is None
    assert ("DELETE", f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices/{NAME}") in (
        kube_cluster.writes()
    )
    assert record.gpus == 1 and record.held_s is not None and record.gpu_seconds == pytest.approx(record.held_s)
    # The data connection and runtime stay: they hold no GPU.
    assert kube_cluster.get(SECRETS, NAMESPACE, "pooling-models-s3") is not None

    again = target.deploy(_manifests(target), vllm_version=VLLM)
    assert again.applied and kube_cluster.get(ISVC, NAMESPACE, NAME) is not None


def test_release_stops_where_the_platform_can_and_a_revalidation_starts_it_again(kube_cluster):
    target = _target(kube_cluster, rhoai_version="2.22")
    kube_cluster.controller = lambda isvc: ready_status()
    deployment = target.deploy(_manifests(target), vllm_version=VLLM)

    record = target.release(deployment)

    assert record.action is ReleaseAction.STOPPED
    stopped = kube_cluster.get(ISVC, NAMESPACE, NAME)
    assert stopped["metadata"]["annotations"][STOP_ANNOTATION] == "true"
    assert SPEC_HASH_ANNOTATION not in stopped["metadata"]["annotations"]

    again = target.deploy(_manifests(target), vllm_version=VLLM)
    assert again.applied
    assert STOP_ANNOTATION not in kube_cluster.get(ISVC, NAMESPACE, NAME)["metadata"]["annotations"]


def test_releasing_what_is_already_gone_is_recorded_as_absent(kube_cluster, target):
    kube_cluster.controller = lambda isvc: ready_status()
    deployment = target.deploy(_manifests(target), vllm_version=VLLM)
    target.release(deployment)
    assert target.release(deployment).action is ReleaseAction.ABSENT


def test_a_forbidden_delete_names_the_verb_to_grant(kube_cluster, target):
    from pooling_pipeline.serving.kubernetes_target import ClusterPermissionError

    kube_cluster.controller = lambda isvc: ready_status()
    deployment = target.deploy(_manifests(target), vllm_version=VLLM)
    kube_cluster.deny("delete", "serving.kserve.io", "inferenceservices")
    with pytest.raises(ClusterPermissionError, match=r"cannot delete inferenceservices.serving.kserve.io"):
        target.release(deployment)


# ---------------------------------------------------------------- token authentication


def test_auth_applies_the_dashboard_identity_and_records_where_the_token_is(kube_cluster):
    target = _target(kube_cluster, endpoint_auth=True, rhoai_version="3.0")
    kube_cluster.controller = lambda isvc: ready_status()
    deployment = target.deploy(_manifests(target), vllm_version=VLLM)

    from pooling_pipeline_tests.fixtures.cluster import kmock

    sa = kube_cluster.get(kmock.resource("", "v1", "serviceaccounts"), NAMESPACE, f"{NAME}-sa")
    role = kube_cluster.get(kmock.resource("rbac.authorization.k8s.io", "v1", "roles"), NAMESPACE, f"{NAME}-view-role")
    binding = kube_cluster.get(
        kmock.resource("rbac.authorization.k8s.io", "v1", "rolebindings"), NAMESPACE, f"{NAME}-view"
    )
    token = kube_cluster.get(SECRETS, NAMESPACE, f"{NAME}-sa-token")
    assert sa is not None and binding["roleRef"]["name"] == f"{NAME}-view-role"
    assert role["rules"][0]["resourceNames"] == [NAME] and role["rules"][0]["verbs"] == ["get"]
    assert token["type"] == "kubernetes.io/service-account-token"
    isvc = kube_cluster.get(ISVC, NAMESPACE, NAME)
    assert isvc["metadata"]["annotations"]["security.opendatahub.io/enable-auth"] == "true"
    assert "security.opendatahub.io/enable-auth" not in isvc["metadata"]["labels"]  # >= 2.19: annotation only
    # The record names the Secret, never the token; in-cluster calls go to the proxy's 8443 over TLS.
    assert deployment.auth is not None and deployment.auth.secret_name == f"{NAME}-sa-token"
    assert deployment.details["internal_url"].endswith(":8443")
    assert deployment.details["internal_url"].startswith("https://")


def test_switching_auth_off_removes_the_switch_from_the_live_object(kube_cluster):
    kube_cluster.controller = lambda isvc: ready_status()
    on = _target(kube_cluster, endpoint_auth=True)
    on.deploy(_manifests(on), vllm_version=VLLM)
    live = kube_cluster.get(ISVC, NAMESPACE, NAME)
    assert live["metadata"]["labels"]["security.opendatahub.io/enable-auth"] == "true"  # version unknown: both

    off = _target(kube_cluster)
    off.deploy(_manifests(off), vllm_version=VLLM)
    live = kube_cluster.get(ISVC, NAMESPACE, NAME)
    assert "security.opendatahub.io/enable-auth" not in live["metadata"]["annotations"]
    assert "security.opendatahub.io/enable-auth" not in live["metadata"]["labels"]


def test_an_old_storage_uri_is_removed_when_the_storage_shape_changes(kube_cluster, target):
    kube_cluster.controller = lambda isvc: ready_status()
    old = _manifests(target).inference_service
    old["spec"]["predictor"]["model"]["storageUri"] = "s3://pooling-models/models/old/"
    kube_cluster.put(ISVC, NAMESPACE, {**old, "metadata": {**old["metadata"], "namespace": NAMESPACE}})

    target.deploy(_manifests(target), vllm_version=VLLM)

    model = kube_cluster.get(ISVC, NAMESPACE, NAME)["spec"]["predictor"]["model"]
    assert "storageUri" not in model and model["storage"]["key"] == "pooling-models-s3"
