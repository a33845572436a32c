"""What differs between OpenShift AI (RHOAI) releases, as far as this pipeline's manifests are concerned.

Each function answers one question for a RHOAI version (`POOLING_RHOAI_VERSION`, e.g. `2.25` or `3.0`;
unset: unknown, which picks the shape that works on every version checked). The evidence for every
boundary is in k8s/README.md ("Supported OpenShift AI versions"); the short form is next to each rule.
Open Data Hub users set the RHOAI version whose behaviour their ODH release matches (the README's table
gives both columns).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import NamedTuple

RHOAI_VERSION_SETTING = "POOLING_RHOAI_VERSION"
_VERSION_RE = re.compile(r"^(?:rhoai-|v)?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?$")


class PlatformVersionError(ValueError):
    """POOLING_RHOAI_VERSION cannot be read; the message says what to write."""


class PlatformVersion(NamedTuple):
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


def parse_rhoai_version(text: str | None) -> PlatformVersion | None:
    """`2.25`, `3.0`, `v3.2.1`, `rhoai-2.25` -> (major, minor); None or "" -> None (unknown)."""
    if text is None or not text.strip():
        return None
    match = _VERSION_RE.match(text.strip())
    if not match:
        raise PlatformVersionError(
            f"{RHOAI_VERSION_SETTING}={text!r} is not an OpenShift AI version: write it as MAJOR.MINOR, e.g. 2.25 "
            f"or 3.0 (`oc get dscinitialization -o jsonpath='{{.items[0].status.release.version}}'`), or unset it"
        )
    return PlatformVersion(int(match.group(1)), int(match.group(2)))


class StorageShape(StrEnum):
    """How an InferenceService names its model in S3 (see render_storage in manifests.py)."""

    # `storage: {key: <data connection>, path: <bucket-relative prefix>}`, no storageUri, plus the connection
    # annotations kept equal to it. The 2.x dashboard's own shape (odh-dashboard inferenceServices.ts @ v2.35.0);
    # KServe resolves the key through the `storage-config` Secret odh-model-controller aggregates from labelled
    # data connections. On >= 3.0 the connection webhook finds `storage.path` already set and keeps it.
    STORAGE_KEY_PATH = "storage-key-path"
    # Only `opendatahub.io/connections` + `opendatahub.io/connection-path`: the 3.x dashboard's shape
    # (odh-dashboard deployUtils.ts applyConnectionData @ v3.0.0); the operator's webhook injects key, path
    # and the `<secret>-sa` ServiceAccount (opendatahub-operator mutating_isvc.go @ v3.0.0, rhoai-3.0).
    CONNECTION_ANNOTATIONS = "connection-annotations"


def storage_shape(version: PlatformVersion | None) -> StorageShape:
    """>= 3.0: what the 3.x dashboard renders; older or unknown: `storage.key/path` (works on all of them).

    Never `storageUri` next to the connection annotations: on >= 3.0 the webhook adds `storage.path` and
    KServe refuses the pair ("must provide only one of storageUri and storage.path", kserve #1899).
    """
    if version is not None and version >= (3, 0):
        return StorageShape.CONNECTION_ANNOTATIONS
    return StorageShape.STORAGE_KEY_PATH


class AuthSwitch(StrEnum):
    """Where `security.opendatahub.io/enable-auth: "true"` goes on a RawDeployment InferenceService."""

    LABEL = "label"  # RHOAI 2.17-2.18 (ODH 2.23-2.25): kserve deployment_reconciler reads Labels[...]
    ANNOTATION = "annotation"  # RHOAI >= 2.19 (ODH >= 2.26, opendatahub-io/kserve #519): Annotations[...]
    BOTH = "both"  # version unknown: the label is ignored where the annotation is read, and vice versa


def auth_switch(version: PlatformVersion | None) -> AuthSwitch:
    if version is None:
        return AuthSwitch.BOTH
    if version < (2, 17):
        raise PlatformVersionError(
            f"OpenShift AI {version} has no token authentication for RawDeployment InferenceServices (it arrived "
            f"in 2.17): unset POOLING_ENDPOINT_AUTH or upgrade"
        )
    return AuthSwitch.LABEL if version < (2, 19) else AuthSwitch.ANNOTATION


def auth_proxy(version: PlatformVersion | None) -> str:
    """The sidecar that checks the token on port 8443: oauth-proxy up to 2.25, kube-rbac-proxy from 3.0."""
    if version is None:
        return "oauth-proxy (< 3.0) or kube-rbac-proxy (>= 3.0)"
    return "kube-rbac-proxy" if version >= (3, 0) else "oauth-proxy"


def supports_stop(version: PlatformVersion | None) -> bool:
    """The `serving.kserve.io/stop` annotation (the dashboard's "Stop") exists from RHOAI 2.22."""
    return version is not None and version >= (2, 22)


def rolls_pods_on_runtime_change(version: PlatformVersion | None) -> bool:
    """KServe restarts predictors when only their ServingRuntime changes from RHOAI/ODH 3.2 (kserve #4342, ODH #977)."""
    return version is not None and version >= (3, 2)
