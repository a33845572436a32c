"""The load generator against loopback servers with known behaviour (no model needed, a few seconds).

The loopback server runs in its own process; it injects latency, errors and stalls by arrival order, so
what the generator reports can be checked against what really happened.
"""

import json
import math
import statistics

import pytest

from pooling_pipeline.evaluation.loadgen import (
    Dialect,
    RequestRecord,
    Workload,
    WorkloadKind,
    constant_schedule,
    poisson_schedule,
    prepare,
    run_closed_loop,
    run_open_loop,
    summarize,
)
from pooling_pipeline.evaluation.loadgen.loopback import Behaviour, LoopbackServer
from pooling_pipeline.evaluation.loadgen.runner import LoadResult
from pooling_pipeline.evaluation.loadgen.workloads import estimate_tokens, passages

REQUESTS = prepare(Workload(), Dialect.OPENAI, "loopback", distinct=16)


@pytest.fixture(scope="module")
def noop_server():
    with LoopbackServer() as url:
        yield url


# ---- pure: schedules, workloads, summaries


def test_poisson_schedule_is_reproducible_from_its_seed_and_has_the_asked_rate():
    a = poisson_schedule(200, duration_s=20, seed=7)
    assert a.offsets == poisson_schedule(200, duration_s=20, seed=7).offsets
    assert a.offsets != poisson_schedule(200, duration_s=20, seed=8).offsets
    assert len(a) == pytest.approx(4000, rel=0.05)  # a Poisson count over a fixed 20 s window
    assert a.duration_s < 20
    assert list(a.offsets) == sorted(a.offsets)
    assert len(poisson_schedule(200, requests=500, seed=7)) == 500


def test_warmup_requests_are_prepended_and_not_reported():
    schedule = constant_schedule(10, requests=5, warmup_s=0.3)
    assert schedule.warmup == 3 and len(schedule) == 8
    records = [RequestRecord(i, i / 10, i / 10, i / 10 + 0.01, 200, None, 1, 10, i < 3) for i in range(8)]
    summary = summarize(LoadResult("open", records, 1, 1.0, 0.0, offered_rate=10))
    assert summary.requests == 5


def test_percentiles_and_error_counts_are_exact_for_known_records():
    # 100 successes taking 1..100 ms, sent exactly on schedule; 7 timeouts and 3 HTTP 503s.
    ok = [
        RequestRecord(i, i * 0.01, i * 0.01, i * 0.01 + (i + 1) / 1000, 200, None, 16, 100, False) for i in range(100)
    ]
    failed = [RequestRecord(100 + i, 1.0, 1.0, 1.5, 0, "timeout", 16, 100, False) for i in range(7)]
    failed += [RequestRecord(107 + i, 1.0, 1.0, 1.001, 503, "http_503", 16, 100, False) for i in range(3)]
    summary = summarize(LoadResult("open", ok + failed, 1, 2.0, 0.0, offered_rate=100))
    assert summary.requests == 110 and summary.succeeded == 100
    assert summary.errors == {"http_503": 3, "timeout": 7}
    assert summary.success_rate == pytest.approx(100 / 110)
    lat = summary.latency
    assert (lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.max_ms) == pytest.approx((50.5, 90.1, 99.01, 100.0))
    assert lat.mean_ms == pytest.approx(50.5)
    # window: first planned send (0 s) to last completion (1.5 s)
    assert summary.window_s == pytest.approx(1.5)
    assert summary.inputs_per_s == pytest.approx(1600 / 1.5)
    assert summary.valid


def test_passages_are_ms_marco_sized_and_reproducible():
    texts = passages(300, seed=3)
    lengths = [estimate_tokens(t) for t in texts]
    assert min(lengths) >= 40 and max(lengths) <= 120
    assert texts == passages(300, seed=3) and texts != passages(300, seed=4)


def test_request_bodies_follow_each_dialect():
    vllm = prepare(Workload(kind=WorkloadKind.RERANK, documents_per_query=4), Dialect.OPENAI, "m", distinct=2)
    body = json.loads(vllm[0].body)
    assert vllm[0].path == "/v1/rerank" and len(body["documents"]) == 4 and vllm[0].inputs == 4
    caikit = prepare(Workload(batch_size=16), Dialect.CAIKIT, "m", distinct=2)
    body = json.loads(caikit[0].body)
    assert caikit[0].path == "/api/v1/task/embedding-tasks" and body["model_id"] == "m" and len(body["inputs"]) == 16
    with pytest.raises(ValueError, match="no cross-encoder score endpoint"):
        prepare(Workload(kind=WorkloadKind.SCORE), Dialect.CAIKIT, "m")


# ---- against loopback servers


def test_latency_percentiles_and_error_counts_match_the_injected_behaviour():
    # Every 4th arrival waits 40 ms, every 10th answers 503: of 200 requests 20 fail, 40 slow ones succeed.
    behaviour = Behaviour(delay_every=4, delay_s=0.040, error_every=10, error_status=503)
    with LoopbackServer(behaviour) as url:
        result = run_open_loop(url, REQUESTS, constant_schedule(100, requests=200))
    summary = summarize(result)
    assert summary.errors == {"http_503": 20}
    assert summary.succeeded == 180
    lat = summary.latency
    # 140 of 180 are answered at once: the median is one of them, below the injected delay; 40 of 180 (22 %)
    # waited it, so the p90 is one of those. (Compared with the injected 40 ms, never with a wall-clock
    # bound: a busy CI box stretches everything.)
    assert lat.p50_ms < behaviour.delay_s * 1000 <= lat.p90_ms <= lat.max_ms
    # The 40 delayed answers are the slow ones, and each took at least the injected delay.
    slow = sorted(r.done - r.sent for r in result.records if r.error is None and not r.warmup)[-40:]
    assert all(s >= 0.039 for s in slow)  # 1 ms: the timer resolution of the server's sleep
    fast = sorted(r.done - r.sent for r in result.records if r.error is None and not r.warmup)[:140]
    assert statistics.median(fast) < statistics.median(slow)


def test_open_loop_keeps_sending_while_the_server_stalls():
    # The server answers nothing for 1 s; an open-loop generator must keep the 100 req/s schedule.
    with LoopbackServer(Behaviour(stall_after_s=0.5, stall_for_s=1.0)) as server_url:
        result = run_open_loop(server_url, REQUESTS, constant_schedule(100, duration_s=2.5))
        arrivals = _arrivals(server_url)
    summary = summarize(result)
    first = min(arrivals)
    during_stall = [a for a in arrivals if first + 0.5 <= a < first + 1.5]
    assert len(during_stall) >= 90  # ~100 arrived while nothing was answered
    # sends stayed on schedule while nothing was answered: no cumulative slip, and the median send went out
    # far closer to its plan than the 1 s the server held every answer
    assert summary.lag is not None and summary.lag.p50_ms < 0.1 * 1000
    assert summary.lag_drift_ms is not None and summary.lag_drift_ms < 0.1 * 1000
    assert summary.send_rate == pytest.approx(100, rel=0.05)
    # the stall shows up as latency, measured from the planned send time
    assert summary.latency_from_planned is not None and summary.latency_from_planned.max_ms > 900
    assert summary.success_rate == 1.0


def _arrivals(url: str) -> list[float]:
    import httpx

    return httpx.get(url + "/stats", timeout=10).json()["arrivals"]


def test_lag_is_reported_never_turned_into_an_invalid_run(noop_server):
    # 1500 requests in 1.5 ms: no single process sends that fast. The lag is in the summary; the verdict on
    # it (generator-limited or contended) is benchmark/points.py's, tested in test_capacity.py.
    summary = summarize(run_open_loop(noop_server, REQUESTS, constant_schedule(1_000_000, requests=1500)))
    assert summary.valid and summary.invalid_reason is None
    assert summary.lag is not None and summary.lag.count == 1500
    assert summary.lag_drift_ms is not None and summary.lag_drift_ms > 0
    assert summary.send_cpu_fraction is not None and summary.send_cpu_fraction > 0


def test_the_generator_keeps_the_offered_rate_against_a_noop_server(noop_server):
    # Its own overhead in milliseconds is a benchmark (benchmarks/loadgen_capacity.py prints it); here: every
    # request answered, the schedule's rate achieved, and a 5 ms server measured slower than a no-op one.
    schedule = poisson_schedule(300, duration_s=2, seed=1, warmup_s=0.2)
    summary = summarize(run_open_loop(noop_server, REQUESTS, schedule))
    assert summary.success_rate == 1.0 and summary.requests == len(schedule) - schedule.warmup
    assert summary.requests_per_s == pytest.approx(300, rel=0.15)
    with LoopbackServer(Behaviour(delay_every=1, delay_s=0.005)) as slow_url:
        slow = summarize(run_open_loop(slow_url, REQUESTS, schedule))
    assert summary.latency.p50_ms < slow.latency.p50_ms


def test_closed_loop_keeps_n_requests_in_flight():
    # Each request takes >= 50 ms with 8 in flight: at most 160 req/s, and by Little's law
    # throughput x mean latency = 8 requests in flight, however busy the machine is.
    with LoopbackServer(Behaviour(delay_every=1, delay_s=0.050)) as url:
        summary = summarize(run_closed_loop(url, REQUESTS, concurrency=8, duration_s=1.5, warmup_s=0.2))
    assert summary.latency.p50_ms >= 50
    assert summary.requests_per_s <= 8 / 0.050 * 1.02
    assert summary.requests_per_s * summary.latency.mean_ms / 1000 == pytest.approx(8, rel=0.1)
    assert summary.lag is None


def test_worker_processes_split_the_schedule_without_losing_or_repeating_requests(noop_server):
    schedule = constant_schedule(200, duration_s=1.0)
    result = run_open_loop(noop_server, REQUESTS, schedule, workers=2)
    assert result.workers == 2
    assert [r.index for r in result.records] == list(range(len(schedule)))
    assert all(r.error is None for r in result.records)
    assert all(not math.isnan(r.planned) for r in result.records)
