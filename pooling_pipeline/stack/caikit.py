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
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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
            "install", TORCH_PIN, "caikit[runtime-grpc,runtime-http]>=0.28,<0.29", "caikit-tgis-backend>=0.1.36,<0.2",
            "grpcio>=1.62.2", "grpcio-reflection>=1.62.2", "grpcio-health-checking>=1.62.2", "accelerate>=1.3.0",
            "datasets>=3.3.0", "huggingface-hub>=0.26,<1.0", "numpy<2", "pandas>=2.2.3", "scikit-learn>=1.6.1",
            "scipy>=1.10.0", "sentence-transformers==3.4.1", "tokenizers>=0.20.0", "tqdm>=4.67.0",
            "transformers==4.49.0", "peft==0.14.0", "pyarrow<26",
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


def ensure_caikit_env(layout: StackLayout) -> Path:
    """Build (once) and verify the Caikit-NLP env; returns its python.

    Serialised by a file lock: two sessions asking at once get one build, the second waits and reuses it.
    """
    layout.venvs.mkdir(parents=True, exist_ok=True)
    with open(layout.venvs / f".{ENV_NAME}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            python = ensure_venv(layout, ENV_NAME, caikit_pip_steps(), log_name=f"venv-{ENV_NAME}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    probe = "import caikit_nlp, caikit.runtime, uvicorn; print(caikit_nlp.__name__)"
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        last = "\n".join(result.stderr.strip().splitlines()[-6:])
        raise StackError(
            f"Caikit-NLP in {python.parent.parent} does not import:\n{last}\n"
            f"Delete that folder and retry (it is rebuilt from {caikit_pip_steps()})."
        )
    return python


def incumbent_entries(entries: list[CatalogEntry] | None = None) -> list[CatalogEntry]:
    """Catalog models whose incumbent is on this machine: the ones the local Caikit must serve."""
    entries = entries if entries is not None else active_catalog().models
    return [e for e in entries if e.incumbent and urlparse(e.incumbent.url).hostname in _LOOPBACK_HOSTS]


def convert_model(python: Path, snapshot_dir: Path, kind: ModelKind, out_dir: Path, commit_sha: str) -> bool:
    """Bootstrap a HF snapshot into a Caikit model folder (skipped when `out_dir` holds this commit).

    True if it converted.
    """
    marker = out_dir / ".pooling-source.json"
    if marker.is_file() and json.loads(marker.read_text()).get("commit_sha") == commit_sha:
        return False
    module = "EmbeddingModule" if kind is ModelKind.EMBEDDING else "CrossEncoderModule"
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    code = (
        "import shutil, sys\n"
        f"from caikit_nlp.modules.text_embedding import {module} as M\n"
        "shutil.rmtree(sys.argv[2], ignore_errors=True)\n"
        "M.bootstrap(sys.argv[1]).save(sys.argv[2])\n"
    )
    result = subprocess.run([str(python), "-c", code, str(snapshot_dir), str(tmp)], capture_output=True, text=True,
                            timeout=CONVERT_TIMEOUT_S)
    if result.returncode != 0:
        last = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise StackError(f"Caikit-NLP {module}.bootstrap({snapshot_dir}) failed:\n{last}\n"
                         "Check that the snapshot is a sentence-transformers / cross-encoder model.")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    marker.write_text(json.dumps({"commit_sha": commit_sha, "source": str(snapshot_dir), "module": module}))
    return True


def prepare_models(layout: StackLayout, python: Path, hf_endpoint: str | None) -> list[str]:
    """Download each incumbent model from the hub and convert it for Caikit; returns the model_ids."""
    from pooling_pipeline.resources.hub import HubResource

    hub = HubResource(endpoint=hf_endpoint, token=None, cache_dir=str(layout.hf_cache))
    out = models_dir(layout)
    out.mkdir(parents=True, exist_ok=True)
    model_ids = []
    for entry in incumbent_entries():
        assert entry.incumbent is not None
        snapshot, sha = hub.snapshot(entry.repo_id, entry.revision)
        convert_model(python, snapshot, entry.kind, out / entry.incumbent.model_id, sha)
        model_ids.append(entry.incumbent.model_id)
    # Models no longer in the catalog would still be loaded (and cost RAM): remove them.
    for stale in out.iterdir():
        if stale.is_dir() and stale.name not in model_ids:
            shutil.rmtree(stale)
    return model_ids


def running_pid(layout: StackLayout) -> int | None:
    return read_pid(pid_file(layout))


def up(layout: StackLayout, *, port: int, hf_endpoint: str | None) -> str:
    """Start (or reuse) Caikit-NLP on 127.0.0.1:`port` serving the catalog's incumbent models; returns its URL."""
    url = f"http://127.0.0.1:{port}"
    layout.ensure()
    pid = running_pid(layout)
    if pid:
        info = _read_info(layout)
        if info.get("port") == port:
            wait_http_ok(f"{url}/health", timeout_s=HEALTH_TIMEOUT_S)
            return url
        raise StackError(f"Caikit already runs (pid {pid}) on port {info.get('port')}, not {port}: "
                         "run `pooling-pipeline stack down` first")
    if port_in_use(port):
        raise StackError(f"port {port} on 127.0.0.1 is taken by another process: free it or pass --caikit-port")
    t0 = time.monotonic()
    python = ensure_caikit_env(layout)
    env_s = time.monotonic() - t0
    model_ids = prepare_models(layout, python, hf_endpoint)
    if not model_ids:
        raise StackError("no catalog model names a loopback incumbent (incumbent.url http://127.0.0.1:...): "
                         "nothing for Caikit to serve; add `incumbent:` to the entries in the catalog")
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
    }
    # Run a copy from the Caikit folder: started from here, the script's own folder (pooling_pipeline/stack/,
    # which holds this caikit.py) would come first on sys.path and shadow the real `caikit` package.
    wrapper = caikit_root(layout) / WRAPPER.name
    shutil.copyfile(WRAPPER, wrapper)
    proc = start_detached("caikit", [str(python), str(wrapper)], pid_file=pid_file(layout),
                          log_path=log_path(layout), env=env, cwd=caikit_root(layout))
    t1 = time.monotonic()
    wait_http_ok(f"{url}/health", timeout_s=HEALTH_TIMEOUT_S, process=proc)
    start_s = time.monotonic() - t1
    _info_file(layout).write_text(json.dumps({"port": port, "url": url, "pid": proc.pid, "models": model_ids,
                                              "start_s": round(start_s, 1), "env_s": round(env_s, 1)}))
    _wait_models_loaded(url, model_ids, proc)
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
    raise StackError(f"Caikit is up but has not loaded {sorted(set(model_ids) - set(loaded))}; "
                     f"see {proc.log_path}:\n{tail(proc.log_path)}")


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
        "env": str(layout.venvs / ENV_NAME),
        "models_dir": str(models_dir(layout)),
        "log": str(log_path(layout)),
    }
