"""Resources: the lake store and the GitHub client, configured from the environment."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from issue_assets import config
from issue_assets.github.client import GitHubClient
from issue_assets.ingest import sources
from issue_assets.lake.store import ObjectStore, open_store
from issue_assets.registry import ModelRegistry


class LakeResource(dg.ConfigurableResource):
    """Where tables live: a local folder (default ISSUE_ASSETS_HOME/lake) or `s3://bucket/prefix`."""

    uri: str = Field(default_factory=config.lake_uri, description="Folder or s3://bucket/prefix")
    s3: S3Resource = Field(default_factory=lambda: _s3_resource())

    def store(self) -> ObjectStore:
        return open_store(self.uri, _s3_client(self.s3) if self.uri.startswith("s3://") else None)


class GitHubResource(dg.ConfigurableResource):
    """GitHub REST access, one repository at a time, at the API the repository is bound to (its source).

    The token (GITHUB_TOKEN through EnvVar) is sent only to GITHUB_API_URL's origin; a source bound to
    another API gets the token its binding names, or none. Never shown, never stored."""

    token: str | None = Field(default=None, description="Bearer token for GITHUB_API_URL (set through EnvVar)")
    api_url: str | None = Field(default=None, description="Fetch every repository from this API instead of "
                                                          "its binding (tests, one-off runs)")
    cache_dir: str = Field(default_factory=lambda: str(config.http_cache_dir()),
                           description="Persisted ETag / Last-Modified validators, a file per repository")

    def source(self, repo: str, store: ObjectStore) -> sources.Source:
        """The repository's bound source. An unbound repository is an error, never a silent fall-back to
        GITHUB_API_URL (a simulated repository must not be looked up on github.com)."""
        if self.api_url:
            return sources.Source(repo, sources.check_api_url(self.api_url), bound=False)
        source = sources.source_of(repo, store)
        if not source.bound:
            raise sources.SourceError(
                f"{repo} is not bound to an API in {store.uri}/{sources.SOURCES_KEY}: run `issue-assets repos add "
                f"{repo} [--api-url URL]` (the repositories sensor binds partitions added in the UI)")
        return source

    def client(self, repo: str, store: ObjectStore, *, save_validators: bool = True, **options) -> GitHubClient:
        """save_validators=False reads the persisted validators but never writes any back: a poll that does
        not ingest what it fetches must not make the ingest's next request of that page answer 304.
        `options` go to GitHubClient (max_retries, timeout, on_event, ...)."""
        Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
        return sources.client_for(repo, source=self.source(repo, store), token=self.token, cache_dir=self.cache_dir,
                                  save_validators=save_validators, **options)


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
