"""Model catalog: which models migrate, and what we expect of them."""

from __future__ import annotations

import os
from pathlib import Path

from pooling_pipeline.catalog.schema import (
    Catalog,
    CatalogEntry,
    CatalogError,
    Incumbent,
    ModelKind,
    QualityThresholds,
    load_catalog,
    parse_catalog,
)

CATALOG_DIR = Path(__file__).parent
LOCAL_CATALOG = CATALOG_DIR / "models.local.yaml"
CLUSTER_CATALOG = CATALOG_DIR / "models.yaml"


def catalog_path() -> Path:
    """Which catalog is in force: POOLING_CATALOG, else the one that matches the target (the migration's
    models on a cluster, the embedded local stack's small catalog locally)."""
    explicit = os.environ.get("POOLING_CATALOG")
    if explicit:
        return Path(explicit)
    on_cluster = os.environ.get("POOLING_TARGET", "local").strip().lower() == "cluster"
    return CLUSTER_CATALOG if on_cluster else LOCAL_CATALOG


def active_catalog() -> Catalog:
    return load_catalog(catalog_path())


__all__ = [
    "CLUSTER_CATALOG",
    "LOCAL_CATALOG",
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "Incumbent",
    "ModelKind",
    "QualityThresholds",
    "active_catalog",
    "catalog_path",
    "load_catalog",
    "parse_catalog",
]
