"""Versioned runtimes: what `promote`, `rollback` and `release` compute, for both serving targets.

A vLLM release registers *version-named* Templates (`vllm-embedding-runtime-v0-33-0`, no dashboard label)
and its validation InferenceServices run on them. The *user-facing* Templates (`vllm-embedding-runtime`,
labelled for the dashboard) change only through `promote`, which copies a registered release's Template
verbatim (the spec that was validated, not a fresh render) under the user-facing name and records two
annotations on it:

- `pooling-pipeline/promoted-version`: the release users get;
- `pooling-pipeline/previous-version`: the release before it, which stays registered, so `rollback` can
  return to it.

The record lives on the Templates themselves (the cluster is the source of truth; the local target keeps
the same Templates under `<stack>/runtimes/`), so a person who edits them by hand, or another pipeline
instance, is seen by the next `promote`.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from pooling_pipeline.serving.manifests import (
    DASHBOARD_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RUNTIME_NAMES,
    SPEC_HASH_ANNOTATION,
    VLLM_VERSION_LABEL,
    display_name,
)
from pooling_pipeline.serving.target import Deployment, ReleaseAction, ReleaseRecord

PROMOTED_ANNOTATION = "pooling-pipeline/promoted-version"
PREVIOUS_ANNOTATION = "pooling-pipeline/previous-version"


class PromotionError(RuntimeError):
    """A promotion or rollback cannot happen; the message says what to do instead."""


def _annotation(template: dict[str, Any] | None, key: str) -> str | None:
    if template is None:
        return None
    value = ((template.get("metadata") or {}).get("annotations") or {}).get(key)
    return str(value) if value else None


def _agreed(templates: list[dict[str, Any] | None], key: str) -> str | None:
    values = {_annotation(t, key) for t in templates}
    if len(values) > 1:
        names = [(t or {}).get("metadata", {}).get("name", "?") for t in templates]
        raise PromotionError(
            f"the user-facing Templates {names} disagree on {key} ({sorted(v or 'none' for v in values)}): "
            "promote one release explicitly (`pooling-pipeline runtime promote VERSION`)"
        )
    return values.pop() if values else None


def promoted_of(templates: list[dict[str, Any] | None]) -> str | None:
    """The promoted release recorded on the user-facing Templates (None: never promoted)."""
    return _agreed(templates, PROMOTED_ANNOTATION)


def previous_of(templates: list[dict[str, Any] | None]) -> str | None:
    return _agreed(templates, PREVIOUS_ANNOTATION)


def _base_name(versioned_name: str) -> str:
    for base in RUNTIME_NAMES.values():
        if versioned_name.startswith(f"{base}-v"):
            return base
    raise PromotionError(f"{versioned_name!r} is not a version-named pooling runtime Template")


def user_facing_template(release_template: dict[str, Any], *, promoted: str, previous: str | None) -> dict[str, Any]:
    """The user-facing Template carrying a registered release's runtime unchanged: renamed, labelled for the
    dashboard, and annotated with the promotion record."""
    template = copy.deepcopy(release_template)
    base = _base_name(template["metadata"]["name"])
    kind = next(k for k, v in RUNTIME_NAMES.items() if v == base)
    meta = template["metadata"]
    meta["name"] = base
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != VLLM_VERSION_LABEL}
    meta["labels"] = {DASHBOARD_LABEL: "true", **labels, MANAGED_BY_LABEL: MANAGED_BY}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != SPEC_HASH_ANNOTATION}
    annotations["openshift.io/display-name"] = display_name(kind)
    annotations[PROMOTED_ANNOTATION] = promoted
    if previous:
        annotations[PREVIOUS_ANNOTATION] = previous
    else:
        annotations.pop(PREVIOUS_ANNOTATION, None)
    meta["annotations"] = annotations
    for obj in template.get("objects", []):
        obj["metadata"]["name"] = base
        obj_annotations = obj["metadata"].setdefault("annotations", {})
        obj_annotations["opendatahub.io/template-name"] = base
    return template


def release_record(
    deployment: Deployment, action: ReleaseAction, released_at: float, details: dict[str, Any] | None = None
) -> ReleaseRecord:
    """The record of one release: the GPU time is counted from when this run started (or found) the server."""
    held = None if deployment.held_since is None else max(0.0, released_at - deployment.held_since)
    return ReleaseRecord(
        model=deployment.model,
        target=deployment.target,
        action=action,
        released_at=released_at,
        held_s=None if held is None else round(held, 1),
        gpus=deployment.gpus,
        gpu_seconds=None if held is None else round(held * deployment.gpus, 1),
        details=details or {},
    )


def kept_record(deployment: Deployment, why: str) -> ReleaseRecord:
    """keep_deployed: nothing is released; the GPU time so far is still reported."""
    return release_record(deployment, ReleaseAction.KEPT, time.time(), {"why": why})
