"""Serving: register the vLLM runtimes per release, and roll out one InferenceService per model.

The `serving` resource decides where: `KubernetesTarget` (OpenShift AI) or `LocalServingTarget` (vLLM-CPU
processes on this machine). Both get the same rendered, schema-validated manifests.
"""


from typing import Any

import dagster as dg

from pooling_pipeline.catalog import active_catalog
from pooling_pipeline.ingest.model_facts import Snapshot
from pooling_pipeline.ingest.s3_transfer import S3ModelLocation
from pooling_pipeline.partitions import model_partitions, vllm_release_partitions
from pooling_pipeline.serving.cpu_adaptation import adaptations_markdown
from pooling_pipeline.serving.crd_validation import validate_manifest
from pooling_pipeline.serving.manifests import (
    RenderSettings,
    effective_container,
    manifests_hash,
    redact_secret,
    render_all_templates,
    render_model_manifests,
    to_yaml,
)
from pooling_pipeline.serving.target import Deployment, ModelManifests, RuntimeRegistration, ServingTarget


def render_settings_of(serving: Any) -> RenderSettings:
    """The target's rendering knobs (namespace, image, GPU...), or the defaults for a target without any."""
    settings = getattr(serving, "render_settings", None)
    return settings() if callable(settings) else RenderSettings()


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
def serving_runtime(context: dg.AssetExecutionContext, serving: dg.ResourceParam[ServingTarget]) -> dg.Output[
    RuntimeRegistration
]:
    """One partition = one vLLM release (e.g. `0.32.0`), registered as the embedding and reranker runtimes.

    Runs when the release sensor adds a release: renders the two ServingRuntime Templates for that
    release (image tag and pooling flags depend on it), validates them against the KServe CRDs and
    registers them with the serving target. Every model then re-rolls onto the latest release.
    """
    vllm_version = context.partition_key
    settings = render_settings_of(serving)
    templates = render_all_templates(vllm_version, settings)
    for template in templates:
        validate_manifest(template)
    registration = serving.register_runtimes(templates, vllm_version)
    context.log.info(f"vLLM {vllm_version}: runtimes {registration.runtimes} registered on {registration.target}")
    return dg.Output(
        registration,
        metadata={
            "vllm_version": dg.MetadataValue.text(vllm_version),
            "image": dg.MetadataValue.text(registration.image),
            "target": dg.MetadataValue.text(registration.target),
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
    manifests = render_model_manifests(entry, hf_snapshot.facts, s3_model.uri, vllm_version,
                                       render_settings_of(serving))
    validate_manifest(manifests.inference_service)
    validate_manifest(manifests.serving_runtime)
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
