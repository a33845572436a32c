"""Server-side truth from Prometheus /metrics: scraped before and after a run, compared as deltas.

vLLM exports cumulative counters and histograms, so what happened *during* a run is after - before:
requests finished, and latency histograms (end-to-end, queue, inference) whose bucket deltas give a
server-side mean and percentiles (interpolated within buckets, as Prometheus' histogram_quantile does).
Set beside the client-side numbers they show how much of the latency is the network and the client.
Parsing is pure (text in, numbers out); only `scrape` does I/O.

Reading the numbers: the mean (sum/count) is exact; percentiles are interpolated within buckets and
vLLM's are coarse (e2e: 0.3, 0.5, 0.8, 1, 1.5 s ...), so a p50 of "150 ms" means "under 300 ms". vLLM
counts each input of a batched /v1/embeddings request as one request.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel

E2E = "vllm:e2e_request_latency_seconds"
QUEUE = "vllm:request_queue_time_seconds"
INFERENCE = "vllm:request_inference_time_seconds"
SUCCESS = "vllm:request_success_total"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
HISTOGRAMS = (E2E, QUEUE, INFERENCE)

Labels = tuple[tuple[str, str], ...]


@dataclass
class MetricsSnapshot:
    """sample name -> {labels -> value} (histogram buckets, sums and counts as their own samples)."""

    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)

    def total(self, name: str, **match: str) -> float | None:
        series = self.samples.get(name)
        if series is None:
            return None
        return sum(v for labels, v in series.items() if _matches(labels, match))

    def buckets(self, name: str, **match: str) -> dict[float, float]:
        out: dict[float, float] = defaultdict(float)
        for labels, v in self.samples.get(name + "_bucket", {}).items():
            if _matches(labels, match):
                le = dict(labels)["le"]
                out[math.inf if le in ("+Inf", "inf") else float(le)] += v
        return dict(out)


def _matches(labels: Labels, match: dict[str, str]) -> bool:
    d = dict(labels)
    return all(d.get(k) == v for k, v in match.items())


_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> MetricsSnapshot:
    """Prometheus text exposition -> snapshot (prometheus_client's parser; a minimal one without it)."""
    samples: dict[str, dict[Labels, float]] = defaultdict(dict)
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:  # the fallback handles what vLLM and the DCGM exporter emit
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _LINE.match(line)
            if m:
                labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
                samples[m.group(1)][labels] = float(m.group(3))
        return MetricsSnapshot(dict(samples))
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name][tuple(sorted(s.labels.items()))] = float(s.value)
    return MetricsSnapshot(dict(samples))


def scrape(
    base_url: str,
    *,
    timeout_s: float = 10.0,
    headers: Mapping[str, str] | None = None,
    verify: bool | str = True,
) -> MetricsSnapshot | None:
    """GET <base_url>/metrics; None when the server exports none (e.g. Caikit's REST port). `headers` /
    `verify` are the endpoint's credentials (serving/endpoint_auth.py): behind the cluster's auth proxy
    /metrics wants the same token as the API."""
    try:
        resp = httpx.get(base_url.rstrip("/") + "/metrics", timeout=timeout_s, headers=headers, verify=verify)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200 or "# TYPE" not in resp.text:
        return None
    return parse_metrics(resp.text)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus' histogram_quantile over cumulative bucket counts {upper bound: count}."""
    bounds = sorted(buckets)
    if not bounds:
        return math.nan
    total = buckets[bounds[-1]]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):  # in the overflow bucket: the best we can say is the last finite bound
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return bounds[-1]


class HistogramDelta(BaseModel):
    count: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float


class ServerSideSummary(BaseModel):
    requests_succeeded: float | None = None
    e2e: HistogramDelta | None = None
    queue: HistogramDelta | None = None
    inference: HistogramDelta | None = None
    running_after: float | None = None
    waiting_after: float | None = None


def histogram_delta(before: MetricsSnapshot, after: MetricsSnapshot, name: str, **match: str) -> HistogramDelta | None:
    a_count, b_count = after.total(name + "_count", **match), before.total(name + "_count", **match)
    if a_count is None:
        return None
    d_count = a_count - (b_count or 0.0)
    if d_count <= 0:
        return None
    d_sum = (after.total(name + "_sum", **match) or 0.0) - (before.total(name + "_sum", **match) or 0.0)
    b_buckets = before.buckets(name, **match)
    delta = {le: v - b_buckets.get(le, 0.0) for le, v in after.buckets(name, **match).items()}
    return HistogramDelta(
        count=d_count,
        mean_ms=1000.0 * d_sum / d_count,
        p50_ms=1000.0 * histogram_quantile(0.50, delta),
        p90_ms=1000.0 * histogram_quantile(0.90, delta),
        p99_ms=1000.0 * histogram_quantile(0.99, delta),
    )


def server_side_summary(before: MetricsSnapshot, after: MetricsSnapshot, **match: str) -> ServerSideSummary:
    """What the server saw between two scrapes; `match` narrows to labels (e.g. model_name="...")."""
    a_ok, b_ok = after.total(SUCCESS, **match), before.total(SUCCESS, **match)
    return ServerSideSummary(
        requests_succeeded=None if a_ok is None else a_ok - (b_ok or 0.0),
        e2e=histogram_delta(before, after, E2E, **match),
        queue=histogram_delta(before, after, QUEUE, **match),
        inference=histogram_delta(before, after, INFERENCE, **match),
        running_after=after.total(RUNNING, **match),
        waiting_after=after.total(WAITING, **match),
    )
