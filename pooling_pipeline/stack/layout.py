"""Where the embedded local stack keeps its things. One folder (POOLING_STACK_DIR, default `.stack/`).

Data (S3 objects, the hub mirror, runtime virtualenvs) survives `stack down`; only processes stop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_stack_dir() -> Path:
    env = os.environ.get("POOLING_STACK_DIR")
    if env:
        return Path(env).resolve()
    # An editable/source checkout keeps the stack beside the code; an installed package uses the cwd.
    base = PROJECT_ROOT if (PROJECT_ROOT / "pyproject.toml").exists() else Path.cwd()
    return base / ".stack"


@dataclass(frozen=True)
class StackLayout:
    root: Path

    @classmethod
    def default(cls) -> StackLayout:
        return cls(default_stack_dir())

    @property
    def state_file(self) -> Path:  # ports and generated credentials (mode 0600)
        return self.root / "state.json"

    @property
    def run_dir(self) -> Path:  # PID files
        return self.root / "run"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def s3_data(self) -> Path:
        return self.root / "seaweedfs"

    @property
    def hub_root(self) -> Path:  # olah config, mirrors and its own cache
        return self.root / "hub"

    @property
    def hub_mirrors(self) -> Path:
        return self.hub_root / "mirrors"

    @property
    def hf_cache(self) -> Path:  # where hf_snapshot downloads to (HF_HUB_CACHE)
        return self.root / "hf-cache"

    @property
    def venvs(self) -> Path:
        """One virtualenv per runtime version: the local "image tag".

        POOLING_VENVS_DIR shares them between stack folders (a developer's `.stack/`, the tests'
        `.stack-test/`, CI's `.stack-ci/`): each env is several GB and takes minutes to build, and its
        marker file (stack/venvs.py) already keys it by its exact pip steps, so sharing is safe.
        """
        shared = os.environ.get("POOLING_VENVS_DIR", "").strip()
        return Path(shared).resolve() if shared else self.root / "venvs"

    @property
    def model_store(self) -> Path:  # storage-initializer output: the local /mnt/models
        return self.root / "models"

    @property
    def deployments(self) -> Path:  # one folder per deployed model: pid, log, rendered spec
        return self.root / "deployments"

    def ensure(self) -> None:
        for d in (
            self.run_dir,
            self.logs_dir,
            self.s3_data,
            self.hub_mirrors,
            self.hf_cache,
            self.venvs,
            self.model_store,
            self.deployments,
        ):
            d.mkdir(parents=True, exist_ok=True)
