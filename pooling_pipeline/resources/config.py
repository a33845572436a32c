"""Every setting of the pipeline, read from the environment in one place, and the resources built from them.

`load_settings()` is the only reader of the environment outside the stack's process management: it turns
the variables into one frozen, typed `Settings` that the rest of the code receives (the resources built
here, the schedule and sensor definitions, the config defaults of the readiness and benchmark assets).
`SETTINGS_BY_ENV` lists which variable feeds which field.

One switch, POOLING_TARGET=local|cluster, chooses the resources. Secrets (S3 keys, the HF token) are
never read into `Settings`: only whether they are set. They reach the resources as `dg.EnvVar`, so
Dagster resolves them at run time and their values never appear in run config, the UI or metadata.
Plain settings (namespace, bucket, image) are shown in the UI, which is where an operator checks them.

Local: the values `pooling-pipeline stack env` prints. When they are not in the environment, the
stack's state file (written by `pooling-pipeline stack up`) supplies them, copied into this process's
environment so they still reach the resources as `dg.EnvVar`. Nothing here needs the stack to be up:
the definitions load anyway; a run that touches S3 before `stack up` stops on the unset AWS_* variable.
The run process imports this module afresh, so a stack started after the UI is picked up by the next run.

Cluster: see `CLUSTER_SETTINGS` and k8s/README.md ("Configuration: local vs cluster").
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import BaseModel, ConfigDict

from pooling_pipeline.defaults import DEFAULT_BUCKET, DEFAULT_NAMESPACE, DEFAULT_VLLM_VERSION

# Every domain imports this module; the resources (boto3, kubernetes, the local stack) are imported only by
# the functions that build them, so reading a setting stays cheap and the cluster never loads local code.
if TYPE_CHECKING:
    from pooling_pipeline.resources.hub import HubResource
    from pooling_pipeline.resources.s3 import S3Resource
    from pooling_pipeline.resources.scratch import ScratchResource
    from pooling_pipeline.serving.kubernetes_target import RenderConfig

TARGET_ENV = "POOLING_TARGET"
TARGETS = ("local", "cluster")
Target = Literal["local", "cluster"]


class TargetConfigError(ValueError):
    """The target's configuration is incomplete or wrong; the message names the variable and the fix."""


@dataclass(frozen=True)
class Setting:
    env: str
    default: str | None  # None: required (cluster) / absent (local)
    secret: bool = False
    help: str = ""


# Every variable the cluster target reads. k8s/secrets.example.yaml and k8s/values.yaml provide them;
# a test keeps the three in step.
CLUSTER_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "POOLING_NAMESPACE",
        DEFAULT_NAMESPACE,
        help="namespace of the InferenceServices (run pods run in the release namespace)",
    ),
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
    Setting(
        "POOLING_RHOAI_VERSION",
        "",
        help="OpenShift AI version, e.g. 3.0: picks the storage wiring and the auth switch (empty: works on all)",
    ),
    Setting("POOLING_ENDPOINT_AUTH", "false", help="'true': token-authenticated model endpoints (like the dashboard)"),
    Setting("POOLING_KEEP_DEPLOYED", "false", help="'true': keep every model served after its evaluation"),
)
_BY_NAME = {s.env: s for s in CLUSTER_SETTINGS}

# What `pooling-pipeline stack env` exports; the state file supplies them when the env does not.
LOCAL_STACK_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "POOLING_S3_BUCKET",
    "POOLING_S3_PREFIX",
    "HF_ENDPOINT",
)
LOCAL_DEFAULT_BUCKET = DEFAULT_BUCKET
AWS_S3_ENDPOINT = "https://s3.amazonaws.com"  # the data connection needs an explicit endpoint
S3_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

FEEDS_ENV = "POOLING_VLLM_RELEASE_FEEDS"
DEFAULT_FEEDS = "pypi=https://pypi.org/pypi/vllm/json"
DEFAULT_NIGHTLY_CRON = "0 2 * * *"
DEFAULT_REPORT_CRON = "0 6 * * *"


# ---------------------------------------------------------------- the typed settings


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class S3Settings(_Frozen):
    endpoint_url: str | None = None  # None: AWS itself
    region: str = "us-east-1"
    bucket: str | None = None  # None only on a cluster that did not set it (refused by cluster_resources)
    prefix: str = "models"
    io_prefix: str = "dagster-io"  # cluster: where the S3 IO manager keeps values between pods
    missing_credentials: tuple[str, ...] = S3_SECRETS  # names of the unset S3 secrets (values never read)


class HubSettings(_Frozen):
    endpoint: str | None = None  # None: huggingface.co
    token_set: bool = False  # HF_TOKEN is passed as dg.EnvVar only when set
    cache_dir: Path


class ClusterSettings(_Frozen):
    """What only the cluster target reads (validated only when POOLING_TARGET=cluster)."""

    in_cluster: bool
    kubeconfig: str | None = None
    context: str | None = None
    vllm_image: str
    gpu_resource_name: str
    gpu_memory_utilization: float


class ReadinessSettings(_Frozen):
    """Defaults of the verdict thresholds (ReadinessConfig / ReportConfig in readiness/assets.py)."""

    # The seed's "performance >= Caikit": the lower bound of vLLM/incumbent capacity at the SLO must reach it.
    min_capacity_ratio: float = 1.0
    revisit_months: int = 6  # "keep Caikit, revisit in 6 months"
    max_cold_start_s: float | None = None
    # None: the target decides (a cluster verdict needs the comparison, issue 11; locally it is optional).
    require_incumbent: bool | None = None


class BenchmarkSettings(_Frozen):
    # The price of one GPU-hour, for cost per million inputs beside capacity (None: no cost column).
    gpu_hour_price: float | None = None


class AutomationSettings(_Frozen):
    nightly_cron: str = DEFAULT_NIGHTLY_CRON
    nightly_tz: str = "UTC"
    report_cron: str = DEFAULT_REPORT_CRON
    release_feeds: str = DEFAULT_FEEDS
    release_sensor_interval_s: int = 3600
    hf_sensor_interval_s: int = 3600


class Settings(_Frozen):
    target: Target
    namespace: str = DEFAULT_NAMESPACE
    rhoai_version: str | None = None  # OpenShift AI version (serving/platform.py); None: unknown
    endpoint_auth: bool = False  # token-authenticated model endpoints, on both targets
    keep_deployed: bool = False  # keep every model served after its evaluation (else: per catalog entry)
    local_cpu_placement: bool = True  # local: model threads and the rest on separate cores (stack/cpu_placement.py)
    catalog: Path | None = None  # None: the target's packaged catalog (see catalog.catalog_path)
    kserve_crds: Path | None = None  # None: the cluster's CRDs, else the packaged ones (serving/crd_validation.py)
    dagster_home: Path | None = None
    local_vllm_version: str | None = None  # None: the serving resource's default
    scratch_root: Path  # benchmark results, plots and the reference cache (ScratchResource)
    s3: S3Settings
    hub: HubSettings
    cluster: ClusterSettings | None = None  # None on the local target
    readiness: ReadinessSettings = ReadinessSettings()
    benchmark: BenchmarkSettings
    automation: AutomationSettings = AutomationSettings()


# env var -> Settings field, for the README and the report (secrets: only their presence is read).
SETTINGS_BY_ENV: dict[str, str] = {
    TARGET_ENV: "target",
    "POOLING_NAMESPACE": "namespace",
    "POOLING_RHOAI_VERSION": "rhoai_version",
    "POOLING_ENDPOINT_AUTH": "endpoint_auth",
    "POOLING_KEEP_DEPLOYED": "keep_deployed",
    "POOLING_CATALOG": "catalog",
    "POOLING_KSERVE_CRDS": "kserve_crds",
    "DAGSTER_HOME": "dagster_home",
    "POOLING_LOCAL_VLLM_VERSION": "local_vllm_version",
    "POOLING_LOCAL_CPU_PLACEMENT": "local_cpu_placement",
    "POOLING_STACK_DIR": "scratch_root (local: the stack folder) and hub.cache_dir (local)",
    "POOLING_SCRATCH_DIR": "scratch_root and, locally, hub.cache_dir (<it>/hf-cache)",
    "AWS_ENDPOINT_URL": "s3.endpoint_url",
    "AWS_DEFAULT_REGION": "s3.region",
    "POOLING_S3_BUCKET": "s3.bucket",
    "POOLING_S3_PREFIX": "s3.prefix",
    "POOLING_IO_PREFIX": "s3.io_prefix",
    "AWS_ACCESS_KEY_ID": "s3.missing_credentials (presence only)",
    "AWS_SECRET_ACCESS_KEY": "s3.missing_credentials (presence only)",
    "HF_ENDPOINT": "hub.endpoint",
    "HF_TOKEN": "hub.token_set (presence only)",
    "HF_HUB_CACHE": "hub.cache_dir (cluster)",
    "HF_HOME": "hub.cache_dir (cluster, HF_HUB_CACHE unset)",
    "POOLING_IN_CLUSTER": "cluster.in_cluster",
    "KUBERNETES_SERVICE_HOST": "cluster.in_cluster (auto)",
    "KUBECONFIG": "cluster.kubeconfig (and cluster.in_cluster auto)",
    "POOLING_KUBE_CONTEXT": "cluster.context",
    "POOLING_VLLM_IMAGE": "cluster.vllm_image",
    "POOLING_GPU_RESOURCE": "cluster.gpu_resource_name",
    "POOLING_GPU_MEMORY_UTILIZATION": "cluster.gpu_memory_utilization",
    "POOLING_READINESS_MIN_CAPACITY_RATIO": "readiness.min_capacity_ratio",
    "POOLING_READINESS_REVISIT_MONTHS": "readiness.revisit_months",
    "POOLING_READINESS_MAX_COLD_START_S": "readiness.max_cold_start_s",
    "POOLING_READINESS_REQUIRE_INCUMBENT": "readiness.require_incumbent",
    "POOLING_GPU_HOUR_PRICE": "benchmark.gpu_hour_price",
    "POOLING_NIGHTLY_CRON": "automation.nightly_cron",
    "POOLING_NIGHTLY_TZ": "automation.nightly_tz",
    "POOLING_REPORT_CRON": "automation.report_cron",
    FEEDS_ENV: "automation.release_feeds",
    "POOLING_RELEASE_SENSOR_INTERVAL_S": "automation.release_sensor_interval_s",
    "POOLING_HF_SENSOR_INTERVAL_S": "automation.hf_sensor_interval_s",
}


# ---------------------------------------------------------------- reading the environment


def _get(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name, "").strip()
    return value or default


def _optional_float(env: Mapping[str, str], name: str, fix: str) -> float | None:
    value = _get(env, name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise TargetConfigError(f"{name}={value!r} is not a number: {fix}") from None


def _float(env: Mapping[str, str], name: str, default: float, fix: str) -> float:
    value = _optional_float(env, name, fix)
    return default if value is None else value


def _interval(env: Mapping[str, str], name: str, default: int) -> int:
    value = _get(env, name, "")
    return int(value) if value and value.isdigit() else default


def target_name(env: Mapping[str, str] = os.environ) -> Target:
    value = env.get(TARGET_ENV, "local").strip().lower() or "local"
    if value not in TARGETS:
        raise TargetConfigError(
            f"{TARGET_ENV}={value!r} is not a target: use 'local' (default, the embedded stack) or 'cluster' "
            "(OpenShift AI; see k8s/README.md)"
        )
    return "cluster" if value == "cluster" else "local"


def _in_cluster(env: Mapping[str, str]) -> bool:
    """POOLING_IN_CLUSTER=true|false; `auto` (default): in a pod unless a kubeconfig is given."""
    value = (_get(env, "POOLING_IN_CLUSTER") or "auto").lower()
    if value in {"1", "true", "yes"}:
        return True
    if value in {"0", "false", "no"}:
        return False
    if value == "auto":
        return bool(_get(env, "KUBERNETES_SERVICE_HOST")) and not _get(env, "KUBECONFIG")
    raise TargetConfigError(f"POOLING_IN_CLUSTER={value!r}: use true (in a pod), false (use KUBECONFIG) or auto")


def _cluster_setting(env: Mapping[str, str], name: str) -> str:
    value = _get(env, name, _BY_NAME[name].default)
    assert value is not None, name  # only optional ones are read this way
    return value


def _cluster(env: Mapping[str, str]) -> ClusterSettings:
    raw = _cluster_setting(env, "POOLING_GPU_MEMORY_UTILIZATION")
    try:
        gpu_util = float(raw)
    except ValueError:
        raise TargetConfigError(
            f"POOLING_GPU_MEMORY_UTILIZATION={raw!r} is not a number: use a fraction such as 0.3"
        ) from None
    if not 0 < gpu_util <= 1:
        raise TargetConfigError(
            f"POOLING_GPU_MEMORY_UTILIZATION={gpu_util} is outside (0, 1]: use a fraction such as 0.3"
        )
    return ClusterSettings(
        in_cluster=_in_cluster(env),
        kubeconfig=_get(env, "KUBECONFIG"),
        context=_get(env, "POOLING_KUBE_CONTEXT"),
        vllm_image=_cluster_setting(env, "POOLING_VLLM_IMAGE"),
        gpu_resource_name=_cluster_setting(env, "POOLING_GPU_RESOURCE"),
        gpu_memory_utilization=gpu_util,
    )


def _hf_cache_dir(env: Mapping[str, str], target: Target, scratch_root: Path) -> Path:
    if target == "local":
        # Beside the other local files of the steps (by default the stack folder's hf-cache/), so one
        # POOLING_SCRATCH_DIR moves every file a step keeps (tests give each step its own empty one).
        return scratch_root / "hf-cache"
    # The image sets HF_HOME under its writable home; the hub cache lives in it, as huggingface_hub does.
    explicit = _get(env, "HF_HUB_CACHE")
    if explicit:
        return Path(explicit)
    return Path(_get(env, "HF_HOME") or os.path.expanduser("~/.cache/huggingface")) / "hub"


def _scratch_root(env: Mapping[str, str], target: Target) -> Path:
    from pooling_pipeline.stack.layout import StackLayout

    explicit = _get(env, "POOLING_SCRATCH_DIR")
    if explicit:
        return Path(explicit)
    # Locally results stay beside the stack, where `make demo` users look; a run pod's filesystem is
    # ephemeral anyway (the results that count go to S3), so a temp dir (an emptyDir) is enough there.
    if target == "local":
        return StackLayout.default().root
    return Path(tempfile.gettempdir()) / "pooling-pipeline"


def _readiness(env: Mapping[str, str]) -> ReadinessSettings:
    def ratio(name: str, default: float) -> float:
        return _float(env, f"POOLING_READINESS_{name}", default, "use a number such as 0.9")

    base = ReadinessSettings()
    months = ratio("REVISIT_MONTHS", base.revisit_months)
    if months < 1 or months != int(months):
        raise TargetConfigError(f"POOLING_READINESS_REVISIT_MONTHS={months!r}: use a whole number of months such as 6")
    flag = (_get(env, "POOLING_READINESS_REQUIRE_INCUMBENT") or "").lower()
    if flag not in {"", "1", "true", "0", "false"}:
        raise TargetConfigError(f"POOLING_READINESS_REQUIRE_INCUMBENT={flag!r}: use true or false")
    return ReadinessSettings(
        min_capacity_ratio=ratio("MIN_CAPACITY_RATIO", base.min_capacity_ratio),
        revisit_months=int(months),
        max_cold_start_s=_optional_float(env, "POOLING_READINESS_MAX_COLD_START_S", "use seconds such as 120"),
        require_incumbent=None if not flag else flag in {"1", "true"},
    )


def _flag(env: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    value = (_get(env, name) or str(default)).lower()
    if value in {"1", "true", "yes"}:
        return True
    if value in {"0", "false", "no"}:
        return False
    raise TargetConfigError(f"{name}={value!r}: use true or false")


def _rhoai_version(env: Mapping[str, str]) -> str | None:
    from pooling_pipeline.serving.platform import PlatformVersionError, parse_rhoai_version

    value = _get(env, "POOLING_RHOAI_VERSION")
    try:
        parse_rhoai_version(value)
    except PlatformVersionError as exc:
        raise TargetConfigError(str(exc)) from None
    return value


def load_settings(env: Mapping[str, str] = os.environ) -> Settings:
    """The pipeline's settings from `env` (the process environment by default); see SETTINGS_BY_ENV.

    Cheap and side-effect free: callers that must see a variable set after import (sensor ticks, the
    tests) call it again. Cluster-only variables are validated only when POOLING_TARGET=cluster;
    missing required ones are reported by `cluster_resources`, so the definitions that do not need them
    (schedules, the catalog) still load.
    """
    target = target_name(env)
    local = target == "local"
    catalog, crds, home = _get(env, "POOLING_CATALOG"), _get(env, "POOLING_KSERVE_CRDS"), _get(env, "DAGSTER_HOME")
    scratch_root = _scratch_root(env, target)
    return Settings(
        target=target,
        namespace=_cluster_setting(env, "POOLING_NAMESPACE"),
        rhoai_version=_rhoai_version(env),
        endpoint_auth=_flag(env, "POOLING_ENDPOINT_AUTH"),
        keep_deployed=_flag(env, "POOLING_KEEP_DEPLOYED"),
        catalog=Path(catalog) if catalog else None,
        kserve_crds=Path(crds) if crds else None,
        dagster_home=Path(home) if home else None,
        local_vllm_version=_get(env, "POOLING_LOCAL_VLLM_VERSION"),
        local_cpu_placement=_flag(env, "POOLING_LOCAL_CPU_PLACEMENT", default=True),
        scratch_root=scratch_root,
        s3=S3Settings(
            endpoint_url=_get(env, "AWS_ENDPOINT_URL"),
            region=_cluster_setting(env, "AWS_DEFAULT_REGION"),
            bucket=_get(env, "POOLING_S3_BUCKET", LOCAL_DEFAULT_BUCKET if local else None),
            prefix=_cluster_setting(env, "POOLING_S3_PREFIX"),
            io_prefix=_cluster_setting(env, "POOLING_IO_PREFIX"),
            missing_credentials=tuple(n for n in S3_SECRETS if not _get(env, n)),
        ),
        hub=HubSettings(
            endpoint=_get(env, "HF_ENDPOINT"),
            token_set=bool(_get(env, "HF_TOKEN")),
            cache_dir=_hf_cache_dir(env, target, scratch_root),
        ),
        cluster=None if local else _cluster(env),
        readiness=_readiness(env),
        benchmark=BenchmarkSettings(
            gpu_hour_price=_optional_float(env, "POOLING_GPU_HOUR_PRICE", "use a price such as 2.50 (per GPU-hour)")
        ),
        automation=AutomationSettings(
            nightly_cron=_get(env, "POOLING_NIGHTLY_CRON", DEFAULT_NIGHTLY_CRON) or DEFAULT_NIGHTLY_CRON,
            nightly_tz=_get(env, "POOLING_NIGHTLY_TZ", "UTC") or "UTC",
            report_cron=_get(env, "POOLING_REPORT_CRON", DEFAULT_REPORT_CRON) or DEFAULT_REPORT_CRON,
            release_feeds=_get(env, FEEDS_ENV, DEFAULT_FEEDS) or DEFAULT_FEEDS,
            release_sensor_interval_s=_interval(env, "POOLING_RELEASE_SENSOR_INTERVAL_S", 3600),
            hf_sensor_interval_s=_interval(env, "POOLING_HF_SENSOR_INTERVAL_S", 3600),
        ),
    )


def in_cluster(settings: Settings | None = None) -> bool:
    """True when this process is a pod of the cluster target (steps may then get their own pods)."""
    settings = settings or load_settings()
    return settings.cluster is not None and settings.cluster.in_cluster


def readiness_defaults() -> ReadinessSettings:
    """The verdict thresholds' config defaults (a `default_factory` of ReadinessConfig / ReportConfig)."""
    return load_settings().readiness


def default_gpu_hour_price() -> float | None:
    """LoadBenchmarkConfig.gpu_hour_price's default (a `default_factory`): POOLING_GPU_HOUR_PRICE."""
    return load_settings().benchmark.gpu_hour_price


def missing_cluster_settings(settings: Settings | None = None) -> list[str]:
    """Required cluster variables that are unset or empty (secrets checked by presence only, never read)."""
    settings = settings or load_settings()
    missing = set(settings.s3.missing_credentials) | ({"POOLING_S3_BUCKET"} if settings.s3.bucket is None else set())
    return [s.env for s in CLUSTER_SETTINGS if s.env in missing]


# ---------------------------------------------------------------- environment of this and child processes


def export_env(name: str, value: str) -> None:
    """Set a variable for this process and the processes it starts (the demo's DAGSTER_HOME)."""
    os.environ[name] = value


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus `extra`, for a child process (the demo's webserver)."""
    return {**os.environ, **(extra or {})}


# ---------------------------------------------------------------- resources


def _secret(name: str) -> dg.EnvVar:
    # The name travels in config; the value is read by Dagster when the resource is built.
    return dg.EnvVar(name)


def s3_resource(settings: Settings) -> S3Resource:
    """The model store as a resource; the credentials as dg.EnvVar (resolved at run time)."""
    from pooling_pipeline.resources.s3 import S3Resource

    return S3Resource(
        endpoint_url=settings.s3.endpoint_url,
        access_key_id=_secret("AWS_ACCESS_KEY_ID"),
        secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
        region=settings.s3.region,
        bucket=settings.s3.bucket or "",
        prefix=settings.s3.prefix,
    )


def hub_resource(settings: Settings) -> HubResource:
    from pooling_pipeline.resources.hub import HubResource

    return HubResource(
        endpoint=settings.hub.endpoint,
        token=_secret("HF_TOKEN") if settings.hub.token_set else None,
        cache_dir=str(settings.hub.cache_dir),
    )


def scratch_resource(settings: Settings) -> ScratchResource:
    from pooling_pipeline.resources.scratch import ScratchResource

    return ScratchResource(root=str(settings.scratch_root))


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
        if not _get(os.environ, name) or name in previously:
            os.environ[name] = value
            adopted.append(name)
    if adopted:
        os.environ[ADOPTED_ENV] = ",".join(sorted(adopted))
    return adopted


def local_resources(settings: Settings) -> dict[str, Any]:
    """The embedded stack: SeaweedFS, the olah mirror, vLLM-CPU processes; values on the local disk."""
    from pooling_pipeline.serving.local_target import LocalServingTarget

    s3 = s3_resource(settings)
    return {
        "s3": s3,
        "hub": hub_resource(settings),
        # The storage initializer downloads from the same S3 the ingest uploaded to.
        "serving": LocalServingTarget(
            s3=s3,
            vllm_version=settings.local_vllm_version or DEFAULT_VLLM_VERSION,
            endpoint_auth=settings.endpoint_auth,
            cpu_placement=settings.local_cpu_placement,
        ),
        "scratch": scratch_resource(settings),
    }


# ---------------------------------------------------------------- cluster


def render_config(settings: Settings) -> RenderConfig:
    """The cluster's rendering knobs (everything but the data connection's credentials)."""
    from pooling_pipeline.serving.kubernetes_target import RenderConfig

    assert settings.cluster is not None and settings.s3.bucket is not None  # checked by cluster_resources
    return RenderConfig(
        namespace=settings.namespace,
        vllm_image=settings.cluster.vllm_image,
        gpu_resource_name=settings.cluster.gpu_resource_name,
        gpu_memory_utilization=settings.cluster.gpu_memory_utilization,
        # The data connection the predictor pods download the model with: the same store.
        s3_endpoint=settings.s3.endpoint_url or AWS_S3_ENDPOINT,
        s3_bucket=settings.s3.bucket,
        s3_region=settings.s3.region,
        rhoai_version=settings.rhoai_version,
        endpoint_auth=settings.endpoint_auth,
    )


def cluster_resources(settings: Settings) -> dict[str, Any]:
    """S3 and the Hub as configured, KServe through the kubernetes client, asset values in S3."""
    missing = missing_cluster_settings(settings)
    if missing:
        raise TargetConfigError(
            f"POOLING_TARGET=cluster needs {', '.join(missing)}: set them in the `pooling-pipeline-env` Secret "
            "(k8s/secrets.example.yaml) or export them; every variable is listed in k8s/README.md"
        )
    bucket = settings.s3.bucket
    assert settings.cluster is not None and bucket is not None  # POOLING_TARGET=cluster, checked just above
    from dagster_aws.s3 import S3PickleIOManager
    from dagster_aws.s3 import S3Resource as DagsterS3Resource

    from pooling_pipeline.serving.kubernetes_target import KubernetesTarget

    return {
        "s3": s3_resource(settings),
        "hub": hub_resource(settings),
        "serving": KubernetesTarget(
            render=render_config(settings),
            in_cluster=settings.cluster.in_cluster,
            kubeconfig=settings.cluster.kubeconfig,
            context=settings.cluster.context,
            s3_access_key_id=_secret("AWS_ACCESS_KEY_ID"),
            s3_secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
        ),
        "scratch": scratch_resource(settings),
        # Run pods (and the benchmark's own step pod) are ephemeral: asset values must outlive them, so
        # they go to the same bucket instead of the pod's filesystem.
        "io_manager": S3PickleIOManager(
            s3_resource=DagsterS3Resource(
                endpoint_url=settings.s3.endpoint_url,
                region_name=settings.s3.region,
                aws_access_key_id=_secret("AWS_ACCESS_KEY_ID"),
                aws_secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
            ),
            s3_bucket=bucket,
            s3_prefix=settings.s3.io_prefix,
        ),
    }


def build_resources(settings: Settings | None = None) -> dict[str, Any]:
    """Resource keys used by the assets: `s3`, `hub`, `serving`, `scratch` (and, on the cluster, `io_manager`).

    Without `settings`, the local target first adopts the stack's state file into the environment, then
    reads the settings.
    """
    if settings is None:
        if target_name() == "local":
            adopt_stack_env()
        settings = load_settings()
    return cluster_resources(settings) if settings.target == "cluster" else local_resources(settings)
