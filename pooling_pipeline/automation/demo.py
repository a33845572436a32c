"""`pooling-pipeline demo`: the local catalog, end to end, through the project's real Dagster instance.

Each step is a function so the UI end-to-end test and the CLI do exactly the same thing:
`ensure_dagster_home` -> `stack_up` -> `materialize_local_catalog` -> `start_ui`.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from pooling_pipeline.defaults import DEFAULT_VLLM_VERSION
from pooling_pipeline.resources.config import child_env, export_env, load_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = PROJECT_ROOT / "workspace.yaml"
Reporter = Callable[[str], None]


class DemoError(RuntimeError):
    """The demo could not finish; the message says which step and how to look into it."""


def ensure_dagster_home(home: Path | None = None) -> Path:
    """DAGSTER_HOME (default <project>/.dagster) with the project's dagster.yaml, exported for child processes."""
    home = Path(home or load_settings().dagster_home or PROJECT_ROOT / ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # A copy, not a link: a test home must not depend on where the checkout is.
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", config)
    export_env("DAGSTER_HOME", str(home))
    return home


def local_vllm_version(defs: object | None = None) -> str:
    """The vLLM release the local stack serves: $POOLING_LOCAL_VLLM_VERSION, else the serving resource's."""
    explicit = load_settings().local_vllm_version
    if explicit:
        return explicit
    serving = getattr(defs, "resources", {}).get("serving") if defs is not None else None
    return str(getattr(serving, "vllm_version", None) or DEFAULT_VLLM_VERSION)


@dataclass(frozen=True)
class FailedRun:
    """One run of the demo that did not succeed: which job and partition, and each failed step's cause."""

    label: str  # "model_pipeline_job[all-minilm-l6-v2]"
    run_id: str
    steps: tuple[tuple[str, str], ...]  # (step key, root cause); ("run", ...) when no step failed

    def summary(self) -> str:
        return "; ".join(f"step {step}: {cause}" for step, cause in self.steps)


@dataclass
class DemoResult:
    vllm_version: str
    runs: int = 0  # runs launched
    failed: list[FailedRun] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)  # model -> URL
    rows: list = field(default_factory=list)  # readiness ReportRow, catalog rule applied
    table: str = ""  # the verdict table as the terminal shows it (readiness/report.console_table)


def failed_steps(outcome: object) -> tuple[tuple[str, str], ...]:
    """Every failed step of a finished run with its root cause (a run can fail in several steps)."""
    from pooling_pipeline.readiness.history import error_text

    steps = tuple(
        (str(event.step_key), error_text(getattr(event.event_specific_data, "error", None)))
        for event in getattr(outcome, "all_events", [])
        if event.is_step_failure
    )
    return steps or (("run", "no step failed; the run itself did: see its logs in the UI"),)


def failure_report(result: DemoResult) -> str | None:
    """What `demo` prints before exiting non-zero: each failed run, its failed steps and their causes."""
    if not result.failed:
        return None
    lines = [f"the demo FAILED: {len(result.failed)} of {result.runs} runs failed (every model's run must succeed):"]
    lines += [f"  {run.label} (run {run.run_id[:8]}): {run.summary()}" for run in result.failed]
    lines.append(
        "fix the cause named above and run `pooling-pipeline demo` again; each run's full log is in the Dagster UI "
        "(Runs page, by run id)"
    )
    return "\n".join(lines)


# Two model runs at a time: one model's rollout (~40 s of vLLM-CPU start-up, three processes importing
# Python one after the other) overlaps another's, which on 2 cores takes about the time of one; each run
# holds the host shared and its load benchmark has it alone (stack/host_lock.py). Measured 2026-12-07 on
# 2 cores: the catalog's rollouts were 416 s of a 889 s run one model at a time.
PARALLEL_MODEL_RUNS = 2
# The step-by-step DEBUG events are in the UI; the terminal gets the assets' own INFO lines.
_QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass(frozen=True)
class JobOutcome:
    """How one job run ended (plain data: it comes back from a worker process)."""

    label: str
    run_id: str
    success: bool
    seconds: float
    steps: tuple[tuple[str, str], ...] = ()  # failed steps with their root causes


def run_job(
    job_name: str,
    partition: str | None,
    tags: dict[str, str],
    instance: object | None = None,
    *,
    hold_host: bool = False,
) -> JobOutcome:
    """One job run, in this process, on the project's instance (DAGSTER_HOME). `hold_host`: hold the host
    shared for the whole run, as a run beside another must (stack/host_lock.py)."""
    import dagster as dg

    from pooling_pipeline.definitions import defs
    from pooling_pipeline.stack.host_lock import hold_host_for_run

    label = f"{job_name}[{partition}]" if partition else job_name
    t0 = time.monotonic()
    with hold_host_for_run(label) if hold_host else contextlib.nullcontext(0.0):
        outcome = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance if isinstance(instance, dg.DagsterInstance) else dg.DagsterInstance.get(),
            partition_key=partition,
            raise_on_error=False,
            tags=tags,
            run_config=_QUIET_CONSOLE,
        )
    return JobOutcome(
        label=label,
        run_id=outcome.run_id,
        success=outcome.success,
        seconds=time.monotonic() - t0,
        steps=() if outcome.success else failed_steps(outcome),
    )


# The local instance's `gpu` pool while runs go side by side: rollouts and benchmarks declare the pool, and a
# run waiting for a slot while it holds the host shared, beside a benchmark that holds a slot and waits for the
# host, would deadlock. Locally the pool stands for no GPU; the host lock keeps benchmarks apart.
LOCAL_GPU_POOL_SLOTS = 64


def run_model_jobs(
    instance: object, names: list[str], tags: dict[str, str], parallel: int = PARALLEL_MODEL_RUNS
) -> Iterator[JobOutcome]:
    """model_pipeline_job for each model, `parallel` at a time, each in a worker process of its own (Dagster
    captures a run's output per process, so two in-process runs cannot share one); outcomes as they end.

    Workers open the instance at DAGSTER_HOME (the demo's and verdict_stability's), whose `gpu` pool gets
    LOCAL_GPU_POOL_SLOTS. A worker that dies is reported as a failed run; on Ctrl-C (or any error here) the
    models not started are cancelled, and workers die with this process."""
    from pooling_pipeline.automation.jobs import MODEL_TAG, model_pipeline_job

    if parallel <= 1:
        for name in names:
            yield run_job(model_pipeline_job.name, name, {**tags, MODEL_TAG: name}, instance)
        return
    _ensure_pool_slots(instance, "gpu", LOCAL_GPU_POOL_SLOTS)
    pool = ProcessPoolExecutor(
        max_workers=parallel, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with_parent
    )
    try:
        futures = {
            pool.submit(run_job, model_pipeline_job.name, name, {**tags, MODEL_TAG: name}, hold_host=True): name
            for name in names
        }
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool as exc:  # a worker died (OOM-killed, say): no Dagster outcome to read
                label = f"{model_pipeline_job.name}[{futures[future]}]"
                yield JobOutcome(label=label, run_id="-", success=False, seconds=0.0, steps=(("run", repr(exc)),))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _die_with_parent() -> None:
    """A worker gets SIGTERM when the demo process dies (prctl PR_SET_PDEATHSIG), so a killed demo or test
    leaves no run going on, holding the host lock."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _ensure_pool_slots(instance: object, pool: str, slots: int) -> None:
    import dagster as dg

    assert isinstance(instance, dg.DagsterInstance)
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    if (storage.get_concurrency_info(pool).limit or 0) < slots:
        storage.set_concurrency_slots(pool, slots)


def materialize_local_catalog(instance: object, report: Reporter = print) -> DemoResult:
    """Register the local vLLM release, run every catalog model end to end, then the readiness report."""
    import dagster as dg

    from pooling_pipeline.automation.jobs import (
        TRIGGER_TAG,
        readiness_report_job,
        register_runtime_job,
    )
    from pooling_pipeline.catalog import active_catalog
    from pooling_pipeline.definitions import defs
    from pooling_pipeline.partitions import vllm_release_partitions
    from pooling_pipeline.readiness.assets import ReportConfig
    from pooling_pipeline.readiness.catalog_rule import CatalogPolicy
    from pooling_pipeline.readiness.history import gather_rows
    from pooling_pipeline.readiness.report import apply_catalog_rule, console_table
    from pooling_pipeline.serving.target import ReleaseAction

    assert isinstance(instance, dg.DagsterInstance)
    version = local_vllm_version(defs)
    result = DemoResult(vllm_version=version)
    releases = vllm_release_partitions.name
    assert releases is not None  # a DynamicPartitionsDefinition made with a name
    if version not in instance.get_dynamic_partitions(releases):
        instance.add_dynamic_partitions(releases, [version])
        report(f"vLLM release partition {version} added")

    def record(outcome: JobOutcome) -> bool:
        result.runs += 1
        if outcome.success:
            report(f"  ok      {outcome.label} ({outcome.seconds:.0f}s, run {outcome.run_id[:8]})")
            return True
        failed = FailedRun(label=outcome.label, run_id=outcome.run_id, steps=outcome.steps)
        result.failed.append(failed)
        report(f"  FAILED  {outcome.label} ({outcome.seconds:.0f}s, run {outcome.run_id[:8]}): {failed.summary()}")
        return False

    def run(job_name: str, partition: str | None, tags: dict[str, str]) -> bool:
        return record(run_job(job_name, partition, {TRIGGER_TAG: "demo", **tags}))

    report(f"registering the vLLM {version} runtimes")
    if not run(register_runtime_job.name, version, {}):
        raise DemoError(
            f"registering vLLM {version} failed ({result.failed[-1].summary()}): nothing can be served; "
            f"fix it and run `pooling-pipeline demo` again"
        )
    names = active_catalog().names()
    report(
        f"materialising {len(names)} models (ingest -> serve -> quality -> benchmark -> readiness), "
        f"{PARALLEL_MODEL_RUNS} at a time: rollouts overlap, load benchmarks run alone (stack/host_lock.py)"
    )
    # A model that fails (a blocking quality check, say) still gets its row in the report.
    for outcome in run_model_jobs(instance, names, {TRIGGER_TAG: "demo"}, PARALLEL_MODEL_RUNS):
        record(outcome)
    report("building the readiness report")
    run(readiness_report_job.name, None, {})

    for name in active_catalog().names():
        # Only servers still running are worth printing: deployment_released stops each model's server once its
        # verdict is in (ten vLLM-CPU servers do not fit in memory), unless keep_deployed kept it.
        if _latest_text(instance, "deployment_released", name, "action") != ReleaseAction.KEPT.value:
            continue
        url = _latest_text(instance, "inference_service", name, "url")
        if url:
            result.endpoints[name] = url
    # The same rows and catalog rule as readiness_report (its default config), for the terminal.
    rows, _ = gather_rows(instance, active_catalog())
    defaults = ReportConfig()
    policy = CatalogPolicy(revisit_months=defaults.revisit_months, performance_bar=defaults.min_capacity_ratio)
    result.rows, decision = apply_catalog_rule(rows, datetime.now(UTC), policy)
    result.table = console_table(result.rows, decision)
    return result


def _latest_text(instance: object, asset: str, partition: str, key: str) -> str | None:
    """A text metadata value of the asset partition's latest materialisation (None when absent)."""
    import dagster as dg

    assert isinstance(instance, dg.DagsterInstance)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    mat = records[0].asset_materialization if records else None
    value = mat.metadata.get(key) if mat else None
    return None if value is None else str(getattr(value, "value", value))


def ui_command(port: int, *, with_daemon: bool = True) -> list[str]:
    """`dagster dev` (webserver + daemon, so the schedule and sensors run) or the webserver alone."""
    bindir = Path(sys.executable).parent
    if with_daemon:
        return [str(bindir / "dagster"), "dev", "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(port)]
    return [str(bindir / "dagster-webserver"), "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(port)]


def start_ui(
    port: int, *, with_daemon: bool = True, log_path: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        ui_command(port, with_daemon=with_daemon),
        cwd=PROJECT_ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=child_env(env),
        start_new_session=True,
    )


def wait_for_ui(url: str, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    """Until the webserver answers its health endpoint (the code location loads in the background)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"the Dagster UI exited with code {proc.returncode}: see its log for the error")
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise DemoError(f"the Dagster UI did not answer on {url} within {timeout_s:.0f}s: see its log")
