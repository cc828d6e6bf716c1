"""Where the derived tables live in the lake: features, training sets, tuning, candidates, predictions.

Keys only; every reader and writer goes through these (the raw log, current state and sync state keys are
the ingestion's, in `issue_assets.ingest.layout`).
"""

from __future__ import annotations

import re

OWNER_MAX, NAME_MAX = 39, 100  # GitHub's limits; longer names made keys no file system accepts
#: the rule as a regular expression (the service's schema shows it); check_repo also refuses "." and ".."
REPOSITORY_PATTERN = rf"^[A-Za-z0-9_.-]{{1,{OWNER_MAX}}}/[A-Za-z0-9_.-]{{1,{NAME_MAX}}}$"
_REPOSITORY = re.compile(REPOSITORY_PATTERN)


def check_repo(repo: str) -> str:
    """`repo` if it is OWNER/NAME (letters, digits, '_', '.', '-'; the owner up to 39 characters, the name up
    to 100; neither part "." or ".."), else ValueError naming it. The one rule for a repository name: keys,
    the CLI, sources, the GitHub client and the service use it."""
    if not isinstance(repo, str) or not _REPOSITORY.fullmatch(repo) or any(p in (".", "..") for p in repo.split("/")):
        shown = repo if not isinstance(repo, str) or len(repo) <= 160 else repo[:157] + "..."
        raise ValueError(f"repository must look like OWNER/NAME, got {shown!r} (letters, digits, '_', '.', '-'; "
                         f"the owner up to {OWNER_MAX} characters, the name up to {NAME_MAX})")
    return repo


def repo_slug(repo: str) -> str:
    owner, name = check_repo(repo).split("/")
    return f"{owner}__{name}"


def features_key(repo: str) -> str:
    return f"features/{repo_slug(repo)}.parquet"


def features_inputs_key(repo: str, kind: str, unique: str | None = None) -> str:
    """An input snapshot part (`unique` given) or, without it, the snapshot file of an older lake."""
    tail = f".{unique}" if unique else ""
    return f"features/{repo_slug(repo)}.inputs.{kind}{tail}.parquet"


def feature_snapshot_key(repo: str) -> str:
    """The event store the prediction service loads (`features.store.EventStore.to_bytes`)."""
    return f"features/{repo_slug(repo)}.snapshot.npz"


def training_set_key(as_of: str) -> str:
    return f"training/{as_of}.parquet"


def training_info_key(as_of: str) -> str:
    return f"training/{as_of}.json"


def tuning_key(as_of: str) -> str:
    return f"tuning/{as_of}.json"


def tuning_history_key(as_of: str) -> str:
    """The Optuna history plot of the as-of study (also stored with the version it produced)."""
    return f"tuning/{as_of}.history.png"


def candidate_key(as_of: str) -> str:
    return f"candidates/{as_of}.json"


LATEST_CANDIDATE_KEY = "candidates/latest.json"


def prediction_keys(repo: str, stamp: str) -> dict[str, str]:
    """A prediction batch (`stamp` = its scoring time as YYYYMMDDTHHMMSSZ) and the `latest` copies."""
    slug = repo_slug(repo)
    return {
        "parquet": f"predictions/{slug}/{stamp}.parquet",
        "csv": f"predict_outputs/{slug}/{stamp}.csv",
        "parquet_latest": f"predictions/{slug}/latest.parquet",
        "csv_latest": f"predict_outputs/{slug}/latest.csv",
    }


def served_prefix(repo: str) -> str:
    """The served-prediction log: one immutable part per write, `<prefix><YYYY-MM-DD>/<stamp>-<source>-<id>.parquet`."""
    return f"served/{repo_slug(repo)}/"


def outcomes_summary_key(repo: str) -> str:
    """prediction_outcomes' summary (live quality, drift) that the retraining sensor and `status` read."""
    return f"outcomes/{repo_slug(repo)}/summary.json"


def outcomes_joined_key(repo: str) -> str:
    """Every served prediction with a known outcome, joined to it."""
    return f"outcomes/{repo_slug(repo)}/joined.parquet"
