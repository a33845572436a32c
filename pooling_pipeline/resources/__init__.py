"""Dagster resources: how the pipeline reaches S3, the Hub, and the serving target."""
