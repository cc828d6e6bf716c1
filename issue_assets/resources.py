"""Resources: the lake store and the GitHub client, configured from the environment."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from issue_assets import config
from issue_assets.github.client import GitHubClient
from issue_assets.github.conditional_cache import ConditionalCache
from issue_assets.lake.store import ObjectStore, open_store


class LakeResource(dg.ConfigurableResource):
    """Where tables live: a local folder (default ISSUE_ASSETS_HOME/lake) or `s3://bucket/prefix`."""

    uri: str = Field(default_factory=config.lake_uri, description="Folder or s3://bucket/prefix")
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (moto, MinIO)")

    def store(self) -> ObjectStore:
        if self.uri.startswith("s3://"):
            import boto3

            return open_store(self.uri, boto3.client("s3", endpoint_url=self.s3_endpoint_url or None))
        return open_store(self.uri)


class GitHubResource(dg.ConfigurableResource):
    """GitHub REST access. The token comes from GITHUB_TOKEN through EnvVar and is never shown."""

    api_url: str = Field(default_factory=config.api_url, description="GitHub, GHE (/api/v3) or replay server")
    token: str | None = Field(default=None, description="Bearer token (set through EnvVar)")
    cache_path: str = Field(default_factory=lambda: str(config.home() / "http_cache.json"),
                            description="Persisted ETag / Last-Modified cache")

    def client(self) -> GitHubClient:
        Path(self.cache_path).parent.mkdir(parents=True, exist_ok=True)
        return GitHubClient(self.api_url, self.token or None, cache=ConditionalCache(self.cache_path))
