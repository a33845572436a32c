"""Moving a model snapshot to and from S3, resumably and verifiably.

Layout of one model revision: `s3://<bucket>/<prefix>/<name>/<commit sha>/<files...>` plus a manifest
(`pooling-manifest.json`: path, size, sha256 of every file) that is written LAST. Hence:

- a prefix without a manifest is an incomplete upload, and readers refuse it;
- every object carries its sha256 in its metadata, so a re-run (or a resumed, killed run) compares size and
  sha256 with what is already there and sends only what is missing or different;
- after the upload every object is checked (HEAD: size and sha256 metadata) before the manifest goes up;
- multipart uploads a killed run left open under the prefix are aborted before sending (a prefix has one
  writer at a time: runs of one model never overlap), so their parts do not sit in the store forever;
- a manifest that does not parse is never trusted: readers refuse the prefix, the next upload replaces it.

Uploads use boto3's TransferManager: all files are queued on one pool, and large files go as parallel
multipart uploads. Downloads are parallel ranged GETs that hash each part as it arrives, so verification
costs no second read. `download_model` is what the storage initializer calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import BaseModel, Field
from s3transfer.subscribers import BaseSubscriber
from urllib3.exceptions import ProtocolError

from pooling_pipeline.ingest.model_facts import list_snapshot_files

MANIFEST_NAME = "pooling-manifest.json"
SHA256_METADATA_KEY = "sha256"  # stored as x-amz-meta-sha256
MANIFEST_FORMAT = 1
_MB = 1024 * 1024
# Refused connections, resets, closed connections and timeouts (botocore has already retried them).
_CONNECTION_ERRORS = (BotoConnectionError, HTTPClientError)
_HASH_CHUNK = 8 * _MB

# Tuned with benchmarks/s3_transfer.py against SeaweedFS on a 2-core machine, where the store's CPU is the
# limit. Uploads: every multipart part costs the store extra work (per-part chunk records, the assembly on
# completion), so files up to 128 MiB go in one PUT (files still upload in parallel) and bigger ones in
# 64 MiB parts, 8 at a time. Downloads: ranged GETs of 16 MiB, 8 at a time, keep both cores busy.
UPLOAD_TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=128 * _MB,
    multipart_chunksize=64 * _MB,
    max_concurrency=8,
    use_threads=True,
)
DOWNLOAD_TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=16 * _MB,
    multipart_chunksize=16 * _MB,
    max_concurrency=8,
    max_io_queue=1000,
    io_chunksize=1 * _MB,
    use_threads=True,
)


class S3TransferError(RuntimeError):
    """A transfer failed; the message names the problem and the fix (never a secret)."""


class IncompleteUploadError(S3TransferError):
    """The model prefix has no manifest: its upload never finished."""


class InvalidManifestError(S3TransferError):
    """The manifest object exists but is not a manifest this code wrote."""


class ManifestFile(BaseModel):
    path: str
    size: int
    sha256: str


class Manifest(BaseModel):
    format: int = MANIFEST_FORMAT
    commit_sha: str = ""
    files: list[ManifestFile]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def render(self) -> bytes:
        """Canonical bytes (sorted, stable), so equal manifests hash equal."""
        body = {
            "format": self.format,
            "commit_sha": self.commit_sha,
            "files": [f.model_dump() for f in sorted(self.files, key=lambda f: f.path)],
        }
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()

    def sha256(self) -> str:
        return hashlib.sha256(self.render()).hexdigest()


class S3ModelLocation(BaseModel):
    """Where a model revision lives in S3: what `s3_model` returns and the storage initializer reads."""

    uri: str  # s3://bucket/prefix/name/sha/
    bucket: str
    prefix: str  # key prefix, ending in "/"
    commit_sha: str
    files: list[str]
    total_bytes: int
    manifest_key: str
    manifest_sha256: str = ""


class UploadResult(BaseModel):
    location: S3ModelLocation
    files_uploaded: list[str]
    files_skipped: list[str]
    bytes_uploaded: int
    bytes_skipped: int
    seconds: float
    hash_seconds: float = 0.0
    stale_multipart_aborted: int = Field(0, description="open multipart uploads a killed run had left, aborted")

    @property
    def mb_per_s(self) -> float:
        """Throughput of what was actually sent (0 when nothing was)."""
        return self.bytes_uploaded / _MB / self.seconds if self.seconds > 0 and self.bytes_uploaded else 0.0


class DownloadResult(BaseModel):
    dest_dir: str
    files: list[str]
    total_bytes: int
    bytes_downloaded: int
    seconds: float
    reused: bool = Field(False, description="dest_dir already held this exact manifest; nothing was fetched")

    @property
    def mb_per_s(self) -> float:
        return self.bytes_downloaded / _MB / self.seconds if self.seconds > 0 and self.bytes_downloaded else 0.0


# ---------------------------------------------------------------------------------------------------- helpers


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)  # releases the GIL: files hash in parallel
    return digest.hexdigest()


def build_manifest(snapshot_dir: Path, commit_sha: str = "", workers: int = 4) -> Manifest:
    """Path, size and sha256 of every file of a snapshot (what the upload promises)."""
    snapshot_dir = Path(snapshot_dir)
    paths = [p for p in list_snapshot_files(snapshot_dir) if p != MANIFEST_NAME]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(lambda p: sha256_file(snapshot_dir / p), paths))
    files = [
        ManifestFile(path=p, size=(snapshot_dir / p).stat().st_size, sha256=d)
        for p, d in zip(paths, digests, strict=True)
    ]
    return Manifest(commit_sha=commit_sha, files=files)


def _endpoint(client) -> str:
    return client.meta.endpoint_url


def explain_client_error(exc: ClientError, client, action: str) -> S3TransferError:
    """Turn a botocore error into one that says what to fix. Never includes a credential."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    endpoint = _endpoint(client)
    if code == "SignatureDoesNotMatch":
        return S3TransferError(
            f"S3 rejected the credentials for {endpoint} (SignatureDoesNotMatch): check AWS_SECRET_ACCESS_KEY"
        )
    if code in {"InvalidAccessKeyId", "InvalidClientTokenId"}:
        return S3TransferError(
            f"S3 rejected the credentials for {endpoint} ({code}): check AWS_ACCESS_KEY_ID "
            "(on the local stack: `eval $(pooling-pipeline stack env)`)"
        )
    if code in {"AccessDenied", "403"} or status == 403:
        return S3TransferError(
            f"S3 at {endpoint} denied {action} ({code or status}): the credentials lack permission on this "
            "bucket/prefix; grant s3:GetObject/PutObject/ListBucket or use another bucket"
        )
    if code in {"NoSuchBucket"}:
        return S3TransferError(
            f"bucket for {action} does not exist at {endpoint}: create it, or set POOLING_S3_BUCKET to an existing one"
        )
    detail = f"{code or status} {error.get('Message', '')}".strip()
    if isinstance(status, int) and status >= 500:
        return S3TransferError(
            f"S3 at {endpoint} failed {action} with a server error after retries ({detail}): the store is "
            "unhealthy or overloaded; check its logs (locally `pooling-pipeline stack status`), then re-run "
            "(finished files are not sent again)"
        )
    return S3TransferError(f"S3 at {endpoint} failed {action}: {detail}")


def connection_lost(client, action: str, exc: Exception) -> S3TransferError:
    """The store went away (refused, reset, closed, timed out) after botocore's own retries."""
    return S3TransferError(
        f"lost the connection to S3 at {_endpoint(client)} while {action} ({type(exc).__name__}): check that the "
        "store is up (locally `pooling-pipeline stack up`; else AWS_ENDPOINT_URL and the network), then re-run; "
        "finished files are not sent again and no manifest covers a partial upload"
    )


def _call(client, action: str, fn: Callable, **kwargs):
    try:
        return fn(**kwargs)
    except ClientError as exc:
        raise explain_client_error(exc, client, action) from None
    except _CONNECTION_ERRORS as exc:
        raise S3TransferError(
            f"cannot connect to S3 at {_endpoint(client)} ({action}, {type(exc).__name__}): start it "
            "(`pooling-pipeline stack up`) or set AWS_ENDPOINT_URL"
        ) from None


def _list_sizes(client, bucket: str, prefix: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    token = None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page = _call(client, f"listing s3://{bucket}/{prefix}", client.list_objects_v2, **kwargs)
        for obj in page.get("Contents", []):
            sizes[obj["Key"]] = obj["Size"]
        if not page.get("IsTruncated"):
            return sizes
        token = page["NextContinuationToken"]


def _head(client, bucket: str, key: str) -> dict | None:
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise explain_client_error(exc, client, f"reading s3://{bucket}/{key}") from None
    except _CONNECTION_ERRORS as exc:
        raise connection_lost(client, f"checking s3://{bucket}/{key}", exc) from None


def _remote_state(client, bucket: str, prefix: str, keys: list[str], workers: int) -> dict[str, tuple[int, str]]:
    """(size, sha256 metadata) of each existing key, in parallel."""

    def one(key: str) -> tuple[str, tuple[int, str] | None]:
        head = _head(client, bucket, key)
        if head is None:
            return key, None
        return key, (head["ContentLength"], head.get("Metadata", {}).get(SHA256_METADATA_KEY, ""))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return {k: v for k, v in pool.map(one, keys) if v is not None}


def read_manifest(client, bucket: str, prefix: str) -> Manifest | None:
    """The manifest of a model prefix, or None when there is none (an unfinished upload)."""
    key = _normalise_prefix(prefix) + MANIFEST_NAME
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise explain_client_error(exc, client, f"reading s3://{bucket}/{key}") from None
    except _CONNECTION_ERRORS as exc:
        raise S3TransferError(
            f"cannot connect to S3 at {_endpoint(client)} (reading s3://{bucket}/{key}, {type(exc).__name__}): "
            "start it (`pooling-pipeline stack up`) or set AWS_ENDPOINT_URL"
        ) from None
    try:
        return Manifest.model_validate_json(body)
    except ValueError:
        raise InvalidManifestError(
            f"s3://{bucket}/{key} is not a valid manifest (something else wrote it, or it was cut short): "
            "the files under the prefix are not trusted; re-materialise s3_model, which replaces it"
        ) from None


def location_for(bucket: str, prefix: str, manifest: Manifest) -> S3ModelLocation:
    return S3ModelLocation(
        uri=f"s3://{bucket}/{prefix}",
        bucket=bucket,
        prefix=prefix,
        commit_sha=manifest.commit_sha,
        files=[f.path for f in manifest.files],
        total_bytes=manifest.total_bytes,
        manifest_key=prefix + MANIFEST_NAME,
        manifest_sha256=manifest.sha256(),
    )


def _normalise_prefix(prefix: str) -> str:
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


# ----------------------------------------------------------------------------------------------------- upload


def upload_snapshot(
    client,
    snapshot_dir: Path | str,
    bucket: str,
    key_prefix: str,
    *,
    commit_sha: str = "",
    config: TransferConfig = UPLOAD_TRANSFER_CONFIG,
    on_file_done: Callable[[str], None] | None = None,
) -> UploadResult:
    """Upload a snapshot folder to `s3://bucket/key_prefix`, sending only what is missing or different.

    `on_file_done(path)` is called (in this thread) as each file finishes, for progress reporting; if it
    raises, in-flight transfers are cancelled and no manifest is written (the next run resumes).
    """
    snapshot_dir = Path(snapshot_dir)
    prefix = _normalise_prefix(key_prefix)
    started = time.perf_counter()
    manifest = build_manifest(snapshot_dir, commit_sha)
    hash_seconds = time.perf_counter() - started
    manifest_key = prefix + MANIFEST_NAME
    workers = max(4, config.max_concurrency)

    existing = _list_sizes(client, bucket, prefix)
    aborted = _abort_stale_multipart_uploads(client, bucket, prefix)
    # Sizes from the listing rule most files in or out without a request; HEAD only the candidates.
    candidates = [prefix + f.path for f in manifest.files if existing.get(prefix + f.path) == f.size]
    remote = _remote_state(client, bucket, prefix, candidates, workers)
    todo = [f for f in manifest.files if remote.get(prefix + f.path) != (f.size, f.sha256)]
    skipped = [f for f in manifest.files if f not in todo]

    if todo and manifest_key in existing:
        # The prefix is about to change under its manifest: remove the promise first, so a crash in
        # between leaves "incomplete", never "complete but wrong".
        _call(client, f"deleting s3://{bucket}/{manifest_key}", client.delete_object, Bucket=bucket, Key=manifest_key)
        existing.pop(manifest_key)

    if todo:
        _transfer_files(
            client,
            config,
            todo,
            on_file_done,
            lambda mgr, f, subs: mgr.upload(
                str(snapshot_dir / f.path),
                bucket,
                prefix + f.path,
                extra_args={"Metadata": {SHA256_METADATA_KEY: f.sha256}},
                subscribers=subs,
            ),
            f"uploading to s3://{bucket}/{prefix}",
        )
        # Verify what we sent: size and sha256 metadata as the store reports them.
        after = _remote_state(client, bucket, prefix, [prefix + f.path for f in todo], workers)
        bad = [f.path for f in todo if after.get(prefix + f.path) != (f.size, f.sha256)]
        if bad:
            raise S3TransferError(
                f"after upload, s3://{bucket}/{prefix} does not hold {bad[:5]} as sent (size/sha256 differ): "
                "re-run to resend them; if it persists, check the store's health"
            )

    rendered = manifest.render()
    current = _readable_manifest(client, bucket, prefix) if manifest_key in existing else None
    if current is None or current.render() != rendered:
        _call(
            client,
            f"writing s3://{bucket}/{manifest_key}",
            client.put_object,
            Bucket=bucket,
            Key=manifest_key,
            Body=rendered,
            ContentType="application/json",
            Metadata={SHA256_METADATA_KEY: hashlib.sha256(rendered).hexdigest()},
        )

    return UploadResult(
        location=location_for(bucket, prefix, manifest),
        files_uploaded=[f.path for f in todo],
        files_skipped=[f.path for f in skipped],
        bytes_uploaded=sum(f.size for f in todo),
        bytes_skipped=sum(f.size for f in skipped),
        seconds=time.perf_counter() - started,
        hash_seconds=hash_seconds,
        stale_multipart_aborted=aborted,
    )


def _readable_manifest(client, bucket: str, prefix: str) -> Manifest | None:
    """The manifest, or None when it is missing or unreadable (the upload then writes a good one)."""
    try:
        return read_manifest(client, bucket, prefix)
    except InvalidManifestError:
        return None


def _abort_stale_multipart_uploads(client, bucket: str, prefix: str) -> int:
    """Abort the multipart uploads left open under `prefix` by a run that was killed or lost the store."""
    action = f"listing open multipart uploads under s3://{bucket}/{prefix}"
    page = _call(client, action, client.list_multipart_uploads, Bucket=bucket, Prefix=prefix)
    stale = [(u["Key"], u["UploadId"]) for u in page.get("Uploads", []) if u["Key"].startswith(prefix)]
    for key, upload_id in stale:
        _call(
            client,
            f"aborting a stale multipart upload of s3://{bucket}/{key}",
            client.abort_multipart_upload,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
        )
    return len(stale)


def _transfer_files(client, config: TransferConfig, files: list[ManifestFile], on_file_done, submit, action: str):
    """Queue every file on one TransferManager and wait, reporting each as it completes."""
    done_q: queue.Queue[int] = queue.Queue()

    class _Done(BaseSubscriber):
        def __init__(self, index: int):
            self.index = index

        def on_done(self, future, **kwargs):
            done_q.put(self.index)

    # The context manager cancels in-flight transfers (and aborts their multipart uploads) when the block
    # raises. Not `shutdown(cancel=True)`: s3transfer 0.19 passes its arguments shifted there and raises
    # "TypeError: 'str' object is not callable", hiding the real error.
    with create_transfer_manager(client, config) as manager:
        transfers = [submit(manager, f, [_Done(i)]) for i, f in enumerate(files)]
        for _ in files:
            i = done_q.get()
            try:
                transfers[i].result()
            except ClientError as exc:
                raise explain_client_error(exc, client, action) from None
            except _CONNECTION_ERRORS as exc:
                raise connection_lost(client, action, exc) from None
            if on_file_done is not None:
                on_file_done(files[i].path)


# --------------------------------------------------------------------------------------------------- download


def _parse_location(location: S3ModelLocation | tuple[str, str] | str) -> tuple[str, str]:
    if isinstance(location, S3ModelLocation):
        return location.bucket, _normalise_prefix(location.prefix)
    if isinstance(location, str):
        if not location.startswith("s3://"):
            raise ValueError(f"{location!r} is not an s3:// URI")
        bucket, _, prefix = location[len("s3://") :].partition("/")
        return bucket, _normalise_prefix(prefix)
    bucket, prefix = location
    return bucket, _normalise_prefix(prefix)


def _dir_matches(dest: Path, rendered: bytes, manifest: Manifest) -> bool:
    marker = dest / MANIFEST_NAME
    if not marker.is_file() or marker.read_bytes() != rendered:
        return False
    return all((dest / f.path).is_file() and (dest / f.path).stat().st_size == f.size for f in manifest.files)


def download_model(
    client,
    location: S3ModelLocation | tuple[str, str] | str,
    dest_dir: Path | str,
    *,
    config: TransferConfig = DOWNLOAD_TRANSFER_CONFIG,
) -> DownloadResult:
    """Download a complete model revision into `dest_dir`, atomically, verifying every sha256.

    Refuses a prefix without a manifest (an unfinished upload). Files land in a temp folder beside
    `dest_dir` that is renamed into place only after all checks pass; `dest_dir` then also holds the
    manifest, so a second call with the same manifest returns at once.
    """
    bucket, prefix = _parse_location(location)
    dest = Path(dest_dir)
    started = time.perf_counter()
    manifest = read_manifest(client, bucket, prefix)
    if manifest is None:
        raise IncompleteUploadError(
            f"incomplete upload: no manifest at s3://{bucket}/{prefix}{MANIFEST_NAME}; re-materialise s3_model"
        )
    rendered = manifest.render()
    if _dir_matches(dest, rendered, manifest):
        return DownloadResult(
            dest_dir=str(dest),
            files=[f.path for f in manifest.files],
            total_bytes=manifest.total_bytes,
            bytes_downloaded=0,
            seconds=time.perf_counter() - started,
            reused=True,
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        for f in manifest.files:
            (tmp / f.path).parent.mkdir(parents=True, exist_ok=True)
        digests = _download_and_hash(client, bucket, prefix, manifest.files, tmp, config)
        bad = [f.path for f in manifest.files if digests.get(f.path) != f.sha256]
        if bad:
            raise S3TransferError(
                f"s3://{bucket}/{prefix}: {bad[:5]} do not match the manifest's sha256: the objects were changed "
                "after upload; re-materialise s3_model"
            )
        (tmp / MANIFEST_NAME).write_bytes(rendered)
        _swap_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DownloadResult(
        dest_dir=str(dest),
        files=[f.path for f in manifest.files],
        total_bytes=manifest.total_bytes,
        bytes_downloaded=manifest.total_bytes,
        seconds=time.perf_counter() - started,
    )


# Errors while reading a part's body (the request itself is retried by botocore).
_PART_RETRIES = 3


class _InOrderHasher:
    """sha256 of a file whose parts arrive out of order: parts wait here until the ones before them came."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.next_offset = 0
        self.waiting: dict[int, bytes] = {}

    def add(self, offset: int, data: bytes) -> None:
        self.waiting[offset] = data
        while self.next_offset in self.waiting:
            chunk = self.waiting.pop(self.next_offset)
            self.digest.update(chunk)
            self.next_offset += len(chunk)


def _download_and_hash(
    client, bucket: str, prefix: str, files: list[ManifestFile], dest: Path, config: TransferConfig
) -> dict[str, str]:
    """Parallel ranged GETs of every file into `dest`, hashing each part as it arrives (in file order).

    Hashing on the way in saves reading every file back afterwards. One thread hashes while the others
    download; its queue is bounded, so when hashing falls behind the downloads wait (memory stays at a few
    parts, whatever the model size).
    """
    chunk = max(1, config.multipart_chunksize)
    workers = max(1, config.max_concurrency)
    hashers = {f.path: _InOrderHasher() for f in files}
    to_hash: queue.Queue[tuple[str, int, bytes] | None] = queue.Queue(maxsize=2 * workers)

    def hash_loop() -> None:
        while (item := to_hash.get()) is not None:
            path, offset, data = item
            hashers[path].add(offset, data)  # hashlib releases the GIL: downloads go on meanwhile

    hasher = threading.Thread(target=hash_loop, name="sha256", daemon=True)
    hasher.start()
    fds: dict[str, int] = {}
    try:
        for f in files:
            fds[f.path] = os.open(dest / f.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

        def fetch(f: ManifestFile, start: int) -> int:
            end = min(f.size, start + chunk) - 1
            where = f"s3://{bucket}/{prefix}{f.path}"
            for attempt in range(_PART_RETRIES):
                try:
                    kwargs = {"Range": f"bytes={start}-{end}"} if f.size > chunk else {}
                    data = client.get_object(Bucket=bucket, Key=prefix + f.path, **kwargs)["Body"].read()
                    break
                except (ReadTimeoutError, IncompleteReadError, ResponseStreamingError, ProtocolError) as exc:
                    if attempt == _PART_RETRIES - 1:
                        raise S3TransferError(
                            f"{where}: reading bytes {start}-{end} broke off {_PART_RETRIES} times "
                            f"({type(exc).__name__}): the connection to S3 at {_endpoint(client)} keeps dropping; "
                            "check the store and the network, then re-run (the download starts over)"
                        ) from None
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                        raise S3TransferError(
                            f"{where} is not the {f.size} bytes the manifest says: it ends before byte {start}; "
                            "the object changed after upload; re-materialise s3_model"
                        ) from None
                    raise
            if len(data) != end - start + 1:
                raise S3TransferError(
                    f"{where} is not the {f.size} bytes the manifest says: bytes {start}-{end} came back as "
                    f"{len(data)} bytes; the object changed after upload; re-materialise s3_model"
                )
            os.pwrite(fds[f.path], data, start)
            to_hash.put((f.path, start, data))
            return len(data)

        action = f"downloading s3://{bucket}/{prefix}"
        with ThreadPoolExecutor(max_workers=max(1, config.max_concurrency)) as pool:
            futures = [pool.submit(fetch, f, start) for f in files for start in range(0, max(f.size, 1), chunk)]
            try:
                for fut in futures:
                    fut.result()
            except ClientError as exc:
                for fut in futures:
                    fut.cancel()
                raise explain_client_error(exc, client, action) from None
            except _CONNECTION_ERRORS as exc:
                for fut in futures:
                    fut.cancel()
                raise S3TransferError(
                    f"lost the connection to S3 at {_endpoint(client)} while {action} ({type(exc).__name__}): "
                    "check that the store is up, then re-run; the download starts over in a fresh folder"
                ) from None
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        to_hash.put(None)
        hasher.join()
        for fd in fds.values():
            os.close(fd)
    return {path: h.digest.hexdigest() for path, h in hashers.items()}


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename tmp to dest; an existing dest is moved aside first and removed after."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
