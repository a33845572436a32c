"""Validate rendered KServe objects against the real CRD schemas (`openAPIV3Schema`), offline.

The API server prunes unknown fields of a structural schema silently, so a typo in a manifest
(`readinesProbe`) would simply vanish on the cluster. Here unknown fields are errors instead: every
object schema with `properties` and without `x-kubernetes-preserve-unknown-fields` gets
`additionalProperties: false` (what `kubectl apply --validate=strict` reports).

The CRDs are read from `../shared/reference/kserve-crds/` (or POOLING_KSERVE_CRDS). Production images
do not ship that folder: there `validate_manifest` returns without checking (`crds_available()` says so),
while the tests require it.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

_DEFAULT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "kserve-crds"


class ManifestValidationError(ValueError):
    """A rendered manifest does not match its CRD schema; the message lists each offending path."""


def crd_dir() -> Path:
    return Path(os.environ.get("POOLING_KSERVE_CRDS") or _DEFAULT_DIR)


def crds_available(directory: Path | None = None) -> bool:
    return (directory or crd_dir()).is_dir()


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


@functools.cache
def load_crd_schemas(directory: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON schema, for every served version of every CRD in `directory`."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(Path(directory).glob("*.y*ml")):
        # The CRDs are ~1 MB of YAML: the libyaml loader reads them in a fraction of the pure-Python time.
        for doc in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                raw = version.get("schema", {}).get("openAPIV3Schema")
                if raw:
                    schema = _strict(copy.deepcopy(raw))
                    # `metadata` is ObjectMeta, validated by the API server itself, not by the CRD.
                    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def validate_manifest(obj: dict[str, Any], directory: Path | None = None, *, required: bool = False) -> bool:
    """Raise ManifestValidationError if `obj` breaks its CRD schema.

    Returns True when validated, False when skipped (no CRDs here and `required` is False, or a kind that
    no CRD in the folder defines, such as Secret or Route). A Template is validated through its objects.
    """
    directory = directory or crd_dir()
    if not directory.is_dir():
        if required:
            raise FileNotFoundError(f"{directory} is missing: set POOLING_KSERVE_CRDS to the kserve-crds folder")
        return False
    if obj.get("kind") == "Template":
        results = [validate_manifest(o, directory, required=required) for o in obj.get("objects", [])]
        return any(results)
    schema = load_crd_schemas(str(directory)).get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if schema is None:
        return False
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        name = obj.get("metadata", {}).get("name", "?")
        lines = [f"  {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors[:20]]
        raise ManifestValidationError(
            f"{obj.get('kind')} {name} does not match the {obj.get('apiVersion')} CRD schema "
            f"({len(errors)} error(s)); fix the renderer in pooling_pipeline/serving/manifests.py:\n" + "\n".join(lines)
        )
    return True
