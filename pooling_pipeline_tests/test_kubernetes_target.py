"""KubernetesTarget at the wire: the real `kubernetes` client against a kmock API server on loopback."""

import pytest

from pooling_pipeline.catalog import CLUSTER_CATALOG, load_catalog
from pooling_pipeline.serving.kubernetes_target import (
    REQUIRED_PERMISSIONS,
    ClusterPermissionError,
    KubernetesTarget,
    RenderConfig,
)
from pooling_pipeline.serving.manifests import (
    SPEC_HASH_ANNOTATION,
    render_all_templates,
    render_model_manifests,
    render_release_templates,
)
from pooling_pipeline.serving.target import RolloutError, ServingTarget
from pooling_pipeline_tests.fixtures.cluster import (
    EVENTS,
    ISVC,
    NAMESPACE,
    PODS,
    ROUTES,
    RUNTIMES,
    SECRETS,
    TEMPLATES,
    TEMPLATES_NAMESPACE,
    ready_status,
)
from pooling_pipeline_tests.test_manifests import MINILM_FACTS

VLLM = "0.32.0"
NAME = "all-minilm-l6-v2"


@pytest.fixture()
def target(kube_cluster) -> KubernetesTarget:
    return KubernetesTarget(
        kubeconfig=str(kube_cluster.kubeconfig),
        render=RenderConfig(
            namespace=NAMESPACE, templates_namespace=TEMPLATES_NAMESPACE, s3_endpoint="https://s3.example.internal"
        ),
        s3_access_key_id="AKIAEXAMPLEKEY",
        s3_secret_access_key="example-secret-value",
        ready_timeout_s=1,
        poll_interval_s=0.05,
    )


def _manifests(target: KubernetesTarget, facts=MINILM_FACTS):
    entry = load_catalog(CLUSTER_CATALOG).get(NAME)
    uri = f"s3://pooling-models/models/{NAME}/{facts.commit_sha}/"
    return render_model_manifests(entry, facts, uri, VLLM, target.render_settings())


def _pod(name: str = "all-minilm-l6-v2-predictor-7d9f-abcde", *, containers=(), init=(), phase="Running") -> dict:
    def status(cname, state, restarts=0, last=None):
        return {
            "name": cname,
            "image": "img",
            "imageID": "",
            "ready": False,
            "restartCount": restarts,
            "state": state,
            "lastState": last or {},
        }

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"serving.kserve.io/inferenceservice": NAME}},
        "status": {
            "phase": phase,
            "containerStatuses": [status(*c) for c in containers],
            "initContainerStatuses": [status(*c) for c in init],
        },
    }


def _event(pod: str, reason: str, message: str, n: int = 0) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "type": "Warning",
        "reason": reason,
        "message": message,
        "metadata": {"name": f"{pod}.{n}", "namespace": NAMESPACE},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": NAMESPACE},
    }


CRASH = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}
EXITED = {"terminated": {"reason": "Error", "exitCode": 1}}


def test_kubernetes_target_is_a_serving_target(target):
    assert isinstance(target, ServingTarget) and target.target_name == "cluster"


def test_register_runtimes_applies_templates_and_runtimes_then_is_a_no_op(kube_cluster, target):
    templates = render_release_templates(VLLM, target.render_settings())
    first = target.register_runtimes(templates, VLLM)
    names = ["vllm-embedding-runtime-v0-32-0", "vllm-reranker-runtime-v0-32-0"]
    assert first.templates == first.runtimes == names
    assert first.image == f"docker.io/vllm/vllm-openai:v{VLLM}" and all(first.details["changed"].values())
    template = kube_cluster.get(TEMPLATES, TEMPLATES_NAMESPACE, names[0])
    runtime = kube_cluster.get(RUNTIMES, NAMESPACE, names[1])
    # A release reaches dashboard users only through promote: the user-facing Templates are untouched.
    assert kube_cluster.get(TEMPLATES, TEMPLATES_NAMESPACE, "vllm-embedding-runtime") is None
    assert template["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    assert runtime["spec"]["containers"][0]["command"][0] == "python3"

    kube_cluster.reset_requests()
    second = target.register_runtimes(templates, VLLM)
    assert not any(second.details["changed"].values())
    assert kube_cluster.writes() == []


def test_first_deploy_applies_everything_and_waits_for_ready(kube_cluster, target):
    kube_cluster.controller = lambda isvc: ready_status(f"http://{NAME}-predictor.{NAMESPACE}.svc.cluster.local")
    manifests = _manifests(target)
    deployment = target.deploy(manifests, vllm_version=VLLM)
    assert deployment.ready and deployment.applied and deployment.cold_start_s is not None
    # No route host yet: the headless predictor Service on the pod port (its :80 does not answer there).
    assert deployment.url == f"http://{NAME}-predictor.{NAMESPACE}.svc.cluster.local:8080"
    assert deployment.served_model_name == NAME
    assert "--max-model-len=256" in deployment.args and deployment.image.endswith(f":v{VLLM}")
    for resource, name in (
        (ISVC, NAME),
        (ROUTES, NAME),
        (SECRETS, "pooling-models-s3"),
        (RUNTIMES, "vllm-embedding-runtime-v0-32-0"),
    ):
        assert kube_cluster.get(resource, NAMESPACE, name) is not None, (resource, name)
    posted = [path for method, path in kube_cluster.writes() if method == "POST"]
    assert len(posted) == 4


def test_redeploying_an_unchanged_spec_writes_nothing(kube_cluster, target):
    kube_cluster.controller = lambda isvc: ready_status("http://x")
    manifests = _manifests(target)
    first = target.deploy(manifests, vllm_version=VLLM)
    kube_cluster.reset_requests()
    again = target.deploy(_manifests(target), vllm_version=VLLM)
    assert kube_cluster.writes() == []
    assert not again.applied and again.cold_start_s is None and again.ready
    assert again.spec_hash == first.spec_hash


def test_changed_spec_patches_only_the_inference_service(kube_cluster, target):
    kube_cluster.controller = lambda isvc: ready_status("http://x")
    target.deploy(_manifests(target), vllm_version=VLLM)
    kube_cluster.reset_requests()
    moved = MINILM_FACTS.model_copy(update={"commit_sha": "1" * 40})
    deployment = target.deploy(_manifests(target, moved), vllm_version=VLLM)
    assert deployment.applied
    assert kube_cluster.writes() == [
        ("PATCH", f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices/{NAME}")
    ]
    live = kube_cluster.get(ISVC, NAMESPACE, NAME)
    assert live["spec"]["predictor"]["model"]["storage"]["path"].endswith("1" * 40)


def test_route_host_becomes_the_endpoint_url(kube_cluster, target):
    kube_cluster.controller = lambda isvc: ready_status("http://internal")
    kube_cluster.put(
        ROUTES,
        NAMESPACE,
        {
            "apiVersion": "route.openshift.io/v1",
            "kind": "Route",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"host": f"{NAME}.apps.example.com"},
        },
    )
    deployment = target.deploy(_manifests(target), vllm_version=VLLM)
    assert deployment.url == f"https://{NAME}.apps.example.com"
    assert deployment.details["internal_url"] == f"http://{NAME}-predictor.{NAMESPACE}.svc.cluster.local:8080"


def test_secret_values_never_appear_in_the_deployment_record(kube_cluster, target):
    kube_cluster.controller = lambda isvc: ready_status("http://x")
    deployment = target.deploy(_manifests(target), vllm_version=VLLM)
    assert "example-secret-value" not in deployment.model_dump_json()
    secret = kube_cluster.get(SECRETS, NAMESPACE, "pooling-models-s3")
    assert secret["stringData"]["AWS_SECRET_ACCESS_KEY"] == "example-secret-value"  # it did reach the cluster


NOT_READY = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "PredictorNotReady"}]}}
POD = "all-minilm-l6-v2-predictor-7d9f-abcde"


@pytest.mark.parametrize(
    ("cause", "containers", "init", "events", "logs"),
    [
        (
            "max_model_len_too_long",
            [("kserve-container", CRASH, 3, EXITED)],
            [],
            [],
            {
                "kserve-container": "ValueError: User-specified max_model_len (512) is greater than the derived "
                "max_model_len (max_seq_length=256 in sentence_bert_config.json)."
            },
        ),
        (
            "cuda_out_of_memory",
            [("kserve-container", CRASH, 2, EXITED)],
            [],
            [],
            {"kserve-container": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB."},
        ),
        (
            "gpu_memory_utilization_too_high",
            [("kserve-container", CRASH, 2, EXITED)],
            [],
            [],
            {
                "kserve-container": "ValueError: Free memory on device (3.2/79.1 GiB) on startup is less than desired "
                "GPU memory utilization (0.3, 23.7 GiB)."
            },
        ),
        (
            "architecture_not_supported",
            [("kserve-container", CRASH, 1, EXITED)],
            [],
            [],
            {"kserve-container": "ValueError: Model architectures ['NewBertModel'] are not supported for now."},
        ),
        (
            "cache_dir_not_writable",
            [("kserve-container", CRASH, 4, EXITED)],
            [],
            [],
            {"kserve-container": "PermissionError: [Errno 13] Permission denied: '/.cache'"},
        ),
        (
            "python_not_found",
            [
                (
                    "kserve-container",
                    {
                        "waiting": {
                            "reason": "RunContainerError",
                            "message": 'exec: "python": executable file not found in $PATH',
                        }
                    },
                    1,
                )
            ],
            [],
            [("Failed", 'Error: container create failed: exec: "python": executable file not found in $PATH')],
            {},
        ),
        (
            "model_not_found",
            [("kserve-container", {"waiting": {"reason": "PodInitializing"}}, 0)],
            [("storage-initializer", CRASH, 3, EXITED)],
            [],
            {
                "storage-initializer": "botocore.exceptions.ClientError: An error occurred (NoSuchKey) when calling the "
                "GetObject operation: The specified key does not exist."
            },
        ),
        (
            "gpu_unschedulable",
            [],
            [],
            [
                (
                    "FailedScheduling",
                    "0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available",
                )
            ],
            {},
        ),
    ],
)
def test_failed_rollout_is_diagnosed_from_conditions_events_and_logs(
    kube_cluster, target, cause, containers, init, events, logs
):
    kube_cluster.controller = lambda isvc: NOT_READY
    kube_cluster.put(
        PODS, NAMESPACE, _pod(POD, containers=containers, init=init, phase="Pending" if not containers else "Running")
    )
    for n, (reason, message) in enumerate(events):
        kube_cluster.put(EVENTS, NAMESPACE, _event(POD, reason, message, n))
    for container, text in logs.items():
        kube_cluster.logs[POD, container] = "INFO loading weights\n" + text + "\n"
    with pytest.raises(RolloutError) as failure:
        target.deploy(_manifests(target), vllm_version=VLLM)
    assert failure.value.diagnosis == cause
    assert "Fix:" in str(failure.value) and "condition Ready=False" in failure.value.evidence


def test_crash_loop_fails_fast_instead_of_waiting_for_the_timeout(kube_cluster, target):
    kube_cluster.controller = lambda isvc: NOT_READY
    kube_cluster.put(PODS, NAMESPACE, _pod(POD, containers=[("kserve-container", CRASH, 5, EXITED)]))
    slow = target.model_copy(update={"ready_timeout_s": 60})
    with pytest.raises(RolloutError, match="failed: container kserve-container CrashLoopBackOff"):
        slow.deploy(_manifests(slow), vllm_version=VLLM)


def test_rollout_times_out_with_the_evidence_it_has(kube_cluster, target):
    kube_cluster.controller = lambda isvc: NOT_READY
    with pytest.raises(RolloutError, match=r"not Ready after 1 s") as failure:
        target.deploy(_manifests(target), vllm_version=VLLM)
    assert failure.value.diagnosis is None
    assert "PredictorNotReady" in failure.value.evidence


def test_forbidden_call_names_the_missing_verb_resource_and_namespace(kube_cluster, target):
    kube_cluster.deny("create", "template.openshift.io", "templates")
    with pytest.raises(ClusterPermissionError) as failure:
        target.register_runtimes(render_all_templates(VLLM, target.render_settings()), VLLM)
    message = str(failure.value)
    assert "cannot create templates.template.openshift.io" in message
    assert TEMPLATES_NAMESPACE in message and "k8s/rbac.yaml" in message
    assert failure.value.diagnosis == "rbac_forbidden"


def test_forbidden_pod_log_read_is_reported_not_swallowed(kube_cluster, target):
    kube_cluster.controller = lambda isvc: NOT_READY
    kube_cluster.put(PODS, NAMESPACE, _pod(POD, containers=[("kserve-container", CRASH, 2, EXITED)]))
    kube_cluster.deny("get", "", "pods/log")
    with pytest.raises(ClusterPermissionError, match="cannot get pods/log in namespace 'pooling-models'"):
        target.deploy(_manifests(target), vllm_version=VLLM)


def test_every_call_the_target_makes_is_a_declared_permission(kube_cluster, target):
    # A full failing rollout walks every code path (apply, wait, pods, events, logs); _Api.call asserts
    # each call against REQUIRED_PERMISSIONS, so reaching the RolloutError proves the list is complete.
    kube_cluster.controller = lambda isvc: NOT_READY
    kube_cluster.put(PODS, NAMESPACE, _pod(POD, containers=[("kserve-container", CRASH, 2, EXITED)]))
    kube_cluster.logs[POD, "kserve-container"] = "boom\n"
    target.register_runtimes(render_release_templates(VLLM, target.render_settings()), VLLM)
    with pytest.raises(RolloutError):
        target.deploy(_manifests(target), vllm_version=VLLM)
    resources = {(p.group, p.resource) for p in REQUIRED_PERMISSIONS}
    assert ("", "pods/log") in resources and ("serving.kserve.io", "inferenceservices") in resources
    assert not any(p.verb in {"update", "*"} for p in REQUIRED_PERMISSIONS)
    # The only delete: releasing a validated model's GPU (test_release.py walks that path).
    assert {(p.group, p.resource) for p in REQUIRED_PERMISSIONS if p.verb == "delete"} == {
        ("serving.kserve.io", "inferenceservices")
    }


def test_serving_assets_register_and_roll_out_through_the_cluster_target(kube_cluster, target):
    import dagster as dg

    from pooling_pipeline.ingest.model_facts import Snapshot
    from pooling_pipeline.ingest.s3_transfer import S3ModelLocation
    from pooling_pipeline.serving.assets import inference_service, serving_runtime

    kube_cluster.controller = lambda isvc: ready_status("http://predictor")
    registered = serving_runtime(dg.build_asset_context(partition_key=VLLM), serving=target)
    assert registered.value.runtimes == ["vllm-embedding-runtime-v0-32-0", "vllm-reranker-runtime-v0-32-0"]
    assert "```yaml" in registered.metadata["templates"].value
    # kmock serves no CRDs: the packaged ones are used, and the metadata says why.
    validation = registered.metadata["validation"].value
    assert "validated against the packaged KServe CRDs" in validation and "could not be read" in validation
    assert registered.metadata["vllm_version"].value == VLLM

    kube_cluster.reset_requests()
    location = S3ModelLocation(
        uri=f"s3://pooling-models/models/{NAME}/{MINILM_FACTS.commit_sha}/",
        bucket="pooling-models",
        prefix=f"models/{NAME}/{MINILM_FACTS.commit_sha}/",
        commit_sha=MINILM_FACTS.commit_sha,
        files=MINILM_FACTS.files,
        total_bytes=1,
        manifest_key="x",
    )
    out = inference_service(
        dg.build_asset_context(partition_key=NAME),
        hf_snapshot=Snapshot(facts=MINILM_FACTS, local_path="/nonexistent"),
        s3_model=location,
        serving_runtime=registered.value,
        serving=target,
    )
    assert out.value.ready and out.value.url == f"http://{NAME}-predictor.{NAMESPACE}.svc.cluster.local:8080"
    validation = out.metadata["validation"].value
    assert f"InferenceService {NAME}: validated against" in validation
    assert "Secret pooling-models-s3: not validated:" in validation and "Route" in validation
    # The runtime registered by serving_runtime is the one the model uses: deploy does not rewrite it.
    assert not any("servingruntimes" in path for _, path in kube_cluster.writes())
    assert out.data_version.value == out.value.spec_hash[:24]
    manifests_md = out.metadata["manifests"].value
    assert "<details>" in manifests_md and "InferenceService" in manifests_md
    assert "example-secret-value" not in manifests_md and "<redacted>" in manifests_md
    assert out.metadata["cold_start_s"].value >= 0 and out.metadata["vllm_version"].value == VLLM
    assert "--runner=pooling" in out.metadata["args"].value


def test_permission_rules_grant_templates_only_in_the_templates_namespace():
    from pooling_pipeline.serving.kubernetes_target import permission_rules

    assert permission_rules("templates") == [
        {"apiGroups": ["template.openshift.io"], "resources": ["templates"], "verbs": ["create", "get", "patch"]}
    ]
    models = {(r["apiGroups"][0], r["resources"][0]): r["verbs"] for r in permission_rules("models")}
    assert ("template.openshift.io", "templates") not in models
    assert models[("", "pods/log")] == ["get"] and models[("", "events")] == ["list"]


def test_serving_runtime_materialises_with_the_cluster_target_as_the_serving_resource(kube_cluster, target):
    import dagster as dg

    from pooling_pipeline.partitions import vllm_release_partitions
    from pooling_pipeline.serving.assets import serving_runtime

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(vllm_release_partitions.name, [VLLM])
    result = dg.materialize([serving_runtime], partition_key=VLLM, resources={"serving": target}, instance=instance)
    assert result.success
    registration = result.output_for_node("serving_runtime")
    assert registration.target == "cluster" and registration.vllm_version == VLLM
    assert kube_cluster.get(RUNTIMES, NAMESPACE, "vllm-embedding-runtime-v0-32-0") is not None
