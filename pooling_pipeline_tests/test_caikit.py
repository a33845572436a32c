"""The real incumbent: Caikit-NLP from PyPI, in its own virtualenv, serving the local catalog's models.

Slow: the first run builds the Caikit env (minutes); later runs reuse it and only start the server. The
fast tests cover `caikit_support`, the reason a readiness row shows when Caikit cannot serve a model.
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

import psutil
import pytest

from pooling_pipeline.catalog import LOCAL_CATALOG, Incumbent, ModelKind, load_catalog
from pooling_pipeline.evaluation import metrics, reference
from pooling_pipeline.evaluation.clients import CaikitClient, OpenAIPoolingClient
from pooling_pipeline.evaluation.quality import evaluate
from pooling_pipeline.resources.hub import HubResource
from pooling_pipeline.stack import caikit
from pooling_pipeline.stack.layout import StackLayout

CATALOG = load_catalog(LOCAL_CATALOG)
MINILM, CROSS_ENCODER = "all-minilm-l6-v2", "minilm-l6-cross-encoder"
TEXTS = [
    "How do I rotate the credentials of an S3 data connection?",
    "The quarterly report shows revenue grew by 12% while operating costs stayed flat.",
    "Die Bahn fährt heute wegen Bauarbeiten später ab.",
]
PASSAGES = [
    "Rotate the keys in the data connection secret, then restart the model server.",
    "Revenue grew by twelve percent this quarter.",
    "Trains leave later today because of construction work.",
    "ModernBERT has a context of 8192 tokens.",
]


# ------------------------------------------------------------------ fast: caikit_support


def _record(layout: StackLayout, **models: caikit.ModelSupport) -> None:
    caikit.support_file(layout).parent.mkdir(parents=True, exist_ok=True)
    caikit.support_file(layout).write_text(json.dumps({m: s.model_dump(mode="json") for m, s in models.items()}))


def test_caikit_support_says_why_a_model_has_no_local_incumbent(tmp_path):
    layout = StackLayout(tmp_path)
    served = CATALOG.get(MINILM)
    broken = CATALOG.get("modernbert-base")
    _record(
        layout,
        **{
            MINILM: caikit.ModelSupport(model_id=MINILM, served=True, commit_sha="a" * 40, module="EmbeddingModule"),
            "modernbert-base": caikit.ModelSupport(
                model_id="modernbert-base",
                served=False,
                reason="EmbeddingModule.bootstrap: ValueError: unknown architecture",
                commit_sha="b" * 40,
                module="EmbeddingModule",
            ),
        },
    )

    assert caikit.caikit_support(served, layout) is None
    reason = caikit.caikit_support(broken, layout)
    assert reason is not None and "Caikit-NLP 0.5.15 cannot load it" in reason and "unknown architecture" in reason
    assert "names no incumbent" in (caikit.caikit_support(served.model_copy(update={"incumbent": None}), layout) or "")
    remote = served.model_copy(update={"incumbent": Incumbent(url="https://caikit.example.com", model_id=MINILM)})
    assert caikit.caikit_support(remote, layout) is None  # a remote incumbent is not this stack's to judge
    assert caikit.caikit_support(CATALOG.get("bge-base-en-v1.5"), layout) is None  # not prepared yet


# ------------------------------------------------------------------ slow: the real server


def _inet_connections(proc: psutil.Process):
    # psutil renamed connections() to net_connections() in 6.0; the venv may have either.
    fn = getattr(proc, "net_connections", None) or proc.connections
    return fn(kind="inet")


@pytest.mark.slow
def test_caikit_serves_every_local_catalog_model_on_loopback_only(caikit_incumbent, local_stack, record_property):
    status = caikit.status(local_stack.layout)
    record_property("caikit_status", {k: status.get(k) for k in ("start_s", "loaded_s", "convert_s", "unsupported")})
    # Caikit-NLP 0.5.15 loads every twin, ModernBERT-base included (its transformers 4.49 has ModernBERT).
    assert status["running"] and set(status["models"]) == set(CATALOG.names())
    assert status["unsupported"] == {}
    assert all(caikit.caikit_support(entry, local_stack.layout) is None for entry in CATALOG.models)
    with CaikitClient(caikit_incumbent, MINILM) as client:
        assert client.health()
        loaded = {m["name"]: m for m in client.models()["models"]}
    assert loaded[MINILM]["loaded"] and loaded[CROSS_ENCODER]["loaded"]
    procs = [psutil.Process(status["pid"]), *psutil.Process(status["pid"]).children(recursive=True)]
    listening = [c.laddr for p in procs for c in _inet_connections(p) if c.status == psutil.CONN_LISTEN]
    assert listening, "Caikit listens on nothing"
    assert {a.ip for a in listening} == {"127.0.0.1"}, f"Caikit must bind loopback only, listens on {listening}"
    assert urlparse(caikit_incumbent).port in {a.port for a in listening}
    # Equal footing with vLLM-CPU: the compute threads vLLM's auto-binding leaves the model (cores - 1).
    threads = str(caikit.compute_threads())
    assert {procs[0].environ().get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} == {threads}


@pytest.mark.slow
def test_caikit_embeddings_match_the_reference_and_vllm(caikit_incumbent, minilm_ingested, minilm_deployment):
    entry, snap = CATALOG.get(MINILM), minilm_ingested.snapshot
    with (
        OpenAIPoolingClient(minilm_deployment.url, minilm_deployment.served_model_name) as served,
        CaikitClient(caikit_incumbent, MINILM) as incumbent,
    ):
        report = evaluate(entry, snap.facts, snap.local_path, served, incumbent)
    assert report.dimension_incumbent == 384
    compared = [p for p in report.probes if p.incumbent_cosine is not None]
    assert len(compared) >= len(report.probes) - 1  # Caikit refuses only the empty string
    assert min(p.incumbent_cosine for p in compared) >= 0.99
    assert min(p.served_vs_incumbent_cosine for p in compared) >= 0.99
    assert report.incumbent_min_cosine >= 0.99
    assert report.ranking["incumbent"].ndcg_at_10 == pytest.approx(report.ranking["reference"].ndcg_at_10, abs=0.01)
    # What each server does with max_model_len + 1 tokens is recorded side by side.
    assert report.over_length.incumbent_status is not None


@pytest.mark.slow
def test_caikit_rerank_matches_crossencoder_predict(caikit_incumbent, cross_encoder_ingested, cross_encoder_deployment):
    entry, snap = CATALOG.get(CROSS_ENCODER), cross_encoder_ingested.snapshot
    with (
        OpenAIPoolingClient(cross_encoder_deployment.url, cross_encoder_deployment.served_model_name) as served,
        CaikitClient(caikit_incumbent, CROSS_ENCODER) as incumbent,
    ):
        report = evaluate(entry, snap.facts, snap.local_path, served, incumbent)
    r = report.reranker
    # Caikit-NLP 0.5.15 drops token_type_ids for pairs (return_token_type_ids=False), so its scores are close to
    # the model's but not float-identical like vLLM's; on this generated head (scores within ~0.001 of each
    # other) that even flips some top-1s. Close, recorded side by side, and vLLM is the faithful one.
    assert r.incumbent_spearman >= 0.99 and r.incumbent_max_abs_diff < 0.01
    assert r.spearman >= r.incumbent_spearman and r.max_abs_diff <= r.incumbent_max_abs_diff
    assert "incumbent" in report.ranking
    assert any(f.startswith("incumbent vs CrossEncoder.predict") for f in report.findings)


@pytest.mark.slow
@pytest.mark.parametrize("name", [m.name for m in CATALOG.models if m.repo_id.startswith("twins/")])
def test_caikit_serves_each_twin_as_sentence_transformers_computes_it(caikit_incumbent, local_stack, name):
    entry = CATALOG.get(name)
    assert entry.incumbent is not None
    hub = HubResource(endpoint=local_stack.state.hub_endpoint, token=None, cache_dir=str(local_stack.layout.hf_cache))
    snapshot, sha = hub.snapshot(entry.repo_id, entry.revision)
    with CaikitClient(caikit_incumbent, entry.incumbent.model_id) as client:
        if entry.kind is ModelKind.EMBEDDING:
            served = client.embed(TEXTS)
            ref = reference.reference_embeddings(snapshot, TEXTS, model=name, commit_sha=sha)
            # Caikit runs sentence-transformers 3.4 on the same weights: ModernBERT's mean-pooling fallback too.
            assert min(metrics.cosine(s, r) for s, r in zip(served, ref, strict=True)) >= 0.999
            return
        results = client.rerank(TEXTS[0], PASSAGES)
    scores = [r.relevance_score for r in sorted(results, key=lambda r: r.index)]
    logits = reference.reference_logits(snapshot, [(TEXTS[0], p) for p in PASSAGES], model=name, commit_sha=sha)
    # What Caikit-NLP 0.5.15 computes: sigmoid for every one-label head, also where the model's config says
    # Identity (ms-marco: the recorded finding ms-marco-activation-scale), on pairs tokenized without
    # segment ids (return_token_type_ids=False).
    without_segments = metrics.sigmoid(_logits_without_token_type_ids(snapshot, TEXTS[0], PASSAGES))
    assert metrics.max_abs_diff(scores, without_segments) < 1e-4
    uses_segments = json.loads((snapshot / "config.json").read_text()).get("type_vocab_size", 1) > 1
    # BERT's segment embeddings make that a different score; XLM-R has none, so it scores what the model does.
    assert (metrics.max_abs_diff(scores, metrics.sigmoid(logits)) > 1e-3) == uses_segments


def _logits_without_token_type_ids(snapshot, query: str, passages: list[str]) -> list[float]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(snapshot)
    model = AutoModelForSequenceClassification.from_pretrained(snapshot).eval()
    batch = tok([query] * len(passages), passages, padding=True, return_token_type_ids=False, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0].tolist()
