"""Rendered manifests: valid against the real KServe CRDs, following the ODH conventions, stable (golden).

Golden files live in pooling_pipeline_tests/golden/. After an intended rendering change, regenerate them with
    POOLING_REGEN_GOLDEN=1 .venv/bin/pytest pooling_pipeline_tests/test_manifests.py
and review the diff like code.
"""

import os
from pathlib import Path

import pytest
import typer
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner

from pooling_pipeline.catalog import CLUSTER_CATALOG, ModelKind, load_catalog
from pooling_pipeline.ingest.model_facts import ModelFacts
from pooling_pipeline.serving import cli as serving_cli
from pooling_pipeline.serving.crd_validation import (
    PACKAGED_DIR,
    ManifestValidationError,
    folder_source,
    load_crd_schemas,
    packaged_source,
    validate_manifest,
)
from pooling_pipeline.serving.manifests import (
    REDACTED,
    ManifestError,
    RenderSettings,
    effective_container,
    manifests_hash,
    redact_secret,
    render_all_templates,
    render_model_manifests,
    render_release_templates,
    to_yaml,
)

GOLDEN = Path(__file__).parent / "golden"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
VLLM = "0.32.0"
SETTINGS = RenderSettings(
    namespace="pooling-models",
    s3_endpoint="https://s3.example.internal",
    s3_bucket="pooling-models",
    s3_access_key_id=SecretStr("AKIAEXAMPLEKEY"),
    s3_secret_access_key=SecretStr("example-secret-value"),
)

# Facts as hf_snapshot derives them for the two golden models (config.json / sentence_bert_config.json values).
MINILM_FACTS = ModelFacts(
    repo_id="sentence-transformers/all-MiniLM-L6-v2",
    revision="main",
    commit_sha="c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
    kind=ModelKind.EMBEDDING,
    architecture="BertModel",
    model_type="bert",
    hidden_size=384,
    dimension=384,
    pooling_mode="mean",
    normalize=True,
    num_labels=None,
    max_position_embeddings=512,
    st_max_seq_length=256,
    effective_max_model_len=256,
    parameter_count=22_713_216,
    weights_bytes=90_868_376,
    files=["config.json", "model.safetensors"],
    model_max_len=256,
)
MSMARCO_FACTS = ModelFacts(
    repo_id="cross-encoder/ms-marco-MiniLM-L12-v2",
    revision="main",
    commit_sha="1427fd652930e4ba29e8149678df786c240d8825",
    kind=ModelKind.RERANKER,
    architecture="BertForSequenceClassification",
    model_type="bert",
    hidden_size=384,
    dimension=None,
    pooling_mode=None,
    normalize=False,
    num_labels=1,
    max_position_embeddings=512,
    st_max_seq_length=None,
    effective_max_model_len=512,
    parameter_count=33_360_769,
    weights_bytes=133_464_836,
    files=["config.json", "model.safetensors"],
    model_max_len=512,
)
NAME_MINILM = "all-minilm-l6-v2"
CASES = {
    "all-minilm-l6-v2": MINILM_FACTS,
    "ms-marco-minilm-l12-v2": MSMARCO_FACTS,
}


def _uri(name: str, facts: ModelFacts) -> str:
    return f"s3://pooling-models/models/{name}/{facts.commit_sha}/"


def _render(name: str, facts: ModelFacts | None = None, settings: RenderSettings = SETTINGS):
    facts = facts or CASES[name]
    entry = load_catalog(CLUSTER_CATALOG).get(name)
    return render_model_manifests(entry, facts, _uri(name, facts), VLLM, settings)


@pytest.fixture(scope="module")
def crds():
    """The KServe CRDs packaged with the code: what every clone has (no ../shared needed)."""
    return packaged_source()


@pytest.fixture(scope="module")
def odh_template(odh_cuda_template_path: Path) -> dict:
    return yaml.safe_load(odh_cuda_template_path.read_text())


def test_packaged_crds_are_the_workspace_reference_crds(shared_reference: Path):
    # Skipped (with the reason) in a clone without ../shared: the packaged copies are then the only source.
    reference = load_crd_schemas(str(shared_reference / "kserve-crds"))
    assert reference and load_crd_schemas(str(PACKAGED_DIR)) == reference


def test_vendored_odh_template_is_the_workspace_reference_template(shared_reference: Path, odh_cuda_template_path):
    reference = shared_reference / "odh-runtime-templates" / "vllm-cuda-template.yaml"
    assert odh_cuda_template_path.read_text() == reference.read_text()


# ---------------------------------------------------------------- schema validity


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_rendered_kserve_object_validates_against_the_real_crds(name, crds):
    manifests = _render(name)
    assert validate_manifest(manifests.inference_service, crds).validated
    assert validate_manifest(manifests.serving_runtime, crds).validated


@pytest.mark.parametrize("version", ["0.9.2", "0.10.1", VLLM])
def test_runtime_templates_validate_for_every_vllm_generation(version, crds):
    for template in render_all_templates(version, SETTINGS) + render_release_templates(version, SETTINGS):
        assert validate_manifest(template, crds).validated


def test_unknown_or_mistyped_fields_fail_validation(crds):
    isvc = _render("all-minilm-l6-v2").inference_service
    isvc["spec"]["predictor"]["model"]["readinesProbe"] = {"httpGet": {"path": "/health", "port": 8080}}
    with pytest.raises(ManifestValidationError, match="readinesProbe"):
        validate_manifest(isvc, crds)
    runtime = _render("all-minilm-l6-v2").serving_runtime
    runtime["spec"]["containers"][0]["args"] = "--port=8080"
    with pytest.raises(ManifestValidationError, match=r"containers\.0\.args"):
        validate_manifest(runtime, crds)


def test_int_or_string_ports_accept_both_forms(crds):
    isvc = _render("all-minilm-l6-v2").inference_service
    isvc["spec"]["predictor"]["model"]["readinessProbe"]["httpGet"]["port"] = "http"
    assert validate_manifest(isvc, crds).validated


def test_a_missing_crd_folder_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="POOLING_KSERVE_CRDS"):
        folder_source(tmp_path / "absent")


def test_kinds_without_a_crd_say_why_they_were_not_validated(crds):
    manifests = _render("all-minilm-l6-v2")
    for obj in (manifests.route, manifests.data_connection):
        result = validate_manifest(obj, crds)
        assert not result.validated
        assert result.describe().startswith("not validated:") and obj["kind"] in result.describe()


def test_a_configured_crd_folder_is_used_and_named(tmp_path, crds):
    import gzip
    import shutil

    for gz in PACKAGED_DIR.glob("*.yaml.gz"):
        with gzip.open(gz) as src, open(tmp_path / gz.name.removesuffix(".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    result = validate_manifest(_render("all-minilm-l6-v2").inference_service, tmp_path)
    assert result.validated and str(tmp_path) in result.origin


# ---------------------------------------------------------------- ODH conventions


def test_templates_carry_the_dashboard_labels_and_annotations(odh_template):
    templates = {t["metadata"]["name"]: t for t in render_all_templates(VLLM, SETTINGS)}
    assert set(templates) == {"vllm-embedding-runtime", "vllm-reranker-runtime"}
    for kind, template in zip(("embedding", "reranker"), templates.values(), strict=True):
        meta = template["metadata"]
        assert template["apiVersion"] == odh_template["apiVersion"] and template["kind"] == "Template"
        assert meta["namespace"] == "redhat-ods-applications"
        assert meta["labels"]["opendatahub.io/dashboard"] == "true"
        ann = meta["annotations"]
        assert ann["opendatahub.io/apiProtocol"] == "REST"
        assert ann["opendatahub.io/modelServingSupport"] == '["single"]'
        assert ann["opendatahub.io/model-type"] == f'["{kind}"]'
        assert ann["opendatahub.io/recommended-accelerators"] == '["nvidia.com/gpu"]'
        assert ann["opendatahub.io/runtime-version"] == f"v{VLLM}"
        assert ann["openshift.io/display-name"]
        # Every annotation key the ODH template has, ours has too.
        assert set(odh_template["metadata"]["annotations"]) <= set(ann)


def test_runtime_container_follows_the_odh_vllm_template(odh_template):
    odh_runtime = odh_template["objects"][0]
    odh_container = odh_runtime["spec"]["containers"][0]
    for template in render_all_templates(VLLM, SETTINGS):
        runtime = template["objects"][0]
        assert runtime["kind"] == "ServingRuntime" and runtime["apiVersion"] == odh_runtime["apiVersion"]
        assert runtime["spec"]["annotations"] == odh_runtime["spec"]["annotations"]  # prometheus, kserve-runtime
        assert runtime["spec"]["supportedModelFormats"] == odh_runtime["spec"]["supportedModelFormats"]
        assert runtime["spec"]["multiModel"] is False
        container = runtime["spec"]["containers"][0]
        assert container["name"] == odh_container["name"]
        assert container["ports"] == odh_container["ports"]
        assert set(odh_container["args"]) <= set(container["args"])  # --port=8080, --model, --served-model-name
        # python3, not python: the vLLM image has no `python`.
        assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
        assert "--runner=pooling" in container["args"]
        assert "--gpu-memory-utilization=0.3" in container["args"]
        assert container["image"] == f"docker.io/vllm/vllm-openai:v{VLLM}"


def test_cache_env_and_shm_are_on_writable_empty_dirs():
    runtime = render_all_templates(VLLM, SETTINGS)[0]["objects"][0]
    container = runtime["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in runtime["spec"]["volumes"]}
    for name in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "VLLM_CACHE_DIR"):
        assert not env[name].startswith("/.cache")
        assert env[name] in mounts and "emptyDir" in volumes[mounts[env[name]]], name
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


def test_inference_service_is_a_raw_deployment_on_gpu_with_load_timed_probes():
    manifests = _render("all-minilm-l6-v2")
    isvc = manifests.inference_service
    meta, model = isvc["metadata"], isvc["spec"]["predictor"]["model"]
    assert meta["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert meta["annotations"]["opendatahub.io/connections"] == SETTINGS.data_connection_name
    assert meta["annotations"]["opendatahub.io/connection-path"] == f"models/{NAME_MINILM}/{MINILM_FACTS.commit_sha}"
    assert meta["labels"]["opendatahub.io/dashboard"] == "true"
    assert meta["annotations"]["openshift.io/display-name"] == "sentence-transformers/all-MiniLM-L6-v2"
    # The version-unknown shape: storage.key/path equal to the connection annotations, never storageUri.
    assert "storageUri" not in model
    assert model["storage"] == {
        "key": SETTINGS.data_connection_name,
        "path": meta["annotations"]["opendatahub.io/connection-path"],
    }
    assert manifests.storage_uri == _uri("all-minilm-l6-v2", MINILM_FACTS)
    assert model["runtime"] == "vllm-embedding-runtime-v0-32-0"
    assert "--max-model-len=256" in model["args"]
    assert model["resources"]["requests"]["nvidia.com/gpu"] == model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    ready, live = model["readinessProbe"], model["livenessProbe"]
    ready_window = ready["initialDelaySeconds"] + ready["periodSeconds"] * ready["failureThreshold"]
    assert 80 <= ready_window <= 100  # ~90 s to become Ready on a first (downloading) start
    assert live["initialDelaySeconds"] >= 180  # never killed while loading
    assert ready["httpGet"]["path"] == live["httpGet"]["path"] == "/health"


def test_bigger_models_get_more_memory_and_longer_probes():
    small = _render("all-minilm-l6-v2").inference_service["spec"]["predictor"]["model"]
    big_facts = MINILM_FACTS.model_copy(update={"weights_bytes": 6 * 2**30, "parameter_count": 1_500_000_000})
    big = _render("all-minilm-l6-v2", big_facts).inference_service["spec"]["predictor"]["model"]
    gib = lambda q: int(q.removesuffix("Gi"))  # noqa: E731
    assert gib(big["resources"]["requests"]["memory"]) > gib(small["resources"]["requests"]["memory"])
    assert int(big["resources"]["requests"]["cpu"]) > int(small["resources"]["requests"]["cpu"])
    assert big["livenessProbe"]["initialDelaySeconds"] > small["livenessProbe"]["initialDelaySeconds"]


def test_max_model_len_is_never_rendered_above_the_model_limit():
    too_long = MINILM_FACTS.model_copy(update={"effective_max_model_len": 512})
    with pytest.raises(ManifestError, match=r"max_model_len 512 > model limit 256.*set max_model_len <= 256"):
        _render("all-minilm-l6-v2", too_long)
    for name, facts in CASES.items():
        args = _render(name).inference_service["spec"]["predictor"]["model"]["args"]
        rendered = int(next(a for a in args if a.startswith("--max-model-len=")).split("=")[1])
        assert rendered == facts.effective_max_model_len <= facts.model_max_len


def test_catalog_kind_must_match_the_snapshot():
    with pytest.raises(ManifestError, match="fix `kind` in the catalog"):
        _render("all-minilm-l6-v2", MSMARCO_FACTS)


def test_data_connection_is_an_rhoai_s3_connection():
    secret = _render("all-minilm-l6-v2").data_connection
    assert secret["kind"] == "Secret" and secret["type"] == "Opaque"
    assert secret["metadata"]["labels"]["opendatahub.io/dashboard"] == "true"
    assert secret["metadata"]["labels"]["opendatahub.io/managed"] == "true"
    assert secret["metadata"]["annotations"]["opendatahub.io/connection-type"] == "s3"
    assert secret["metadata"]["annotations"]["opendatahub.io/connection-type-ref"] == "s3"
    assert set(secret["stringData"]) == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_S3_ENDPOINT",
        "AWS_S3_BUCKET",
        "AWS_DEFAULT_REGION",
    }
    assert secret["stringData"]["AWS_SECRET_ACCESS_KEY"] == "example-secret-value"


def test_redacted_secret_shows_no_credentials_anywhere():
    manifests = _render("all-minilm-l6-v2")
    shown = redact_secret(manifests.data_connection)
    assert shown["stringData"]["AWS_ACCESS_KEY_ID"] == shown["stringData"]["AWS_SECRET_ACCESS_KEY"] == REDACTED
    assert shown["stringData"]["AWS_S3_BUCKET"] == "pooling-models"
    text = to_yaml(shown) + manifests_hash(manifests) + repr(SETTINGS)
    assert "example-secret-value" not in text and "AKIAEXAMPLEKEY" not in text
    assert manifests.data_connection["stringData"]["AWS_SECRET_ACCESS_KEY"] == "example-secret-value"  # untouched


def test_route_is_edge_tls_to_the_predictor_service():
    route = _render("ms-marco-minilm-l12-v2").route
    assert route["spec"]["tls"]["termination"] == "edge"
    assert route["spec"]["to"] == {"kind": "Service", "name": "ms-marco-minilm-l12-v2-predictor", "weight": 100}


def test_effective_container_appends_model_args_and_names_the_model():
    container = effective_container(_render("ms-marco-minilm-l12-v2"))
    assert container.args[:3] == ["--port=8080", "--model=/mnt/models", "--served-model-name=ms-marco-minilm-l12-v2"]
    assert container.args[-2:] == ["--max-model-len=512", "--dtype=auto"]
    assert container.served_model_name == "ms-marco-minilm-l12-v2"


def test_spec_hash_changes_with_the_spec_only():
    assert manifests_hash(_render("all-minilm-l6-v2")) == manifests_hash(_render("all-minilm-l6-v2"))
    moved = MINILM_FACTS.model_copy(update={"commit_sha": "0" * 40})
    assert manifests_hash(_render("all-minilm-l6-v2", moved)) != manifests_hash(_render("all-minilm-l6-v2"))


# ---------------------------------------------------------------- golden files


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_manifests_match_golden_yaml(name):
    manifests = _render(name)
    text = to_yaml(
        manifests.inference_service,
        manifests.serving_runtime,
        redact_secret(manifests.data_connection),
        manifests.route,
    )
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("POOLING_REGEN_GOLDEN"):
        golden.write_text(text)
    assert golden.is_file(), f"{golden} missing: run with POOLING_REGEN_GOLDEN=1 to create it"
    assert text == golden.read_text(), f"{golden} differs: review, then regenerate with POOLING_REGEN_GOLDEN=1"


# ---------------------------------------------------------------- `pooling-pipeline render`


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _main() -> None:  # a group, as in the real CLI
        pass

    serving_cli.register(app)
    return app


def test_render_writes_both_templates_and_check_detects_drift(tmp_path):
    runner = CliRunner()
    result = runner.invoke(_app(), ["render", "--out", str(tmp_path), "--vllm-version", "0.12.0"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["vllm-embedding-runtime.yaml", "vllm-reranker-runtime.yaml"]
    docs = yaml.safe_load((tmp_path / files[0]).read_text())
    assert docs["metadata"]["annotations"]["opendatahub.io/runtime-version"] == "v0.12.0"
    check = runner.invoke(_app(), ["render", "--out", str(tmp_path), "--vllm-version", "0.12.0", "--check"])
    assert check.exit_code == 0, check.output
    (tmp_path / files[1]).write_text((tmp_path / files[1]).read_text().replace("0.3", "0.9"))
    drift = runner.invoke(_app(), ["render", "--out", str(tmp_path), "--vllm-version", "0.12.0", "--check"])
    assert drift.exit_code == 1 and "vllm-reranker-runtime.yaml" in drift.output


def test_committed_runtime_templates_match_a_fresh_render():
    committed = PROJECT_ROOT / "k8s" / "runtimes"
    for name, text in serving_cli.rendered_runtime_files(serving_cli.DEFAULT_VLLM_VERSION).items():
        path = committed / name
        assert path.is_file(), f"{path} missing: run `pooling-pipeline render`"
        assert path.read_text() == text, f"{path} drifted from the code: run `pooling-pipeline render` and commit"


# ---------------------------------------------------------------- storage shapes per OpenShift AI version

# The note each shape's golden file starts with: the versions it targets and the sources (k8s/README.md has
# the full evidence table). Changing a note is a reviewed change of the golden file, like its YAML.
SHAPE_NOTES = {
    "storage-key-path": (
        None,
        """\
# Storage shape `storage-key-path`: POOLING_RHOAI_VERSION unset or < 3.0 (the default).
# Targets OpenShift AI 2.16-2.25 (ODH 2.20-2.35), and 3.0-3.5 unchanged.
# - `storage: {key, path}`, no storageUri: the 2.x dashboard's own shape
#   (opendatahub-io/odh-dashboard frontend/src/api/k8s/inferenceServices.ts @ v2.35.0 c90aad557870).
# - key = the data connection Secret, aggregated into `storage-config` because it is labelled
#   opendatahub.io/managed + opendatahub.io/dashboard (odh-model-controller internal/controller/core/
#   secret_controller.go @ odh-v2.23 4b50e95475e3 .. incubating 57b43aad41ae); KServe joins its bucket with
#   `path` (kserve pkg/credentials/service_account_credentials.go, rhoai-2.25 cee9b6680174).
# - The connection annotations carry the same values: RHOAI 2.24/2.25 inject only storage.key (+ SA on 2.25),
#   >= 3.0 keeps an explicit storage.path (opendatahub-operator internal/webhook/serving/mutating_isvc.go
#   injectS3StorageKeyPath @ v3.0.0 b26c1237a745; rhods-operator @ rhoai-2.24 76f03d7f1b39, rhoai-2.25
#   5b1b8566b19d, rhoai-3.0 331819fa5c45). Never storageUri beside them: KServe refuses storageUri +
#   storage.path ("must provide only one of storageUri and storage.path", components/predictor.go, kserve #1899).
""",
    ),
    "connection-annotations": (
        "3.0",
        """\
# Storage shape `connection-annotations`: POOLING_RHOAI_VERSION >= 3.0.
# Targets OpenShift AI 3.0-3.5 (ODH 3.0-3.5) only: older webhooks inject no storage.path (or nothing).
# - Only `opendatahub.io/connections` + `opendatahub.io/connection-path`, no storageUri, no storage: the 3.x
#   dashboard's shape (opendatahub-io/odh-dashboard packages/kserve/src/deployUtils.ts applyConnectionData
#   @ v3.0.0 a107b200369a).
# - The operator's webhook injects storage.key, storage.path and serviceAccountName `<secret>-sa`
#   (opendatahub-operator internal/webhook/serving/mutating_isvc.go injectS3StorageKeyPath @ v3.0.0
#   b26c1237a745, main 0c0c9913c712; rhods-operator same file @ rhoai-3.0 331819fa5c45 .. rhoai-3.5 3f1ddf5a268a).
""",
    ),
}


@pytest.mark.parametrize("shape", sorted(SHAPE_NOTES))
def test_each_storage_shape_matches_its_golden_file_with_its_version_note(shape):
    version, note = SHAPE_NOTES[shape]
    manifests = _render(NAME_MINILM, settings=SETTINGS.model_copy(update={"rhoai_version": version}))
    text = note + "---\n" + to_yaml(manifests.inference_service, redact_secret(manifests.data_connection))
    golden = GOLDEN / f"storage-{shape}.yaml"
    if os.environ.get("POOLING_REGEN_GOLDEN"):
        golden.write_text(text)
    assert golden.is_file(), f"{golden} missing: run with POOLING_REGEN_GOLDEN=1 to create it"
    assert text == golden.read_text(), f"{golden} differs: review, then regenerate with POOLING_REGEN_GOLDEN=1"


@pytest.mark.parametrize("version", [None, "2.16", "2.24", "2.25", "2.99", "3.0", "3.5", "v3.2.1", "rhoai-2.25"])
def test_no_version_renders_storage_uri_next_to_a_storage_path(version, crds):
    manifests = _render(NAME_MINILM, settings=SETTINGS.model_copy(update={"rhoai_version": version}))
    isvc = manifests.inference_service
    model, annotations = isvc["spec"]["predictor"]["model"], isvc["metadata"]["annotations"]
    assert "storageUri" not in model
    assert annotations["opendatahub.io/connections"] == SETTINGS.data_connection_name
    if version is not None and version.lstrip("v").startswith("3"):
        assert "storage" not in model  # the webhook injects it from the annotations
    else:
        assert model["storage"]["path"] == annotations["opendatahub.io/connection-path"]
        assert model["storage"]["key"] == annotations["opendatahub.io/connections"]
    assert manifests.storage_uri == _uri(NAME_MINILM, MINILM_FACTS)
    assert validate_manifest(isvc, crds).validated


def test_an_unreadable_rhoai_version_names_the_setting():
    with pytest.raises(ValueError, match=r"POOLING_RHOAI_VERSION='three'.*MAJOR\.MINOR"):
        RenderSettings(rhoai_version="three")


def test_a_model_in_another_bucket_than_the_data_connection_is_refused():
    entry = load_catalog(CLUSTER_CATALOG).get(NAME_MINILM)
    with pytest.raises(ManifestError, match="set POOLING_S3_BUCKET"):
        render_model_manifests(entry, MINILM_FACTS, "s3://elsewhere/models/x/sha/", VLLM, SETTINGS)


# ---------------------------------------------------------------- versioned runtimes, runtime hash


def test_a_release_registers_version_named_templates_the_dashboard_does_not_list():
    released = render_release_templates("0.33.0", SETTINGS)
    assert [t["metadata"]["name"] for t in released] == [
        "vllm-embedding-runtime-v0-33-0",
        "vllm-reranker-runtime-v0-33-0",
    ]
    for template in released:
        # The dashboard lists Templates by this label (odh-dashboard frontend/src/api/k8s/templates.ts).
        assert "opendatahub.io/dashboard" not in template["metadata"]["labels"]
        assert template["objects"][0]["metadata"]["name"] == template["metadata"]["name"]
    user_facing = render_all_templates("0.33.0", SETTINGS)
    assert all(t["metadata"]["labels"]["opendatahub.io/dashboard"] == "true" for t in user_facing)


def test_validation_inference_services_run_on_the_release_runtime():
    manifests = _render(NAME_MINILM)
    assert manifests.serving_runtime["metadata"]["name"] == "vllm-embedding-runtime-v0-32-0"
    assert manifests.inference_service["spec"]["predictor"]["model"]["runtime"] == "vllm-embedding-runtime-v0-32-0"


def test_a_runtime_only_change_changes_the_inference_service():
    # Before RHOAI/ODH 3.2 KServe does not restart predictors when only their ServingRuntime changes
    # (kserve#3683): the runtime's hash in an annotation (copied to the pod template in raw mode) does.
    before = _render(NAME_MINILM)
    after = _render(NAME_MINILM, settings=SETTINGS.model_copy(update={"gpu_memory_utilization": 0.5}))
    assert before.inference_service["spec"] == after.inference_service["spec"]  # nothing else moved
    key = "pooling-pipeline/runtime-hash"
    assert (
        before.inference_service["metadata"]["annotations"][key]
        != after.inference_service["metadata"]["annotations"][key]
    )
    assert before.inference_service != after.inference_service


# ---------------------------------------------------------------- token authentication


@pytest.mark.parametrize(
    ("version", "annotation", "label"),
    [(None, True, True), ("2.17", False, True), ("2.18", False, True), ("2.19", True, False), ("3.0", True, False)],
)
def test_the_auth_switch_is_where_each_version_reads_it(version, annotation, label):
    settings = SETTINGS.model_copy(update={"rhoai_version": version, "endpoint_auth": True})
    meta = _render(NAME_MINILM, settings=settings).inference_service["metadata"]
    key = "security.opendatahub.io/enable-auth"
    assert (meta["annotations"].get(key) == "true") is annotation
    assert (meta["labels"].get(key) == "true") is label


def test_auth_is_refused_where_raw_deployments_have_none():
    settings = SETTINGS.model_copy(update={"rhoai_version": "2.16", "endpoint_auth": True})
    with pytest.raises(ValueError, match=r"no token authentication.*unset POOLING_ENDPOINT_AUTH"):
        _render(NAME_MINILM, settings=settings)


def test_auth_renders_the_dashboards_identity_and_a_route_to_the_proxy():
    settings = SETTINGS.model_copy(update={"endpoint_auth": True})
    manifests = _render(NAME_MINILM, settings=settings)
    by_kind = {o["kind"]: o for o in manifests.auth}
    assert set(by_kind) == {"ServiceAccount", "Role", "RoleBinding", "Secret"}
    assert by_kind["Role"]["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "resourceNames": [NAME_MINILM],
            "verbs": ["get"],
        }
    ]
    assert by_kind["RoleBinding"]["subjects"][0]["name"] == by_kind["ServiceAccount"]["metadata"]["name"]
    assert by_kind["Secret"]["type"] == "kubernetes.io/service-account-token"
    sa = by_kind["ServiceAccount"]["metadata"]["name"]
    assert by_kind["Secret"]["metadata"]["annotations"]["kubernetes.io/service-account.name"] == sa
    # Through the proxy (8443, re-encrypted), never straight to vLLM's 8080, which would skip the token check.
    assert manifests.route["spec"]["port"]["targetPort"] == 8443
    assert manifests.route["spec"]["tls"]["termination"] == "reencrypt"
    assert _render(NAME_MINILM).auth == []
