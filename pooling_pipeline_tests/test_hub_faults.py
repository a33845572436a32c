"""Hub faults (issue 13): what `HubResource.snapshot` and `hf_snapshot` say when the hub cannot give a model.

On the REAL local hub (olah, slow): a missing revision, a missing repo, an unknown pinned commit, and olah
stopped (with and without the snapshot in the cache). What olah cannot emulate (gated and private repos,
an invalid token, a mirror that serves another commit, a failing hub) is answered by a loopback server
that speaks the Hub's API with its status codes and error headers (fixtures/fake_hub.py), through the
real `huggingface_hub` client.

Each test checks the message (the cause and the fix, never the token) and what is kept (nothing
downloaded for a refused model; a cached snapshot still used when the hub is down).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pooling_pipeline.catalog import LOCAL_CATALOG
from pooling_pipeline.ingest.assets import hf_snapshot
from pooling_pipeline.resources.hub import HubError, HubResource
from pooling_pipeline.stack import olah
from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import free_port, pid_alive
from pooling_pipeline_tests.fixtures.fake_hub import FakeHub, FakeRepo

MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
TOKEN = "hf_" + "s3cr3t" * 6  # a token-shaped value that must never appear in a message
SHA_A, SHA_B = "a" * 40, "b" * 40
FILES = {"config.json": b'{"architectures": ["BertModel"]}', "README.md": b"# a model\n"}


def cached_files(cache: Path) -> list[str]:
    """Every downloaded file (blob) in a huggingface_hub cache folder."""
    return sorted(p.name for p in cache.glob("models--*/blobs/*"))


# ------------------------------------------------------------------------------- the real hub: olah


@pytest.fixture(scope="module")
def hub_endpoint(local_stack) -> str:
    return local_stack.state.hub_endpoint


@pytest.mark.slow
def test_missing_revision_on_olah_names_the_revision_not_the_repo(hub_endpoint, tmp_path):
    hub = HubResource(endpoint=hub_endpoint, token=None, cache_dir=str(tmp_path))
    with pytest.raises(HubError) as caught:
        hub.snapshot(MINILM_REPO, "no-such-branch")
    message = str(caught.value)
    # olah answers 401 "RepoNotFound" for it; the repo exists, so the revision is what to fix.
    assert f"revision 'no-such-branch' of {MINILM_REPO} does not exist on {hub_endpoint}" in message
    assert "fix `revision` in the catalog" in message
    assert cached_files(tmp_path) == []


@pytest.mark.slow
def test_unknown_pinned_commit_on_olah_names_the_revision(hub_endpoint, tmp_path):
    hub = HubResource(endpoint=hub_endpoint, token=None, cache_dir=str(tmp_path))
    with pytest.raises(HubError) as caught:
        hub.snapshot(MINILM_REPO, "0" * 40)  # olah answers 500 for a commit it does not have
    message = str(caught.value)
    assert f"revision '{'0' * 40}' of {MINILM_REPO} does not exist on {hub_endpoint}" in message
    assert "cannot reach" not in message  # the hub answered: it is not "unreachable"
    assert cached_files(tmp_path) == []


@pytest.mark.slow
def test_missing_repo_on_olah_names_the_repo_and_how_to_seed_the_mirror(hub_endpoint, tmp_path):
    hub = HubResource(endpoint=hub_endpoint, token=None, cache_dir=str(tmp_path))
    with pytest.raises(HubError) as caught:
        hub.snapshot("sentence-transformers/no-such-model", "main")
    message = str(caught.value)
    assert f"sentence-transformers/no-such-model is not on {hub_endpoint}" in message
    assert "check `repo_id` in the catalog" in message and "pooling-pipeline stack up" in message
    assert cached_files(tmp_path) == []


@pytest.mark.slow
def test_missing_revision_fails_hf_snapshot_with_the_catalog_fix(hub_endpoint, tmp_path, monkeypatch):
    catalog = yaml.safe_load(LOCAL_CATALOG.read_text())
    for entry in catalog["models"]:
        if entry["name"] == "all-minilm-l6-v2":
            entry["revision"] = "v9-does-not-exist"
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(catalog))
    monkeypatch.setenv("POOLING_CATALOG", str(path))
    hub = HubResource(endpoint=hub_endpoint, token=None, cache_dir=str(tmp_path / "cache"))
    result = dg.materialize(
        [hf_snapshot], partition_key="all-minilm-l6-v2", resources={"hub": hub}, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert f"revision 'v9-does-not-exist' of {MINILM_REPO} does not exist" in message
    assert not result.asset_materializations_for_node("hf_snapshot")


@pytest.fixture
def private_olah(local_stack, tmp_path) -> Iterator[tuple[StackLayout, str]]:
    """An olah of this test's own, serving the session's seeded mirrors (so stopping it disturbs no one)."""
    layout = StackLayout(tmp_path / "private-hub")
    layout.ensure()
    layout.hub_mirrors.rmdir()
    layout.hub_mirrors.symlink_to(local_stack.layout.hub_mirrors, target_is_directory=True)
    state = local_stack.state.model_copy(update={"hub_port": free_port()})
    olah.start(layout, state)
    try:
        yield layout, state.hub_endpoint
    finally:
        olah.stop(layout)


@pytest.mark.slow
def test_olah_stopped_uses_the_cached_snapshot_and_fails_clearly_with_a_cold_cache(private_olah, tmp_path):
    layout, endpoint = private_olah
    warm = HubResource(endpoint=endpoint, token=None, cache_dir=str(tmp_path / "warm"))
    path, sha = warm.snapshot(MINILM_REPO, "main")
    pid = olah.running_pid(layout)
    assert pid is not None and olah.stop(layout) and not pid_alive(pid)

    # Kept: the cached snapshot still answers, by branch and by pinned commit (huggingface_hub's fallback).
    assert warm.snapshot(MINILM_REPO, "main") == (path, sha)
    assert warm.snapshot(MINILM_REPO, sha) == (path, sha)

    cold = HubResource(endpoint=endpoint, token=None, cache_dir=str(tmp_path / "cold"))
    with pytest.raises(HubError) as caught:
        cold.snapshot(MINILM_REPO, "main")
    message = str(caught.value)
    assert f"cannot reach the hub at {endpoint} to fetch {MINILM_REPO}@main" in message
    assert "has no copy of it" in message and "pooling-pipeline stack up" in message and "HF_ENDPOINT" in message
    assert cached_files(tmp_path / "cold") == []


# ----------------------------------------------------------------- what olah cannot emulate: a Hub-like server


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    with FakeHub() as hub:
        yield hub


def resource(hub: FakeHub, cache: Path, token: str | None = None) -> HubResource:
    return HubResource(endpoint=hub.url, token=token, cache_dir=str(cache))


def test_the_hub_like_server_serves_a_public_model_as_the_hub_does(fake_hub, tmp_path):
    """The control for the tests below: the real client downloads from it."""
    fake_hub.add(FakeRepo("org/public", FILES, {"main": SHA_A, SHA_A: SHA_A}))
    path, sha = resource(fake_hub, tmp_path).snapshot("org/public", "main")
    assert sha == SHA_A and path.name == SHA_A
    assert {p.name: p.read_bytes() for p in path.iterdir()} == FILES


def test_gated_repo_without_a_token_says_accept_the_licence_and_set_hf_token(fake_hub, tmp_path):
    fake_hub.add(FakeRepo("org/gated", FILES, {"main": SHA_A}, gated=True))
    with pytest.raises(HubError) as caught:
        resource(fake_hub, tmp_path).snapshot("org/gated", "main")
    assert str(caught.value) == f"org/gated is gated on {fake_hub.url}: accept its licence and set HF_TOKEN"
    assert cached_files(tmp_path) == []


def test_gated_repo_with_a_token_not_granted_says_whose_access_is_missing(fake_hub, tmp_path):
    fake_hub.valid_tokens.add(TOKEN)
    fake_hub.add(FakeRepo("org/gated", FILES, {"main": SHA_A}, gated=True))
    with pytest.raises(HubError) as caught:
        resource(fake_hub, tmp_path, TOKEN).snapshot("org/gated", "main")
    message = str(caught.value)
    assert "the account of HF_TOKEN has not been granted access" in message
    assert "accept its licence on the model page with that account" in message
    assert TOKEN not in message and cached_files(tmp_path) == []

    # Once access is granted, the same call works (the control).
    fake_hub.repos["org/gated"].granted_tokens.add(TOKEN)
    _, sha = resource(fake_hub, tmp_path, TOKEN).snapshot("org/gated", "main")
    assert sha == SHA_A


def test_invalid_token_is_named_as_the_cause_without_showing_it(fake_hub, tmp_path):
    fake_hub.add(FakeRepo("org/public", FILES, {"main": SHA_A}))
    wrong = "hf_" + uuid.uuid4().hex
    with pytest.raises(HubError) as caught:
        resource(fake_hub, tmp_path, wrong).snapshot("org/public", "main")
    message = str(caught.value)
    assert f"the hub at {fake_hub.url} rejected HF_TOKEN (HTTP 401, invalid credentials)" in message
    assert "set HF_TOKEN to a valid token" in message
    assert wrong not in message and cached_files(tmp_path) == []
    assert any(auth == f"Bearer {wrong}" for _, _, auth in fake_hub.seen)  # it was sent, just not shown


def test_private_repo_without_a_token_says_it_may_need_hf_token(fake_hub, tmp_path):
    fake_hub.add(FakeRepo("org/private", FILES, {"main": SHA_A}, private=True, granted_tokens={TOKEN}))
    with pytest.raises(HubError) as caught:
        resource(fake_hub, tmp_path).snapshot("org/private", "main")
    message = str(caught.value)
    assert f"org/private is not on {fake_hub.url} (or it is private and needs HF_TOKEN)" in message
    assert cached_files(tmp_path) == []


def test_mirror_serving_another_commit_than_the_pinned_one_fails_before_downloading(fake_hub, tmp_path):
    # A stale or rewriting mirror: asked for SHA_A, it says (and serves) SHA_B.
    fake_hub.add(FakeRepo("org/pinned", FILES, {"main": SHA_B, SHA_A: SHA_B, SHA_B: SHA_B}))
    with pytest.raises(HubError) as caught:
        resource(fake_hub, tmp_path).snapshot("org/pinned", SHA_A)
    message = str(caught.value)
    assert f"org/pinned: the catalog pins commit {SHA_A} but the hub at {fake_hub.url} serves {SHA_B}" in message
    assert "update the mirror, or set HF_ENDPOINT" in message
    assert cached_files(tmp_path) == []  # nothing of the wrong commit was downloaded
    assert not any("/resolve/" in path for _, path, _ in fake_hub.seen)


def test_failing_hub_is_reported_as_failing_not_unreachable(fake_hub, tmp_path):
    fake_hub.add(FakeRepo("org/public", FILES, {"main": SHA_A}))
    fake_hub.failing = 503
    with pytest.raises(HubError) as caught:
        resource(fake_hub, tmp_path).snapshot("org/public", "main")
    message = str(caught.value)
    assert f"the hub at {fake_hub.url} failed to serve org/public@main (HTTP 503)" in message
    assert "retry later" in message and "cannot reach" not in message


def test_unreachable_hub_with_a_cold_cache_names_the_endpoint_and_the_fix(tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    hub = HubResource(endpoint=endpoint, token=TOKEN, cache_dir=str(tmp_path))
    with pytest.raises(HubError) as caught:
        hub.snapshot("org/anything", "main")
    message = str(caught.value)
    assert f"cannot reach the hub at {endpoint} to fetch org/anything@main (ConnectError)" in message
    assert TOKEN not in message


def test_a_dropped_connection_to_a_hub_without_the_repo_still_names_the_repo(fake_hub, tmp_path):
    # The mirror resets the download's connection, then answers the follow-up question: the repo is missing.
    fake_hub.drop = "/revision/"
    with pytest.raises(HubError) as caught:
        resource(fake_hub, tmp_path).snapshot("org/absent", "main")
    assert f"org/absent is not on {fake_hub.url}" in str(caught.value)
    assert "cannot reach" not in str(caught.value)
    assert cached_files(tmp_path) == []


def test_a_dropped_download_of_a_repo_the_hub_has_says_retry_not_unreachable(fake_hub, tmp_path):
    fake_hub.add(FakeRepo("org/public", FILES, {"main": SHA_A, SHA_A: SHA_A}))
    fake_hub.drop = "/revision/"
    with pytest.raises(HubError) as caught:
        resource(fake_hub, tmp_path).snapshot("org/public", "main")
    message = str(caught.value)
    assert f"the hub at {fake_hub.url} has org/public but dropped the download of 'main'" in message
    assert "retry" in message and cached_files(tmp_path) == []
    # The mirror recovers: the same call downloads it.
    fake_hub.drop = None
    _, sha = resource(fake_hub, tmp_path).snapshot("org/public", "main")
    assert sha == SHA_A
