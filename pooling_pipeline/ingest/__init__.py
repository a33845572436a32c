"""Ingest: see definitions.py for what this domain contributes to the code location."""
