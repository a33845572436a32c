"""Sends the requests: open loop on a precomputed schedule, or closed loop with N concurrent workers.

aiohttp + uvloop, because the generator must not be what limits the measurement: httpx's AsyncClient
collapses past ~16 concurrent requests (client-side queueing a naive benchmark reports as server
latency), aiohttp + uvloop sustains thousands of requests/s per core. Load is spread over worker
processes (one event loop each) so all cores can send; with one worker everything runs in-process.

Open loop: request k is launched at `start + offsets[k]` whatever the server is doing (no connection
limit, so a stalled server gets more concurrent requests, not fewer sends). Each record keeps the
planned time, the actual send time and the completion time, so latency is known from both and the
schedule lag (actual - planned) says whether the generator kept up; summary.py marks a run invalid when
it did not.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import queue
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import aiohttp
import uvloop
from yarl import URL

from pooling_pipeline.evaluation.loadgen.schedule import Schedule
from pooling_pipeline.evaluation.loadgen.workloads import PreparedRequest

_HEADERS = {"Content-Type": "application/json"}
_START_MARGIN_S = 0.1  # after every worker is ready, so the first planned sends are not already late


class RequestRecord(NamedTuple):
    """One request; times in seconds from the run start (shared monotonic clock across processes)."""

    index: int
    planned: float  # nan in closed loop
    sent: float
    done: float
    status: int  # HTTP status, 0 when no response came back
    error: str | None  # None on success; "http_503", "timeout", "connection", "client_<Exception>"
    inputs: int
    tokens: int
    warmup: bool


@dataclass
class LoadResult:
    """Everything one run produced; `summary.summarize` turns it into numbers."""

    mode: Literal["open", "closed"]
    records: list[RequestRecord]
    workers: int
    wall_s: float
    client_cpu_s: float  # user+sys CPU of the generator's processes: how busy the generator itself was
    offered_rate: float | None = None  # open loop: requests/s in the schedule
    arrival: str | None = None
    concurrency: int | None = None  # closed loop
    label: str = ""
    extra: dict = field(default_factory=dict)


def classify(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError | OSError):
        return "connection"
    return f"client_{type(exc).__name__}"


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class _Sender:
    """Per-process state: one session, one URL object per path (parsed once)."""

    def __init__(self, base_url: str, requests: Sequence[PreparedRequest], limit: int) -> None:
        self.requests = requests
        self.start = 0.0  # set once the session exists, see `_start_in_process` / `_Gate`
        self.urls = {r.path: URL(base_url.rstrip("/") + r.path) for r in requests}
        self.records: list[RequestRecord] = []
        self.limit = limit

    def session(self, timeout_s: float) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self.limit, limit_per_host=0, ttl_dns_cache=None, keepalive_timeout=75)
        # auto_decompress off and no cookie jar: nothing to do per response but read the bytes.
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def send(self, session: aiohttp.ClientSession, index: int, planned: float, warmup: bool) -> None:
        req = self.requests[index % len(self.requests)]
        clock = time.monotonic
        sent = clock() - self.start
        status, error = 0, None
        try:
            async with session.post(self.urls[req.path], data=req.body, headers=_HEADERS) as resp:
                status = resp.status
                await resp.read()
            if status >= 400:
                error = f"http_{status}"
        except Exception as exc:  # every failure is a data point, classified, never an abort
            error = classify(exc)
        self.records.append(
            RequestRecord(index, planned, sent, clock() - self.start, status, error, req.inputs, req.tokens, warmup)
        )


def _start_in_process() -> float:
    return time.monotonic() + 0.01


async def _open_loop(
    base_url: str, requests: Sequence[PreparedRequest], plan: Sequence[tuple[int, float]],
    get_start: Callable[[], float], warmup: int, timeout_s: float,
) -> list[RequestRecord]:
    sender = _Sender(base_url, requests, limit=0)  # no limit: open loop never waits for a connection
    clock = time.monotonic
    async with sender.session(timeout_s) as session:
        # The clock starts only now: creating the loop and session (first-use imports, resolver set-up)
        # must not count as schedule lag.
        start = sender.start = get_start()
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task] = set()
        for index, offset in plan:
            delay = start + offset - clock()
            # uvloop timers have 1 ms resolution: sleep only when the next send is clearly ahead, and
            # launch every send that is due in one pass (each task stamps its own actual send time).
            if delay > 0.0005:
                await asyncio.sleep(delay)
            task = loop.create_task(sender.send(session, index, offset, index < warmup))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    return sender.records


async def _closed_loop(
    base_url: str, requests: Sequence[PreparedRequest], concurrency: int, first_index: int, stride: int,
    get_start: Callable[[], float], warmup_s: float, duration_s: float | None, count: int | None, timeout_s: float,
) -> list[RequestRecord]:
    sender = _Sender(base_url, requests, limit=concurrency)
    clock = time.monotonic
    counter = iter(range(first_index, 1 << 62, stride))
    async with sender.session(timeout_s) as session:
        start = sender.start = get_start()
        end = start + warmup_s + duration_s if duration_s is not None else math.inf
        # Per-process count limit: `count` measured requests after warm-up, shared by this process's workers.
        remaining = [count if count is not None else math.inf]

        async def worker() -> None:
            while clock() < end and remaining[0] > 0:
                warm = clock() - start < warmup_s
                if not warm:
                    remaining[0] -= 1
                await sender.send(session, next(counter), math.nan, warm)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sender.records


def _run_async(coro_factory) -> list[RequestRecord]:  # type: ignore[no-untyped-def]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro_factory())


def _worker_main(job: dict, ready: mp.Queue, go, start_at, results: mp.Queue) -> None:  # type: ignore[no-untyped-def]
    cpu0 = _cpu_s()

    def gate() -> float:
        # Called by each worker once its session exists; blocks (briefly, nothing else is running on
        # this loop yet) until every worker is ready and the parent has fixed the common start time.
        ready.put(job["worker"])
        go.wait()
        return float(start_at.value)

    try:
        if job["mode"] == "open":
            records = _run_async(lambda: _open_loop(job["base_url"], job["requests"], job["plan"], gate,
                                                    job["warmup"], job["timeout_s"]))
        else:
            records = _run_async(lambda: _closed_loop(
                job["base_url"], job["requests"], job["concurrency"], job["worker"], job["workers"], gate,
                job["warmup_s"], job["duration_s"], job["count"], job["timeout_s"]))
        results.put((job["worker"], records, _cpu_s() - cpu0, None))
    except BaseException as exc:  # reported to the parent, which raises with the cause
        results.put((job["worker"], [], _cpu_s() - cpu0, f"{type(exc).__name__}: {exc}"))


def _run_workers(jobs: list[dict], run_timeout_s: float, ready_timeout_s: float = 120.0) -> tuple[
        list[RequestRecord], float]:
    ctx = mp.get_context("spawn")  # never fork: the caller may be a threaded Dagster process
    ready, results = ctx.Queue(), ctx.Queue()
    go, start_at = ctx.Event(), ctx.Value("d", 0.0)
    procs = [ctx.Process(target=_worker_main, args=(job, ready, go, start_at, results), daemon=True) for job in jobs]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            try:
                ready.get(timeout=ready_timeout_s)
            except queue.Empty:
                raise RuntimeError(f"load generator workers not ready after {ready_timeout_s:.0f}s: the machine "
                                   "is overloaded or a worker failed to start; use fewer workers") from None
        start_at.value = time.monotonic() + _START_MARGIN_S
        go.set()
        records: list[RequestRecord] = []
        cpu, errors = 0.0, []
        for _ in procs:
            try:
                _, recs, worker_cpu, error = results.get(timeout=run_timeout_s)
            except queue.Empty:
                raise RuntimeError(f"a load generator worker sent no results within {run_timeout_s:.0f}s "
                                   "(killed? out of memory?)") from None
            records.extend(recs)
            cpu += worker_cpu
            if error:
                errors.append(error)
        if errors:
            raise RuntimeError(f"load generator worker failed: {errors[0]}")
        return records, cpu
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()


def run_open_loop(
    base_url: str,
    requests: Sequence[PreparedRequest],
    schedule: Schedule,
    *,
    workers: int = 1,
    timeout_s: float = 30.0,
    label: str = "",
) -> LoadResult:
    """Send `schedule` to `base_url`, request k using `requests[k % len(requests)]`."""
    if not requests:
        raise ValueError("no requests to send: prepare() a workload first")
    workers = max(1, min(workers, len(schedule)))
    t0 = time.monotonic()
    if workers == 1:
        cpu0 = _cpu_s()
        plan = schedule.for_worker(0, 1)
        records = _run_async(lambda: _open_loop(base_url, requests, plan, _start_in_process, schedule.warmup,
                                                timeout_s))
        cpu = _cpu_s() - cpu0
    else:
        jobs = [
            {"mode": "open", "worker": w, "workers": workers, "base_url": base_url, "requests": list(requests),
             "plan": schedule.for_worker(w, workers), "warmup": schedule.warmup, "timeout_s": timeout_s}
            for w in range(workers)
        ]
        records, cpu = _run_workers(jobs, schedule.duration_s + timeout_s + 60)
    records.sort(key=lambda r: r.index)
    return LoadResult("open", records, workers, time.monotonic() - t0, cpu, offered_rate=schedule.rate,
                      arrival=schedule.arrival, label=label)


def run_closed_loop(
    base_url: str,
    requests: Sequence[PreparedRequest],
    *,
    concurrency: int,
    duration_s: float | None = None,
    count: int | None = None,
    warmup_s: float = 0.0,
    workers: int = 1,
    timeout_s: float = 30.0,
    label: str = "",
) -> LoadResult:
    """`concurrency` requests always in flight (split over `workers` processes) for `duration_s` after
    `warmup_s`, or until `count` measured requests are done."""
    if duration_s is None and count is None:
        raise ValueError("give duration_s or count")
    if not requests:
        raise ValueError("no requests to send: prepare() a workload first")
    workers = max(1, min(workers, concurrency))
    shares = [concurrency // workers + (1 if w < concurrency % workers else 0) for w in range(workers)]
    counts = [None] * workers if count is None else [count // workers + (1 if w < count % workers else 0)
                                                     for w in range(workers)]
    t0 = time.monotonic()
    if workers == 1:
        cpu0 = _cpu_s()
        records = _run_async(lambda: _closed_loop(base_url, requests, concurrency, 0, 1, time.monotonic, warmup_s,
                                                  duration_s, count, timeout_s))
        cpu = _cpu_s() - cpu0
    else:
        jobs = [
            {"mode": "closed", "worker": w, "workers": workers, "base_url": base_url, "requests": list(requests),
             "concurrency": shares[w], "warmup_s": warmup_s, "duration_s": duration_s, "count": counts[w],
             "timeout_s": timeout_s}
            for w in range(workers)
        ]
        records, cpu = _run_workers(jobs, (duration_s or 3600) + warmup_s + timeout_s + 60)
    records.sort(key=lambda r: r.sent)
    return LoadResult("closed", records, workers, time.monotonic() - t0, cpu, concurrency=concurrency, label=label)
