"""Ingest: from a Hugging Face-compatible hub into S3, one catalog model per partition."""

import hashlib
from pathlib import Path

import dagster as dg

from pooling_pipeline.catalog import active_catalog
from pooling_pipeline.ingest.model_facts import ModelFacts, Snapshot, derive_model_facts
from pooling_pipeline.ingest.s3_transfer import S3ModelLocation, upload_snapshot
from pooling_pipeline.partitions import model_partitions
from pooling_pipeline.resources.hub import HubResource
from pooling_pipeline.resources.s3 import S3Resource


def facts_metadata(facts: ModelFacts) -> dict[str, dg.MetadataValue]:
    """The facts people look at in the UI; numbers stay numbers so the UI can plot them."""
    limits = "\n".join(f"| {source} | {value} |" for source, value in facts.max_len_limits.items())
    return {
        "repo_id": dg.MetadataValue.text(facts.repo_id),
        "revision": dg.MetadataValue.text(facts.revision),
        "commit_sha": dg.MetadataValue.text(facts.commit_sha),
        "architecture": dg.MetadataValue.text(facts.architecture),
        "kind": dg.MetadataValue.text(facts.kind.value),
        "dimension": dg.MetadataValue.int(facts.dimension) if facts.dimension else dg.MetadataValue.text("n/a"),
        "hidden_size": dg.MetadataValue.int(facts.hidden_size),
        "pooling": dg.MetadataValue.text(facts.pooling_mode or "model default"),
        "normalize": dg.MetadataValue.bool(facts.normalize),
        "max_position_embeddings": dg.MetadataValue.int(facts.max_position_embeddings or 0),
        "st_max_seq_length": dg.MetadataValue.int(facts.st_max_seq_length or 0),
        "effective_max_model_len": dg.MetadataValue.int(facts.effective_max_model_len),
        "length_limits": dg.MetadataValue.md("| source | tokens |\n|---|---|\n" + limits),
        "parameter_count": dg.MetadataValue.int(facts.parameter_count or 0),
        "files": dg.MetadataValue.int(len(facts.files)),
        "bytes": dg.MetadataValue.int(facts.total_bytes),
        "weights_bytes": dg.MetadataValue.int(facts.weights_bytes),
    }


@dg.asset(
    group_name="ingest",
    partitions_def=model_partitions,
    code_version="1",
    kinds={"huggingface"},
)
def hf_snapshot(context: dg.AssetExecutionContext, hub: HubResource) -> dg.Output[Snapshot]:
    """One partition = one catalog model's files at its catalog revision, in the project-local HF cache.

    Runs when the model is added or its revision moves. The resolved commit sha is the DataVersion, so
    re-running on an unchanged sha leaves everything downstream fresh (no re-upload, no re-deploy).
    Derives the facts serving needs (kind, dimension, pooling, effective max_model_len) and fails here, before
    any GPU is touched, when the catalog disagrees with the model (wrong kind, max_model_len above the limit).
    """
    catalog = active_catalog()
    entry = catalog.get(context.partition_key)
    path, sha = hub.snapshot(entry.repo_id, entry.revision)
    facts = derive_model_facts(path, entry, sha, catalog.source)
    context.log.info(
        f"{entry.name}: {entry.repo_id}@{sha[:12]} is a {facts.kind.value} ({facts.architecture}), "
        f"max_model_len {facts.effective_max_model_len}"
    )
    return dg.Output(
        Snapshot(facts=facts, local_path=str(path)),
        data_version=dg.DataVersion(sha),
        metadata=facts_metadata(facts),
    )


def location_data_version(location: S3ModelLocation) -> dg.DataVersion:
    """Same commit and same manifest -> same version: a re-upload of identical bytes changes nothing downstream."""
    digest = hashlib.sha256(f"{location.commit_sha}:{location.manifest_sha256}".encode()).hexdigest()
    return dg.DataVersion(digest[:24])


@dg.asset(
    group_name="ingest",
    partitions_def=model_partitions,
    code_version="1",
    kinds={"s3"},
)
def s3_model(
    context: dg.AssetExecutionContext, hf_snapshot: Snapshot, s3: S3Resource, hub: HubResource
) -> dg.Output[S3ModelLocation]:
    """One partition = one catalog model revision in S3 at `s3://<bucket>/<prefix>/<name>/<sha>/`.

    Runs after hf_snapshot resolves a new commit. Sends only files whose size and sha256 differ from what
    is already there (an unchanged re-run uploads 0 bytes; a killed run resumes), verifies every object, and
    writes the manifest last: a prefix without one is an unfinished upload that readers refuse.
    """
    facts = hf_snapshot.facts
    local = Path(hf_snapshot.local_path)
    if not local.is_dir():
        # The run may be on another machine/pod than hf_snapshot's, or the cache was cleaned.
        context.log.info(f"{local} is gone; fetching {facts.repo_id}@{facts.commit_sha[:12]} again")
        local, _ = hub.snapshot(facts.repo_id, facts.commit_sha)
    prefix = s3.model_prefix(context.partition_key, facts.commit_sha)
    result = upload_snapshot(s3.client(), local, s3.bucket, prefix, commit_sha=facts.commit_sha)
    location = result.location
    context.log.info(
        f"{location.uri}: uploaded {len(result.files_uploaded)} files ({result.bytes_uploaded} B), "
        f"skipped {len(result.files_skipped)} unchanged ({result.bytes_skipped} B)"
    )
    return dg.Output(
        location,
        data_version=location_data_version(location),
        metadata={
            "uri": dg.MetadataValue.text(location.uri),
            "commit_sha": dg.MetadataValue.text(location.commit_sha),
            "files": dg.MetadataValue.int(len(location.files)),
            "total_bytes": dg.MetadataValue.int(location.total_bytes),
            "files_uploaded": dg.MetadataValue.int(len(result.files_uploaded)),
            "files_skipped": dg.MetadataValue.int(len(result.files_skipped)),
            "bytes_uploaded": dg.MetadataValue.int(result.bytes_uploaded),
            "bytes_skipped": dg.MetadataValue.int(result.bytes_skipped),
            "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
            "mb_per_s": dg.MetadataValue.float(round(result.mb_per_s, 1)),
            "manifest": dg.MetadataValue.text(f"s3://{location.bucket}/{location.manifest_key}"),
            "manifest_sha256": dg.MetadataValue.text(location.manifest_sha256),
        },
    )
