"""Resource use during a run: CPU% and RSS of the server's process tree, GPU utilisation and memory.

Locally the server is a process we know the PID of (Deployment.details["pid"]): psutil samples it and
all its children (vLLM's engine core is a child process). GPUs are read through NVML (nvidia-ml-py)
when one is visible. A background thread samples every `interval_s` while the load runs.

On a cluster the server is a pod: GPU numbers come from the DCGM exporter's Prometheus metrics
(`parse_dcgm`) or from `nvidia-smi` run in the predictor pod (`nvidia_smi_in_pod`); see the bottom of
this file. Those two functions are the whole cluster path.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import psutil
from pydantic import BaseModel, Field


class ResourceSample(BaseModel):
    t: float  # seconds since the sampler started
    cpu_percent: float | None = None  # sum over the process tree (100 = one core)
    rss_mb: float | None = None
    gpu_util_percent: list[float] = Field(default_factory=list)  # per visible GPU
    gpu_mem_used_mb: list[float] = Field(default_factory=list)
    phase: str = ""  # what was running (e.g. "vllm embeddings x16 @ 20/s"), for the plot


class ResourceSummary(BaseModel):
    samples: int
    cpu_percent_mean: float | None = None
    cpu_percent_max: float | None = None
    rss_mb_max: float | None = None
    gpu_util_percent_mean: float | None = None
    gpu_util_percent_max: float | None = None
    gpu_mem_used_mb_max: float | None = None
    gpus: list[str] = Field(default_factory=list)


class _Nvml:
    """NVML handles, or nothing when no driver/GPU is visible (a CPU demo is not an error)."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.names: list[str] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                self.handles.append(h)
                name = pynvml.nvmlDeviceGetName(h)
                self.names.append(name.decode() if isinstance(name, bytes) else str(name))
        except Exception:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, ...: a CPU demo is no error
            self.handles = []

    def read(self) -> tuple[list[float], list[float]]:
        util, mem = [], []
        for h in self.handles:
            util.append(float(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu))
            mem.append(self._nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20)
        return util, mem

    def close(self) -> None:
        if self.handles:
            # Shutting NVML down is best effort: a driver already gone must not fail the benchmark.
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()


class ResourceSampler:
    """`with ResourceSampler(pids=[server_pid]) as s: ...; s.samples` (pids may be empty: GPU only)."""

    def __init__(
        self,
        pids: list[int] | None = None,
        *,
        interval_s: float = 0.5,
        gpu: bool = True,
        dcgm_url: str | None = None,
        dcgm_pod: str | None = None,
    ) -> None:
        """`dcgm_url` (cluster): the DCGM exporter's /metrics, read instead of local NVML; `dcgm_pod`
        keeps only the GPUs it attributes to the predictor pod."""
        self.pids = [p for p in (pids or []) if p]
        self.dcgm_url = dcgm_url
        self.dcgm_pod = dcgm_pod
        self.interval_s = interval_s
        self.samples: list[ResourceSample] = []
        self.phase = ""
        self._gpu = gpu
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._procs: dict[int, psutil.Process] = {}
        self._nvml: _Nvml | None = None
        self._t0 = 0.0

    def _tree(self) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        for pid in self.pids:
            try:
                root = psutil.Process(pid)
                found.extend([root, *root.children(recursive=True)])
            except psutil.Error:
                continue
        # Keep one Process object per PID: cpu_percent() measures since the previous call on that object.
        current = {}
        for p in found:
            current[p.pid] = self._procs.get(p.pid) or p
        self._procs = current
        return list(current.values())

    def sample(self) -> ResourceSample:
        cpu = rss = None
        if self.pids:
            cpu, rss = 0.0, 0.0
            for p in self._tree():
                try:
                    cpu += p.cpu_percent(None)
                    rss += p.memory_info().rss / 2**20
                except psutil.Error:
                    continue
        util: list[float] = []
        mem: list[float] = []
        if self.dcgm_url:
            util, mem = read_dcgm(self.dcgm_url, pod=self.dcgm_pod)
        elif self._nvml is not None and self._nvml.handles:
            util, mem = self._nvml.read()
        return ResourceSample(
            t=time.monotonic() - self._t0,
            cpu_percent=cpu,
            rss_mb=rss,
            gpu_util_percent=util,
            gpu_mem_used_mb=mem,
            phase=self.phase,
        )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self.sample())

    def start(self) -> ResourceSampler:
        self._t0 = time.monotonic()
        self._nvml = _Nvml() if self._gpu and not self.dcgm_url else None
        self._tree()
        for p in self._procs.values():  # prime cpu_percent so the first sample means something
            with contextlib.suppress(psutil.Error):
                p.cpu_percent(None)
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[ResourceSample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._nvml is not None:
            self._nvml.close()
        return self.samples

    @property
    def gpu_names(self) -> list[str]:
        return self._nvml.names if self._nvml is not None else []

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tree_cpu_seconds(pids: list[int]) -> float | None:
    """user+system CPU seconds used so far by the processes and all their children (for CPU-ms/request)."""
    if not pids:
        return None
    total, seen = 0.0, False
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
                seen = True
            except psutil.Error:
                continue
    return total if seen else None


def listener_pid(url: str) -> int | None:
    """PID of the local process listening on a loopback URL's port (to sample a server we did not start,
    such as the local Caikit); None for remote URLs or when it cannot be seen."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return int(conn.pid)
    except psutil.Error:
        return None
    return None


def summarize_resources(samples: list[ResourceSample], gpus: list[str] | None = None) -> ResourceSummary:
    cpu = [s.cpu_percent for s in samples if s.cpu_percent is not None]
    rss = [s.rss_mb for s in samples if s.rss_mb is not None]
    util = [sum(s.gpu_util_percent) / len(s.gpu_util_percent) for s in samples if s.gpu_util_percent]
    mem = [sum(s.gpu_mem_used_mb) for s in samples if s.gpu_mem_used_mb]
    return ResourceSummary(
        samples=len(samples),
        cpu_percent_mean=sum(cpu) / len(cpu) if cpu else None,
        cpu_percent_max=max(cpu) if cpu else None,
        rss_mb_max=max(rss) if rss else None,
        gpu_util_percent_mean=sum(util) / len(util) if util else None,
        gpu_util_percent_max=max(util) if util else None,
        gpu_mem_used_mb_max=max(mem) if mem else None,
        gpus=list(gpus or []),
    )


# ---- cluster path: the server is a pod, not a local process ----------------------------------------


def parse_dcgm(text: str, *, pod: str | None = None) -> tuple[list[float], list[float]]:
    """(GPU utilisation %, framebuffer MiB used) per GPU from DCGM exporter metrics, optionally only the
    GPUs the exporter attributes to pods whose name starts with `pod` (its `pod` label, set when the
    exporter runs with pod mapping; a prefix such as "<isvc>-predictor" matches the predictor's pods)."""
    from pooling_pipeline.evaluation.server_metrics import parse_metrics

    snap = parse_metrics(text)

    def values(name: str) -> list[float]:
        series = snap.samples.get(name, {})
        return [
            v
            for labels, v in sorted(series.items(), key=lambda kv: dict(kv[0]).get("gpu", ""))
            if pod is None or dict(labels).get("pod", "").startswith(pod)
        ]

    return values("DCGM_FI_DEV_GPU_UTIL"), values("DCGM_FI_DEV_FB_USED")


def read_dcgm(url: str, *, pod: str | None = None, timeout_s: float = 2.0) -> tuple[list[float], list[float]]:
    """One scrape of the DCGM exporter; ([], []) when it cannot be read (a missed sample, not a failure)."""
    import httpx

    try:
        resp = httpx.get(url, timeout=timeout_s)
        resp.raise_for_status()
    except httpx.HTTPError:
        return [], []
    return parse_dcgm(resp.text, pod=pod)


def nvidia_smi_in_pod(
    core_v1: Any, namespace: str, pod: str, container: str = "kserve-container"
) -> tuple[list[float], list[float]]:
    """(GPU utilisation %, memory MiB used) per GPU from `nvidia-smi` run in the predictor pod (exec)."""
    from kubernetes.stream import stream

    out = stream(
        core_v1.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        container=container,
        command=["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    return parse_nvidia_smi_csv(out)


def parse_nvidia_smi_csv(text: str) -> tuple[list[float], list[float]]:
    util, mem = [], []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2:
            try:
                util.append(float(parts[0]))
                mem.append(float(parts[1]))
            except ValueError:
                continue
    return util, mem
