"""The model catalog: one YAML file, validated with pydantic, is the single source of truth.

Partitions, manifests and quality thresholds all derive from it. A bad entry fails at load time with a
message that names the file, the entry and the field, so nobody discovers a typo on a GPU node.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

# Partition keys are the names the migration team uses (`bge-base-en-v1.5`); Kubernetes object names are
# derived from them (dots become dashes, see `k8s_name`), so only lower-case DNS characters are allowed.
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9.]*[a-z0-9])?$")
# A git ref or commit sha: no spaces, no "..", none of git's forbidden characters.
_REVISION_RE = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._/\-]*$")


StrictPositiveInt = Annotated[int, Field(strict=True, gt=0)]


class CatalogError(ValueError):
    """The catalog file cannot be used; the message says where and how to fix it."""


class ModelKind(StrEnum):
    EMBEDDING = "embedding"
    RERANKER = "reranker"


class Role(StrEnum):
    """What a model is for in the platform. The catalog-wide verdict asks, per role, whether at least one of
    its models works on vLLM (a failing reranker with a passing alternative does not force hybrid)."""

    PRIMARY_EMBEDDING = "primary-embedding"
    MULTILINGUAL_EMBEDDING = "multilingual-embedding"
    RERANKER = "reranker"

    @property
    def kind(self) -> ModelKind:
        return ModelKind.RERANKER if self is Role.RERANKER else ModelKind.EMBEDDING


# The role an entry has when it names none: rerank for rerankers, the primary role for embeddings.
DEFAULT_ROLE = {ModelKind.EMBEDDING: Role.PRIMARY_EMBEDDING, ModelKind.RERANKER: Role.RERANKER}


class Incumbent(BaseModel):
    """The Caikit-NLP endpoint the model is served from today (the thing we compare against)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Base URL of the Caikit REST server, e.g. http://127.0.0.1:8085")
    model_id: str = Field(description="Caikit model_id sent in the request body")

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, v: str) -> str:
        parsed = urlsplit(v)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                f"{v!r} is not an http(s) URL: write the Caikit REST server's base URL, e.g. http://127.0.0.1:8085"
            )
        return v


class QualityThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_cosine: float = Field(0.99, gt=0, le=1, description="per-probe cosine to the reference, at least")
    ndcg_tolerance: float = Field(0.02, ge=0, le=1, description="served nDCG@10 may be this much below reference")
    min_spearman: float = Field(0.99, gt=-1, le=1, description="reranker score rank correlation, at least")


class CatalogEntry(BaseModel):
    """One model of the migration; `name` is its partition key."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(max_length=45)]
    repo_id: str
    revision: str = "main"
    kind: ModelKind
    role: Role = Field(
        description="primary-embedding | multilingual-embedding | reranker (default: from kind); "
        "the catalog verdict needs every role covered by at least one passing model"
    )
    # Strict ints: YAML `true` or "512" is a typo, not a length (pydantic would quietly coerce them).
    dimension: StrictPositiveInt | None = Field(None, description="expected embedding size (embeddings only)")
    languages: list[str] = Field(default_factory=lambda: ["en"])
    max_model_len: StrictPositiveInt | None = Field(None, description="override; must not exceed the model's limit")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = None
    extra_args: list[str] = Field(default_factory=list, description="extra vLLM args appended verbatim")
    incumbent: Incumbent | None = None
    quality: QualityThresholds = Field(default_factory=QualityThresholds)
    display_name: str | None = None
    keep_deployed: bool = Field(False, description="keep this model served after its evaluation (default: freed)")

    @model_validator(mode="before")
    @classmethod
    def _role_defaults_to_kind(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("role") is None and data.get("kind") in set(ModelKind):
            return {**data, "role": DEFAULT_ROLE[ModelKind(data["kind"])].value}
        return data

    @field_validator("name")
    @classmethod
    def _name_is_dns_label(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(
                f"{v!r} is not a valid model name: use lower-case letters, digits, '-' and '.', starting with a "
                "letter (it becomes a Kubernetes object name)"
            )
        return v

    @field_validator("repo_id")
    @classmethod
    def _repo_id_has_owner(cls, v: str) -> str:
        parts = v.split("/")
        if len(parts) != 2 or not all(parts) or any(" " in p for p in parts):
            raise ValueError(f"{v!r} is not a Hugging Face repo id: write it as 'owner/name'")
        return v

    @field_validator("revision")
    @classmethod
    def _revision_is_a_ref(cls, v: str) -> str:
        if not _REVISION_RE.match(v) or v.endswith((".lock", "/")):
            raise ValueError(f"{v!r} is not a git revision: use a branch, tag or commit sha (default 'main')")
        return v

    @field_validator("extra_args")
    @classmethod
    def _extra_args_are_flags(cls, v: list[str]) -> list[str]:
        reserved = ("--model", "--port", "--served-model-name", "--max-model-len", "--task", "--runner", "--convert")
        for arg in v:
            if arg.split("=", 1)[0] in reserved:
                raise ValueError(
                    f"{arg!r} is set by the pipeline; use the catalog field instead "
                    "(max_model_len, dtype) or leave it to the runtime"
                )
        return v

    @model_validator(mode="after")
    def _dimension_only_for_embeddings(self) -> CatalogEntry:
        if self.kind is ModelKind.RERANKER and self.dimension is not None:
            raise ValueError("dimension is only meaningful for kind 'embedding'; remove it from this reranker")
        return self

    @model_validator(mode="after")
    def _role_fits_kind(self) -> CatalogEntry:
        if self.role.kind is not self.kind:
            fitting = " or ".join(repr(r.value) for r in Role if r.kind is self.kind)
            raise ValueError(
                f"role {self.role.value!r} is for {self.role.kind.value} models but this entry's kind is "
                f"{self.kind.value!r}: use role {fitting}"
            )
        return self

    @property
    def k8s_name(self) -> str:
        """DNS-1035 name for the InferenceService / Route (KServe rejects dots)."""
        return self.name.replace(".", "-")

    @property
    def title(self) -> str:
        return self.display_name or self.repo_id


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[CatalogEntry]
    source: str = Field("", exclude=True, description="where it was loaded from, for messages")

    @model_validator(mode="after")
    def _names_unique(self) -> Catalog:
        seen: set[str] = set()
        for entry in self.models:
            if entry.name in seen:
                raise ValueError(
                    f"duplicate model name {entry.name!r}: each name is a partition key and must be unique"
                )
            seen.add(entry.name)
        return self

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def get(self, name: str) -> CatalogEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise CatalogError(f"model {name!r} is not in the catalog {self.source}: known models are {self.names()}")


def _describe(error: ErrorDetails, raw: dict) -> str:
    loc = list(error["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        idx = loc[1]
        entries = raw.get("models") or []
        name = entries[idx].get("name") if idx < len(entries) and isinstance(entries[idx], dict) else None
        where = f"entry #{idx + 1}" + (f" ({name!r})" if name else "")
        loc = loc[2:]
    field = ".".join(str(p) for p in loc) or "(entry)"
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        msg = "unknown field: remove it or check its spelling"
    elif error["type"] == "missing":
        msg = "required field is missing: add it"
    elif isinstance(error.get("input"), (str, int, float, bool)) and "got" not in msg:
        msg = f"{msg} (got {error['input']!r})"
    return f"{where} field {field!r}: {msg}".strip()


def _duplicate_names(raw: dict) -> list[str]:
    """Duplicates found on the raw entries, so the message can point at both entries."""
    first: dict[str, int] = {}
    problems = []
    for idx, entry in enumerate(raw.get("models") or []):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            problems.append(
                f"entry #{idx + 1} ({name!r}) field 'name': duplicate model name, already used by entry "
                f"#{first[name] + 1}: each name is a partition key and must be unique; rename one"
            )
        else:
            first[name] = idx
    return problems


def parse_catalog(raw: object, source: str) -> Catalog:
    if not isinstance(raw, dict) or "models" not in raw:
        raise CatalogError(f"{source}: expected a mapping with a top-level 'models:' list")
    if not isinstance(raw["models"], list):
        raise CatalogError(f"{source}: 'models:' must be a list of entries (each starting with '- name: ...')")
    duplicates = _duplicate_names(raw)
    if duplicates:
        raise CatalogError(f"{source}: invalid model catalog:\n  - " + "\n  - ".join(duplicates))
    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  - ".join(_describe(e, raw) for e in exc.errors())
        raise CatalogError(f"{source}: invalid model catalog:\n  - {problems}") from None
    catalog.source = source
    return catalog


def load_catalog(path: Path | str) -> Catalog:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CatalogError(f"catalog file {path} does not exist: set POOLING_CATALOG to a models YAML file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    return parse_catalog(raw, str(path))
