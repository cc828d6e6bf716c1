"""Configuration from the environment, with embedded defaults that need no service."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_START_DATE = "2024-01-01"


def home() -> Path:
    """ISSUE_ASSETS_HOME: the lake, registry, Optuna storage and ETag cache (default ./data)."""
    return Path(os.environ.get("ISSUE_ASSETS_HOME") or "data").expanduser().resolve()


def lake_uri() -> str:
    """LAKE_STORE (s3://bucket/prefix) or the lake folder under ISSUE_ASSETS_HOME."""
    return os.environ.get("LAKE_STORE") or str(home() / "lake")


def api_url() -> str:
    return os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL


def repos() -> list[str]:
    """ISSUE_ASSETS_REPOS: comma- or space-separated OWNER/NAME list."""
    raw = os.environ.get("ISSUE_ASSETS_REPOS", "")
    return [r for r in raw.replace(",", " ").split() if r]


def start_date() -> str:
    """ISSUE_ASSETS_START_DATE: the first daily partition; it also holds all history before it."""
    return os.environ.get("ISSUE_ASSETS_START_DATE") or DEFAULT_START_DATE
