"""The endpoint clients against loopback servers that misbehave on purpose: every failure is clear."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pooling_pipeline.evaluation.clients import CaikitClient, EndpointError, OpenAIPoolingClient, RetryPolicy
from pooling_pipeline.stack.processes import free_port

# A handler gets (path, parsed JSON body) and returns (status, body bytes); it may sleep.
Behaviour = Callable[[str, object], tuple[int, bytes]]


@contextmanager
def serve(behaviour: Behaviour) -> Iterator[str]:
    seen: list = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            seen.append((self.path, body))
            status, payload = behaviour(self.path, body)
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _json(data) -> bytes:
    return json.dumps(data).encode()


def test_http_500_is_an_error_quoting_the_servers_message():
    with serve(lambda p, b: (500, _json({"error": {"message": "EngineCore died unexpectedly"}}))) as url:
        client = OpenAIPoolingClient(url, "m")
        with pytest.raises(EndpointError) as exc:
            client.embed(["hi"])
    assert exc.value.status == 500
    assert "HTTP 500" in str(exc.value) and "EngineCore died unexpectedly" in str(exc.value)
    assert "/v1/embeddings" in str(exc.value)


def test_garbage_json_is_reported_as_not_json():
    with (
        serve(lambda p, b: (200, b"<html>proxy login</html>")) as url,
        pytest.raises(EndpointError, match="not JSON") as exc,
    ):
        OpenAIPoolingClient(url, "m").embed("hi")
    assert "proxy login" in str(exc.value)


def test_json_without_embeddings_is_reported_as_unexpected():
    with (
        serve(lambda p, b: (200, _json({"object": "list", "data": [{"index": 0}]}))) as url,
        pytest.raises(EndpointError, match=r"unexpected answer.*embedding"),
    ):
        OpenAIPoolingClient(url, "m").embed("hi")


def test_a_server_that_hangs_times_out_with_a_clear_message():
    def slow(path, body):
        time.sleep(2.0)
        return 200, _json({})

    with serve(slow) as url:
        t0 = time.monotonic()
        with pytest.raises(EndpointError, match=r"did not answer within 0.5 s"):
            OpenAIPoolingClient(url, "m", timeout_s=0.5).embed("hi")
    assert time.monotonic() - t0 < 1.9  # no retry of a request the server may still be working on


def test_over_length_400_is_returned_as_a_finding_not_raised():
    msg = "This model's maximum context length is 256 tokens. However, you requested 257 tokens."

    def refuse(path, body):
        return 400, _json({"error": {"message": msg, "type": "BadRequestError", "code": 400}})

    with serve(refuse) as url:
        attempt = OpenAIPoolingClient(url, "m").try_embed("long " * 300)
    assert not attempt.ok and attempt.status == 400
    assert attempt.error == msg


def test_truncate_prompt_tokens_is_sent_and_vectors_come_back_in_input_order():
    def embed(path, body):
        assert body["truncate_prompt_tokens"] == 8 and body["model"] == "m"
        data = [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]
        return 200, _json({"data": data, "usage": {"prompt_tokens": 9}})

    with serve(embed) as url:
        attempt = OpenAIPoolingClient(url, "m").try_embed(["a", "b"], truncate_prompt_tokens=8)
    assert attempt.vectors == [[1.0, 0.0], [0.0, 1.0]] and attempt.prompt_tokens == 9


def test_connection_refused_is_retried_then_names_the_url():
    port = free_port()  # nothing listens there
    client = OpenAIPoolingClient(f"http://127.0.0.1:{port}", "m", retry=RetryPolicy(attempts=3, backoff_s=0.05))
    t0 = time.monotonic()
    with pytest.raises(EndpointError, match=rf"cannot reach .*127.0.0.1:{port}.* after 3 tries"):
        client.embed("hi")
    assert time.monotonic() - t0 >= 0.05 + 0.1  # it waited between tries


def test_a_server_that_comes_up_during_the_retries_is_reached():
    port = free_port()
    result: dict = {}

    def late_server() -> None:
        time.sleep(0.3)
        from http.server import HTTPServer

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                payload = _json({"version": "0.32.0"})
                self.send_response(200)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *a):
                pass

        srv = HTTPServer(("127.0.0.1", port), H)
        result["srv"] = srv
        srv.handle_request()
        srv.server_close()

    t = threading.Thread(target=late_server, daemon=True)
    t.start()
    client = OpenAIPoolingClient(f"http://127.0.0.1:{port}", "m", retry=RetryPolicy(attempts=6, backoff_s=0.2))
    assert client.version() == "0.32.0"
    t.join(5)


def test_rerank_and_score_parse_results_by_index():
    def answer(path, body):
        if path == "/v1/score":
            assert body["text_1"] == "q"
            return 200, _json({"data": [{"index": 1, "score": 0.2}, {"index": 0, "score": 0.9}]})
        if path in ("/v1/rerank", "/v2/rerank"):
            assert body["top_n"] == 2
            return 200, _json({"results": [{"index": 0, "relevance_score": 0.9}, {"index": 1, "relevance_score": 0.2}]})
        return 404, _json({"detail": "Not Found"})

    with serve(answer) as url:
        client = OpenAIPoolingClient(url, "m")
        assert client.score("q", ["a", "b"]) == [0.9, 0.2]
        assert [r.index for r in client.rerank("q", ["a", "b"], top_n=2, version=2)] == [0, 1]
        with pytest.raises(EndpointError, match=r"HTTP 404.*Not Found"):
            client.pooling("x")


def test_caikit_error_quotes_details_and_embedding_values_are_parsed():
    def answer(path, body):
        if body["inputs"] == "":
            return 400, _json(
                {"details": "run_embedding() missing 1 required positional argument: 'text'", "code": 400, "id": "x"}
            )
        assert body["model_id"] == "minilm" and body["parameters"] == {"truncate_input_tokens": 0}
        return 200, _json({"result": {"data": {"values": [0.5, 0.5]}}})

    with serve(answer) as url:
        client = CaikitClient(url, "minilm")
        assert client.embed_one("hello") == [0.5, 0.5]
        attempt = client.try_embed_one("")
    assert attempt.status == 400 and "missing 1 required positional argument" in attempt.error


def test_caikit_rerank_is_sorted_best_first_with_indices():
    def answer(path, body):
        assert path == "/api/v1/task/rerank"
        assert body["inputs"]["documents"] == [{"text": "a"}, {"text": "b"}]
        return 200, _json({"result": {"scores": [{"index": 1, "score": 0.3}, {"index": 0, "score": 0.8}]}})

    with serve(answer) as url:
        results = CaikitClient(url, "ce").rerank("q", ["a", "b"])
    assert [(r.index, r.relevance_score) for r in results] == [(0, 0.8), (1, 0.3)]
