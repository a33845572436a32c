"""What `hf_snapshot` learns about a model, and what every later step relies on.

`ModelFacts` is the contract between ingest and serving/evaluation: the manifests take
`effective_max_model_len` from here (never from a hand-written number), the quality checks take
`dimension`, `pooling_mode` and `normalize`.

Everything here is pure: it reads a snapshot folder on disk and the catalog entry, nothing else, so it is
tested on files made in a temp dir. The rules mirror what vLLM derives when it loads the same folder
(`vllm/config/model.py::_get_and_verify_max_len`), so a bad override fails here, before any GPU is touched.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pooling_pipeline.catalog import CatalogEntry, ModelKind


class ModelFacts(BaseModel):
    model_config = ConfigDict(frozen=True)

    repo_id: str
    revision: str  # the catalog's ref, e.g. "main"
    commit_sha: str  # what it resolved to: the asset's DataVersion
    kind: ModelKind
    architecture: str  # config.json architectures[0], e.g. BertModel, BertForSequenceClassification
    model_type: str  # config.json model_type, e.g. bert
    hidden_size: int
    dimension: int | None  # output embedding size (embeddings); None for rerankers
    pooling_mode: str | None  # sentence-transformers pooling: mean | cls | lasttoken | max ...
    normalize: bool  # sentence-transformers Normalize module present
    num_labels: int | None  # rerankers (cross-encoders)
    max_position_embeddings: int | None
    st_max_seq_length: int | None  # sentence_bert_config.json max_seq_length
    effective_max_model_len: int  # min of the above limits and the catalog override
    parameter_count: int | None
    weights_bytes: int
    files: list[str]
    # Every length limit found, by where it came from ("sentence_bert_config.json max_seq_length": 256);
    # the smallest is `model_max_len`, which the catalog override may not exceed.
    max_len_limits: dict[str, int] = Field(default_factory=dict)
    model_max_len: int | None = None
    total_bytes: int = 0


class Snapshot(BaseModel):
    """What `hf_snapshot` hands to `s3_model`: the facts and where the files are on this machine."""

    model_config = ConfigDict(frozen=True)

    facts: ModelFacts
    local_path: str


class ModelFactsError(ValueError):
    """The snapshot cannot be served as the catalog says; the message names the problem and the fix."""


# Tokenizer files: any one of these is enough for transformers to build a tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",  # BERT WordPiece
    "vocab.json",  # GPT-2/RoBERTa BPE (with merges.txt)
    "sentencepiece.bpe.model",  # XLM-R
    "spiece.model",  # T5/ALBERT
    "tokenizer.model",  # Llama-style
)
# Model types whose absolute positions start at padding_idx + 1 (fairseq heritage): two of the
# max_position_embeddings slots are unusable, so RoBERTa's 514 means 512 tokens.
PADDED_POSITION_MODEL_TYPES = frozenset({"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "data2vec-text"})
# config.json keys vLLM reads as length limits (it takes the smallest).
CONFIG_LENGTH_KEYS = ("n_positions", "max_seq_len", "seq_length", "max_sequence_length", "max_seq_length", "seq_len")
# Tokenizers without a limit store a huge sentinel (int(1e30)); anything above this is "no limit".
_NO_LIMIT = 1_000_000_000

ST_POOLING_MODES = {  # sentence-transformers 1_Pooling/config.json flag -> mode name
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFactsError(f"{path} is not valid JSON ({exc}): the snapshot is corrupt; re-download it") from None


def list_snapshot_files(snapshot_dir: Path) -> list[str]:
    """Relative paths of the model's files (symlinks into the HF blob store followed; VCS/cache dirs skipped)."""
    snapshot_dir = Path(snapshot_dir)
    out = []
    for path in sorted(snapshot_dir.rglob("*")):
        rel = path.relative_to(snapshot_dir)
        if rel.parts[0] in {".git", ".cache", ".huggingface"}:
            continue
        if path.is_file():
            out.append(rel.as_posix())
    return out


def _weight_files(files: list[str]) -> list[str]:
    # Top-level weights only: a Dense module's own weights live under 2_Dense/.
    return [
        f
        for f in files
        if "/" not in f and (f.endswith(".safetensors") or (f.startswith("pytorch_model") and f.endswith(".bin")))
    ]


def _st_modules(snapshot_dir: Path) -> list[dict]:
    path = snapshot_dir / "modules.json"
    if not path.is_file():
        return []
    modules = _read_json(path)
    if not isinstance(modules, list):
        raise ModelFactsError(f"{path} must be a list of modules: the snapshot is corrupt; re-download it")
    return modules


def verify_required_files(snapshot_dir: Path | str, repo_id: str = "") -> list[str]:
    """Check the snapshot has what vLLM and sentence-transformers need; return its file list.

    Required: config.json, one tokenizer file, weights (safetensors or pytorch .bin); when modules.json is
    present, sentence_bert_config.json and every module folder's config it names.
    """
    snapshot_dir = Path(snapshot_dir)
    files = list_snapshot_files(snapshot_dir)
    present = set(files)
    where = f"{repo_id} ({snapshot_dir})" if repo_id else str(snapshot_dir)
    missing = []
    if "config.json" not in present:
        missing.append("config.json")
    if not any(t in present for t in TOKENIZER_FILES):
        missing.append("a tokenizer file (one of " + ", ".join(TOKENIZER_FILES) + ")")
    if not _weight_files(files):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if "modules.json" in present:
        if "sentence_bert_config.json" not in present:
            missing.append("sentence_bert_config.json (modules.json is present)")
        for module in _st_modules(snapshot_dir):
            mpath = module.get("path") or ""
            mtype = str(module.get("type", ""))
            if mpath and not mtype.endswith(".Normalize") and f"{mpath}/config.json" not in present:
                missing.append(f"{mpath}/config.json (module {mtype} in modules.json)")
    if missing:
        raise ModelFactsError(
            f"snapshot of {where} is missing "
            + "; ".join(missing)
            + ": check the repo and revision in the catalog (the model must be in Hugging Face format)"
        )
    for name in ("config.json", "sentence_bert_config.json", "tokenizer_config.json"):
        if name in present:
            _read_json(snapshot_dir / name)  # fails with a clear message if corrupt
    return files


def _safetensors_parameter_count(path: Path) -> int | None:
    """Number of parameters from the safetensors header alone (no tensor is read)."""
    try:
        with path.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(header_len))
    except (OSError, struct.error, json.JSONDecodeError):
        return None
    count = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        n = 1
        for dim in info.get("shape", []):
            n *= dim
        count += n
    return count


def _pooling_mode(config: dict) -> str | None:
    if isinstance(config.get("pooling_mode"), str):  # newer sentence-transformers write the mode directly
        return config["pooling_mode"]
    modes = [name for flag, name in ST_POOLING_MODES.items() if config.get(flag)]
    return "+".join(modes) if modes else None


def _embedding_dimension(snapshot_dir: Path, modules: list[dict], hidden_size: int) -> tuple[int, str | None, bool]:
    """Walk the sentence-transformers pipeline: (output dimension, pooling mode, normalize)."""
    dimension, pooling, normalize = hidden_size, None, False
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        mtype = str(module.get("type", ""))
        mdir = snapshot_dir / (module.get("path") or "")
        if mtype.endswith(".Pooling"):
            cfg = _read_json(mdir / "config.json")
            pooling = _pooling_mode(cfg)
            width = int(cfg.get("word_embedding_dimension", dimension))
            # Several pooling modes are concatenated (e.g. cls+mean doubles the width).
            dimension = width * max(1, len(pooling.split("+")) if pooling else 1)
        elif mtype.endswith(".Dense"):
            cfg = _read_json(mdir / "config.json")
            dimension = int(cfg["out_features"])  # a projection changes the output size
        elif mtype.endswith(".Normalize"):
            normalize = True
    return dimension, pooling, normalize


def _is_reranker(architecture: str, st_config: dict) -> bool:
    if architecture.endswith("ForSequenceClassification"):
        return True
    # sentence-transformers >= 4 marks cross-encoders in config_sentence_transformers.json.
    return str(st_config.get("model_type", "")).lower() == "crossencoder"


def max_len_limits(config: dict, tokenizer_config: dict, st_config: dict) -> dict[str, int]:
    """Every length limit the model declares, keyed by where it comes from."""
    limits: dict[str, int] = {}
    mpe = config.get("max_position_embeddings")
    if isinstance(mpe, int) and mpe > 0:
        usable = mpe
        if config.get("model_type") in PADDED_POSITION_MODEL_TYPES:
            usable = mpe - (int(config.get("pad_token_id") or 1) + 1)
        label = "config.json max_position_embeddings" + (f" ({mpe} minus padding offset)" if usable != mpe else "")
        limits[label] = usable
    for key in CONFIG_LENGTH_KEYS:
        value = config.get(key)
        if isinstance(value, int) and 0 < value < _NO_LIMIT:
            limits[f"config.json {key}"] = value
    tok_max = tokenizer_config.get("model_max_length")
    if isinstance(tok_max, (int, float)) and 0 < tok_max < _NO_LIMIT:
        limits["tokenizer_config.json model_max_length"] = int(tok_max)
    st_max = st_config.get("max_seq_length")
    if isinstance(st_max, int) and st_max > 0:
        limits["sentence_bert_config.json max_seq_length"] = st_max
    return limits


def derive_model_facts(
    snapshot_dir: Path | str,
    entry: CatalogEntry,
    commit_sha: str,
    catalog_file: str | None = None,
) -> ModelFacts:
    """Read the snapshot and check it against its catalog entry.

    Fails with `ModelFactsError` when files are missing, the kind or dimension disagrees with the catalog,
    or the catalog's max_model_len override is above the model's own limit.
    """
    snapshot_dir = Path(snapshot_dir)
    catalog_file = catalog_file or "the catalog"
    files = verify_required_files(snapshot_dir, entry.repo_id)
    config = _read_json(snapshot_dir / "config.json")
    st_path = snapshot_dir / "sentence_bert_config.json"
    st_config = _read_json(st_path) if st_path.is_file() else {}
    st_meta_path = snapshot_dir / "config_sentence_transformers.json"
    st_meta = _read_json(st_meta_path) if st_meta_path.is_file() else {}
    tok_path = snapshot_dir / "tokenizer_config.json"
    tokenizer_config = _read_json(tok_path) if tok_path.is_file() else {}
    modules = _st_modules(snapshot_dir)

    architectures = config.get("architectures") or []
    architecture = architectures[0] if architectures else ""
    if not architecture:
        raise ModelFactsError(
            f"{entry.repo_id}: config.json has no 'architectures': vLLM cannot pick a model class; "
            "use a revision whose config.json names its architecture"
        )
    model_type = str(config.get("model_type", ""))
    hidden_size = int(config.get("hidden_size") or config.get("d_model") or config.get("n_embd") or 0)

    kind = ModelKind.RERANKER if _is_reranker(architecture, st_meta) else ModelKind.EMBEDDING
    if kind is not entry.kind:
        raise ModelFactsError(
            f"{entry.name}: the catalog says kind {entry.kind.value!r} but {entry.repo_id}@{commit_sha[:12]} is a "
            f"{kind.value} (architecture {architecture}"
            + (", a sequence-classification head" if kind is ModelKind.RERANKER else ", no classification head")
            + f"): set kind: {kind.value} in {catalog_file} or point repo_id at the right model"
        )

    dimension: int | None = None
    pooling: str | None = None
    normalize = False
    num_labels: int | None = None
    if kind is ModelKind.EMBEDDING:
        dimension, pooling, normalize = _embedding_dimension(snapshot_dir, modules, hidden_size)
        if entry.dimension is not None and entry.dimension != dimension:
            raise ModelFactsError(
                f"{entry.name}: the catalog expects dimension {entry.dimension} but {entry.repo_id} produces "
                f"{dimension}-d embeddings: set dimension: {dimension} in {catalog_file} (or fix repo_id)"
            )
    else:
        id2label = config.get("id2label")
        num_labels = int(config.get("num_labels") or (len(id2label) if isinstance(id2label, dict) else 1))

    limits = max_len_limits(config, tokenizer_config, st_config)
    model_limit = min(limits.values()) if limits else None
    override = entry.max_model_len
    if override is not None and model_limit is not None and override > model_limit:
        source = min(limits, key=lambda k: limits[k])
        raise ModelFactsError(
            f"max_model_len {override} > model limit {model_limit} for {entry.name} ({source}={model_limit}): "
            f"set max_model_len ≤ {model_limit} in {catalog_file} (or remove it to use the model's limit)"
        )
    if override is not None:
        effective = override
    elif model_limit is not None:
        effective = model_limit
    else:
        raise ModelFactsError(
            f"{entry.name}: {entry.repo_id} declares no length limit (no max_position_embeddings, "
            f"model_max_length or max_seq_length): set max_model_len in {catalog_file}"
        )

    weights = _weight_files(files)
    weights_bytes = sum((snapshot_dir / f).stat().st_size for f in weights)
    total_bytes = sum((snapshot_dir / f).stat().st_size for f in files)
    params = [_safetensors_parameter_count(snapshot_dir / f) for f in weights if f.endswith(".safetensors")]
    parameter_count = sum(p for p in params if p) if params and all(params) else None

    mpe = config.get("max_position_embeddings")
    return ModelFacts(
        repo_id=entry.repo_id,
        revision=entry.revision,
        commit_sha=commit_sha,
        kind=kind,
        architecture=architecture,
        model_type=model_type,
        hidden_size=hidden_size,
        dimension=dimension,
        pooling_mode=pooling,
        normalize=normalize,
        num_labels=num_labels,
        max_position_embeddings=mpe if isinstance(mpe, int) else None,
        st_max_seq_length=st_config.get("max_seq_length") if isinstance(st_config.get("max_seq_length"), int) else None,
        effective_max_model_len=effective,
        parameter_count=parameter_count,
        weights_bytes=weights_bytes,
        files=files,
        max_len_limits=limits,
        model_max_len=model_limit,
        total_bytes=total_bytes,
    )
