"""The incumbent, for real: Caikit-NLP serving the local catalog's models over its REST API.

Caikit-NLP's pins conflict with vLLM's and with this project's (transformers 4.49, sentence-transformers
3.4, numpy<2), so it lives in its own virtualenv under the stack folder, built once. What it takes to get a
Caikit-NLP 0.5.15 that imports and serves (observed):

- torch is the local CPU 2.13 wheel, installed first and pinned in every step; caikit-nlp itself asks for
  torch<2.9, so it is installed last with `--no-deps` after its other requirements;
- `caikit[runtime-grpc,runtime-http]`: the HTTP server imports prometheus_client, which only the grpc
  extra brings;
- `pyarrow<26`: pyarrow 26 breaks `import caikit_nlp` (through datasets).

Each catalog model with an incumbent on loopback is downloaded from the local hub (the same commit
hf_snapshot sees), converted once per commit with `EmbeddingModule.bootstrap(dir).save(out)` or
`CrossEncoderModule` (model_id = folder name = the incumbent's model_id), and the runtime is started
through `caikit_loopback` so its HTTP server binds 127.0.0.1 (caikit hard-codes 0.0.0.0).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel

from pooling_pipeline.catalog import CatalogEntry, ModelKind, active_catalog
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import (
    StackError,
    pid_alive,
    port_in_use,
    read_pid,
    start_detached,
    stop_from_pid_file,
    tail,
    wait_http_ok,
)
from pooling_pipeline.stack.progress import Progress, Reporter, as_progress
from pooling_pipeline.stack.venvs import ensure_venv

CAIKIT_NLP_VERSION = "0.5.15"
ENV_NAME = f"caikit-nlp-{CAIKIT_NLP_VERSION}"
TORCH_PIN = "torch==2.13.0"
HEALTH_TIMEOUT_S = 300.0  # ~10-25 s on an idle machine; much more on a busy 2-core CI box
CONVERT_TIMEOUT_S = 600.0
WRAPPER = Path(__file__).with_name("caikit_loopback.py")
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def caikit_pip_steps() -> list[list[str]]:
    """The pip steps of the Caikit env (order matters: torch first, caikit-nlp last without deps)."""
    return [
        ["install", TORCH_PIN],
        [
            "install",
            TORCH_PIN,
            "caikit[runtime-grpc,runtime-http]>=0.28,<0.29",
            "caikit-tgis-backend>=0.1.36,<0.2",
            "grpcio>=1.62.2",
            "grpcio-reflection>=1.62.2",
            "grpcio-health-checking>=1.62.2",
            "accelerate>=1.3.0",
            "datasets>=3.3.0",
            "huggingface-hub>=0.26,<1.0",
            "numpy<2",
            "pandas>=2.2.3",
            "scikit-learn>=1.6.1",
            "scipy>=1.10.0",
            "sentence-transformers==3.4.1",
            "tokenizers>=0.20.0",
            "tqdm>=4.67.0",
            "transformers==4.49.0",
            "peft==0.14.0",
            "pyarrow<26",
        ],
        ["install", "--no-deps", f"caikit-nlp=={CAIKIT_NLP_VERSION}"],
    ]


def caikit_root(layout: StackLayout) -> Path:
    return layout.root / "caikit"


def models_dir(layout: StackLayout) -> Path:
    """RUNTIME_LOCAL_MODELS_DIR: one converted model per folder, named by its model_id."""
    return caikit_root(layout) / "models"


def pid_file(layout: StackLayout) -> Path:
    return layout.run_dir / "caikit.pid"


def log_path(layout: StackLayout) -> Path:
    return layout.logs_dir / "caikit.log"


def _info_file(layout: StackLayout) -> Path:
    return caikit_root(layout) / "server.json"


def ensure_caikit_env(layout: StackLayout, *, report: Reporter | Progress | None = None) -> Path:
    """Build (once) and verify the Caikit-NLP env; returns its python.

    Serialised by a file lock: two sessions asking at once get one build, the second waits and reuses it.
    The import check (~16 s: caikit_nlp pulls in torch, transformers and datasets) runs once per build; a
    marker beside the env remembers it passed, so a warm `stack up` does not pay it again.
    """
    layout.venvs.mkdir(parents=True, exist_ok=True)
    with open(layout.venvs / f".{ENV_NAME}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            python = ensure_venv(layout, ENV_NAME, caikit_pip_steps(), log_name=f"venv-{ENV_NAME}", report=report)
            marker = python.parent.parent / ".pooling-caikit-verified"
            if not marker.is_file():
                _verify_caikit_env(python)
                marker.write_text(CAIKIT_NLP_VERSION)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return python


def _verify_caikit_env(python: Path) -> None:
    probe = "import caikit_nlp, caikit.runtime, uvicorn; print(caikit_nlp.__name__)"
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        last = "\n".join(result.stderr.strip().splitlines()[-6:])
        raise StackError(
            f"Caikit-NLP in {python.parent.parent} does not import:\n{last}\n"
            f"Delete that folder and retry (it is rebuilt from {caikit_pip_steps()})."
        )


def incumbent_entries(entries: list[CatalogEntry] | None = None) -> list[CatalogEntry]:
    """Catalog models whose incumbent is on this machine: the ones the local Caikit must serve."""
    entries = entries if entries is not None else active_catalog().models
    return [e for e in entries if e.incumbent and urlparse(e.incumbent.url).hostname in _LOOPBACK_HOSTS]


# One Python process converts every stale model: importing caikit_nlp alone takes ~16 s on this machine, so
# a process per model would cost that ten times on a first start of the full local catalog.
_CONVERT_SCRIPT = """
import json, shutil, sys, time, traceback
from caikit_nlp.modules.text_embedding import CrossEncoderModule, EmbeddingModule
for job in json.loads(sys.argv[1]):
    t0 = time.monotonic()
    module = EmbeddingModule if job["kind"] == "embedding" else CrossEncoderModule
    try:
        shutil.rmtree(job["tmp"], ignore_errors=True)
        module.bootstrap(job["snapshot"]).save(job["tmp"])
        result = {"model_id": job["model_id"], "ok": True}
    except Exception as exc:
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        result = {"model_id": job["model_id"], "ok": False, "error": f"{module.__name__}.bootstrap: {last}"}
    result["seconds"] = round(time.monotonic() - t0, 2)
    print("POOLING-RESULT " + json.dumps(result), flush=True)
"""


class ConvertJob(BaseModel):
    model_id: str
    kind: ModelKind
    snapshot: str  # the hub snapshot folder
    commit_sha: str


class ModelSupport(BaseModel):
    """Whether the local Caikit serves one catalog model, and why not (for the readiness row)."""

    model_id: str
    served: bool
    reason: str | None = None  # why Caikit-NLP cannot serve it (its own error, shortened)
    commit_sha: str
    module: str


def _module_name(kind: ModelKind) -> str:
    return "EmbeddingModule" if kind is ModelKind.EMBEDDING else "CrossEncoderModule"


def _converted(out_dir: Path, commit_sha: str) -> bool:
    marker = out_dir / ".pooling-source.json"
    try:
        return json.loads(marker.read_text()).get("commit_sha") == commit_sha
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def convert_models(python: Path, jobs: list[ConvertJob], out_root: Path) -> dict[str, ModelSupport]:
    """Bootstrap each job's HF snapshot into `<out_root>/<model_id>` (those already holding the commit are
    skipped), all in one Caikit process. A model Caikit-NLP cannot load is reported, not raised."""
    results: dict[str, ModelSupport] = {}
    stale = []
    for job in jobs:
        if _converted(out_root / job.model_id, job.commit_sha):
            results[job.model_id] = ModelSupport(
                model_id=job.model_id, served=True, commit_sha=job.commit_sha, module=_module_name(job.kind)
            )
        else:
            stale.append(job)
    if not stale:
        return results
    payload = [{**job.model_dump(mode="json"), "tmp": str(out_root / f"{job.model_id}.tmp")} for job in stale]
    try:
        proc = subprocess.run(
            [str(python), "-c", _CONVERT_SCRIPT, json.dumps(payload)],
            capture_output=True,
            text=True,
            timeout=CONVERT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise StackError(
            f"converting {len(stale)} models for Caikit took over {CONVERT_TIMEOUT_S:.0f}s: the machine is "
            "overloaded; retry"
        ) from None
    reported = {}
    for line in proc.stdout.splitlines():
        if line.startswith("POOLING-RESULT "):
            item = json.loads(line.removeprefix("POOLING-RESULT "))
            reported[item["model_id"]] = item
    for job in stale:
        item = reported.get(job.model_id)
        if item is None:  # the converter died before this model: that is not the model's fault
            last = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise StackError(f"the Caikit-NLP converter exited (code {proc.returncode}) before {job.model_id}:\n{last}")
        out_dir, tmp = out_root / job.model_id, out_root / f"{job.model_id}.tmp"
        if item["ok"]:
            if out_dir.exists():
                shutil.rmtree(out_dir)
            tmp.rename(out_dir)
            (out_dir / ".pooling-source.json").write_text(
                json.dumps({"commit_sha": job.commit_sha, "source": job.snapshot, "module": _module_name(job.kind)})
            )
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(out_dir, ignore_errors=True)  # an older revision must not be served in its place
        results[job.model_id] = ModelSupport(
            model_id=job.model_id,
            served=bool(item["ok"]),
            reason=None if item["ok"] else str(item["error"])[:500],
            commit_sha=job.commit_sha,
            module=_module_name(job.kind),
        )
    return results


def support_file(layout: StackLayout) -> Path:
    return caikit_root(layout) / "support.json"


def prepare_models(layout: StackLayout, python: Path, hf_endpoint: str | None) -> dict[str, ModelSupport]:
    """Download each incumbent model from the hub and convert it for Caikit; records what it can serve."""
    from pooling_pipeline.resources.hub import HubResource

    hub = HubResource(endpoint=hf_endpoint, token=None, cache_dir=str(layout.hf_cache))
    out = models_dir(layout)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for entry in incumbent_entries():
        assert entry.incumbent is not None
        snapshot, sha = hub.snapshot(entry.repo_id, entry.revision)
        jobs.append(
            ConvertJob(model_id=entry.incumbent.model_id, kind=entry.kind, snapshot=str(snapshot), commit_sha=sha)
        )
    support = convert_models(python, jobs, out)
    # Models no longer in the catalog (or no longer loadable) would still be loaded (and cost RAM): remove them.
    served = {m for m, s in support.items() if s.served}
    for stale in out.iterdir():
        if stale.is_dir() and stale.name not in served:
            shutil.rmtree(stale)
    support_file(layout).write_text(json.dumps({m: s.model_dump(mode="json") for m, s in support.items()}, indent=1))
    return support


def recorded_support(layout: StackLayout | None = None) -> dict[str, ModelSupport]:
    """What the last Caikit start could serve, by model_id (empty before the first start)."""
    layout = layout or StackLayout.default()
    try:
        raw = json.loads(support_file(layout).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {m: ModelSupport.model_validate(v) for m, v in raw.items()}


def caikit_support(entry: CatalogEntry, layout: StackLayout | None = None) -> str | None:
    """Why the local Caikit-NLP does not serve `entry` as its incumbent, or None when it does (or when the
    incumbent is a remote Caikit, which this stack does not judge). For the readiness row."""
    if entry.incumbent is None:
        return "the catalog names no incumbent for this model"
    if urlparse(entry.incumbent.url).hostname not in _LOOPBACK_HOSTS:
        return None
    support = recorded_support(layout).get(entry.incumbent.model_id)
    if support is None:
        return None  # not prepared yet: `stack up --with-incumbent` decides
    if not support.served:
        return f"Caikit-NLP {CAIKIT_NLP_VERSION} cannot load it: {support.reason}"
    return None


def compute_threads() -> int:
    """The torch threads vLLM-CPU computes with on this machine, so Caikit gets as many.

    vLLM's automatic CPU binding (VLLM_CPU_OMP_THREADS_BIND=auto, the local default) reserves one core per
    local rank for its scheduler process and gives the model's OpenMP threads the rest, one per physical
    core (vllm/utils/ompmultiprocessing.py, `reserve_cpu_num` and `_get_autobind_cpu_ids`, in vllm-cpu
    0.32). Caikit's torch would otherwise take every core, and a 2-core machine would compare one vLLM
    thread with two Caikit threads.
    """
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return max(1, cores - 1)


def running_pid(layout: StackLayout) -> int | None:
    return read_pid(pid_file(layout))


def up(layout: StackLayout, *, port: int, hf_endpoint: str | None, report: Reporter | Progress | None = None) -> str:
    """Start (or reuse) Caikit-NLP on 127.0.0.1:`port` serving the catalog's incumbent models; returns its URL."""
    url = f"http://127.0.0.1:{port}"
    layout.ensure()
    pid = running_pid(layout)
    if pid:
        info = _read_info(layout)
        if info.get("port") == port:
            wait_http_ok(f"{url}/health", timeout_s=HEALTH_TIMEOUT_S)
            return url
        raise StackError(
            f"Caikit already runs (pid {pid}) on port {info.get('port')}, not {port}: "
            "run `pooling-pipeline stack down` first"
        )
    if port_in_use(port):
        raise StackError(f"port {port} on 127.0.0.1 is taken by another process: free it or pass --caikit-port")
    progress = as_progress(report)
    t0 = time.monotonic()
    python = ensure_caikit_env(layout, report=progress)
    env_s = time.monotonic() - t0
    t_convert = time.monotonic()
    progress("caikit: converting the catalog's models for Caikit-NLP (cached per commit)")
    with progress.heartbeat(lambda: "caikit: still converting"):
        support = prepare_models(layout, python, hf_endpoint)
    convert_s = time.monotonic() - t_convert
    for model_id, item in sorted(support.items()):
        if not item.served:
            progress(f"caikit: cannot serve {model_id}: {item.reason}")
    model_ids = sorted(m for m, s in support.items() if s.served)
    if not model_ids:
        raise StackError(
            "no catalog model names a loopback incumbent (incumbent.url http://127.0.0.1:...): "
            "nothing for Caikit to serve; add `incumbent:` to the entries in the catalog"
        )
    env = {
        "RUNTIME_LIBRARY": "caikit_nlp",
        "RUNTIME_LOCAL_MODELS_DIR": str(models_dir(layout)),
        "RUNTIME_GRPC_ENABLED": "false",
        "RUNTIME_HTTP_ENABLED": "true",
        "RUNTIME_HTTP_PORT": str(port),
        # Its Prometheus server would bind 0.0.0.0:8086: off (the REST server is what we compare).
        "RUNTIME_METRICS_ENABLED": "false",
        "RUNTIME_LAZY_LOAD_LOCAL_MODELS": "false",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        # The same compute-thread budget as vLLM-CPU (issue 11, equal footing): the load benchmark reports
        # both servers' thread variables and busy threads (evaluation/benchmark/conditions.py).
        "OMP_NUM_THREADS": str(compute_threads()),
        "MKL_NUM_THREADS": str(compute_threads()),
    }
    # Run a copy from the Caikit folder: started from here, the script's own folder (pooling_pipeline/stack/,
    # which holds this caikit.py) would come first on sys.path and shadow the real `caikit` package.
    wrapper = caikit_root(layout) / WRAPPER.name
    shutil.copyfile(WRAPPER, wrapper)
    proc = start_detached(
        "caikit",
        [str(python), str(wrapper)],
        pid_file=pid_file(layout),
        log_path=log_path(layout),
        env=env,
        cwd=caikit_root(layout),
    )
    t1 = time.monotonic()
    progress(f"caikit: server starting (pid {proc.pid}, {len(model_ids)} models, log {log_path(layout)})")
    with progress.heartbeat(lambda: "caikit: waiting for /health"):
        wait_http_ok(f"{url}/health", timeout_s=HEALTH_TIMEOUT_S, process=proc)
    start_s = time.monotonic() - t1
    _info_file(layout).write_text(
        json.dumps(
            {
                "port": port,
                "url": url,
                "pid": proc.pid,
                "models": model_ids,
                "start_s": round(start_s, 1),
                "env_s": round(env_s, 1),
                "convert_s": round(convert_s, 1),
                "unsupported": {m: s.reason for m, s in support.items() if not s.served},
            }
        )
    )
    _wait_models_loaded(url, model_ids, proc)
    info = _read_info(layout)
    info["loaded_s"] = round(time.monotonic() - t1, 1)  # process start -> every model loaded
    _info_file(layout).write_text(json.dumps(info))
    progress(f"caikit: {len(model_ids)} models loaded, {info['loaded_s']}s after the process started")
    return url


def _wait_models_loaded(url: str, model_ids: list[str], proc, timeout_s: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    loaded: list[str] = []
    while time.monotonic() < deadline:
        try:
            data = httpx.get(f"{url}/info/models", timeout=5.0).json()
            loaded = [m.get("name") for m in data.get("models", []) if m.get("loaded")]
            if set(model_ids) <= set(loaded):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise StackError(
        f"Caikit is up but has not loaded {sorted(set(model_ids) - set(loaded))}; "
        f"see {proc.log_path}:\n{tail(proc.log_path)}"
    )


def _read_info(layout: StackLayout) -> dict[str, Any]:
    try:
        return json.loads(_info_file(layout).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def down(layout: StackLayout) -> bool:
    """Stop Caikit (by its PID file). True if it was running."""
    stopped = stop_from_pid_file(pid_file(layout))
    _info_file(layout).unlink(missing_ok=True)
    return stopped


def status(layout: StackLayout) -> dict[str, Any]:
    pid = running_pid(layout)
    info = _read_info(layout) if pid else {}
    return {
        "pid": pid,
        "running": bool(pid and pid_alive(pid)),
        "url": info.get("url"),
        "models": info.get("models", []),
        "start_s": info.get("start_s"),  # process start -> /health 200, last start
        "loaded_s": info.get("loaded_s"),  # process start -> every model loaded
        "convert_s": info.get("convert_s"),  # converting the catalog's models (0 when all were cached)
        "unsupported": info.get("unsupported", {}),  # model_id -> why Caikit-NLP cannot load it
        "env": str(layout.venvs / ENV_NAME),
        "models_dir": str(models_dir(layout)),
        "log": str(log_path(layout)),
    }
