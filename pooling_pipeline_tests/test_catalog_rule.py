"""The catalog's verdict: every row of seed 000's matrix on the cluster catalog, the fallback reranker, and
the revisit date."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from pooling_pipeline.catalog import CLUSTER_CATALOG, ModelKind, Role, load_catalog
from pooling_pipeline.readiness.catalog_rule import (
    CatalogPolicy,
    ModelOutcome,
    add_months,
    apply_to_models,
    decide_catalog,
)
from pooling_pipeline.readiness.verdict import Verdict

CATALOG = load_catalog(CLUSTER_CATALOG)
EMBEDDINGS = {m.name for m in CATALOG.models if m.kind is ModelKind.EMBEDDING}
RERANKERS = {m.name for m in CATALOG.models if m.kind is ModelKind.RERANKER}
EVERYTHING = EMBEDDINGS | RERANKERS
MINILM = "all-minilm-l6-v2"
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def outcomes(passing: set[str], slow: frozenset[str] = frozenset()) -> list[ModelOutcome]:
    """Models in `passing` migrate; those in `slow` work but are below the bar; the rest fail quality."""
    out = []
    for m in CATALOG.models:
        if m.name in passing:
            verdict, works = Verdict.MIGRATE, True
        elif m.name in slow:
            verdict, works = Verdict.KEEP_INCUMBENT, True
        else:
            verdict, works = Verdict.REVISIT, False
        out.append(ModelOutcome(model=m.name, role=m.role, verdict=verdict, works=works))
    return out


MATRIX = [
    # id, outcomes, verdict, action, text in the reason
    ("all_models_work_migrate", outcomes(EVERYTHING), Verdict.MIGRATE, "Migrate to vLLM", "every role works"),
    (
        "embeddings_work_reranker_does_not_is_hybrid",
        outcomes(EMBEDDINGS),
        Verdict.HYBRID,
        "Hybrid: vLLM for embeddings, Caikit for reranker",
        "reranker not covered (ms-marco-minilm-l12-v2 revisit",
    ),
    (
        "only_minilm_works_keeps_caikit_and_revisits_in_6_months",
        outcomes({MINILM}),
        Verdict.KEEP_INCUMBENT,
        "Keep Caikit, revisit on 2027-05-23",
        f"only {MINILM} works on vLLM, but no model covers multilingual-embedding, reranker",
    ),
    ("nothing_works_keeps_caikit", outcomes(set()), Verdict.KEEP_INCUMBENT, "Keep Caikit", "nothing works"),
    (
        "a_failing_reranker_with_a_passing_fallback_still_migrates",
        outcomes(EVERYTHING - {"ms-marco-minilm-l12-v2"}),
        Verdict.MIGRATE,
        "Migrate to vLLM",
        "reranker covered by bge-reranker-base, bge-reranker-large, bge-reranker-v2-m3",
    ),
    (
        "the_seeds_fallback_alone_covers_the_reranker_role",
        outcomes(EMBEDDINGS | {"bge-reranker-v2-m3"}),
        Verdict.MIGRATE,
        "Migrate to vLLM",
        "reranker covered by bge-reranker-v2-m3",
    ),
    (
        "working_but_below_the_performance_bar_keeps_caikit_and_revisits",
        outcomes(set(), slow=frozenset(EVERYTHING)),
        Verdict.KEEP_INCUMBENT,
        "Keep Caikit, revisit on 2027-05-23",
        "performance ≥ 1.00× Caikit",
    ),
    (
        "multilingual_role_uncovered_is_not_hybrid",
        outcomes(EVERYTHING - {"granite-embedding-278m-multilingual"}),
        Verdict.KEEP_INCUMBENT,
        "Keep Caikit, revisit on 2027-05-23",
        "no model covers multilingual-embedding with",
    ),
]


@pytest.mark.parametrize(("given", "verdict", "action", "reason"), [m[1:] for m in MATRIX], ids=[m[0] for m in MATRIX])
def test_catalog_matrix_row(given, verdict, action, reason) -> None:
    decision = decide_catalog(given, NOW)
    assert (decision.verdict, decision.action) == (verdict, action), decision.reason
    assert reason in decision.reason
    assert (decision.revisit_on is not None) == ("revisit on" in action)


def test_the_revisit_date_is_the_verdict_time_plus_the_configured_months() -> None:
    decision = decide_catalog(outcomes({MINILM}), NOW, CatalogPolicy(revisit_months=3))
    assert decision.revisit_on == date(2027, 2, 23)
    assert decision.action == "Keep Caikit, revisit on 2027-02-23" and "revisit in 3 months" in decision.reason


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 11, 23), 6, date(2027, 5, 23)),
        (date(2026, 8, 31), 6, date(2027, 2, 28)),  # clamped to the month's last day
        (date(2027, 8, 31), 6, date(2028, 2, 29)),  # leap year
        (date(2026, 1, 15), 12, date(2027, 1, 15)),
    ],
)
def test_add_months(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


def test_the_performance_bar_is_stated_in_the_reason() -> None:
    decision = decide_catalog(outcomes(EVERYTHING), NOW, CatalogPolicy(performance_bar=1.2))
    assert "performance ≥ 1.20× Caikit" in decision.reason


def test_a_pass_without_an_incumbent_is_not_claimed_as_a_comparison() -> None:
    given = [o.model_copy(update={"compared": o.model != MINILM}) for o in outcomes(EVERYTHING)]
    decision = decide_catalog(given, NOW)
    assert decision.verdict is Verdict.MIGRATE
    assert f"(not compared, no incumbent measured: {MINILM})" in decision.reason
    assert "not compared" not in decide_catalog(outcomes(EVERYTHING), NOW).reason


@pytest.mark.parametrize("role_kind", [ModelKind.RERANKER, ModelKind.EMBEDDING])
def test_a_role_whose_comparison_was_inconclusive_is_re_measured_not_decided(role_kind) -> None:
    # Every other role passes; the role's models work, but their capacity ratio straddled the bar.
    multilingual = {m.name for m in CATALOG.models if m.role is Role.MULTILINGUAL_EMBEDDING}
    noisy = RERANKERS if role_kind is ModelKind.RERANKER else multilingual
    assert noisy
    given = [
        o.model_copy(update={"verdict": Verdict.REVISIT, "works": True}) if o.model in noisy else o
        for o in outcomes(EVERYTHING)
    ]
    decision = decide_catalog(given, NOW)
    assert decision.verdict is Verdict.REVISIT and decision.action.startswith("Re-measure ")
    assert "inconclusive" in decision.reason and "nightly" in decision.reason
    # The same role failing its quality checks is a decision: hybrid for the reranker, keep Caikit otherwise.
    failed = [o.model_copy(update={"works": False}) if o.model in noisy else o for o in given]
    expected = Verdict.HYBRID if role_kind is ModelKind.RERANKER else Verdict.KEEP_INCUMBENT
    assert decide_catalog(failed, NOW).verdict is expected


def test_a_catalog_nobody_evaluated_is_not_a_verdict_on_vllm() -> None:
    unevaluated = [o.model_copy(update={"evaluated": False}) for o in outcomes(set())]
    decision = decide_catalog(unevaluated, NOW)
    assert decision.verdict is Verdict.REVISIT and "no model has been evaluated yet" in decision.reason


def test_a_role_nobody_evaluated_is_not_a_role_that_failed() -> None:
    given = [o.model_copy(update={"evaluated": False}) if o.model in RERANKERS else o for o in outcomes(EMBEDDINGS)]
    decision = decide_catalog(given, NOW)
    assert (decision.verdict, decision.action) == (Verdict.REVISIT, "Evaluate the catalog")
    assert "no model of reranker has been evaluated yet" in decision.reason
    # One evaluated reranker that failed is enough to read the matrix: hybrid.
    given[-1] = given[-1].model_copy(update={"evaluated": True})
    assert decide_catalog(given, NOW).verdict is Verdict.HYBRID


def test_hybrid_turns_only_the_passing_embeddings_hybrid() -> None:
    given = outcomes(EMBEDDINGS - {"modernbert-base"})
    decision = decide_catalog(given, NOW)
    assert decision.verdict is Verdict.HYBRID
    verdicts = apply_to_models(decision, given)
    assert verdicts[MINILM] is Verdict.HYBRID
    assert verdicts["modernbert-base"] is Verdict.REVISIT
    assert all(verdicts[r] is Verdict.REVISIT for r in RERANKERS)


def test_outside_a_hybrid_catalog_the_models_keep_their_own_verdicts() -> None:
    given = outcomes({MINILM})
    assert apply_to_models(decide_catalog(given, NOW), given) == {o.model: o.verdict for o in given}
