"""The catalog's verdict: seed 000's decision matrix, literally and in general form.

| Outcome                                | Action                                           |
|----------------------------------------|--------------------------------------------------|
| All models work, performance ≥ Caikit  | Migrate to vLLM                                  |
| Embeddings work, reranker doesn't      | Hybrid: vLLM for embeddings, Caikit for reranker |
| Only MiniLM works                      | Keep Caikit, revisit in 6 months                 |
| Nothing works                          | Keep Caikit                                      |

General form, over the roles the catalog declares (catalog/schema.py `Role`):

- a model *works* when it loads, answers its API and passes quality; it *passes* when its own verdict is
  `migrate` (it works and its capacity at the SLO clears the performance bar, default 1.0× Caikit);
- a role is *covered* when at least one of its models passes. bge-reranker-v2-m3 is the seed's fallback
  for ms-marco, so a failing reranker with a passing alternative still covers "reranker";
- every role covered                                   -> migrate;
- every embedding role covered, the reranker role not  -> hybrid (the passing embeddings' rows say hybrid);
- nothing works                                        -> keep Caikit;
- anything else ("only MiniLM works": something works, but an embedding role is not covered, or it works
  but below the bar)                                   -> keep Caikit, revisit on verdict time + N months;
- a role not covered whose models were never evaluated -> revisit (the matrix cannot be read yet);
- a role not covered where a model works but its comparison was inconclusive (its own verdict `revisit`,
  the capacity-ratio interval straddling the bar)      -> revisit ("re-measure"): deciding hybrid or keep
  Caikit would claim a result the measurement did not give.

Pure: the decision is a function of the per-model outcomes, the time of the verdict and the policy.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from pooling_pipeline.catalog import ModelKind, Role
from pooling_pipeline.readiness.verdict import DEFAULT_PERFORMANCE_BAR, Verdict

DEFAULT_REVISIT_MONTHS = 6  # the seed: "Keep Caikit, revisit in 6 months"


class CatalogPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    revisit_months: int = Field(DEFAULT_REVISIT_MONTHS, ge=1, description="keep Caikit, revisit after this long")
    performance_bar: float = Field(DEFAULT_PERFORMANCE_BAR, gt=0, description="vLLM / Caikit capacity, for the text")


class ModelOutcome(BaseModel):
    """What the matrix needs of one model (the readiness report's row carries it)."""

    model: str
    role: Role
    verdict: Verdict  # the model's own verdict (before the catalog rule)
    works: bool  # loads, API and quality pass
    evaluated: bool = True  # False: no run has reached a verdict or a failure yet
    compared: bool = True  # its benchmark measured the incumbent too (False: no capacity ratio)


class RoleCoverage(BaseModel):
    role: Role
    models: list[str]
    passing: list[str]  # own verdict migrate
    working: list[str]  # works, whatever its performance
    evaluated: list[str]  # reached a verdict or a failure

    @property
    def covered(self) -> bool:
        return bool(self.passing)


class CatalogDecision(BaseModel):
    verdict: Verdict
    action: str  # the seed's wording: "Migrate to vLLM", "Keep Caikit, revisit on 2027-05-23", ...
    reason: str
    decided_at: datetime
    revisit_on: date | None = None
    coverage: list[RoleCoverage] = Field(default_factory=list)

    @property
    def headline(self) -> str:
        return f"{self.verdict.value}: {self.action}"


def add_months(day: date, months: int) -> date:
    """`day` plus whole calendar months, clamped to the month's last day (Aug 31 + 6 months = Feb 28/29)."""
    years, month0 = divmod(day.month - 1 + months, 12)
    year, month = day.year + years, month0 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def role_coverage(outcomes: Sequence[ModelOutcome]) -> list[RoleCoverage]:
    """One entry per role the catalog declares, in Role order."""
    out = []
    for role in Role:
        mine = [o for o in outcomes if o.role is role]
        if mine:
            out.append(
                RoleCoverage(
                    role=role,
                    models=[o.model for o in mine],
                    passing=[o.model for o in mine if o.verdict is Verdict.MIGRATE],
                    working=[o.model for o in mine if o.works],
                    evaluated=[o.model for o in mine if o.evaluated],
                )
            )
    return out


def _describe(coverage: Sequence[RoleCoverage], outcomes: Sequence[ModelOutcome]) -> str:
    verdicts = {o.model: o.verdict.value for o in outcomes}
    parts = []
    for c in coverage:
        if c.covered:
            parts.append(f"{c.role.value} covered by {', '.join(c.passing)}")
        else:
            states = ", ".join(f"{m} {verdicts[m]}" for m in c.models)
            parts.append(f"{c.role.value} not covered ({states})")
    return "; ".join(parts)


def _measured_inconclusive(coverage: RoleCoverage, outcomes: Sequence[ModelOutcome]) -> bool:
    """Some model of the role works (loads, API, quality) and its own verdict is `revisit`: only the
    performance comparison is undecided."""
    return any(o.model in coverage.models and o.works and o.verdict is Verdict.REVISIT for o in outcomes)


def decide_catalog(
    outcomes: Sequence[ModelOutcome], decided_at: datetime, policy: CatalogPolicy | None = None
) -> CatalogDecision:
    p = policy or CatalogPolicy()
    coverage = role_coverage(outcomes)
    roles = _describe(coverage, outcomes)

    def decision(verdict: Verdict, action: str, reason: str, revisit_on: date | None = None) -> CatalogDecision:
        return CatalogDecision(
            verdict=verdict,
            action=action,
            reason=reason,
            decided_at=decided_at,
            revisit_on=revisit_on,
            coverage=coverage,
        )

    if not outcomes or not any(o.evaluated for o in outcomes):
        return decision(Verdict.REVISIT, "Evaluate the catalog", "no model has been evaluated yet")
    bar = f"performance ≥ {p.performance_bar:.2f}× Caikit"
    uncompared = [o.model for o in outcomes if o.verdict is Verdict.MIGRATE and not o.compared]
    if uncompared:
        # A model may pass with no incumbent to compare (the local default): never claim a comparison not made.
        bar += f" (not compared, no incumbent measured: {', '.join(uncompared)})"
    if all(c.covered for c in coverage):
        return decision(Verdict.MIGRATE, "Migrate to vLLM", f"every role works on vLLM with {bar}: {roles}")
    unknown = [c.role.value for c in coverage if not c.covered and not c.evaluated]
    if unknown:
        # A role nobody evaluated is not a role that failed: the matrix cannot be read yet.
        reason = f"no model of {', '.join(unknown)} has been evaluated yet: {roles}"
        return decision(Verdict.REVISIT, "Evaluate the catalog", reason)
    inconclusive = [c for c in coverage if not c.covered and _measured_inconclusive(c, outcomes)]
    if inconclusive:
        # A role whose model works but whose comparison straddled the bar is not a role that fails: "hybrid"
        # or "keep Caikit" would be a decision the measurement did not make. The nightly profile decides it.
        names = ", ".join(c.role.value for c in inconclusive)
        return decision(
            Verdict.REVISIT,
            f"Re-measure {names}",
            f"{names} works on vLLM but its performance is inconclusive (within measurement noise): re-run "
            f"load_benchmark with more repeats (the nightly profile) before deciding; {roles}",
        )
    embeddings = [c for c in coverage if c.role.kind is ModelKind.EMBEDDING]
    if embeddings and all(c.covered for c in embeddings):
        return decision(
            Verdict.HYBRID,
            "Hybrid: vLLM for embeddings, Caikit for reranker",
            f"embeddings work with {bar}, the reranker role does not: {roles}",
        )
    working = [o.model for o in outcomes if o.works]
    if not working:
        return decision(Verdict.KEEP_INCUMBENT, "Keep Caikit", f"nothing works on vLLM: {roles}")
    revisit_on = add_months(decided_at.date(), p.revisit_months)
    works = f"only {working[0]} works" if len(working) == 1 else f"{', '.join(working)} work"
    uncovered = ", ".join(c.role.value for c in coverage if not c.covered)
    return decision(
        Verdict.KEEP_INCUMBENT,
        f"Keep Caikit, revisit on {revisit_on.isoformat()}",
        f"{works} on vLLM, but no model covers {uncovered} with {bar}: {roles}; revisit in {p.revisit_months} months",
        revisit_on,
    )


def apply_to_models(decision: CatalogDecision, outcomes: Sequence[ModelOutcome]) -> dict[str, Verdict]:
    """Each model's verdict under the catalog's: in a hybrid catalog the passing embeddings say `hybrid`."""
    out = {}
    for o in outcomes:
        hybrid = decision.verdict is Verdict.HYBRID and o.role.kind is ModelKind.EMBEDDING
        out[o.model] = Verdict.HYBRID if hybrid and o.verdict is Verdict.MIGRATE else o.verdict
    return out
