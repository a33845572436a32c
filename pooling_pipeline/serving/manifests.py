"""Render the OpenShift AI serving manifests: pure functions from (catalog entry, model facts, vLLM release).

What is rendered, and why each convention:

- per vLLM release and model kind a *version-named* OpenShift `Template` (`vllm-embedding-runtime-v0-33-0`)
  in `redhat-ods-applications`, wrapping a KServe `ServingRuntime` of the same name. It has no
  `opendatahub.io/dashboard` label, so the dashboard (which lists Templates by that label) does not offer it:
  a release is validated on these first;
- the *user-facing* Template (`vllm-embedding-runtime`, the dashboard labels and annotations of the ODH vLLM
  templates) moves to a release only through `promote` (serving/runtimes.py), once that release passed;
- the version-named `ServingRuntime` in the model namespace, which the validation InferenceServices run on;
- per model an `InferenceService` (RawDeployment: no Knative/Istio on a plain OpenShift AI install), its
  RHOAI S3 data-connection `Secret`, an edge-TLS `Route` to the predictor on its pod port, and with token
  authentication the dashboard's identity objects (ServiceAccount, Role, RoleBinding, token Secret).

What differs between OpenShift AI releases (storage wiring, the auth switch) is decided in platform.py
from `POOLING_RHOAI_VERSION`; the evidence is in k8s/README.md.

The runtime container carries the kind-level args (port, model dir, served name, pooling runner, GPU
memory fraction); the InferenceService carries the model-level ones (`--max-model-len`, `--dtype`, extra
args). KServe appends the latter to the former, and so does the local target.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator

from pooling_pipeline.catalog import CatalogEntry, ModelKind
from pooling_pipeline.defaults import DEFAULT_BUCKET, DEFAULT_NAMESPACE
from pooling_pipeline.ingest.model_facts import ModelFacts
from pooling_pipeline.serving.platform import (
    AuthSwitch,
    PlatformVersion,
    StorageShape,
    auth_switch,
    parse_rhoai_version,
    storage_shape,
)
from pooling_pipeline.serving.runtime_args import pooling_args
from pooling_pipeline.serving.target import ModelManifests

SERVING_GROUP = "serving.kserve.io"
ISVC_API_VERSION = "serving.kserve.io/v1beta1"
RUNTIME_API_VERSION = "serving.kserve.io/v1alpha1"
TEMPLATE_API_VERSION = "template.openshift.io/v1"
ROUTE_API_VERSION = "route.openshift.io/v1"
RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"

CONTAINER_PORT = 8080
# The auth proxy's port (oauth-proxy / kube-rbac-proxy) when token authentication is on (`OauthProxyPort`).
AUTH_PROXY_PORT = 8443
MODEL_DIR = "/mnt/models"
# Annotation holding the hash of what the pipeline applied: the cluster target re-applies only on change.
SPEC_HASH_ANNOTATION = "pooling-pipeline/spec-hash"
# Hash of the ServingRuntime spec an InferenceService runs on. Raw mode copies InferenceService annotations
# to the predictor's pod template, so a runtime-only change (e.g. --gpu-memory-utilization) rolls the pods
# even where KServe does not watch ServingRuntimes (before RHOAI/ODH 3.2: kserve#3683, fixed by #4342).
RUNTIME_HASH_ANNOTATION = "pooling-pipeline/runtime-hash"
CONNECTIONS_ANNOTATION = "opendatahub.io/connections"
CONNECTION_PATH_ANNOTATION = "opendatahub.io/connection-path"
ENABLE_AUTH = "security.opendatahub.io/enable-auth"
STOP_ANNOTATION = "serving.kserve.io/stop"
DASHBOARD_LABEL = "opendatahub.io/dashboard"
VLLM_VERSION_LABEL = "pooling-pipeline/vllm-version"
# Keys the pipeline may have written before and must remove when the desired object no longer has them
# (a JSON merge patch keeps what it does not mention): path -> keys. `storage` is not here: with the
# connection annotations the operator's webhook owns it.
REMOVABLE: dict[str, dict[tuple[str, ...], tuple[str, ...]]] = {
    "InferenceService": {
        ("metadata", "annotations"): (
            ENABLE_AUTH,
            CONNECTIONS_ANNOTATION,
            CONNECTION_PATH_ANNOTATION,
            STOP_ANNOTATION,
            RUNTIME_HASH_ANNOTATION,
        ),
        ("metadata", "labels"): (ENABLE_AUTH, "networking.kserve.io/visibility"),
        ("spec", "predictor", "model"): ("storageUri",),
    },
}
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "pooling-pipeline"
REDACTED = "<redacted>"

RUNTIME_NAMES: dict[ModelKind, str] = {
    ModelKind.EMBEDDING: "vllm-embedding-runtime",
    ModelKind.RERANKER: "vllm-reranker-runtime",
}
_DISPLAY = {
    ModelKind.EMBEDDING: "vLLM embedding ServingRuntime for KServe",
    ModelKind.RERANKER: "vLLM reranker (cross-encoder) ServingRuntime for KServe",
}
# opendatahub.io/model-type values (the ODH generative templates say '["generative"]').
_MODEL_TYPE = {ModelKind.EMBEDDING: '["embedding"]', ModelKind.RERANKER: '["reranker"]'}

# Writable scratch for OpenShift's random non-root UID (it has no home and cannot write `/.cache`).
# Each variable gets its own emptyDir. vLLM itself reads VLLM_CACHE_ROOT (torch.compile and other caches);
# VLLM_CACHE_DIR is kept for images and tools that read that name.
_CACHE_ENV = {
    "HOME": "/tmp/home",
    "XDG_CACHE_HOME": "/tmp/cache",
    "HF_HOME": "/tmp/hf_home",
    "VLLM_CACHE_DIR": "/tmp/vllm_cache",
}
_ENV_ALIASES = {"VLLM_CACHE_ROOT": "VLLM_CACHE_DIR"}  # same mount, second name


class ManifestError(ValueError):
    """The inputs cannot produce a valid deployment; the message names the fix."""


class RenderOptions(BaseModel):
    """Cluster-specific knobs of the rendering (everything else comes from the catalog and the model),
    without the credentials: what a serving target carries as plain, visible configuration."""

    namespace: str = DEFAULT_NAMESPACE
    templates_namespace: str = "redhat-ods-applications"
    # Upstream vLLM's OpenAI image, tagged per release (`v0.32.0`): a new vLLM release is a new tag.
    vllm_image: str = "docker.io/vllm/vllm-openai"
    vllm_image_tag: str = "v{version}"
    gpu_resource_name: str = "nvidia.com/gpu"
    gpu_count: int = Field(1, ge=0)
    # Shared GPUs: several small encoders fit on one card, so do not take vLLM's 0.9 default.
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    data_connection_name: str = "pooling-models-s3"
    s3_endpoint: str = "https://s3.amazonaws.com"
    s3_bucket: str = DEFAULT_BUCKET
    s3_region: str = "us-east-1"
    route_enabled: bool = True
    # POOLING_RHOAI_VERSION: picks the storage wiring and the auth switch (platform.py); None: unknown,
    # which renders what works on every version checked.
    rhoai_version: str | None = None
    # POOLING_ENDPOINT_AUTH: token-authenticated endpoints (the dashboard's "Require token authentication").
    endpoint_auth: bool = False

    @field_validator("rhoai_version")
    @classmethod
    def _version_is_readable(cls, v: str | None) -> str | None:
        parse_rhoai_version(v)  # raises PlatformVersionError naming the setting
        return v or None

    @property
    def platform_version(self) -> PlatformVersion | None:
        return parse_rhoai_version(self.rhoai_version)

    def image_for(self, vllm_version: str) -> str:
        return f"{self.vllm_image}:{self.vllm_image_tag.format(version=vllm_version.lstrip('v'))}"


class RenderSettings(RenderOptions):
    """RenderOptions plus the data connection's credentials (rendered into its Secret, never shown)."""

    s3_access_key_id: SecretStr = SecretStr("")
    s3_secret_access_key: SecretStr = SecretStr("")


class ContainerSpec(BaseModel):
    """What KServe would run for one model: the runtime container with the model's args appended."""

    image: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    served_model_name: str


# ---------------------------------------------------------------- runtime templates


def display_name(kind: ModelKind | str) -> str:
    return _DISPLAY[ModelKind(kind)]


def runtime_name(kind: ModelKind | str) -> str:
    """The user-facing name (`vllm-embedding-runtime`): the Template the dashboard offers."""
    return RUNTIME_NAMES[ModelKind(kind)]


def versioned_runtime_name(kind: ModelKind | str, vllm_version: str) -> str:
    """`vllm-embedding-runtime-v0-33-0`: one release's runtime (DNS-1123: dots become dashes)."""
    return f"{runtime_name(kind)}-v{vllm_version.lstrip('v').replace('.', '-').replace('+', '-').lower()}"


def render_serving_runtime(
    kind: ModelKind | str, vllm_version: str, settings: RenderSettings | RenderOptions, *, name: str | None = None
) -> dict[str, Any]:
    """The KServe ServingRuntime for one model kind and vLLM release (no namespace: the caller places it).

    `name` defaults to the user-facing name; a release's validation runtime is `versioned_runtime_name`.
    """
    kind = ModelKind(kind)
    name = name or runtime_name(kind)
    args = [
        f"--port={CONTAINER_PORT}",
        f"--model={MODEL_DIR}",
        "--served-model-name={{.Name}}",  # KServe substitutes the InferenceService name
        *pooling_args(vllm_version, kind),
        f"--gpu-memory-utilization={settings.gpu_memory_utilization}",
    ]
    volumes = [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]
    mounts = [{"name": "shm", "mountPath": "/dev/shm"}]
    for env_name, path in _CACHE_ENV.items():
        vol = env_name.lower().replace("_", "-")
        volumes.append({"name": vol, "emptyDir": {}})
        mounts.append({"name": vol, "mountPath": path})
    return {
        "apiVersion": RUNTIME_API_VERSION,
        "kind": "ServingRuntime",
        "metadata": {
            "name": name,
            "annotations": {
                "openshift.io/display-name": _DISPLAY[kind],
                "opendatahub.io/recommended-accelerators": json.dumps([settings.gpu_resource_name]),
                "opendatahub.io/runtime-version": f"v{vllm_version.lstrip('v')}",
                "opendatahub.io/apiProtocol": "REST",
                # What the dashboard records when it instantiates a Template: shows the runtime under its template.
                "opendatahub.io/template-name": name,
                "opendatahub.io/template-display-name": _DISPLAY[kind],
            },
            "labels": {DASHBOARD_LABEL: "true", MANAGED_BY_LABEL: MANAGED_BY},
        },
        "spec": {
            "annotations": {
                "opendatahub.io/kserve-runtime": "vllm",
                "prometheus.io/port": str(CONTAINER_PORT),
                "prometheus.io/path": "/metrics",
            },
            "multiModel": False,
            "supportedModelFormats": [{"autoSelect": True, "name": "vLLM"}],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": settings.image_for(vllm_version),
                    # python3: the vLLM images have no `python` on PATH.
                    "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
                    "args": args,
                    "env": [{"name": k, "value": v} for k, v in _CACHE_ENV.items()]
                    + [{"name": alias, "value": _CACHE_ENV[target]} for alias, target in _ENV_ALIASES.items()],
                    "ports": [{"containerPort": CONTAINER_PORT, "protocol": "TCP"}],
                    "volumeMounts": mounts,
                }
            ],
            "volumes": volumes,
        },
    }


def render_runtime_template(
    kind: ModelKind | str, vllm_version: str, settings: RenderSettings | RenderOptions, *, versioned: bool = False
) -> dict[str, Any]:
    """The OpenShift Template wrapping the kind's ServingRuntime.

    `versioned=False`: the user-facing Template the RHOAI dashboard offers (what `render` commits under
    k8s/runtimes/ and what `promote` writes). `versioned=True`: one release's Template, named after it and
    without the dashboard label, so users never see a release that has not passed validation.
    """
    kind = ModelKind(kind)
    name = versioned_runtime_name(kind, vllm_version) if versioned else runtime_name(kind)
    runtime = render_serving_runtime(kind, vllm_version, settings, name=name)
    version = f"v{vllm_version.lstrip('v')}"
    display = f"{_DISPLAY[kind]} ({version}, under validation)" if versioned else _DISPLAY[kind]
    labels = {MANAGED_BY_LABEL: MANAGED_BY}
    if versioned:
        labels[VLLM_VERSION_LABEL] = vllm_version.lstrip("v")
    else:
        labels = {DASHBOARD_LABEL: "true", **labels}
    return {
        "apiVersion": TEMPLATE_API_VERSION,
        "kind": "Template",
        "metadata": {
            "name": name,
            "namespace": settings.templates_namespace,
            "labels": labels,
            "annotations": {
                "description": f"{_DISPLAY[kind]} (pooling models, rendered by pooling-pipeline)",
                "openshift.io/display-name": display,
                "openshift.io/provider-display-name": "pooling-pipeline",
                "tags": "rhods,rhoai,kserve,servingruntime",
                "template.openshift.io/documentation-url": "https://docs.vllm.ai/en/latest/models/pooling_models/",
                "template.openshift.io/long-description": (
                    f"This template defines the {_DISPLAY[kind]} for pooling models (vLLM {version}, "
                    "OpenAI-compatible /v1/embeddings, /v1/score and /v1/rerank) in Red Hat OpenShift AI"
                ),
                "opendatahub.io/modelServingSupport": '["single"]',
                "opendatahub.io/apiProtocol": "REST",
                "opendatahub.io/model-type": _MODEL_TYPE[kind],
                "opendatahub.io/recommended-accelerators": json.dumps([settings.gpu_resource_name]),
                "opendatahub.io/runtime-version": version,
            },
        },
        "objects": [runtime],
    }


def render_all_templates(vllm_version: str, settings: RenderSettings | RenderOptions) -> list[dict[str, Any]]:
    """Both kinds' user-facing Templates, embedding first (k8s/runtimes/, and what `promote` applies)."""
    return [render_runtime_template(kind, vllm_version, settings) for kind in ModelKind]


def render_release_templates(vllm_version: str, settings: RenderSettings | RenderOptions) -> list[dict[str, Any]]:
    """Both kinds' version-named Templates of one release, embedding first (what `serving_runtime` registers)."""
    return [render_runtime_template(kind, vllm_version, settings, versioned=True) for kind in ModelKind]


# ---------------------------------------------------------------- per-model manifests


def model_len_limit(facts: ModelFacts) -> int | None:
    """What vLLM derives as the longest input: the smallest of the model's own limits."""
    if facts.model_max_len:
        return facts.model_max_len
    limits = [v for v in (facts.max_position_embeddings, facts.st_max_seq_length) if v]
    return min(limits) if limits else None


def model_resources(facts: ModelFacts, settings: RenderSettings | RenderOptions) -> dict[str, dict[str, str]]:
    """Pod CPU/memory by model size: vLLM holds the weights in host RAM while loading, plus tokenizer workers."""
    weights_gib = facts.weights_bytes / 2**30
    params = facts.parameter_count or int(facts.weights_bytes / 4)
    cpu = "1" if params < 200_000_000 else "2" if params < 1_000_000_000 else "4"
    mem_gib = max(4, math.ceil(2 * weights_gib + 2))
    requests: dict[str, str] = {"cpu": cpu, "memory": f"{mem_gib}Gi"}
    limits: dict[str, str] = {"cpu": str(int(cpu) * 2), "memory": f"{mem_gib + 4}Gi"}
    if settings.gpu_count:
        requests[settings.gpu_resource_name] = str(settings.gpu_count)
        limits[settings.gpu_resource_name] = str(settings.gpu_count)
    return {"requests": requests, "limits": limits}


def model_probes(facts: ModelFacts) -> dict[str, dict[str, Any]]:
    """Probes timed for a cold start (storage-initializer download, then weights load).

    Small encoders are Ready in ~90 s on a first run; liveness waits ~180 s so a slow first load is never
    killed mid-way (a restart would start the download again). Bigger weights get proportionally longer.
    """
    extra = max(0, math.ceil(facts.weights_bytes / 2**30) - 1) * 30
    ready_s, live_s = 90 + extra, 180 + 2 * extra
    http = {"path": "/health", "port": CONTAINER_PORT, "scheme": "HTTP"}
    return {
        "readinessProbe": {
            "httpGet": dict(http),
            "initialDelaySeconds": 10,
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil((ready_s - 10) / 5),
        },
        "livenessProbe": {
            "httpGet": dict(http),
            "initialDelaySeconds": live_s,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }


def model_args(entry: CatalogEntry, facts: ModelFacts, vllm_version: str) -> list[str]:
    """Model-level vLLM args (appended by KServe to the runtime's)."""
    limit = model_len_limit(facts)
    max_len = facts.effective_max_model_len
    if limit is not None and max_len > limit:
        raise ManifestError(
            f"{entry.name}: max_model_len {max_len} > model limit {limit} (vLLM refuses to start): "
            f"set max_model_len <= {limit} in the catalog or re-run hf_snapshot"
        )
    runtime_level = pooling_args(vllm_version, entry.kind)
    convert = [a for a in pooling_args(vllm_version, entry.kind, facts.architecture) if a not in runtime_level]
    return [f"--max-model-len={max_len}", f"--dtype={entry.dtype or 'auto'}", *convert, *entry.extra_args]


def render_data_connection(settings: RenderSettings) -> dict[str, Any]:
    """The RHOAI S3 data connection (a Secret the dashboard lists under Connections)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": settings.data_connection_name,
            "namespace": settings.namespace,
            "labels": {
                "opendatahub.io/dashboard": "true",
                "opendatahub.io/managed": "true",
                MANAGED_BY_LABEL: MANAGED_BY,
            },
            "annotations": {
                "opendatahub.io/connection-type": "s3",
                # -ref is what RHOAI 2.16+ reads; -protocol is its successor (the webhook prefers it when set).
                "opendatahub.io/connection-type-ref": "s3",
                "opendatahub.io/connection-type-protocol": "s3",
                "openshift.io/display-name": settings.data_connection_name,
            },
        },
        "type": "Opaque",
        "stringData": {
            "AWS_ACCESS_KEY_ID": settings.s3_access_key_id.get_secret_value(),
            "AWS_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
            "AWS_S3_ENDPOINT": settings.s3_endpoint,
            "AWS_S3_BUCKET": settings.s3_bucket,
            "AWS_DEFAULT_REGION": settings.s3_region,
        },
    }


def render_storage(
    entry: CatalogEntry, storage_uri: str, settings: RenderSettings | RenderOptions
) -> tuple[dict[str, Any], dict[str, str]]:
    """(fields of `predictor.model`, InferenceService annotations) naming the model's S3 prefix.

    The shape depends on the OpenShift AI version (platform.storage_shape); neither shape has `storageUri`.
    The bucket is the data connection's (`AWS_S3_BUCKET`): KServe joins it with the bucket-relative path.
    """
    if not storage_uri.startswith("s3://"):
        raise ManifestError(f"{entry.name}: storageUri {storage_uri!r} is not an s3:// URI: materialise s3_model first")
    bucket, _, key = storage_uri.removeprefix("s3://").partition("/")
    path = key.strip("/")
    if bucket != settings.s3_bucket or not path:
        raise ManifestError(
            f"{entry.name}: the model is at {storage_uri!r} but the data connection {settings.data_connection_name!r} "
            f"points at bucket {settings.s3_bucket!r}: set POOLING_S3_BUCKET to the bucket s3_model uploads to"
        )
    annotations = {CONNECTIONS_ANNOTATION: settings.data_connection_name, CONNECTION_PATH_ANNOTATION: path}
    if storage_shape(settings.platform_version) is StorageShape.CONNECTION_ANNOTATIONS:
        return {}, annotations
    # Kept equal to the annotations: on >= 3.0 the webhook keeps an explicit storage.path and sets the same key.
    return {"storage": {"key": settings.data_connection_name, "path": path}}, annotations


def storage_uri_of(inference_service: dict[str, Any], data_connection: dict[str, Any]) -> str:
    """What KServe's storage initializer downloads (`s3://<bucket>/<path>/`), from either storage shape."""
    model = inference_service["spec"]["predictor"]["model"]
    if model.get("storageUri"):
        return str(model["storageUri"])
    path = (model.get("storage") or {}).get("path") or inference_service["metadata"]["annotations"].get(
        CONNECTION_PATH_ANNOTATION
    )
    bucket = (data_connection.get("stringData") or {}).get("AWS_S3_BUCKET")
    if not path or not bucket:
        raise ManifestError(
            f"InferenceService {inference_service['metadata']['name']} names no model location: re-render it"
        )
    return f"s3://{bucket}/{str(path).strip('/')}/"


def runtime_hash(runtime: dict[str, Any]) -> str:
    """sha256 (16 hex) of a ServingRuntime's spec: what the predictor runs, apart from the model's own args."""
    body = json.dumps(runtime.get("spec", {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _auth_switch_fields(settings: RenderSettings | RenderOptions) -> tuple[dict[str, str], dict[str, str]]:
    """(annotations, labels) that turn token authentication on for this OpenShift AI version."""
    if not settings.endpoint_auth:
        return {}, {}
    where = auth_switch(settings.platform_version)
    annotations = {ENABLE_AUTH: "true"} if where in (AuthSwitch.ANNOTATION, AuthSwitch.BOTH) else {}
    labels = {ENABLE_AUTH: "true"} if where in (AuthSwitch.LABEL, AuthSwitch.BOTH) else {}
    return annotations, labels


def render_inference_service(
    entry: CatalogEntry,
    facts: ModelFacts,
    storage_uri: str,
    vllm_version: str,
    settings: RenderSettings | RenderOptions,
    runtime: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The validation InferenceService: on the release's version-named runtime, raw mode, GPU, timed probes."""
    if facts.kind is not entry.kind:
        raise ManifestError(
            f"{entry.name}: the catalog says {entry.kind.value} but the snapshot is a {facts.kind.value} "
            f"({facts.architecture}): fix `kind` in the catalog"
        )
    runtime = runtime or render_serving_runtime(
        entry.kind, vllm_version, settings, name=versioned_runtime_name(entry.kind, vllm_version)
    )
    storage, storage_annotations = render_storage(entry, storage_uri, settings)
    auth_annotations, auth_labels = _auth_switch_fields(settings)
    model: dict[str, Any] = {
        "modelFormat": {"name": "vLLM"},
        "runtime": runtime["metadata"]["name"],
        **storage,
        "args": model_args(entry, facts, vllm_version),
        "resources": model_resources(facts, settings),
        **model_probes(facts),
    }
    return {
        "apiVersion": ISVC_API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": entry.k8s_name,
            "namespace": settings.namespace,
            "labels": {
                DASHBOARD_LABEL: "true",
                MANAGED_BY_LABEL: MANAGED_BY,
                "pooling-pipeline/model": entry.name,
                "pooling-pipeline/kind": entry.kind.value,
                **auth_labels,
            },
            "annotations": {
                "openshift.io/display-name": entry.title,
                "serving.kserve.io/deploymentMode": "RawDeployment",
                **storage_annotations,
                **auth_annotations,
                "pooling-pipeline/repo-id": entry.repo_id,
                "pooling-pipeline/commit": facts.commit_sha,
                "pooling-pipeline/vllm-version": vllm_version,
                RUNTIME_HASH_ANNOTATION: runtime_hash(runtime),
            },
        },
        "spec": {"predictor": {"minReplicas": 1, "maxReplicas": 1, "model": model}},
    }


def render_route(entry: CatalogEntry, settings: RenderSettings | RenderOptions) -> dict[str, Any]:
    """Route to the predictor Service (`<isvc>-predictor`), on the pod port: `targetPort` names the endpoint's
    (pod's) port, so the headless Service's 80 -> 8080 mapping plays no part (openshift/api RoutePort).

    With token authentication the Route must reach the auth proxy (8443, re-encrypting to its service-serving
    certificate), never vLLM's 8080 directly, which would bypass the token check.
    """
    if settings.endpoint_auth:
        port, tls = AUTH_PROXY_PORT, {"termination": "reencrypt", "insecureEdgeTerminationPolicy": "Redirect"}
    else:
        port, tls = CONTAINER_PORT, {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}
    return {
        "apiVersion": ROUTE_API_VERSION,
        "kind": "Route",
        "metadata": {
            "name": entry.k8s_name,
            "namespace": settings.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, "pooling-pipeline/model": entry.name},
        },
        "spec": {
            "to": {"kind": "Service", "name": f"{entry.k8s_name}-predictor", "weight": 100},
            "port": {"targetPort": port},
            "tls": tls,
            "wildcardPolicy": "None",
        },
    }


def auth_object_names(isvc_name: str) -> dict[str, str]:
    """The dashboard's names for a model's token identity (odh-dashboard model-serving concepts/auth.ts)."""
    return {
        "ServiceAccount": f"{isvc_name}-sa",
        "Role": f"{isvc_name}-view-role",
        "RoleBinding": f"{isvc_name}-view",
        "Secret": f"{isvc_name}-sa-token",
    }


def render_auth_objects(entry: CatalogEntry, settings: RenderSettings | RenderOptions) -> list[dict[str, Any]]:
    """What the dashboard creates for "Require token authentication": a ServiceAccount, a Role that may only
    `get` this InferenceService (what the proxy checks), its RoleBinding, and a token Secret that the
    ServiceAccount token controller fills. Every client of the pipeline sends that token."""
    names = auth_object_names(entry.k8s_name)
    meta = {"namespace": settings.namespace, "labels": {DASHBOARD_LABEL: "true", MANAGED_BY_LABEL: MANAGED_BY}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": names["ServiceAccount"], **meta}},
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "Role",
            "metadata": {"name": names["Role"], **meta},
            "rules": [
                {
                    "apiGroups": [SERVING_GROUP],
                    "resources": ["inferenceservices"],
                    "resourceNames": [entry.k8s_name],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "RoleBinding",
            "metadata": {"name": names["RoleBinding"], **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names["Role"]},
            "subjects": [{"kind": "ServiceAccount", "name": names["ServiceAccount"], "namespace": settings.namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": names["Secret"],
                **meta,
                "annotations": {
                    "kubernetes.io/service-account.name": names["ServiceAccount"],
                    "openshift.io/display-name": "pooling-pipeline",
                },
            },
        },
    ]


def render_model_manifests(
    entry: CatalogEntry, facts: ModelFacts, storage_uri: str, vllm_version: str, settings: RenderSettings
) -> ModelManifests:
    """Everything one model needs on the cluster (and what the local target runs)."""
    runtime = render_serving_runtime(
        entry.kind, vllm_version, settings, name=versioned_runtime_name(entry.kind, vllm_version)
    )
    runtime["metadata"]["namespace"] = settings.namespace
    isvc = render_inference_service(entry, facts, storage_uri, vllm_version, settings, runtime)
    data_connection = render_data_connection(settings)
    return ModelManifests(
        model=entry.name,
        serving_runtime=runtime,
        inference_service=isvc,
        data_connection=data_connection,
        route=render_route(entry, settings) if settings.route_enabled else None,
        auth=render_auth_objects(entry, settings) if settings.endpoint_auth else [],
        storage_uri=storage_uri_of(isvc, data_connection),
        gpus=settings.gpu_count,
    )


# ---------------------------------------------------------------- helpers for targets and metadata


def effective_container(manifests: ModelManifests) -> ContainerSpec:
    """The command line KServe ends up running: runtime args + model args, `{{.Name}}` substituted."""
    isvc = manifests.inference_service
    name = isvc["metadata"]["name"]
    container = manifests.serving_runtime["spec"]["containers"][0]
    model = isvc["spec"]["predictor"]["model"]
    args = [a.replace("{{.Name}}", name) for a in [*container.get("args", []), *model.get("args", [])]]
    return ContainerSpec(
        image=container["image"],
        command=list(container["command"]),
        args=args,
        env={e["name"]: e["value"] for e in container.get("env", []) if "value" in e},
        served_model_name=name,
    )


def redact_secret(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy safe for logs and metadata: Secret values replaced (endpoint and bucket kept, they help debugging)."""
    out = copy.deepcopy(manifest)
    if out.get("kind") != "Secret":
        return out
    visible = {"AWS_S3_ENDPOINT", "AWS_S3_BUCKET", "AWS_DEFAULT_REGION"}
    for field in ("stringData", "data"):
        if isinstance(out.get(field), dict):
            out[field] = {k: (v if k in visible and field == "stringData" else REDACTED) for k, v in out[field].items()}
    return out


def spec_hash(*objects: dict[str, Any] | None) -> str:
    """sha256 over the desired state (annotations of our own hash excluded), stable across key order."""
    cleaned = []
    for obj in objects:
        if obj is None:
            continue
        obj = copy.deepcopy(obj)
        obj.get("metadata", {}).get("annotations", {}).pop(SPEC_HASH_ANNOTATION, None)
        cleaned.append(obj)
    return hashlib.sha256(json.dumps(cleaned, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def manifests_hash(manifests: ModelManifests) -> str:
    """The Deployment's data version: changes when anything applied for this model changes (secret included)."""
    rendered = (manifests.serving_runtime, manifests.inference_service, manifests.data_connection, manifests.route)
    return spec_hash(*rendered, *manifests.auth)


def to_yaml(*objects: dict[str, Any]) -> str:
    """Multi-document YAML in a stable, readable order (as committed under k8s/runtimes/)."""
    import yaml

    return "---\n".join(yaml.safe_dump(o, sort_keys=False, default_flow_style=False, width=120) for o in objects)
