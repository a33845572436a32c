"""Validate rendered KServe objects against the CRD schemas (`openAPIV3Schema`), never silently skipped.

The API server prunes unknown fields of a structural schema silently, so a typo in a manifest
(`readinesProbe`) would simply vanish on the cluster. Here unknown fields are errors instead: every
object schema with `properties` and without `x-kubernetes-preserve-unknown-fields` gets
`additionalProperties: false` (what `kubectl apply --validate=strict` reports).

Where the schemas come from (`CrdSource`), first match wins:

1. `POOLING_KSERVE_CRDS`: a folder of CRD YAML files, when an operator points at one;
2. the cluster's own CRDs, read through the apiextensions API (`cluster_crd_source`; the serving target
   offers it on a cluster, so the manifests are checked against the KServe actually installed);
3. the CRDs packaged with this code (`kserve_crds/`, kserve/kserve `config/crd/full`, Apache-2.0, see
   its ORIGIN.md): what a laptop, CI and a fresh clone have.

A kind no source defines (Secret, Route) is not validated, and `validate_manifest` says so in its result:
the serving assets put "not validated: <why>" in their metadata instead of skipping quietly.
"""

from __future__ import annotations

import copy
import functools
import gzip
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

PACKAGED_DIR = Path(__file__).resolve().parent / "kserve_crds"
# The CRD YAML is ~2 MB: the libyaml loader reads it in a fraction of the pure-Python time.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestValidationError(ValueError):
    """A rendered manifest does not match its CRD schema; the message lists each offending path."""


@dataclass(frozen=True)
class CrdSource:
    """(apiVersion, kind) -> strict JSON schema, and where they came from (shown in metadata)."""

    schemas: dict[tuple[str, str], dict[str, Any]]
    origin: str


@dataclass(frozen=True)
class ValidationResult:
    validated: bool
    origin: str  # the CRD source used
    why_not: str | None = None  # set when not validated

    def describe(self) -> str:
        return f"validated against {self.origin}" if self.validated else f"not validated: {self.why_not}"


def _strict(schema: Any) -> Any:
    """Translate the Kubernetes extensions into plain JSON Schema, recursively."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        out.pop("type", None)
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
    elif out.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def schemas_from_crds(crds: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict schema for every served version of every CRD document."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in crds:
        if not doc or doc.get("kind", "CustomResourceDefinition") != "CustomResourceDefinition":
            continue
        group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
        for version in doc["spec"]["versions"]:
            if version.get("served") is False:
                continue
            raw = (version.get("schema") or {}).get("openAPIV3Schema")
            if raw:
                schema = _strict(copy.deepcopy(raw))
                # `metadata` is ObjectMeta, validated by the API server itself, not by the CRD.
                schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _read_docs(path: Path) -> list[dict[str, Any]]:
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    return [d for d in yaml.load_all(text, Loader=_LOADER) if d]


@functools.cache
def load_crd_schemas(directory: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every CRD in `directory` (`*.yaml`, `*.yml`, `*.yaml.gz`)."""
    paths = sorted(p for p in Path(directory).iterdir() if p.name.endswith((".yaml", ".yml", ".yaml.gz")))
    return schemas_from_crds(doc for path in paths for doc in _read_docs(path))


def folder_source(directory: Path) -> CrdSource:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is missing: point POOLING_KSERVE_CRDS at a folder of KServe CRD files")
    return CrdSource(load_crd_schemas(str(directory)), f"the CRDs in {directory}")


def packaged_source() -> CrdSource:
    return CrdSource(
        load_crd_schemas(str(PACKAGED_DIR)), "the packaged KServe CRDs (kserve/kserve config/crd/full @ aaac4e294dae)"
    )


def default_source() -> CrdSource:
    """POOLING_KSERVE_CRDS when set, else the packaged CRDs (the cluster's own come from the serving target)."""
    from pooling_pipeline.resources.config import load_settings

    folder = load_settings().kserve_crds
    return folder_source(folder) if folder else packaged_source()


def validate_manifest(obj: dict[str, Any], source: CrdSource | Path | None = None) -> ValidationResult:
    """Raise ManifestValidationError if `obj` breaks its CRD schema; otherwise say whether it was checked.

    A Template is validated through its objects. A kind that no CRD of the source defines (Secret, Route)
    comes back as not validated, with the reason.
    """
    if isinstance(source, Path):
        source = folder_source(source)
    source = source or default_source()
    if obj.get("kind") == "Template":
        results = [validate_manifest(o, source) for o in obj.get("objects", [])]
        unchecked = [r for r in results if not r.validated]
        if not results:
            return ValidationResult(False, source.origin, "the Template has no objects")
        return unchecked[0] if unchecked else results[0]
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    schema = source.schemas.get(key)
    if schema is None:
        return ValidationResult(False, source.origin, f"{source.origin} define no {key[1]} ({key[0]})")
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        name = obj.get("metadata", {}).get("name", "?")
        lines = [f"  {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors[:20]]
        raise ManifestValidationError(
            f"{obj.get('kind')} {name} does not match the {obj.get('apiVersion')} CRD schema of {source.origin} "
            f"({len(errors)} error(s)); fix the renderer in pooling_pipeline/serving/manifests.py:\n" + "\n".join(lines)
        )
    return ValidationResult(True, source.origin)
