"""The jobs the schedule, the sensors and people launch. Selections are by group, so a new asset in a
group (another evaluation, say) joins the nightly re-validation without touching this file."""

import dagster as dg

from pooling_pipeline.partitions import model_partitions
from pooling_pipeline.resources.k8s_tags import step_executor

SERVING_RUNTIME = dg.AssetKey("serving_runtime")
READINESS_REPORT = dg.AssetKey("readiness_report")
RUNTIME_PROMOTION = dg.AssetKey("runtime_promotion")  # automation/promotion.py: runs right after the report
MODEL_TAG = "pooling/model"  # dagster.yaml: runs with the same value never overlap
RELEASE_TAG = "pooling/vllm_version"
TRIGGER_TAG = "pooling/trigger"

_per_model = dg.AssetSelection.groups("ingest", "serving", "evaluation", "readiness") - dg.AssetSelection.assets(
    SERVING_RUNTIME, READINESS_REPORT
)

# Everything one model goes through, ingest to verdict (ingest moves 0 bytes when nothing changed).
model_pipeline_job = dg.define_asset_job(
    "model_pipeline_job",
    selection=_per_model,
    partitions_def=model_partitions,
    # In the cluster each step is its own pod, so load_benchmark can sit next to the model server.
    executor_def=step_executor(),
    description="One model, end to end: hf_snapshot -> s3_model -> inference_service -> quality_report "
    "(blocking checks) -> load_benchmark -> migration_readiness, on the latest vLLM release.",
)

# A new vLLM release: redeploy and re-validate, but never re-download or re-upload the model.
model_revalidation_job = dg.define_asset_job(
    "model_revalidation_job",
    selection=dg.AssetSelection.groups("serving", "evaluation", "readiness")
    - dg.AssetSelection.assets(SERVING_RUNTIME, READINESS_REPORT),
    partitions_def=model_partitions,
    executor_def=step_executor(),
    description="Redeploy one model on the latest vLLM release and re-run quality, benchmark and readiness.",
)

# A new model revision on the hub: fetch and upload it (the redeploy follows in the next re-validation).
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingest"),
    partitions_def=model_partitions,
    description="Fetch one model's catalog revision and upload it to S3 (only changed files move).",
)

register_runtime_job = dg.define_asset_job(
    "register_runtime_job",
    selection=dg.AssetSelection.assets(SERVING_RUNTIME),
    description="Register the vLLM runtimes (ServingRuntime Templates) of one vLLM release.",
)

readiness_report_job = dg.define_asset_job(
    "readiness_report_job",
    selection=dg.AssetSelection.assets(READINESS_REPORT, RUNTIME_PROMOTION),
    description="Rebuild the migration's results table from the latest readiness of every model, then promote "
    "the evaluated vLLM release to the dashboard's runtime Templates if nothing regressed.",
)

JOBS = [model_pipeline_job, model_revalidation_job, ingest_job, register_runtime_job, readiness_report_job]


def model_tags(model: str, **extra: str) -> dict[str, str]:
    return {MODEL_TAG: model, **extra}
