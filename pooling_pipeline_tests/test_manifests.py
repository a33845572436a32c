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
from pooling_pipeline.serving.crd_validation import ManifestValidationError, validate_manifest
from pooling_pipeline.serving.manifests import (
    REDACTED,
    ManifestError,
    RenderSettings,
    effective_container,
    manifests_hash,
    redact_secret,
    render_all_templates,
    render_model_manifests,
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
    repo_id="sentence-transformers/all-MiniLM-L6-v2", revision="main",
    commit_sha="c9745ed1d9f207416be6d2e6f8de32d1f16199bf", kind=ModelKind.EMBEDDING, architecture="BertModel",
    model_type="bert", hidden_size=384, dimension=384, pooling_mode="mean", normalize=True, num_labels=None,
    max_position_embeddings=512, st_max_seq_length=256, effective_max_model_len=256, parameter_count=22_713_216,
    weights_bytes=90_868_376, files=["config.json", "model.safetensors"], model_max_len=256,
)
MSMARCO_FACTS = ModelFacts(
    repo_id="cross-encoder/ms-marco-MiniLM-L12-v2", revision="main",
    commit_sha="1427fd652930e4ba29e8149678df786c240d8825", kind=ModelKind.RERANKER,
    architecture="BertForSequenceClassification", model_type="bert", hidden_size=384, dimension=None,
    pooling_mode=None, normalize=False, num_labels=1, max_position_embeddings=512, st_max_seq_length=None,
    effective_max_model_len=512, parameter_count=33_360_769, weights_bytes=133_464_836,
    files=["config.json", "model.safetensors"], model_max_len=512,
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
def crds(shared_reference: Path) -> Path:
    return shared_reference / "kserve-crds"


@pytest.fixture(scope="module")
def odh_template(shared_reference: Path) -> dict:
    return yaml.safe_load((shared_reference / "odh-runtime-templates" / "vllm-cuda-template.yaml").read_text())


# ---------------------------------------------------------------- schema validity


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_rendered_kserve_object_validates_against_the_real_crds(name, crds):
    manifests = _render(name)
    assert validate_manifest(manifests.inference_service, crds, required=True)
    assert validate_manifest(manifests.serving_runtime, crds, required=True)


@pytest.mark.parametrize("version", ["0.9.2", "0.10.1", VLLM])
def test_runtime_templates_validate_for_every_vllm_generation(version, crds):
    for template in render_all_templates(version, SETTINGS):
        assert validate_manifest(template, crds, required=True)


def test_unknown_or_mistyped_fields_fail_validation(crds):
    isvc = _render("all-minilm-l6-v2").inference_service
    isvc["spec"]["predictor"]["model"]["readinesProbe"] = {"httpGet": {"path": "/health", "port": 8080}}
    with pytest.raises(ManifestValidationError, match="readinesProbe"):
        validate_manifest(isvc, crds, required=True)
    runtime = _render("all-minilm-l6-v2").serving_runtime
    runtime["spec"]["containers"][0]["args"] = "--port=8080"
    with pytest.raises(ManifestValidationError, match="containers.0.args"):
        validate_manifest(runtime, crds, required=True)


def test_int_or_string_ports_accept_both_forms(crds):
    isvc = _render("all-minilm-l6-v2").inference_service
    isvc["spec"]["predictor"]["model"]["readinessProbe"]["httpGet"]["port"] = "http"
    assert validate_manifest(isvc, crds, required=True)


def test_missing_crd_folder_is_an_error_only_when_required(tmp_path):
    isvc = _render("all-minilm-l6-v2").inference_service
    assert validate_manifest(isvc, tmp_path / "absent") is False
    with pytest.raises(FileNotFoundError, match="POOLING_KSERVE_CRDS"):
        validate_manifest(isvc, tmp_path / "absent", required=True)


# ---------------------------------------------------------------- ODH conventions


def test_templates_carry_the_dashboard_labels_and_annotations(odh_template):
    templates = {t["metadata"]["name"]: t for t in render_all_templates(VLLM, SETTINGS)}
    assert set(templates) == {"vllm-embedding-runtime", "vllm-reranker-runtime"}
    for kind, template in zip(("embedding", "reranker"), templates.values()):
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
    assert model["storageUri"] == _uri("all-minilm-l6-v2", MINILM_FACTS)
    assert model["runtime"] == "vllm-embedding-runtime"
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
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_S3_ENDPOINT",
                                         "AWS_S3_BUCKET", "AWS_DEFAULT_REGION"}
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
        manifests.inference_service, manifests.serving_runtime, redact_secret(manifests.data_connection),
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
