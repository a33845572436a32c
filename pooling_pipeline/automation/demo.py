"""`pooling-pipeline demo`: the local catalog, end to end, through the project's real Dagster instance.

Each step is a function so the UI end-to-end test and the CLI do exactly the same thing:
`ensure_dagster_home` -> `stack_up` -> `materialize_local_catalog` -> `start_ui`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = PROJECT_ROOT / "workspace.yaml"
LOCAL_VLLM_ENV = "POOLING_LOCAL_VLLM_VERSION"
Reporter = Callable[[str], None]


class DemoError(RuntimeError):
    """The demo could not finish; the message says which step and how to look into it."""


def ensure_dagster_home(home: Path | None = None) -> Path:
    """DAGSTER_HOME (default <project>/.dagster) with the project's dagster.yaml, exported for child processes."""
    home = Path(home or os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # A copy, not a link: a test home must not depend on where the checkout is.
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def local_vllm_version(defs: object | None = None) -> str:
    """The vLLM release the local stack serves: $POOLING_LOCAL_VLLM_VERSION, else the serving resource's."""
    explicit = os.environ.get(LOCAL_VLLM_ENV, "").strip()
    if explicit:
        return explicit
    serving = getattr(defs, "resources", {}).get("serving") if defs is not None else None
    return str(getattr(serving, "vllm_version", None) or "0.32.0")


@dataclass
class DemoResult:
    vllm_version: str
    failed: dict[str, str] = field(default_factory=dict)  # job/partition -> what failed
    endpoints: dict[str, str] = field(default_factory=dict)  # model -> URL
    rows: list = field(default_factory=list)  # readiness ReportRow, catalog rule applied


def _failure_summary(result: object) -> str:
    from pooling_pipeline.readiness.assets import error_text

    for event in getattr(result, "all_events", []):
        if event.is_step_failure:
            return f"step {event.step_key}: {error_text(getattr(event.event_specific_data, 'error', None))}"
    return "see the run's logs in the UI"


def materialize_local_catalog(instance: object, report: Reporter = print) -> DemoResult:
    """Register the local vLLM release, run every catalog model end to end, then the readiness report."""
    import dagster as dg

    from pooling_pipeline.automation.jobs import (
        MODEL_TAG,
        TRIGGER_TAG,
        model_pipeline_job,
        readiness_report_job,
        register_runtime_job,
    )
    from pooling_pipeline.catalog import active_catalog
    from pooling_pipeline.definitions import defs
    from pooling_pipeline.partitions import vllm_release_partitions
    from pooling_pipeline.readiness.assets import gather_rows
    from pooling_pipeline.readiness.report import apply_catalog_rule

    assert isinstance(instance, dg.DagsterInstance)
    version = local_vllm_version(defs)
    result = DemoResult(vllm_version=version)
    if version not in instance.get_dynamic_partitions(vllm_release_partitions.name):
        instance.add_dynamic_partitions(vllm_release_partitions.name, [version])
        report(f"vLLM release partition {version} added")

    # The step-by-step DEBUG events are in the UI; the terminal gets the assets' own INFO lines.
    _QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

    def run(job_name: str, partition: str | None, tags: dict[str, str]) -> bool:
        job = defs.resolve_job_def(job_name)
        t0 = time.monotonic()
        outcome = job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False,
                                         tags={TRIGGER_TAG: "demo", **tags}, run_config=_QUIET_CONSOLE)
        label = f"{job_name}[{partition}]" if partition else job_name
        if outcome.success:
            report(f"  ok      {label} ({time.monotonic() - t0:.0f}s, run {outcome.run_id[:8]})")
            return True
        result.failed[label] = _failure_summary(outcome)
        report(f"  FAILED  {label} ({time.monotonic() - t0:.0f}s, run {outcome.run_id[:8]}): {result.failed[label]}")
        return False

    report(f"registering the vLLM {version} runtimes")
    if not run(register_runtime_job.name, version, {}):
        raise DemoError(f"registering vLLM {version} failed ({result.failed}): nothing can be served; "
                        f"fix it and run `pooling-pipeline demo` again")
    for name in active_catalog().names():
        report(f"materialising {name} (ingest -> serve -> quality -> benchmark -> readiness)")
        # A model that fails (a blocking quality check, say) still gets its row in the report.
        run(model_pipeline_job.name, name, {MODEL_TAG: name})
    report("building the readiness report")
    run(readiness_report_job.name, None, {})

    for name in active_catalog().names():
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("inference_service"), asset_partitions=[name]), limit=1
        ).records
        mat = records[0].asset_materialization if records else None
        url = mat.metadata.get("url") if mat else None
        if url is not None:
            result.endpoints[name] = str(getattr(url, "value", url) or getattr(url, "url", ""))
    rows, _ = gather_rows(instance)
    result.rows = apply_catalog_rule(rows)
    return result


def verdict_table(rows: list) -> str:
    lines = [f"{'model':<28} {'kind':<10} {'status':<26} {'thr.ratio':>9} {'p99 ratio':>9}  verdict"]
    for r in rows:
        thr = "—" if r.throughput_ratio is None else f"{r.throughput_ratio:.2f}"
        p99 = "—" if r.p99_ratio is None else f"{r.p99_ratio:.2f}"
        lines.append(f"{r.model:<28} {r.kind.value:<10} {r.status[:26]:<26} {thr:>9} {p99:>9}  {r.verdict.value}")
        lines.extend(f"{'':<30}- {reason}" for reason in r.reasons)
    return "\n".join(lines)


def ui_command(port: int, *, with_daemon: bool = True) -> list[str]:
    """`dagster dev` (webserver + daemon, so the schedule and sensors run) or the webserver alone."""
    bindir = Path(sys.executable).parent
    if with_daemon:
        return [str(bindir / "dagster"), "dev", "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(port)]
    return [str(bindir / "dagster-webserver"), "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(port)]


def start_ui(port: int, *, with_daemon: bool = True, log_path: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    return subprocess.Popen(ui_command(port, with_daemon=with_daemon), cwd=PROJECT_ROOT, stdout=out,
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True)


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
