"""Is the verdict reproducible? The local catalog's benchmark and readiness, K times, on the local stack.

Drives the real pipeline with the same calls as `pooling-pipeline demo` (automation/demo.py): the stack
up with the Caikit incumbent (on the port the catalog names), the local vLLM release registered, then
every catalog model through model_pipeline_job (two at a time, as the demo runs them), K times in a row
on one Dagster instance of its own.
Ingest and serving are no-ops after the first run (unchanged files, unchanged specs); quality,
load_benchmark (its default profile: DEMO locally) and migration_readiness run every time. Per model:

  - the K verdicts (migration_readiness's `verdict` metadata);
  - the capacity ratio vLLM/incumbent with its interval in each run (load_benchmark's
    `capacity_ratio_median/low/high`, the worst workload's), and how long each benchmark took;
  - whether all K verdicts agree.

    .venv/bin/python benchmarks/verdict_stability.py             # K = 3
    .venv/bin/python benchmarks/verdict_stability.py --runs 5 --dagster-home /tmp/vs-home

The goal (issue 11): 3/3 agreement for every local model on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pooling_pipeline.stack.layout import StackLayout


@dataclass
class ModelRuns:
    verdicts: list[str] = field(default_factory=list)
    ratios: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return len(set(self.verdicts)) == 1 and bool(self.verdicts)


def _value(meta: dict[str, Any], key: str) -> Any:
    entry = meta.get(key)
    return getattr(entry, "value", entry)


def latest(instance: Any, asset: str, model: str, after: float) -> dict[str, Any] | None:
    """Metadata of `asset`'s latest materialization for `model` if it happened after `after` (else None)."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[model]), limit=1
    ).records
    if not records or records[0].timestamp < after:
        return None
    mat = records[0].asset_materialization
    return dict(mat.metadata) if mat is not None else None


def collect(instance: Any, models: list[str], runs: dict[str, ModelRuns], since: float) -> None:
    for model in models:
        row = runs.setdefault(model, ModelRuns())
        bench = latest(instance, "load_benchmark", model, since)
        ready = latest(instance, "migration_readiness", model, since)
        row.verdicts.append(str(_value(ready, "verdict")) if ready else "not run")
        if bench and _value(bench, "capacity_ratio_median") is not None:
            parts = [float(_value(bench, f"capacity_ratio_{p}")) for p in ("median", "low", "high")]
            row.ratios.append(f"{parts[0]:.2f} [{parts[1]:.2f}, {parts[2]:.2f}]")
        else:
            row.ratios.append("–" if bench else "no benchmark")
        if bench and _value(bench, "duration_s") is not None:
            row.seconds.append(float(_value(bench, "duration_s")))


def catalog_verdict(instance: Any, catalog: Any) -> str:
    """The seed's matrix over the latest rows, as readiness_report and the demo compute it (default policy)."""
    from datetime import UTC, datetime

    from pooling_pipeline.readiness.history import gather_rows
    from pooling_pipeline.readiness.report import apply_catalog_rule

    rows, _ = gather_rows(instance, catalog)
    _, decision = apply_catalog_rule(rows, datetime.now(UTC))
    return decision.verdict.value


def register(instance: Any) -> None:
    """The local vLLM release as a partition, and its runtimes registered (once)."""
    from pooling_pipeline.automation.demo import local_vllm_version, run_job
    from pooling_pipeline.automation.jobs import TRIGGER_TAG
    from pooling_pipeline.definitions import defs
    from pooling_pipeline.partitions import vllm_release_partitions

    version = local_vllm_version(defs)
    name = vllm_release_partitions.name or "vllm_release"
    if version not in instance.get_dynamic_partitions(name):
        instance.add_dynamic_partitions(name, [version])
    if not run_job("register_runtime_job", version, {TRIGGER_TAG: "verdict-stability"}, instance).success:
        raise SystemExit(f"registering the vLLM {version} runtimes failed: see the run in the Dagster instance")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="K: how many times the catalog is run")
    parser.add_argument(
        "--dagster-home",
        type=Path,
        default=StackLayout.default().root / "verdict-stability-dagster",
        help="a Dagster instance of its own (the demo's stays untouched)",
    )
    args = parser.parse_args()

    from pooling_pipeline.automation.demo import ensure_dagster_home

    ensure_dagster_home(args.dagster_home)
    from pooling_pipeline.catalog import active_catalog
    from pooling_pipeline.stack.manager import stack_up

    catalog = active_catalog()
    models = list(catalog.names())
    # Caikit where the catalog's incumbents point (a stack folder may remember another port from a test).
    ports = {urlparse(e.incumbent.url).port for e in catalog.models if e.incumbent is not None}
    caikit_port = next(iter(ports)) if len(ports) == 1 else None
    stack_up(
        StackLayout.default(),
        with_incumbent=True,
        caikit_port=caikit_port,
        report=lambda line: print(f"  {line}", flush=True),
    )

    import dagster as dg

    from pooling_pipeline.automation.demo import run_model_jobs
    from pooling_pipeline.automation.jobs import TRIGGER_TAG

    instance = dg.DagsterInstance.get()
    register(instance)
    runs: dict[str, ModelRuns] = {}
    catalog_verdicts: list[str] = []
    for k in range(1, args.runs + 1):
        print(f"\n=== run {k} of {args.runs}", flush=True)
        since = time.time()
        # As the demo runs them: two models at a time, their benchmarks alone on the host (stack/host_lock.py).
        for outcome in run_model_jobs(instance, models, {TRIGGER_TAG: "verdict-stability"}):
            state = "ok    " if outcome.success else "FAILED"
            print(f"  {state} {outcome.label} ({time.time() - since:.0f}s into the run)", flush=True)
        collect(instance, models, runs, since)
        catalog_verdicts.append(catalog_verdict(instance, catalog))
        print(f"  catalog: {catalog_verdicts[-1]} (run {k} took {time.time() - since:.0f}s)", flush=True)

    print(f"\nverdict stability: {args.runs} runs of the local catalog (benchmark + readiness)")
    width = max(len(m) for m in models) if models else 10
    for model, row in runs.items():
        spent = ", ".join(f"{s:.0f}" for s in row.seconds) or "–"
        print(f"{model:<{width}}  {'AGREE' if row.agree else 'DIFFER'}  verdicts: {' / '.join(row.verdicts)}")
        print(f"{'':<{width}}  capacity ratio per run: {' / '.join(row.ratios)}; benchmark s: {spent}")
    agreeing = sum(1 for r in runs.values() if r.agree)
    print(f"{agreeing}/{len(runs)} models gave the same verdict in all {args.runs} runs")
    same = len(set(catalog_verdicts)) == 1
    print(f"catalog verdict per run: {' / '.join(catalog_verdicts)} ({'AGREE' if same else 'DIFFER'})")
    return 0 if agreeing == len(runs) and same else 1


if __name__ == "__main__":
    sys.exit(main())
