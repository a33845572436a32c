"""Ingest: hf_snapshot -> s3_model for the local MiniLM, against the REAL local stack (SeaweedFS + olah).

The slow tests share the session stack (`local_stack`); each writes under its own S3 prefix so runs never
see each other's objects (the stack's data survives between sessions). A few fast tests cover the pure
parts (manifest rendering, error messages) without a server.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml
from botocore.exceptions import ClientError

from pooling_pipeline.catalog import LOCAL_CATALOG
from pooling_pipeline.ingest.assets import hf_snapshot, s3_model
from pooling_pipeline.ingest.s3_transfer import (
    IncompleteUploadError,
    Manifest,
    ManifestFile,
    S3TransferError,
    build_manifest,
    download_model,
    explain_client_error,
    read_manifest,
    upload_snapshot,
)
from pooling_pipeline.resources.hub import HubResource
from pooling_pipeline.resources.s3 import S3Resource, make_s3_client
from pooling_pipeline.stack.processes import free_port

slow = pytest.mark.slow

MINILM = "all-minilm-l6-v2"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stack_state(local_stack):
    return local_stack.state


@pytest.fixture
def s3_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def resources(state, cache_dir: Path, prefix: str, secret: str | None = None) -> dict:
    return {
        "s3": S3Resource(
            endpoint_url=state.s3_endpoint,
            access_key_id=state.access_key,
            secret_access_key=secret or state.secret_key,
            region="us-east-1",
            bucket=state.bucket,
            prefix=prefix,
        ),
        "hub": HubResource(endpoint=state.hub_endpoint, token=None, cache_dir=str(cache_dir)),
    }


def client_for(state):
    return make_s3_client(state.s3_endpoint, state.access_key, state.secret_key)


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-cache")


@pytest.fixture(scope="module")
def minilm_snapshot(stack_state, hf_cache: Path) -> tuple[Path, str]:
    """MiniLM fetched once from the local hub with the real huggingface_hub client."""
    hub = HubResource(endpoint=stack_state.hub_endpoint, token=None, cache_dir=str(hf_cache))
    return hub.snapshot("sentence-transformers/all-MiniLM-L6-v2", "main")


def materialize(assets, res, instance=None, raise_on_error=True):
    return dg.materialize(assets, partition_key=MINILM, resources=res, instance=instance, raise_on_error=raise_on_error)


@slow
def test_minilm_flows_from_hub_to_s3_and_rerun_uploads_nothing(stack_state, hf_cache, s3_prefix, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    res = resources(stack_state, hf_cache, s3_prefix)
    first = materialize([hf_snapshot, s3_model], res, instance)

    snap = first.output_for_node("hf_snapshot")
    facts = snap.facts
    assert facts.kind.value == "embedding" and facts.dimension == 384 and facts.effective_max_model_len == 256
    assert facts.pooling_mode == "mean" and facts.normalize
    snap_meta = first.asset_materializations_for_node("hf_snapshot")[0]
    assert snap_meta.metadata["effective_max_model_len"].value == 256
    assert snap_meta.metadata["commit_sha"].value == facts.commit_sha

    location = first.output_for_node("s3_model")
    assert location.uri == f"s3://{stack_state.bucket}/{s3_prefix}/{MINILM}/{facts.commit_sha}/"
    meta = first.asset_materializations_for_node("s3_model")[0].metadata
    assert meta["bytes_uploaded"].value == location.total_bytes > 80_000_000
    assert meta["bytes_skipped"].value == 0 and meta["mb_per_s"].value > 0

    # Objects and manifest agree with the snapshot, byte for byte.
    client = client_for(stack_state)
    manifest = read_manifest(client, location.bucket, location.prefix)
    snapshot_dir = Path(snap.local_path)
    assert {f.path for f in manifest.files} == set(facts.files)
    for entry in manifest.files:
        assert entry.sha256 == sha256(snapshot_dir / entry.path), entry.path
        head = client.head_object(Bucket=location.bucket, Key=location.prefix + entry.path)
        assert head["ContentLength"] == entry.size and head["Metadata"]["sha256"] == entry.sha256
    dest = tmp_path / "downloaded"
    download_model(client, location, dest)
    assert all(sha256(dest / f.path) == f.sha256 for f in manifest.files)

    # Same commit again: nothing is sent, and the version downstream sees is unchanged.
    second = materialize([hf_snapshot, s3_model], res, instance)
    meta2 = second.asset_materializations_for_node("s3_model")[0].metadata
    assert meta2["bytes_uploaded"].value == 0
    assert meta2["files_uploaded"].value == 0 and meta2["files_skipped"].value == len(manifest.files)
    records = instance.fetch_materializations(dg.AssetKey("s3_model"), limit=10).records
    versions = [r.event_log_entry.asset_materialization.tags["dagster/data_version"] for r in records]
    assert len(versions) == 2 and versions[0] == versions[1]


@slow
def test_wrong_s3_secret_is_rejected_with_a_clear_error(stack_state, hf_cache, s3_prefix):
    wrong = "not-the-secret-" + uuid.uuid4().hex
    res = resources(stack_state, hf_cache, s3_prefix, secret=wrong)
    result = materialize([hf_snapshot, s3_model], res, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "s3_model")
    message = str(failure.step_failure_data.error)
    assert f"S3 rejected the credentials for {stack_state.s3_endpoint} (SignatureDoesNotMatch)" in message
    assert "check AWS_SECRET_ACCESS_KEY" in message
    assert wrong not in message and stack_state.secret_key not in message


@slow
def test_max_model_len_above_model_limit_fails_in_hf_snapshot(stack_state, hf_cache, s3_prefix, tmp_path, monkeypatch):
    catalog = yaml.safe_load(LOCAL_CATALOG.read_text())
    for entry in catalog["models"]:
        if entry["name"] == MINILM:
            entry["max_model_len"] = 512
    path = tmp_path / "models.override.yaml"
    path.write_text(yaml.safe_dump(catalog))
    monkeypatch.setenv("POOLING_CATALOG", str(path))
    result = materialize(
        [hf_snapshot], {"hub": resources(stack_state, hf_cache, s3_prefix)["hub"]}, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert f"max_model_len 512 > model limit 256 for {MINILM}" in message
    assert f"set max_model_len ≤ 256 in {path}" in message


_KILLED_UPLOAD = textwrap.dedent("""
    import os, signal, sys
    from pooling_pipeline.ingest.s3_transfer import upload_snapshot
    from pooling_pipeline.resources.s3 import make_s3_client

    snapshot, bucket, prefix, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = make_s3_client(os.environ["AWS_ENDPOINT_URL"], os.environ["AWS_ACCESS_KEY_ID"],
                            os.environ["AWS_SECRET_ACCESS_KEY"])
    done = []

    def on_file_done(path):
        done.append(path)
        print(path, flush=True)
        if len(done) >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: like an OOM kill or a lost node

    upload_snapshot(client, snapshot, bucket, prefix, commit_sha="abc", on_file_done=on_file_done)
""")


def killed_upload(state, snapshot: Path, prefix: str, kill_after: int) -> list[str]:
    """Run an upload in a child process that SIGKILLs itself after `kill_after` files; return those files."""
    env = os.environ | state.env()  # credentials through the environment, never argv
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_UPLOAD, str(snapshot), state.bucket, prefix, str(kill_after)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, f"the upload was meant to be killed: rc={proc.returncode} {proc.stderr[-2000:]}"
    return proc.stdout.split()


@slow
def test_killed_upload_resumes_without_resending_finished_files(stack_state, minilm_snapshot, s3_prefix):
    snapshot, _ = minilm_snapshot
    prefix = f"{s3_prefix}/killed/"
    client = client_for(stack_state)
    finished = killed_upload(stack_state, snapshot, prefix, kill_after=3)
    assert len(finished) == 3

    # Killed mid-way: some objects, no manifest, and readers refuse the prefix.
    assert read_manifest(client, stack_state.bucket, prefix) is None
    with pytest.raises(IncompleteUploadError, match=r"incomplete upload: no manifest at .*re-materialise s3_model"):
        download_model(client, (stack_state.bucket, prefix), Path(snapshot).parent / "never-created")

    resumed = upload_snapshot(client, snapshot, stack_state.bucket, prefix, commit_sha="abc")
    assert set(finished) <= set(resumed.files_skipped)
    assert not set(finished) & set(resumed.files_uploaded)
    assert resumed.bytes_uploaded < resumed.location.total_bytes
    manifest = read_manifest(client, stack_state.bucket, prefix)
    assert manifest is not None and len(manifest.files) == len(resumed.location.files)


@slow
def test_changed_snapshot_drops_manifest_before_sending(stack_state, minilm_snapshot, s3_prefix, tmp_path):
    """A prefix being rewritten must read as incomplete until the new manifest is up, even if killed."""
    snapshot, _ = minilm_snapshot
    copy = tmp_path / "snap"
    copy.mkdir()
    for name in ("config.json", "tokenizer_config.json", "vocab.txt", "modules.json", "special_tokens_map.json"):
        (copy / name).write_bytes((Path(snapshot) / name).read_bytes())
    prefix = f"{s3_prefix}/changed/"
    client = client_for(stack_state)
    upload_snapshot(client, copy, stack_state.bucket, prefix, commit_sha="abc")
    assert read_manifest(client, stack_state.bucket, prefix) is not None

    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config | {"max_position_embeddings": 256}))
    (copy / "vocab.txt").write_text((copy / "vocab.txt").read_text() + "extra\n")
    killed_upload(stack_state, copy, prefix, kill_after=1)
    assert read_manifest(client, stack_state.bucket, prefix) is None

    resumed = upload_snapshot(client, copy, stack_state.bucket, prefix, commit_sha="abc")
    # Only the changed files were ever sent again (the kill may have let both finish first).
    assert set(resumed.files_uploaded) <= {"config.json", "vocab.txt"}
    assert {"tokenizer_config.json", "modules.json", "special_tokens_map.json"} <= set(resumed.files_skipped)
    manifest = read_manifest(client, stack_state.bucket, prefix)
    assert {f.path: f.sha256 for f in manifest.files}["config.json"] == sha256(copy / "config.json")


@slow
def test_missing_bucket_and_unreachable_endpoint_say_what_to_do(stack_state, minilm_snapshot):
    snapshot, _ = minilm_snapshot
    client = client_for(stack_state)
    with pytest.raises(S3TransferError, match=r"does not exist at .*POOLING_S3_BUCKET"):
        upload_snapshot(client, snapshot, f"no-such-bucket-{uuid.uuid4().hex[:8]}", "x/")
    dead = make_s3_client(
        f"http://127.0.0.1:{free_port()}", stack_state.access_key, stack_state.secret_key, max_attempts=1
    )
    with pytest.raises(S3TransferError, match=r"cannot connect to S3 at http://127.0.0.1:.*stack up"):
        upload_snapshot(dead, snapshot, stack_state.bucket, "x/")


@slow
def test_s3_model_refetches_snapshot_when_local_copy_is_gone(stack_state, hf_cache, s3_prefix, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    res = resources(stack_state, tmp_path / "fresh-cache", s3_prefix)
    first = materialize([hf_snapshot], res, instance)
    snapshot_dir = Path(first.output_for_node("hf_snapshot").local_path)
    import shutil

    shutil.rmtree(tmp_path / "fresh-cache")
    assert not snapshot_dir.exists()
    result = dg.materialize(
        [hf_snapshot.to_source_asset(), s3_model], partition_key=MINILM, resources=res, instance=instance
    )
    location = result.output_for_node("s3_model")
    assert read_manifest(client_for(stack_state), location.bucket, location.prefix) is not None
    assert snapshot_dir.exists()  # fetched again from the hub at the same commit


# ------------------------------------------------------------------------------------- fast: no server


def test_manifest_renders_the_same_bytes_whatever_the_file_order() -> None:
    a = ManifestFile(path="b.json", size=2, sha256="bb")
    b = ManifestFile(path="a.json", size=1, sha256="aa")
    one, two = Manifest(commit_sha="x", files=[a, b]), Manifest(commit_sha="x", files=[b, a])
    assert one.render() == two.render() and one.sha256() == two.sha256()
    assert Manifest.model_validate_json(one.render()).total_bytes == 3
    assert Manifest(commit_sha="y", files=[a, b]).sha256() != one.sha256()


def test_build_manifest_hashes_every_file(tmp_path: Path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"w" * 1000)
    (tmp_path / ".cache").mkdir()  # huggingface_hub's local-dir bookkeeping is not part of the model
    (tmp_path / ".cache" / "x").write_text("x")
    manifest = build_manifest(tmp_path, "abc")
    assert [(f.path, f.size) for f in manifest.files] == [("1_Pooling/config.json", 2), ("model.safetensors", 1000)]
    assert manifest.files[1].sha256 == hashlib.sha256(b"w" * 1000).hexdigest()


class _Client:  # only what explain_client_error reads: the endpoint for the message
    class meta:
        endpoint_url = "http://127.0.0.1:8333"


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        (
            "SignatureDoesNotMatch",
            403,
            "S3 rejected the credentials for http://127.0.0.1:8333 (SignatureDoesNotMatch): "
            "check AWS_SECRET_ACCESS_KEY",
        ),
        ("InvalidAccessKeyId", 403, "(InvalidAccessKeyId): check AWS_ACCESS_KEY_ID"),
        ("AccessDenied", 403, "denied uploading (AccessDenied)"),
        ("NoSuchBucket", 404, "set POOLING_S3_BUCKET"),
    ],
)
def test_s3_errors_name_the_fix_and_never_the_secret(code: str, status: int, expected: str) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    exc = ClientError(
        {"Error": {"Code": code, "Message": f"signature for {secret}"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )
    message = str(explain_client_error(exc, _Client(), "uploading"))
    assert expected in message and secret not in message


@slow
def test_download_refuses_objects_changed_after_upload(stack_state, minilm_snapshot, s3_prefix, tmp_path):
    snapshot, _ = minilm_snapshot
    prefix = f"{s3_prefix}/tampered/"
    client = client_for(stack_state)
    location = upload_snapshot(client, snapshot, stack_state.bucket, prefix, commit_sha="abc").location
    vocab = (Path(snapshot) / "vocab.txt").read_bytes()
    client.put_object(Bucket=stack_state.bucket, Key=prefix + "vocab.txt", Body=vocab[::-1])  # same size
    dest = tmp_path / "model"
    with pytest.raises(S3TransferError, match=r"\['vocab.txt'\] do not match the manifest's sha256"):
        download_model(client, location, dest)
    assert not dest.exists() and list(tmp_path.iterdir()) == []  # no partial folder left behind
