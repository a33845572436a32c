"""Promotion: a vLLM release reaches dashboard users only after the whole catalog passed on it.

`runtime_promotion` runs right after `readiness_report` (same job). It promotes the release every catalog
model was last evaluated on (the candidate) into the user-facing runtime Templates when:

- every model has a verdict on that one release (a failed rollout, a model still on another release, or
  a model never evaluated blocks it), and
- no model regressed against the promoted release (readiness/report.py `find_regressions`: quality down
  by more than its tolerance, or vLLM's capacity at the SLO down by more than its tolerance).

Otherwise nothing changes and the reasons are in the metadata. `pooling-pipeline runtime promote VERSION`
and `pooling-pipeline runtime rollback` do the same by hand. The record of what is promoted lives on the
user-facing Templates (serving/runtimes.py), so this asset keeps no state of its own.
"""

from typing import Any

import dagster as dg
from pydantic import BaseModel, Field

from pooling_pipeline.catalog import active_catalog
from pooling_pipeline.readiness.history import gather_rows
from pooling_pipeline.readiness.report import Regression, ReportRow, find_regressions
from pooling_pipeline.serving.target import PromotionRecord, ServingTarget

READINESS_REPORT = dg.AssetKey("readiness_report")


class PromotionDecision(BaseModel):
    promote: bool
    candidate: str | None  # the release the catalog was evaluated on (None: no single one)
    promoted: str | None  # what the user-facing Templates carried before
    reasons: list[str] = Field(default_factory=list)
    record: PromotionRecord | None = None


def decide_promotion(rows: list[ReportRow], regressions: list[Regression], promoted: str | None) -> PromotionDecision:
    """Pure: whether the catalog's current verdicts allow promoting their release (see the module docstring)."""
    reasons = []
    missing = [r.model for r in rows if not r.vllm_version]
    versions = sorted({r.vllm_version for r in rows if r.vllm_version})
    if not rows:
        reasons.append("the catalog has no models")
    if missing:
        reasons.append(f"no verdict on a vLLM release for {', '.join(missing)} (failed or never evaluated)")
    if len(versions) > 1:
        reasons.append(f"models were last evaluated on different releases ({', '.join(versions)}): re-validate all")
    candidate = versions[0] if len(versions) == 1 else None
    against = [g for g in regressions if promoted is None or g.previous_vllm == promoted]
    reasons.extend(f"regression: {g.text}" for g in against)
    if candidate is not None and candidate == promoted and not reasons:
        return PromotionDecision(promote=False, candidate=candidate, promoted=promoted, reasons=["already promoted"])
    return PromotionDecision(promote=not reasons, candidate=candidate, promoted=promoted, reasons=reasons)


@dg.asset(group_name="automation", deps=[READINESS_REPORT], code_version="1", kinds={"kubernetes"})
def runtime_promotion(
    context: dg.AssetExecutionContext, serving: dg.ResourceParam[ServingTarget]
) -> dg.Output[PromotionDecision]:
    """The user-facing runtime Templates, moved to the evaluated vLLM release when the whole catalog passed
    on it with no regression against the promoted release (else left as they are, with the reasons)."""
    rows, previous = gather_rows(context.instance, active_catalog())
    decision = decide_promotion(rows, find_regressions(rows, previous), serving.promoted_version())
    if decision.promote and decision.candidate is not None:
        decision = decision.model_copy(update={"record": serving.promote(decision.candidate)})
        context.log.info(f"promoted vLLM {decision.candidate} (was {decision.promoted or 'none'})")
    else:
        context.log.info(f"not promoting {decision.candidate or '-'}: {'; '.join(decision.reasons)}")
    metadata: dict[str, Any] = {
        "promoted": dg.MetadataValue.bool(decision.promote),
        "candidate": dg.MetadataValue.text(decision.candidate or "-"),
        "previously_promoted": dg.MetadataValue.text(decision.promoted or "-"),
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons) or "- none"),
    }
    return dg.Output(decision, metadata=metadata)
