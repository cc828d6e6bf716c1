"""Where each table lives in the store. Keys only; every reader and writer goes through these."""

from __future__ import annotations

import re

REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
KINDS = ("issues", "comments")


def check_repo(repo: str) -> str:
    if not isinstance(repo, str) or not REPO_RE.match(repo) or repo.split("/")[1] in (".", ".."):
        raise ValueError(f"repository must look like OWNER/NAME, got {repo!r}")
    return repo


def repo_slug(repo: str) -> str:
    owner, name = check_repo(repo).split("/")
    return f"{owner}__{name}"


def raw_month_key(kind: str, repo: str, month: str) -> str:
    return f"raw/{kind}/{repo_slug(repo)}/{month}.parquet"


def raw_manifest_key(kind: str, repo: str) -> str:
    return f"raw/{kind}/{repo_slug(repo)}/_manifest.json"


def rejects_key(repo: str, kind: str, window: str) -> str:
    return f"rejects/{repo_slug(repo)}/{kind}/{window}.parquet"


def current_key(kind: str, repo: str) -> str:
    return f"current/{kind}/{repo_slug(repo)}.parquet"


def merge_state_key(kind: str, repo: str) -> str:
    return f"current/{kind}/{repo_slug(repo)}.state.json"


def sync_state_key(repo: str) -> str:
    return f"state/{repo_slug(repo)}/sync.json"


def features_key(repo: str) -> str:
    return f"features/{repo_slug(repo)}.parquet"


def features_inputs_key(repo: str, kind: str) -> str:
    return f"features/{repo_slug(repo)}.inputs.{kind}.parquet"


def training_set_key(as_of: str) -> str:
    return f"training/{as_of}.parquet"


def training_info_key(as_of: str) -> str:
    return f"training/{as_of}.json"


def tuning_key(as_of: str) -> str:
    return f"tuning/{as_of}.json"


def candidate_key(as_of: str) -> str:
    return f"candidates/{as_of}.json"


LATEST_CANDIDATE_KEY = "candidates/latest.json"
