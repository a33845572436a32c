"""The reference: what the model *is*, computed by sentence-transformers in-process from the same snapshot.

Results are cached on disk per (model, commit sha, inputs) in `cache_dir` (the scratch resource's folder;
None: no cache): the reference of a revision never changes, so a nightly re-evaluation only talks to the
servers. Cross-encoder scores are cached as raw logits (no
activation); callers put them on the scale they compare (e.g. sigmoid, like vLLM's default).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

CACHE_VERSION = 1


def _cache_file(cache_dir: Path | None, model: str, commit_sha: str, kind: str, payload: object) -> Path | None:
    """The cache file of one result; None without a cache folder (the asset passes the scratch resource's)."""
    if cache_dir is None:
        return None
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, kind, payload], ensure_ascii=False).encode()).hexdigest()[:20]
    return Path(cache_dir) / model / commit_sha / f"{kind}-{digest}.json"


def _cached(path: Path | None):
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            path.unlink(missing_ok=True)  # a torn write: recompute
    return None


def _store(path: Path | None, value: object) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


@lru_cache(maxsize=4)
def _sentence_transformer(snapshot_dir: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(snapshot_dir, device="cpu", local_files_only=True)


@lru_cache(maxsize=4)
def _cross_encoder(snapshot_dir: str):
    import torch
    from sentence_transformers import CrossEncoder

    # Identity: raw logits, whatever activation the model's config names; the caller picks the scale.
    return CrossEncoder(snapshot_dir, device="cpu", local_files_only=True, activation_fn=torch.nn.Identity())


@lru_cache(maxsize=4)
def tokenizer(snapshot_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(snapshot_dir, local_files_only=True)


def reference_embeddings(
    snapshot_dir: str | Path, texts: Sequence[str], *, model: str, commit_sha: str, cache_dir: Path | None = None
) -> np.ndarray:
    """SentenceTransformer(snapshot).encode(texts) with the model's own modules (pooling, Normalize)."""
    path = _cache_file(cache_dir, model, commit_sha, "embeddings", list(texts))
    hit = _cached(path)
    if hit is None:
        vectors = _sentence_transformer(str(snapshot_dir)).encode(list(texts), convert_to_numpy=True, batch_size=16)
        hit = np.asarray(vectors, dtype=np.float64).tolist()
        _store(path, hit)
    return np.asarray(hit, dtype=np.float64)


def reference_logits(
    snapshot_dir: str | Path,
    pairs: Sequence[tuple[str, str]],
    *,
    model: str,
    commit_sha: str,
    cache_dir: Path | None = None,
) -> np.ndarray:
    """CrossEncoder(snapshot).predict(pairs) as raw logits (first label when the head has several)."""
    payload = [list(p) for p in pairs]
    path = _cache_file(cache_dir, model, commit_sha, "logits", payload)
    hit = _cached(path)
    if hit is None:
        scores = _cross_encoder(str(snapshot_dir)).predict(
            [tuple(p) for p in pairs], batch_size=32, convert_to_numpy=True
        )
        arr = np.asarray(scores, dtype=np.float64)
        hit = (arr if arr.ndim == 1 else arr[:, 0]).tolist()
        _store(path, hit)
    return np.asarray(hit, dtype=np.float64)


def count_tokens(snapshot_dir: str | Path, text: str) -> int:
    """Tokens the model sees for `text`, special tokens ([CLS], [SEP] ...) included."""
    return len(tokenizer(str(snapshot_dir))(text, add_special_tokens=True)["input_ids"])


def text_with_tokens(snapshot_dir: str | Path, seed: str, total_tokens: int) -> str:
    """A text that tokenizes to exactly `total_tokens` (special tokens included), built by repeating `seed`.

    Decoding token ids and re-encoding is not always a round trip, so the length is corrected until it fits.
    """
    tok = tokenizer(str(snapshot_dir))
    special = count_tokens(snapshot_dir, "")
    ids = tok(seed, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("the seed text has no tokens")
    want = max(total_tokens - special, 0)
    body = (ids * (want // len(ids) + 2))[:want]
    text = tok.decode(body)
    for _ in range(20):
        n = count_tokens(snapshot_dir, text)
        if n == total_tokens:
            return text
        words = text.split(" ")
        text = " ".join(words[:-1]) if n > total_tokens else f"{text} a"
    raise ValueError(f"could not build a text of exactly {total_tokens} tokens")
