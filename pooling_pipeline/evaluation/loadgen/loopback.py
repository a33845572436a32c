"""A loopback HTTP server that answers like /v1/embeddings, for measuring the load generator itself.

It does (almost) nothing, so whatever latency the generator reports against it is the generator's own
overhead. A `Behaviour` can inject latency, errors and a stall on a known schedule (by arrival order),
which is how the tests check that percentiles and error counts come out exact. It runs in its own
process(es) so it never shares an interpreter (or a GIL) with the generator.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import socket
import time
from dataclasses import asdict, dataclass
from multiprocessing.process import BaseProcess

import uvloop
from aiohttp import web

from pooling_pipeline.stack.processes import free_port, wait_http_ok


@dataclass(frozen=True)
class Behaviour:
    delay_every: int = 0  # every k-th arrival (k, 2k, ...) waits delay_s before answering
    delay_s: float = 0.0
    error_every: int = 0  # every k-th arrival answers error_status
    error_status: int = 503
    stall_after_s: float | None = None  # from the first arrival: requests arriving in the stall window
    stall_for_s: float = 0.0  # wait until it ends (a GC pause, a stuck batch)
    # A server of known capacity: `servers` slots, each busy `service_s` per request, first come first
    # served. Capacity is servers / service_s requests/s; below it latency is service_s, above it the queue
    # grows without bound (with evenly spaced arrivals: a sharp knee at exactly that rate).
    servers: int = 0  # 0: unlimited (every request is answered at once)
    service_s: float = 0.0
    exit_after: int | None = None  # the process exits (a crash) when this many requests have arrived


_EMBEDDING = json.dumps(
    {
        "id": "embd-loopback",
        "object": "list",
        "created": 0,
        "model": "loopback",
        "data": [{"index": 0, "object": "embedding", "embedding": [0.0] * 8}],
        "usage": {"prompt_tokens": 64, "total_tokens": 64},
    }
).encode()


async def _serve(port: int, behaviour: Behaviour, reuse_port: bool) -> None:
    arrivals: list[float] = []
    count = 0
    slots = asyncio.Semaphore(behaviour.servers) if behaviour.servers > 0 else None

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":
            if request.path == "/stats":
                body = json.dumps({"arrivals": arrivals}).encode()
                if request.query.get("reset"):  # the next trial starts from no arrivals
                    arrivals.clear()
                return web.Response(body=body, content_type="application/json")
            return web.Response(body=b"ok")
        nonlocal count
        now = time.monotonic()
        await request.read()
        count += 1
        n = count
        arrivals.append(now)
        b = behaviour
        if b.exit_after is not None and n >= b.exit_after:
            os._exit(1)  # a crash: no response, no clean shutdown
        if slots is not None:
            async with slots:
                await asyncio.sleep(b.service_s)
        if b.stall_after_s is not None:
            stall_start = arrivals[0] + b.stall_after_s
            stall_end = stall_start + b.stall_for_s
            if stall_start <= now < stall_end:
                await asyncio.sleep(stall_end - now)
        if b.delay_every and n % b.delay_every == 0:
            await asyncio.sleep(b.delay_s)
        if b.error_every and n % b.error_every == 0:
            return web.Response(status=b.error_status, body=b'{"error":"injected"}', content_type="application/json")
        return web.Response(body=_EMBEDDING, content_type="application/json")

    server = web.Server(handle, access_log=None)
    runner = web.ServerRunner(server, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_port=reuse_port, backlog=4096)
    await site.start()
    await asyncio.Event().wait()


def _main(port: int, behaviour: dict, reuse_port: bool) -> None:
    uvloop.run(_serve(port, Behaviour(**behaviour), reuse_port))


class LoopbackServer:
    """`with LoopbackServer(Behaviour(...)) as url: ...`; `processes` > 1 shares the port (SO_REUSEPORT)."""

    def __init__(self, behaviour: Behaviour | None = None, *, processes: int = 1) -> None:
        self.behaviour = behaviour or Behaviour()
        self.processes = processes
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._procs: list[BaseProcess] = []

    def start(self) -> str:
        ctx = mp.get_context("spawn")
        reuse = self.processes > 1 and hasattr(socket, "SO_REUSEPORT")
        for _ in range(self.processes):
            p = ctx.Process(target=_main, args=(self.port, asdict(self.behaviour), reuse), daemon=True)
            p.start()
            self._procs.append(p)
        wait_http_ok(self.url + "/health", timeout_s=30, interval_s=0.05)
        return self.url

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def arrivals(self, *, reset: bool = False) -> list[float]:
        """Monotonic arrival times of the POSTs so far (single-process server only); `reset` clears them."""
        import httpx

        return list(
            httpx.get(self.url + "/stats", params={"reset": "1"} if reset else None, timeout=10).json()["arrivals"]
        )

    def stop(self) -> None:
        for p in self._procs:
            p.terminate()
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        self._procs.clear()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
