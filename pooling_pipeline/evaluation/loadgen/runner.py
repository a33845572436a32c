"""Sends the requests: open loop on a precomputed schedule, or closed loop with N concurrent workers.

aiohttp + uvloop, because the generator must not be what limits the measurement: httpx's AsyncClient
collapses past ~16 concurrent requests (client-side queueing a naive benchmark reports as server
latency), aiohttp + uvloop sustains thousands of requests/s per core. Load is spread over worker
processes (one event loop each) so all cores can send; with one worker everything runs in-process.

Open loop: request k is launched at `start + offsets[k]` whatever the server is doing (no connection
limit, so a stalled server gets more concurrent requests, not fewer sends). Each record keeps the
planned time, the actual send time and the completion time, so latency is known from both and the
schedule lag (actual - planned) says whether the generator kept up. Latency from the planned time
already includes any lag, so a late send makes a window pessimistic, never invalid; summary.py reports
the lag, and how much of the time the generator wanted a core while sending (`send_cpu_s` /
`send_wall_s`: running or waiting in the run queue), which is what tells a generator that could not keep
up (it never idled) from one that shared its cores (it idled between sends, or only waited for a core).

A `StopRule` ends an open-loop window as soon as its verdict is certain: once more requests are late
(from their planned send) than a p99 can hide, or more failed than the success bound allows, no later
answer can change the outcome, so the rest of the schedule is not sent. The requests in flight are
still awaited (that drains the server before the next window).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import queue
import resource
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar

import aiohttp
import uvloop
from yarl import URL

from pooling_pipeline.evaluation.loadgen.schedule import Schedule
from pooling_pipeline.evaluation.loadgen.workloads import PreparedRequest

T = TypeVar("T")
_HEADERS = {"Content-Type": "application/json"}
_START_MARGIN_S = 0.1  # after every worker is ready, so the first planned sends are not already late


class RequestRecord(NamedTuple):
    """One request; times in seconds from the run start (shared monotonic clock across processes)."""

    index: int  # type: ignore[assignment]  # the field shadows tuple.index; records are read by field name
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
    # Open loop, summed over workers: seconds the sending processes were busy (`_busy_s`: the sending thread
    # ran or waited for a core, or the process burnt CPU), and wall seconds, from the start to the last send.
    send_cpu_s: float = 0.0
    send_wall_s: float = 0.0
    planned: int = 0  # measured (non-warm-up) requests in the schedule
    stopped: str | None = None  # why the window ended before its schedule (StopRule), if it did


@dataclass(frozen=True)
class StopRule:
    """End an open-loop window once it has certainly failed (see the module docstring).

    `max_late`: measured requests answered (or still unanswered) later than `late_after_s` after their
    planned send; `max_errors`: measured requests that failed. `for_window` derives both from a p99 bound
    and a success-rate bound.
    """

    late_after_s: float
    max_late: int
    max_errors: int

    @classmethod
    def for_window(cls, planned: int, *, slo_s: float, min_success_rate: float) -> StopRule:
        n = max(1, planned)
        # p99 (linear interpolation, as numpy) exceeds the SLO for certain once the value at rank
        # floor(0.99 (n - 1)) does, i.e. once n - floor(0.99 (n - 1)) values are above it.
        late = n - math.floor(0.99 * (n - 1))
        errors = math.floor((1.0 - min_success_rate) * n + 1e-9) + 1
        return cls(slo_s, late, errors)


class _Tally:
    """Late and failed counts of one window, shared by its worker processes (or local to one process)."""

    def __init__(self, shared: tuple | None = None) -> None:
        self._shared = shared  # (late, errors, stop) multiprocessing Values
        self.late = self.errors = 0
        self.stop = False

    def add(self, late: int = 0, errors: int = 0) -> tuple[int, int]:
        if self._shared is None:
            self.late += late
            self.errors += errors
            return self.late, self.errors
        shared_late, shared_errors, _ = self._shared
        with shared_late.get_lock():
            shared_late.value += late
            shared_errors.value += errors
            return shared_late.value, shared_errors.value

    def read_late(self) -> int:
        return self.late if self._shared is None else int(self._shared[0].value)

    def set_stop(self) -> None:
        self.stop = True
        if self._shared is not None:
            self._shared[2].value = 1

    def stopped(self) -> bool:
        return self.stop or (self._shared is not None and bool(self._shared[2].value))


def classify(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError | OSError):
        return "connection"
    return f"client_{type(exc).__name__}"


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _wanted_s() -> float:
    """Seconds this thread has been running or waiting in the run queue for a core (Linux schedstat).

    That is what "CPU-bound" means on a shared host: a sender that never idles wants a core all the time,
    whether it gets one or waits for it; its CPU time alone would read low whenever the server took the
    cores. Without /proc (not Linux), the process's CPU time stands in.
    """
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            running_ns, waiting_ns, _ = f.read().split()
        return (int(running_ns) + int(waiting_ns)) / 1e9
    except (OSError, ValueError):
        return _cpu_s()


def _busy_s() -> tuple[float, float]:
    """(`_wanted_s` of the sending thread, CPU seconds of its whole process): the send phase was CPU-bound
    if either grew as fast as the wall clock.

    The second is for the GIL. A sender waiting for the GIL sleeps (neither running nor runnable), so with
    another busy Python thread in the same process (a Dagster run's, a test suite's leftovers) the sending
    thread alone looks idle - yet its process keeps a core busy, and more worker processes (each with its
    own GIL) are the remedy, as for any generator short of processes. getrusage holds the GIL, so the
    sample cannot hand it to that thread (every file read here would, for up to 5 ms each).
    """
    return _wanted_s(), _cpu_s()


class _Sender:
    """Per-process state: one session, one URL object per path (parsed once)."""

    def __init__(
        self,
        base_url: str,
        requests: Sequence[PreparedRequest],
        limit: int,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
    ) -> None:
        self.requests = requests
        # The endpoint's credentials (serving/endpoint_auth.py request_headers / tls_verify) ride on every
        # request: a token-authenticated endpoint answers 401 to a generator without them.
        self.headers = {**_HEADERS, **(headers or {})}
        self.verify = verify
        self.start = 0.0  # set once the session exists, see `_start_in_process` / `_Gate`
        self.urls = {r.path: URL(base_url.rstrip("/") + r.path) for r in requests}
        self.records: list[RequestRecord] = []
        self.limit = limit

    def session(self, timeout_s: float) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.limit, limit_per_host=0, ttl_dns_cache=None, keepalive_timeout=75, ssl=_ssl(self.verify)
        )
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
            async with session.post(self.urls[req.path], data=req.body, headers=self.headers) as resp:
                status = resp.status
                await resp.read()
            if status >= 400:
                error = f"http_{status}"
        except Exception as exc:  # noqa: BLE001 - every failure is a data point, classified, never an abort
            error = classify(exc)
        self.records.append(
            RequestRecord(index, planned, sent, clock() - self.start, status, error, req.inputs, req.tokens, warmup)
        )


def _ssl(verify: bool | str) -> ssl.SSLContext | bool:
    """aiohttp's `ssl=`: the system CAs (True), none (False), or a CA bundle file (the in-cluster service CA)."""
    return ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify


def _start_in_process() -> float:
    return time.monotonic() + 0.01


async def _open_loop(
    base_url: str,
    requests: Sequence[PreparedRequest],
    plan: Sequence[tuple[int, float]],
    get_start: Callable[[], float],
    warmup: int,
    timeout_s: float,
    rule: StopRule | None = None,
    tally: _Tally | None = None,
    headers: Mapping[str, str] | None = None,
    verify: bool | str = True,
) -> tuple[list[RequestRecord], float, float]:
    """Returns the records, and the busy seconds (`_busy_s`: the larger of the sending thread's running or
    runnable time and the process's CPU time) and wall seconds of this process from the start to its last
    send."""
    # No connection limit: open loop never waits for a connection.
    sender = _Sender(base_url, requests, limit=0, headers=headers, verify=verify)
    clock = time.monotonic
    tally = tally or _Tally()
    inflight: dict[int, float] = {}  # measured requests sent and not answered: index -> planned offset
    async with sender.session(timeout_s) as session:
        # The clock starts only now: creating the loop and session (first-use imports, resolver set-up)
        # must not count as schedule lag.
        start = sender.start = get_start()
        busy0 = last_busy = _busy_s()
        last_at = start
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task] = set()

        async def send(index: int, offset: float, warm: bool) -> None:
            nonlocal last_at, last_busy
            if not warm:
                inflight[index] = offset
            # The send phase ends when the last request really goes out (a task runs after it is launched);
            # sampled at most every 5 ms (reading schedstat costs ~10 us, too much for every send).
            now = clock()
            if now - last_at > 0.005:
                last_at, last_busy = now, _busy_s()
            await sender.send(session, index, offset, warm)
            if warm or rule is None:
                return
            inflight.pop(index, None)
            record = sender.records[-1]
            late, errors = tally.add(
                late=int(record.error is None and record.done - record.planned > rule.late_after_s),
                errors=int(record.error is not None),
            )
            if late >= rule.max_late or errors >= rule.max_errors:
                tally.set_stop()

        def certainly_failed() -> bool:
            # Answered-late requests are in the tally; unanswered ones past the bound will be late too.
            if rule is None:
                return False
            if tally.stopped():
                return True
            # `inflight` keeps send order, which is planned order: the overdue ones are at its front.
            limit = clock() - start - rule.late_after_s
            overdue = 0
            for planned in inflight.values():
                if planned >= limit:
                    break
                overdue += 1
            if overdue and tally.read_late() + overdue >= rule.max_late:
                tally.set_stop()
            return tally.stopped()

        for index, offset in plan:
            delay = start + offset - clock()
            # uvloop timers have 1 ms resolution: sleep only when the next send is clearly ahead, and
            # launch every send that is due in one pass (each task stamps its own actual send time).
            if delay > 0.0005:
                await asyncio.sleep(delay)
            if certainly_failed():
                break
            task = loop.create_task(send(index, offset, index < warmup))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    busy = max(last - first for last, first in zip(last_busy, busy0, strict=True))
    return sender.records, busy, max(0.0, last_at - start)


async def _closed_loop(
    base_url: str,
    requests: Sequence[PreparedRequest],
    concurrency: int,
    first_index: int,
    stride: int,
    get_start: Callable[[], float],
    warmup_s: float,
    duration_s: float | None,
    count: int | None,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    verify: bool | str = True,
) -> list[RequestRecord]:
    sender = _Sender(base_url, requests, limit=concurrency, headers=headers, verify=verify)
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


def _run_async(coro_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro_factory())


def _worker_main(job: dict, ready: Any, go: Any, start_at: Any, results: Any, shared: Any) -> None:
    cpu0 = _cpu_s()
    send_cpu = send_wall = 0.0

    def gate() -> float:
        # Called by each worker once its session exists; blocks (briefly, nothing else is running on
        # this loop yet) until every worker is ready and the parent has fixed the common start time.
        ready.put(job["worker"])
        go.wait()
        return float(start_at.value)

    try:
        if job["mode"] == "open":
            records, send_cpu, send_wall = _run_async(
                lambda: _open_loop(
                    job["base_url"],
                    job["requests"],
                    job["plan"],
                    gate,
                    job["warmup"],
                    job["timeout_s"],
                    job["rule"],
                    _Tally(shared),
                    job["headers"],
                    job["verify"],
                )
            )
        else:
            records = _run_async(
                lambda: _closed_loop(
                    job["base_url"],
                    job["requests"],
                    job["concurrency"],
                    job["worker"],
                    job["workers"],
                    gate,
                    job["warmup_s"],
                    job["duration_s"],
                    job["count"],
                    job["timeout_s"],
                    job["headers"],
                    job["verify"],
                )
            )
        results.put((job["worker"], records, _cpu_s() - cpu0, (send_cpu, send_wall), None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises with the cause
        results.put((job["worker"], [], _cpu_s() - cpu0, (0.0, 0.0), f"{type(exc).__name__}: {exc}"))


def _run_workers(
    jobs: list[dict], run_timeout_s: float, ready_timeout_s: float = 120.0
) -> tuple[list[RequestRecord], float, tuple[float, float], bool]:
    """Run `jobs` in spawned processes from one common start; returns the records, the workers' CPU
    seconds, their send-phase (CPU, wall) seconds summed, and whether a StopRule fired."""
    ctx = mp.get_context("spawn")  # never fork: the caller may be a threaded Dagster process
    ready, results = ctx.Queue(), ctx.Queue()
    go, start_at = ctx.Event(), ctx.Value("d", 0.0)
    shared = (ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0))  # late, errors, stop: see _Tally
    procs = [
        ctx.Process(target=_worker_main, args=(job, ready, go, start_at, results, shared), daemon=True) for job in jobs
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            try:
                ready.get(timeout=ready_timeout_s)
            except queue.Empty:
                raise RuntimeError(
                    f"load generator workers not ready after {ready_timeout_s:.0f}s: the machine "
                    "is overloaded or a worker failed to start; use fewer workers"
                ) from None
        start_at.value = time.monotonic() + _START_MARGIN_S
        go.set()
        records: list[RequestRecord] = []
        cpu, send_cpu, send_wall, errors = 0.0, 0.0, 0.0, []
        for _ in procs:
            try:
                _, recs, worker_cpu, (s_cpu, s_wall), error = results.get(timeout=run_timeout_s)
            except queue.Empty:
                raise RuntimeError(
                    f"a load generator worker sent no results within {run_timeout_s:.0f}s (killed? out of memory?)"
                ) from None
            records.extend(recs)
            cpu += worker_cpu
            send_cpu += s_cpu
            send_wall += s_wall
            if error:
                errors.append(error)
        if errors:
            raise RuntimeError(f"load generator worker failed: {errors[0]}")
        return records, cpu, (send_cpu, send_wall), bool(shared[2].value)
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
    stop: StopRule | None = None,
    headers: Mapping[str, str] | None = None,
    verify: bool | str = True,
) -> LoadResult:
    """Send `schedule` to `base_url`, request k using `requests[k % len(requests)]`; with `stop`, end the
    window early once it has certainly failed (`LoadResult.stopped` says why)."""
    if not requests:
        raise ValueError("no requests to send: prepare() a workload first")
    workers = max(1, min(workers, len(schedule)))
    t0 = time.monotonic()
    if workers == 1:
        cpu0 = _cpu_s()
        plan = schedule.for_worker(0, 1)
        tally = _Tally()
        records, send_cpu, send_wall = _run_async(
            lambda: _open_loop(
                base_url, requests, plan, _start_in_process, schedule.warmup, timeout_s, stop, tally, headers, verify
            )
        )
        cpu, fired = _cpu_s() - cpu0, tally.stopped()
    else:
        jobs = [
            {
                "mode": "open",
                "worker": w,
                "workers": workers,
                "base_url": base_url,
                "requests": list(requests),
                "plan": schedule.for_worker(w, workers),
                "warmup": schedule.warmup,
                "timeout_s": timeout_s,
                "rule": stop,
                "headers": dict(headers or {}),
                "verify": verify,
            }
            for w in range(workers)
        ]
        records, cpu, (send_cpu, send_wall), fired = _run_workers(jobs, schedule.duration_s + timeout_s + 60)
    records.sort(key=lambda r: r.index)
    stopped = None
    if fired and stop is not None:
        stopped = (
            f"stopped after {sum(1 for r in records if not r.warmup)} of {len(schedule) - schedule.warmup} "
            f"requests: {stop.max_late} late by > {stop.late_after_s * 1000:g} ms or {stop.max_errors} failed "
            "already decide the window"
        )
    return LoadResult(
        "open",
        records,
        workers,
        time.monotonic() - t0,
        cpu,
        offered_rate=schedule.rate,
        arrival=schedule.arrival,
        label=label,
        send_cpu_s=send_cpu,
        send_wall_s=send_wall,
        planned=len(schedule) - schedule.warmup,
        stopped=stopped,
    )


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
    headers: Mapping[str, str] | None = None,
    verify: bool | str = True,
) -> LoadResult:
    """`concurrency` requests always in flight (split over `workers` processes) for `duration_s` after
    `warmup_s`, or until `count` measured requests are done."""
    if duration_s is None and count is None:
        raise ValueError("give duration_s or count")
    if not requests:
        raise ValueError("no requests to send: prepare() a workload first")
    workers = max(1, min(workers, concurrency))
    shares = [concurrency // workers + (1 if w < concurrency % workers else 0) for w in range(workers)]
    counts = (
        [None] * workers
        if count is None
        else [count // workers + (1 if w < count % workers else 0) for w in range(workers)]
    )
    t0 = time.monotonic()
    if workers == 1:
        cpu0 = _cpu_s()
        records = _run_async(
            lambda: _closed_loop(
                base_url,
                requests,
                concurrency,
                0,
                1,
                time.monotonic,
                warmup_s,
                duration_s,
                count,
                timeout_s,
                headers,
                verify,
            )
        )
        cpu = _cpu_s() - cpu0
    else:
        jobs = [
            {
                "mode": "closed",
                "worker": w,
                "workers": workers,
                "base_url": base_url,
                "requests": list(requests),
                "concurrency": shares[w],
                "warmup_s": warmup_s,
                "duration_s": duration_s,
                "count": counts[w],
                "timeout_s": timeout_s,
                "headers": dict(headers or {}),
                "verify": verify,
            }
            for w in range(workers)
        ]
        records, cpu, _, _ = _run_workers(jobs, (duration_s or 3600) + warmup_s + timeout_s + 60)
    records.sort(key=lambda r: r.sent)
    return LoadResult("closed", records, workers, time.monotonic() - t0, cpu, concurrency=concurrency, label=label)
