"""The local stack's settings: ports, the generated S3 credentials, the bucket. Kept in one state file.

The credentials are generated once, at the first `stack up`, and kept (mode 0600) so that a restarted
SeaweedFS accepts the same keys and everything already configured with `stack env` keeps working.
SeaweedFS always gets an identity: without one it would accept any key at all.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from pooling_pipeline.stack.layout import StackLayout

DEFAULT_S3_PORT = 8333
DEFAULT_HUB_PORT = 8090
DEFAULT_CAIKIT_PORT = 8085
DEFAULT_BUCKET = "pooling-models"
DEFAULT_REGION = "us-east-1"
LOOPBACK = "127.0.0.1"

# Environment variables that choose the ports of a stack that is not running yet.
PORT_ENV = {"s3_port": "POOLING_S3_PORT", "hub_port": "POOLING_HUB_PORT", "caikit_port": "POOLING_CAIKIT_PORT"}


class StackStateError(RuntimeError):
    """The state file is unreadable; the message names the file and the fix."""


class StackState(BaseModel):
    """Where the local stack listens and how to authenticate to it."""

    s3_port: int = Field(DEFAULT_S3_PORT, ge=1, le=65535)
    hub_port: int = Field(DEFAULT_HUB_PORT, ge=1, le=65535)
    caikit_port: int = Field(DEFAULT_CAIKIT_PORT, ge=1, le=65535)
    access_key: str = Field(min_length=8)
    secret_key: str = Field(min_length=16, repr=False)
    bucket: str = Field(DEFAULT_BUCKET, min_length=3, max_length=63)
    region: str = DEFAULT_REGION
    # SeaweedFS's internal ports (master, volume, filer, gRPC, admin): chosen free at the first start and
    # kept, so a restarted server finds its volumes under the same address.
    seaweedfs_ports: dict[str, int] = Field(default_factory=dict)

    @property
    def s3_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"

    @property
    def hub_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.hub_port}"

    @property
    def caikit_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.caikit_port}"

    def env(self) -> dict[str, str]:
        """What any boto3 / huggingface_hub user needs to reach this stack (`pooling-pipeline stack env`)."""
        return {
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "POOLING_S3_BUCKET": self.bucket,
            "HF_ENDPOINT": self.hub_endpoint,
        }

    # ------------------------------------------------------------ persistence

    @classmethod
    def load(cls, layout: StackLayout) -> StackState | None:
        """The saved state, or None when the stack was never started here."""
        path = layout.state_file
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return cls.model_validate(json.loads(raw))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise StackStateError(
                f"{path} is not a valid stack state file ({exc.__class__.__name__}: {str(exc).splitlines()[0]}): "
                "run `pooling-pipeline stack down`, delete the file, and `pooling-pipeline stack up` again "
                "(new S3 credentials are generated; S3 data is kept)"
            ) from None

    def save(self, layout: StackLayout) -> Path:
        """Write atomically with mode 0600: the file holds the S3 secret."""
        return write_private(layout.state_file, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def create(cls, **overrides: object) -> StackState:
        """New state with freshly generated credentials."""
        values: dict[str, object] = {
            "access_key": "pooling-" + secrets.token_hex(6),
            "secret_key": secrets.token_urlsafe(30),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    @classmethod
    def load_or_create(cls, layout: StackLayout) -> StackState:
        """The saved state; at the first call, a new one (ports from POOLING_*_PORT or defaults), saved."""
        state = cls.load(layout)
        if state is None:
            state = cls.create(**ports_from_env())
            state.save(layout)
        return state


def ports_from_env() -> dict[str, int]:
    """Ports set through POOLING_S3_PORT / POOLING_HUB_PORT / POOLING_CAIKIT_PORT."""
    ports: dict[str, int] = {}
    for field, name in PORT_ENV.items():
        value = os.environ.get(name, "").strip()
        if not value:
            continue
        try:
            port = int(value)
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise StackStateError(f"{name}={value!r} is not a TCP port: set it to a number between 1024 and 65535")
        ports[field] = port
    return ports


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically, readable by the owner only (0600), also while being written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def export_lines(env: dict[str, str]) -> str:
    """`export K=V` lines, shell-quoted, for `eval "$(pooling-pipeline stack env)"`."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


# ------------------------------------------------------------------ ports and processes


def process_cmdline(pid: int) -> str:
    """The command line of `pid` ('' if unknown): tells our server apart from a recycled PID."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def port_user(port: int) -> str | None:
    """'pid 123 (weed mini ...)' listening on `port`, when the OS tells us."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                cmd = process_cmdline(conn.pid).strip()
                return f"pid {conn.pid} ({cmd[:80] or 'unknown command'})"
    except Exception:  # noqa: BLE001 - best effort: only enriches the message
        return None
    return None


def port_is_taken(port: int) -> bool:
    """Something listens on 127.0.0.1:port, or the port cannot be bound."""
    import socket

    from pooling_pipeline.stack.processes import port_in_use

    if port_in_use(port):
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As servers do: a port in TIME_WAIT from a previous run is free for them.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def check_port_free(port: int, service: str, how_to_change: str) -> None:
    """Raise a StackError naming the port, who holds it, and how to pick another one."""
    from pooling_pipeline.stack.processes import StackError

    if port_is_taken(port):
        who = port_user(port)
        raise StackError(
            f"port {port} for {service} is already in use{' by ' + who if who else ''}: stop that process, "
            f"or choose another port with {how_to_change} (then `pooling-pipeline stack up`)"
        )
