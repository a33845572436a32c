"""vllm_release_sensor against fake release feeds served over real HTTP on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from pooling_pipeline.automation.jobs import MODEL_TAG, model_revalidation_job, register_runtime_job
from pooling_pipeline.automation.release_feeds import FEEDS_ENV, latest_from_image_tags
from pooling_pipeline.automation.sensors import ReleaseCursor, vllm_release_sensor
from pooling_pipeline.catalog import active_catalog
from pooling_pipeline.partitions import vllm_release_partitions
from pooling_pipeline.stack.processes import free_port


class FakeFeeds:
    """path -> (HTTP status, JSON body); the tests change it between ticks."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, object]] = {}
        self.hits: list[str] = []
        feeds = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                feeds.hits.append(self.path)
                status, body = feeds.routes.get(self.path, (404, {"message": "Not Found"}))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def pypi(self, releases: dict[str, list[dict]], info_version: str) -> None:
        self.routes["/pypi/vllm/json"] = (200, {"info": {"name": "vllm", "version": info_version},
                                                "releases": releases})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def files(yanked: bool = False) -> list[dict]:
    return [{"filename": "vllm-x.whl", "yanked": yanked}]


@pytest.fixture
def feeds() -> Iterator[FakeFeeds]:
    server = FakeFeeds()
    yield server
    server.close()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(vllm_release_partitions.name, ["0.32.0"])
        yield inst


def tick(instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = vllm_release_sensor(context)
    new_cursor = result.cursor if isinstance(result, dg.SensorResult) else context.cursor
    return result, new_cursor


def seen(version: str) -> str:
    return ReleaseCursor(last_seen=version).model_dump_json()


def test_new_release_registers_runtime_then_requests_every_model_once(feeds, instance, monkeypatch) -> None:
    monkeypatch.setenv(FEEDS_ENV, f"pypi={feeds.url}/pypi/vllm/json")
    feeds.pypi({"0.32.0": files(), "0.33.0": files()}, info_version="0.33.0")

    # Tick 1: the release is new -> a partition for it and the runtime registration, no model run yet.
    result, cursor = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SensorResult)
    assert [r.partition_keys for r in result.dynamic_partitions_requests] == [["0.33.0"]]
    assert [(r.job_name, r.partition_key) for r in result.run_requests] == [(register_runtime_job.name, "0.33.0")]
    assert feeds.hits == ["/pypi/vllm/json"]

    # Tick 2, before the runtime run finished: nothing to launch.
    instance.add_dynamic_partitions(vllm_release_partitions.name, ["0.33.0"])
    result, cursor = tick(instance, cursor)
    assert isinstance(result, dg.SkipReason)
    assert "waiting for serving_runtime of vLLM 0.33.0" in result.skip_message

    # The runtime is registered: every catalog model is redeployed and re-validated, once.
    instance.report_runless_asset_event(dg.AssetMaterialization("serving_runtime", partition="0.33.0"))
    result, cursor = tick(instance, cursor)
    assert isinstance(result, dg.SensorResult)
    names = active_catalog().names()
    assert sorted(r.partition_key for r in result.run_requests) == sorted(names)
    assert {r.job_name for r in result.run_requests} == {model_revalidation_job.name}
    assert len({r.run_key for r in result.run_requests}) == len(names)
    assert all(r.tags[MODEL_TAG] == r.partition_key for r in result.run_requests)

    # Same version on the next tick: skip, nothing launched twice.
    result, cursor = tick(instance, cursor)
    assert isinstance(result, dg.SkipReason)
    assert "no new vLLM release" in result.skip_message
    assert ReleaseCursor.parse(cursor).last_seen == "0.33.0"


def test_same_version_skips(feeds, instance, monkeypatch) -> None:
    monkeypatch.setenv(FEEDS_ENV, f"pypi={feeds.url}/pypi/vllm/json")
    feeds.pypi({"0.32.0": files()}, info_version="0.32.0")
    result, _ = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason)
    assert "latest stable: 0.32.0" in result.skip_message


def test_first_tick_adopts_an_already_registered_release_without_redeploying(feeds, instance, monkeypatch) -> None:
    monkeypatch.setenv(FEEDS_ENV, f"pypi={feeds.url}/pypi/vllm/json")
    feeds.pypi({"0.32.0": files()}, info_version="0.32.0")
    result, cursor = tick(instance, None)
    assert isinstance(result, dg.SkipReason)
    assert ReleaseCursor.parse(cursor).last_seen == "0.32.0"


def test_yanked_and_prereleases_are_ignored(feeds, instance, monkeypatch) -> None:
    feeds.pypi({"0.32.0": files(), "0.33.0": files(yanked=True), "0.34.0rc1": files(), "0.34.0.dev3": files()},
               info_version="0.34.0rc1")
    feeds.routes["/repos/vllm-project/vllm/releases/latest"] = (200, {"tag_name": "v0.35.0", "prerelease": True})
    feeds.routes["/v2/vllm/vllm-openai/tags/list"] = (
        200, {"name": "vllm/vllm-openai", "tags": ["latest", "nightly", "v0.32.0", "v0.36.0rc1", "v0.36.0-cu126"]})
    monkeypatch.setenv(FEEDS_ENV, f"pypi={feeds.url}/pypi/vllm/json,"
                                  f"github={feeds.url}/repos/vllm-project/vllm/releases/latest,"
                                  f"image={feeds.url}/v2/vllm/vllm-openai/tags/list")
    result, cursor = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason), result
    assert "latest stable: 0.32.0" in result.skip_message
    assert len(feeds.hits) == 3  # every feed was read


def test_github_and_image_feeds_announce_a_release(feeds, instance, monkeypatch) -> None:
    feeds.routes["/repos/vllm-project/vllm/releases/latest"] = (200, {"tag_name": "v0.33.1", "prerelease": False})
    feeds.routes["/v2/repositories/vllm/vllm-openai/tags"] = (200, {"results": [{"name": "v0.33.0"},
                                                                                {"name": "latest"}]})
    monkeypatch.setenv(FEEDS_ENV, f"github={feeds.url}/repos/vllm-project/vllm/releases/latest,"
                                  f"image={feeds.url}/v2/repositories/vllm/vllm-openai/tags")
    result, _ = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SensorResult)
    assert [r.partition_key for r in result.run_requests] == ["0.33.1"]


def test_feed_down_skips_with_a_reason(instance, monkeypatch) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv(FEEDS_ENV, f"pypi=http://127.0.0.1:{port}/pypi/vllm/json")
    result, _ = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason)
    assert "unreachable" in result.skip_message and str(port) in result.skip_message


def test_feed_error_status_skips_with_a_reason(feeds, instance, monkeypatch) -> None:
    feeds.routes["/pypi/vllm/json"] = (503, {"message": "maintenance"})
    monkeypatch.setenv(FEEDS_ENV, f"pypi={feeds.url}/pypi/vllm/json")
    result, _ = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason)
    assert "HTTP 503" in result.skip_message


def test_one_feed_down_does_not_hide_a_release_on_another(feeds, instance, monkeypatch) -> None:
    feeds.pypi({"0.32.0": files(), "0.33.0": files()}, info_version="0.33.0")
    monkeypatch.setenv(FEEDS_ENV, f"github=http://127.0.0.1:{free_port()}/releases/latest,"
                                  f"pypi={feeds.url}/pypi/vllm/json")
    result, _ = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SensorResult)
    assert [r.partition_key for r in result.run_requests] == ["0.33.0"]


def test_image_tags_only_count_plain_release_tags() -> None:
    assert latest_from_image_tags({"tags": ["v0.9.2", "v0.10.0", "v0.10.1rc1", "latest", "v0.11.0-cu126"]}) == "0.10.0"
    assert latest_from_image_tags({"tags": ["nightly"]}) is None


# ------------------------------------------------------------------ hf_revision_sensor


def _hub(feeds: FakeFeeds, tmp_path):
    from pooling_pipeline.resources.hub import HubResource

    return HubResource(endpoint=feeds.url, token=None, cache_dir=str(tmp_path))


def _serve_revisions(feeds: FakeFeeds, sha_by_repo: dict[str, str]) -> None:
    for entry in active_catalog().models:
        sha = sha_by_repo[entry.name]
        feeds.routes[f"/api/models/{entry.repo_id}/revision/{entry.revision}"] = (
            200, {"id": entry.repo_id, "modelId": entry.repo_id, "sha": sha, "siblings": []})


def test_new_hub_revision_requests_reingest_of_that_model_only(feeds, instance, tmp_path) -> None:
    from pooling_pipeline.automation.jobs import ingest_job
    from pooling_pipeline.automation.sensors import hf_revision_sensor

    names = active_catalog().names()
    for name in names:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "hf_snapshot", partition=name, tags={"dagster/data_version": "a" * 40}))
    _serve_revisions(feeds, {names[0]: "b" * 40, **{n: "a" * 40 for n in names[1:]}})
    context = dg.build_sensor_context(instance=instance, resources={"hub": _hub(feeds, tmp_path)})
    result = hf_revision_sensor(context)
    assert isinstance(result, dg.SensorResult)
    assert [(r.job_name, r.partition_key) for r in result.run_requests] == [(ingest_job.name, names[0])]
    assert result.run_requests[0].run_key == f"hf-{names[0]}-{'b' * 40}"

    # Unchanged everywhere: skip.
    _serve_revisions(feeds, {n: "a" * 40 for n in names})
    result = hf_revision_sensor(dg.build_sensor_context(instance=instance, resources={"hub": _hub(feeds, tmp_path)}))
    assert isinstance(result, dg.SkipReason)
    assert "no catalog model has a new revision" in result.skip_message


def test_hub_down_skips_with_a_reason(instance, tmp_path) -> None:
    from pooling_pipeline.automation.sensors import hf_revision_sensor
    from pooling_pipeline.resources.hub import HubResource

    hub = HubResource(endpoint=f"http://127.0.0.1:{free_port()}", token=None, cache_dir=str(tmp_path))
    result = hf_revision_sensor(dg.build_sensor_context(instance=instance, resources={"hub": hub}))
    assert isinstance(result, dg.SkipReason)
    assert "hub not readable" in result.skip_message
