"""Model catalog: which models migrate, and what we expect of them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pooling_pipeline.catalog.schema import (
    Catalog,
    CatalogEntry,
    CatalogError,
    Incumbent,
    ModelKind,
    QualityThresholds,
    Role,
    load_catalog,
    parse_catalog,
)

if TYPE_CHECKING:  # the catalog is the bottom layer: settings are imported where they are read
    from pooling_pipeline.resources.config import Settings

CATALOG_DIR = Path(__file__).parent
LOCAL_CATALOG = CATALOG_DIR / "models.local.yaml"
CLUSTER_CATALOG = CATALOG_DIR / "models.yaml"


def catalog_path(settings: Settings | None = None) -> Path:
    """Which catalog is in force: POOLING_CATALOG, else the one that matches the target (the migration's
    models on a cluster, the embedded local stack's small catalog locally)."""
    from pooling_pipeline.resources.config import load_settings

    settings = settings or load_settings()
    if settings.catalog is not None:
        return settings.catalog
    return CLUSTER_CATALOG if settings.target == "cluster" else LOCAL_CATALOG


def active_catalog(settings: Settings | None = None) -> Catalog:
    return load_catalog(catalog_path(settings))


__all__ = [
    "CLUSTER_CATALOG",
    "LOCAL_CATALOG",
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "Incumbent",
    "ModelKind",
    "QualityThresholds",
    "Role",
    "active_catalog",
    "catalog_path",
    "load_catalog",
    "parse_catalog",
]
