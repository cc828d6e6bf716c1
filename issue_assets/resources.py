"""Resources: the lake store and the GitHub client, configured from the environment."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from issue_assets import config
from issue_assets.github.client import GitHubClient
from issue_assets.github.conditional_cache import ConditionalCache
from issue_assets.lake.store import ObjectStore, open_store
from issue_assets.registry import ModelRegistry


class LakeResource(dg.ConfigurableResource):
    """Where tables live: a local folder (default ISSUE_ASSETS_HOME/lake) or `s3://bucket/prefix`."""

    uri: str = Field(default_factory=config.lake_uri, description="Folder or s3://bucket/prefix")
    s3: S3Resource = Field(default_factory=lambda: _s3_resource())

    def store(self) -> ObjectStore:
        return open_store(self.uri, _s3_client(self.s3) if self.uri.startswith("s3://") else None)


class GitHubResource(dg.ConfigurableResource):
    """GitHub REST access. The token comes from GITHUB_TOKEN through EnvVar and is never shown."""

    api_url: str = Field(default_factory=config.api_url, description="GitHub, GHE (/api/v3) or replay server")
    token: str | None = Field(default=None, description="Bearer token (set through EnvVar)")
    cache_path: str = Field(default_factory=lambda: str(config.home() / "http_cache.json"),
                            description="Persisted ETag / Last-Modified cache")

    def client(self, *, save_validators: bool = True, **options) -> GitHubClient:
        """save_validators=False reads the persisted validators but never writes any back: a poll that does
        not ingest what it fetches must not make the ingest's next request of that page answer 304.
        `options` go to GitHubClient (max_retries, timeout, ...)."""
        Path(self.cache_path).parent.mkdir(parents=True, exist_ok=True)
        cache = ConditionalCache(self.cache_path, read_only=not save_validators)
        return GitHubClient(self.api_url, self.token or None, cache=cache, **options)


def _s3_client(s3: S3Resource):
    """The resource's client inside a run; outside one (the CLI, the HTTP service) its EnvVar fields are
    not resolved, and None lets `open_store` use boto3's default chain, which reads the same variables."""
    if any(isinstance(value, dg.EnvVar) for value in (s3.aws_access_key_id, s3.aws_secret_access_key,
                                                      s3.aws_session_token)):
        return None
    return s3.get_client()


def _s3_resource() -> S3Resource:
    """Credentials from the default AWS chain, or AWS_* through EnvVar (never written into run config)."""
    kwargs = {"endpoint_url": config.aws_endpoint_url(), "region_name": config.aws_region()}
    if config.aws_keys_given():
        kwargs["aws_access_key_id"] = dg.EnvVar("AWS_ACCESS_KEY_ID")
        kwargs["aws_secret_access_key"] = dg.EnvVar("AWS_SECRET_ACCESS_KEY")
    return S3Resource(**{k: v for k, v in kwargs.items() if v is not None})


class ModelStoreResource(dg.ConfigurableResource):
    """The model registry: ISSUE_ASSETS_HOME/registry by default, `s3://bucket/prefix` through S3Resource."""

    uri: str = Field(default_factory=config.model_store_uri, description="Folder or s3://bucket/prefix")
    s3: S3Resource = Field(default_factory=_s3_resource)

    def registry(self) -> ModelRegistry:
        return ModelRegistry(open_store(self.uri, _s3_client(self.s3) if self.uri.startswith("s3://") else None))
