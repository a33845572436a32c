"""S3 (or any S3-compatible store: SeaweedFS locally, ODF/MinIO/AWS on a cluster) as a Dagster resource.

Credentials come from the environment through `dg.EnvVar` in resources/config.py, so they are resolved at
run time and never stored in run config; nothing here logs them.
"""

from __future__ import annotations

import boto3
import dagster as dg
from botocore.config import Config
from pydantic import Field


def s3_client_config(max_pool_connections: int = 32, max_attempts: int = 5) -> Config:
    """Client settings shared by the resource, the benchmark and the storage initializer."""
    return Config(
        # SeaweedFS (and most on-prem S3) serve buckets by path, not by virtual host name.
        s3={"addressing_style": "path"},
        # "standard" retries throttling and 5xx with backoff; 5 attempts rides over a store restart.
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        # At least the transfer concurrency, or threads queue for a connection.
        max_pool_connections=max_pool_connections,
        # We compute and verify sha256 ourselves (object metadata + manifest); the extra CRC32 per request
        # only costs CPU on a small machine and some S3-compatible stores reject it.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def make_s3_client(
    endpoint_url: str | None,
    access_key_id: str,
    secret_access_key: str,
    region: str = "us-east-1",
    max_pool_connections: int = 32,
    max_attempts: int = 5,
):
    """A boto3 S3 client; a fresh session each time so threads and processes never share one."""
    session = boto3.session.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region,
    )
    return session.client(
        "s3", endpoint_url=endpoint_url or None, config=s3_client_config(max_pool_connections, max_attempts)
    )


class S3Resource(dg.ConfigurableResource):
    """Where model snapshots are stored: `s3://<bucket>/<prefix>/<model>/<commit sha>/`."""

    endpoint_url: str | None = Field(None, description="S3 endpoint (AWS_ENDPOINT_URL); None means AWS itself")
    access_key_id: str = Field(description="AWS_ACCESS_KEY_ID")
    secret_access_key: str = Field(description="AWS_SECRET_ACCESS_KEY (never logged)")
    region: str = Field("us-east-1", description="AWS_DEFAULT_REGION")
    bucket: str = Field(description="POOLING_S3_BUCKET")
    prefix: str = Field("models", description="POOLING_S3_PREFIX: key prefix under the bucket")

    def client(self):
        return make_s3_client(self.endpoint_url, self.access_key_id, self.secret_access_key, self.region)

    def model_prefix(self, name: str, commit_sha: str) -> str:
        """Key prefix of one model revision, ending in '/'."""
        parts = [p for p in (self.prefix.strip("/"), name, commit_sha) if p]
        return "/".join(parts) + "/"
