"""Where the evaluation writes files that are not asset values: benchmark results and plots, and the
reference-model cache.

Configured in resources/config.py: the stack folder locally (beside the S3 data and the hub mirror, where
`make demo` users look), a temp dir (the pod's emptyDir) on a cluster, where the results that count go
to S3 anyway. The evaluation modules never ask the stack where its folder is.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field


class ScratchResource(dg.ConfigurableResource):
    root: str = Field(description="folder for benchmark results, plots and the reference cache")

    def benchmark_dir(self, model: str, started_at: str) -> Path:
        """One benchmark run's folder (created by the caller when it writes)."""
        return Path(self.root) / "benchmarks" / model / started_at

    def reference_cache_dir(self) -> Path:
        """sentence-transformers results per (model, commit, inputs): a revision's reference never changes."""
        return Path(self.root) / "reference-cache"
