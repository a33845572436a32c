"""S3 faults during a transfer, on a REAL SeaweedFS (issue 13): the store killed mid-upload and restarted,
client and server errors mid-upload, a failed check after upload, an invalid manifest, objects shorter
than their manifest, bytes corrupted in transit, and part retries.

Each test checks both sides: the error names the cause and the fix (and never the secret), and nothing
is left half-done: no manifest over partial data, no open multipart upload, no partial model folder.

The store is a SeaweedFS of this module's own (a private stack folder, free ports), so killing it never
disturbs the session's shared stack. Faults the store cannot be asked to make (an error answer on the
third part, a cut connection, a flipped byte) come from a loopback proxy in front of it
(fixtures/faulty_proxy.py); the client, the store and the code under test are the real ones.
"""

from __future__ import annotations

import hashlib
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from pooling_pipeline.ingest.s3_transfer import (
    MANIFEST_NAME,
    IncompleteUploadError,
    InvalidManifestError,
    S3TransferError,
    download_model,
    read_manifest,
    upload_snapshot,
)
from pooling_pipeline.resources.s3 import make_s3_client
from pooling_pipeline.stack import seaweedfs
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import free_port, pid_alive
from pooling_pipeline.stack.state import StackState
from pooling_pipeline_tests.fixtures.faulty_proxy import (
    CutBody,
    Fault,
    FaultyProxy,
    FlipByte,
    RewriteHeaders,
    Seen,
    s3_error,
)

pytestmark = pytest.mark.slow

_MB = 1024 * 1024
# Small parts, so a 24 MiB file is a real multipart upload (3 parts) and a ranged download (3 ranges).
MULTIPART = TransferConfig(multipart_threshold=8 * _MB, multipart_chunksize=8 * _MB, max_concurrency=4)
RANGED = TransferConfig(multipart_threshold=8 * _MB, multipart_chunksize=8 * _MB, max_concurrency=4)
BIG = "model.safetensors"
SMALL = ("config.json", "vocab.txt", "1_Pooling/config.json")


@dataclass
class PrivateS3:
    layout: StackLayout
    state: StackState
    pid: int

    def client(self, endpoint: str | None = None, max_attempts: int = 5):
        return make_s3_client(
            endpoint or self.state.s3_endpoint, self.state.access_key, self.state.secret_key, max_attempts=max_attempts
        )

    def kill(self) -> None:
        """SIGKILL, as an OOM kill or a node loss would: no shutdown, no flush."""
        os.killpg(self.pid, signal.SIGKILL)

    def restart(self) -> None:
        seaweedfs.stop(self.layout)
        proc, self.state = seaweedfs.start(self.layout, self.state)
        self.pid = proc.pid


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateS3]:
    layout = StackLayout(tmp_path_factory.mktemp("private-s3-stack"))
    layout.ensure()
    ports = {free_port() for _ in range(3)}
    while len(ports) < 3:
        ports.add(free_port())
    s3_port, hub_port, caikit_port = sorted(ports)
    state = StackState.create(s3_port=s3_port, hub_port=hub_port, caikit_port=caikit_port, bucket="faults")
    proc, state = seaweedfs.start(layout, state)
    store = PrivateS3(layout=layout, state=state, pid=proc.pid)
    try:
        yield store
    finally:
        seaweedfs.stop(layout)
        assert not pid_alive(store.pid), "the private SeaweedFS outlived its module"


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model-shaped folder: three small files and a 24 MiB weights file of random bytes."""
    folder = tmp_path_factory.mktemp("snapshot")
    (folder / "1_Pooling").mkdir()
    (folder / "config.json").write_text('{"architectures": ["BertModel"], "hidden_size": 384}')
    (folder / "vocab.txt").write_text("".join(f"token{i}\n" for i in range(5000)))
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (folder / BIG).write_bytes(os.urandom(24 * _MB))
    return folder


@pytest.fixture
def prefix() -> str:
    return f"models/m-{uuid.uuid4().hex[:8]}/{'a' * 40}/"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def open_multipart_uploads(client, bucket: str, prefix: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])]


def assert_no_secret(message: str, store: PrivateS3) -> None:
    assert store.state.secret_key not in message and store.state.access_key not in message


def assert_verified_download(client, bucket: str, prefix: str, snapshot: Path, dest: Path) -> None:
    result = download_model(client, (bucket, prefix), dest, config=RANGED)
    assert result.bytes_downloaded == result.total_bytes > 24 * _MB
    for rel in (*SMALL, BIG):
        assert sha256(dest / rel) == sha256(snapshot / rel), rel


def no_partial_folders(parent: Path) -> bool:
    return not [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# ----------------------------------------------------------------------------------------------- upload


def test_store_killed_mid_upload_then_restarted_resumes_and_no_manifest_covers_partial_data(s3, snapshot, prefix):
    client = s3.client(max_attempts=2)
    finished: list[str] = []

    def kill_after_first_file(path: str) -> None:
        finished.append(path)
        if len(finished) == 1:
            s3.kill()  # the weights file's parts are still in flight

    with pytest.raises(S3TransferError) as caught:
        upload_snapshot(
            client, snapshot, s3.state.bucket, prefix, commit_sha="a" * 40, config=MULTIPART,
            on_file_done=kill_after_first_file,
        )  # fmt: skip
    assert BIG not in finished, "the store had to die while the weights were being sent"
    message = str(caught.value)
    assert f"lost the connection to S3 at {s3.state.s3_endpoint}" in message
    assert "check that the store is up" in message and "re-run" in message
    assert_no_secret(message, s3)

    s3.restart()
    client = s3.client()
    # What the kill left: no manifest, so readers refuse the prefix rather than serve partial weights.
    assert read_manifest(client, s3.state.bucket, prefix) is None
    with pytest.raises(IncompleteUploadError, match=r"incomplete upload: no manifest at .*re-materialise s3_model"):
        download_model(client, (s3.state.bucket, prefix), snapshot.parent / "never-created")
    assert not (snapshot.parent / "never-created").exists()
    stale = open_multipart_uploads(client, s3.state.bucket, prefix)

    resumed = upload_snapshot(client, snapshot, s3.state.bucket, prefix, commit_sha="a" * 40, config=MULTIPART)
    # The file that finished before the kill is not sent again; the weights are.
    assert finished[0] in resumed.files_skipped and BIG in resumed.files_uploaded
    assert resumed.stale_multipart_aborted == len(stale)
    assert open_multipart_uploads(client, s3.state.bucket, prefix) == []
    manifest = read_manifest(client, s3.state.bucket, prefix)
    assert manifest is not None and {f.path for f in manifest.files} == {*SMALL, BIG}
    assert_verified_download(client, s3.state.bucket, prefix, snapshot, snapshot.parent / f"dl-{uuid.uuid4().hex}")


def test_access_denied_on_a_part_mid_upload_keeps_finished_files_and_writes_no_manifest(s3, snapshot, prefix):
    with FaultyProxy(s3.state.s3_endpoint) as proxy:

        def deny_second_part(seen: Seen) -> Fault | None:
            if seen.method == "PUT" and seen.path.endswith(BIG) and seen.query.get("partNumber") == ["2"]:
                return s3_error(403, "AccessDenied", "Access Denied")
            return None

        proxy.add(deny_second_part)
        faulty = s3.client(proxy.url)
        with pytest.raises(S3TransferError) as caught:
            upload_snapshot(faulty, snapshot, s3.state.bucket, prefix, commit_sha="a" * 40, config=MULTIPART)
    message = str(caught.value)
    assert f"S3 at {proxy.url} denied uploading to s3://{s3.state.bucket}/{prefix} (AccessDenied)" in message
    assert "grant s3:GetObject/PutObject/ListBucket" in message
    assert_no_secret(message, s3)

    client = s3.client()
    assert read_manifest(client, s3.state.bucket, prefix) is None
    assert open_multipart_uploads(client, s3.state.bucket, prefix) == []  # the failed multipart was aborted
    resumed = upload_snapshot(client, snapshot, s3.state.bucket, prefix, commit_sha="a" * 40, config=MULTIPART)
    assert set(SMALL) <= set(resumed.files_skipped) and resumed.files_uploaded == [BIG]
    assert read_manifest(client, s3.state.bucket, prefix) is not None


def test_server_error_that_persists_is_retried_then_names_the_store_and_the_fix(s3, snapshot, prefix):
    with FaultyProxy(s3.state.s3_endpoint) as proxy:
        proxy.add(
            lambda seen: (
                s3_error(500, "InternalError", "We encountered an internal error. Please try again.")
                if seen.method == "PUT" and seen.path.endswith("/vocab.txt")
                else None
            )
        )
        faulty = s3.client(proxy.url, max_attempts=3)
        with pytest.raises(S3TransferError) as caught:
            upload_snapshot(faulty, snapshot, s3.state.bucket, prefix, commit_sha="a" * 40, config=MULTIPART)
        attempts = proxy.requests("PUT", "/vocab.txt")
    # botocore's max_attempts counts retries: 3 means 4 requests (its amz-sdk-request header says "max=4").
    assert len(attempts) == 4 and attempts[-1].header("amz-sdk-request") == "attempt=4; max=4"
    message = str(caught.value)
    assert "server error after retries (InternalError" in message
    assert "check its logs" in message and "re-run" in message
    assert read_manifest(s3.client(), s3.state.bucket, prefix) is None


def test_upload_parts_are_retried_after_a_transient_error_and_the_upload_completes(s3, snapshot, prefix):
    with FaultyProxy(s3.state.s3_endpoint) as proxy:
        failed_once: set[str] = set()

        def slow_down_each_part_once(seen: Seen) -> Fault | None:
            part = seen.query.get("partNumber", [""])[0]
            if seen.method == "PUT" and part and part not in failed_once:
                failed_once.add(part)
                return s3_error(503, "SlowDown", "Please reduce your request rate.")
            return None

        proxy.add(slow_down_each_part_once)
        result = upload_snapshot(
            s3.client(proxy.url), snapshot, s3.state.bucket, prefix, commit_sha="a" * 40, config=MULTIPART
        )
        parts = [s.query["partNumber"][0] for s in proxy.requests("PUT", f"/{BIG}") if "partNumber" in s.query]
    assert failed_once == {"1", "2", "3"}
    assert sorted(parts) == ["1", "1", "2", "2", "3", "3"], "each part sent twice: refused, then retried"
    assert BIG in result.files_uploaded
    client = s3.client()
    assert open_multipart_uploads(client, s3.state.bucket, prefix) == []
    assert_verified_download(client, s3.state.bucket, prefix, snapshot, snapshot.parent / f"dl-{uuid.uuid4().hex}")


def test_failed_check_after_upload_writes_no_manifest_and_the_rerun_completes(s3, snapshot, prefix):
    with FaultyProxy(s3.state.s3_endpoint) as proxy:
        # The store reports another sha256 for vocab.txt than the one sent: the check after upload catches it.
        proxy.add(
            lambda seen: (
                RewriteHeaders({"x-amz-meta-sha256": "0" * 64})
                if seen.method == "HEAD" and seen.path.endswith("/vocab.txt")
                else None
            )
        )
        with pytest.raises(S3TransferError) as caught:
            upload_snapshot(
                s3.client(proxy.url), snapshot, s3.state.bucket, prefix, commit_sha="a" * 40, config=MULTIPART
            )
    message = str(caught.value)
    assert f"after upload, s3://{s3.state.bucket}/{prefix} does not hold ['vocab.txt'] as sent" in message
    assert "re-run to resend them" in message
    client = s3.client()
    assert read_manifest(client, s3.state.bucket, prefix) is None
    rerun = upload_snapshot(client, snapshot, s3.state.bucket, prefix, commit_sha="a" * 40, config=MULTIPART)
    assert rerun.bytes_uploaded == 0  # every object was in fact intact
    assert read_manifest(client, s3.state.bucket, prefix) is not None


@pytest.mark.parametrize(
    "garbage",
    [b"<html>not a manifest</html>", b'{"format": 1, "files": "model.safetensors"}', b'{"format": 1, "files": ['],
    ids=["not-json", "wrong-shape", "cut-short"],
)
def test_invalid_manifest_is_refused_by_readers_and_replaced_by_the_next_upload(
    s3, snapshot, prefix, tmp_path, garbage
):
    client = s3.client()
    upload_snapshot(client, snapshot, s3.state.bucket, prefix, commit_sha="a" * 40, config=MULTIPART)
    client.put_object(Bucket=s3.state.bucket, Key=prefix + MANIFEST_NAME, Body=garbage)

    dest = tmp_path / "model"
    with pytest.raises(InvalidManifestError) as caught:
        download_model(client, (s3.state.bucket, prefix), dest)
    message = str(caught.value)
    assert f"s3://{s3.state.bucket}/{prefix}{MANIFEST_NAME} is not a valid manifest" in message
    assert "re-materialise s3_model, which replaces it" in message
    assert not dest.exists() and no_partial_folders(tmp_path)

    # What the message promises: re-running the upload writes a good manifest (nothing to resend).
    again = upload_snapshot(client, snapshot, s3.state.bucket, prefix, commit_sha="a" * 40, config=MULTIPART)
    assert again.bytes_uploaded == 0
    assert read_manifest(client, s3.state.bucket, prefix) is not None
    assert_verified_download(client, s3.state.bucket, prefix, snapshot, dest)


# --------------------------------------------------------------------------------------------- download


@pytest.fixture
def uploaded(s3, snapshot, prefix) -> str:
    upload_snapshot(s3.client(), snapshot, s3.state.bucket, prefix, commit_sha="a" * 40, config=MULTIPART)
    return prefix


def test_download_refuses_a_small_object_shorter_than_its_manifest(s3, snapshot, uploaded, tmp_path):
    client = s3.client()
    vocab = (snapshot / "vocab.txt").read_bytes()
    client.put_object(Bucket=s3.state.bucket, Key=uploaded + "vocab.txt", Body=vocab[:-100])
    dest = tmp_path / "model"
    with pytest.raises(S3TransferError) as caught:
        download_model(client, (s3.state.bucket, uploaded), dest, config=RANGED)
    message = str(caught.value)
    assert f"vocab.txt is not the {len(vocab)} bytes the manifest says" in message
    assert f"bytes 0-{len(vocab) - 1} came back as {len(vocab) - 100} bytes" in message
    assert "the object changed after upload; re-materialise s3_model" in message
    assert not dest.exists() and no_partial_folders(tmp_path)


def test_download_refuses_a_large_object_cut_short_after_upload(s3, snapshot, uploaded, tmp_path):
    client = s3.client()
    weights = (snapshot / BIG).read_bytes()
    client.put_object(Bucket=s3.state.bucket, Key=uploaded + BIG, Body=weights[: 10 * _MB])  # 2 of 3 ranges gone
    dest = tmp_path / "model"
    with pytest.raises(S3TransferError) as caught:
        download_model(client, (s3.state.bucket, uploaded), dest, config=RANGED)
    message = str(caught.value)
    assert f"{BIG} is not the {len(weights)} bytes the manifest says" in message
    assert "the object changed after upload; re-materialise s3_model" in message
    assert not dest.exists() and no_partial_folders(tmp_path)


def test_download_refuses_bytes_corrupted_in_transit(s3, snapshot, uploaded, tmp_path):
    with FaultyProxy(s3.state.s3_endpoint) as proxy:
        proxy.add(
            lambda seen: (
                FlipByte(offset=12345)
                if seen.method == "GET"
                and seen.path.endswith(BIG)
                and seen.header("Range").startswith("bytes=8388608-")
                else None
            )
        )
        dest = tmp_path / "model"
        with pytest.raises(S3TransferError, match=rf"\['{BIG}'\] do not match the manifest's sha256"):
            download_model(s3.client(proxy.url), (s3.state.bucket, uploaded), dest, config=RANGED)
        assert len(proxy.faults_injected) == 1
    assert not dest.exists() and no_partial_folders(tmp_path)


def test_download_part_cut_once_is_retried_and_the_copy_verifies(s3, snapshot, uploaded, tmp_path):
    with FaultyProxy(s3.state.s3_endpoint) as proxy:
        cut: list[str] = []

        def cut_the_middle_range_once(seen: Seen) -> Fault | None:
            middle = (
                seen.method == "GET" and seen.path.endswith(BIG) and seen.header("Range").startswith("bytes=8388608-")
            )
            if middle and not cut:
                cut.append(seen.header("Range"))
                return CutBody(keep=1 * _MB)
            return None

        proxy.add(cut_the_middle_range_once)
        dest = tmp_path / "model"
        download_model(s3.client(proxy.url), (s3.state.bucket, uploaded), dest, config=RANGED)
        middle = [s for s in proxy.requests("GET", f"/{BIG}") if s.header("Range") == cut[0]]
    assert len(middle) == 2, "the cut range was fetched again"
    assert sha256(dest / BIG) == sha256(snapshot / BIG)


def test_download_part_that_keeps_breaking_gives_up_with_the_fix_and_leaves_nothing(s3, uploaded, tmp_path):
    with FaultyProxy(s3.state.s3_endpoint) as proxy:
        proxy.add(
            lambda seen: (
                CutBody(keep=1 * _MB)
                if seen.method == "GET"
                and seen.path.endswith(BIG)
                and seen.header("Range").startswith("bytes=8388608-")
                else None
            )
        )
        dest = tmp_path / "model"
        with pytest.raises(S3TransferError) as caught:
            download_model(s3.client(proxy.url), (s3.state.bucket, uploaded), dest, config=RANGED)
    message = str(caught.value)
    assert f"{BIG}: reading bytes 8388608-16777215 broke off 3 times" in message
    assert "keeps dropping" in message and "re-run" in message
    assert_no_secret(message, s3)
    assert not dest.exists() and no_partial_folders(tmp_path)


def test_download_with_the_store_down_says_so_and_keeps_the_previous_copy(s3, snapshot, uploaded, tmp_path):
    """A model folder already in place (an older revision's, say) is not touched by a failed download."""
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "keep.txt").write_text("the previous copy")
    dead = make_s3_client(f"http://127.0.0.1:{free_port()}", s3.state.access_key, s3.state.secret_key, max_attempts=1)
    with pytest.raises(S3TransferError, match=r"cannot connect to S3 at http://127.0.0.1:\d+ .*stack up"):
        download_model(dead, (s3.state.bucket, uploaded), dest)
    assert (dest / "keep.txt").read_text() == "the previous copy" and no_partial_folders(tmp_path)
