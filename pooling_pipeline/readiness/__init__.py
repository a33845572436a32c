"""Readiness: the migration's decision matrix as code (verdicts per model and across the catalog)."""
