"""The reference model's files, from the model's S3 copy: the bytes vLLM serves, checked against the
manifest, so quality_report needs nothing local (on a cluster every step runs in its own pod).

Downloaded once per (model, commit sha) into a scratch folder; `download_model` verifies every sha256 and
returns at once when the folder already holds that exact manifest.
"""

from __future__ import annotations

from pathlib import Path

from pooling_pipeline.ingest.s3_transfer import DownloadResult, S3ModelLocation, download_model


def reference_dir(scratch_root: Path, model: str, commit_sha: str) -> Path:
    return Path(scratch_root) / "reference-models" / model / commit_sha


def fetch_reference_model(client, location: S3ModelLocation, model: str, scratch_root: Path) -> DownloadResult:
    """The model revision at `location`, verified, in `reference_dir(scratch_root, model, sha)`."""
    return download_model(client, location, reference_dir(scratch_root, model, location.commit_sha))
