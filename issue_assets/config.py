"""Configuration from the environment, with embedded defaults that need no service."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_START_DATE = "2024-01-01"


def home(env: Mapping[str, str] | None = None) -> Path:
    """ISSUE_ASSETS_HOME: the lake, registry, Optuna storage and ETag cache (default ./data)."""
    env = os.environ if env is None else env
    return Path(env.get("ISSUE_ASSETS_HOME") or "data").expanduser().resolve()


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
    """ISSUE_ASSETS_START_DATE: the first as-of day (training cutoffs) the as-of partitions offer."""
    return os.environ.get("ISSUE_ASSETS_START_DATE") or DEFAULT_START_DATE


def model_store_uri(env: Mapping[str, str] | None = None) -> str:
    """MODEL_STORE (s3://bucket/prefix) or the registry folder under ISSUE_ASSETS_HOME."""
    env = os.environ if env is None else env
    return env.get("MODEL_STORE") or str(home(env) / "registry")


def optuna_storage() -> str:
    """OPTUNA_STORAGE (any SQLAlchemy URL, e.g. PostgreSQL) or SQLite under ISSUE_ASSETS_HOME."""
    return os.environ.get("OPTUNA_STORAGE") or f"sqlite:///{home() / 'optuna.db'}"


def alert_auc_threshold() -> float:
    """ALERT_AUC_THRESHOLD: the blocking test-AUC floor of a candidate model (default 0.6)."""
    return float(os.environ.get("ALERT_AUC_THRESHOLD") or 0.6)


def retrain_threshold() -> int:
    """RETRAIN_THRESHOLD: newly labelled issues since the champion's cutoff that trigger training (200)."""
    return int(os.environ.get("RETRAIN_THRESHOLD") or 200)


def retrain_poll_github() -> bool:
    """RETRAIN_POLL_GITHUB: also count what GitHub has that is not ingested yet (conditional polls; default on)."""
    return (os.environ.get("RETRAIN_POLL_GITHUB") or "1").lower() not in ("0", "false", "no")


def github_token() -> str | None:
    """GITHUB_TOKEN: the bearer token (optional); never logged or stored."""
    return os.environ.get("GITHUB_TOKEN") or None


def aws_endpoint_url() -> str | None:
    """AWS_ENDPOINT_URL: an S3-compatible endpoint (moto, MinIO); unset for AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL") or None


def aws_keys_given() -> bool:
    """AWS_ACCESS_KEY_ID is set (then the S3 resource takes the keys through EnvVar, never their values)."""
    return bool(os.environ.get("AWS_ACCESS_KEY_ID"))


def aws_region() -> str | None:
    """AWS_DEFAULT_REGION or AWS_REGION."""
    return os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or None


def alert_webhook_url() -> str | None:
    """ALERT_WEBHOOK_URL: failed runs are posted there as JSON."""
    return os.environ.get("ALERT_WEBHOOK_URL") or None


def env(name: str) -> str | None:
    """Any other variable named at run time (e.g. `replay-server --require-token-env NAME`); None if empty."""
    return os.environ.get(name) or None


def live_calibration_bound() -> float:
    """LIVE_CALIBRATION_BOUND: largest expected calibration error of the champion's served predictions (0.1)."""
    return float(os.environ.get("LIVE_CALIBRATION_BOUND") or 0.1)


def live_min_outcomes() -> int:
    """LIVE_MIN_OUTCOMES: served predictions with known outcomes needed before live quality is judged (100)."""
    return int(os.environ.get("LIVE_MIN_OUTCOMES") or 100)


def drift_days() -> float:
    """DRIFT_DAYS: the recent window whose served features are compared with the training window (14)."""
    return float(os.environ.get("DRIFT_DAYS") or 14)


def dagster_home() -> Path:
    """DAGSTER_HOME, or ISSUE_ASSETS_HOME/dagster_home (a SQLite instance the CLI creates on first use)."""
    return Path(os.environ.get("DAGSTER_HOME") or home() / "dagster_home").expanduser().resolve()


def http_cache_dir() -> Path:
    """ETag / Last-Modified validators, one file per repository (so concurrent runs never overwrite each other's)."""
    return home() / "http_cache"


def _positive_int(name: str, default: int, what: str = "seconds") -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a positive number of {what}, got {raw!r}")
    return value


def poll_seconds() -> int:
    """ISSUE_ASSETS_POLL_SECONDS: interval of the conditional poll of every repository (default 60)."""
    return _positive_int("ISSUE_ASSETS_POLL_SECONDS", 60)


def poll_budget_share() -> float:
    """ISSUE_ASSETS_POLL_BUDGET_SHARE: the most of an API's rate-limit window the poll may spend (default 0.5)."""
    raw = os.environ.get("ISSUE_ASSETS_POLL_BUDGET_SHARE") or "0.5"
    try:
        share = float(raw)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise ValueError(f"ISSUE_ASSETS_POLL_BUDGET_SHARE must be in (0, 1], got {raw!r}")
    return share


def poll_concurrency() -> int:
    """ISSUE_ASSETS_POLL_CONCURRENCY: requests the poll has in flight per API at once (default 4)."""
    return _positive_int("ISSUE_ASSETS_POLL_CONCURRENCY", 4, "requests")


def automation_seconds() -> int:
    """ISSUE_ASSETS_AUTOMATION_SECONDS: interval of Dagster's automation-condition sensor (default 30)."""
    return _positive_int("ISSUE_ASSETS_AUTOMATION_SECONDS", 30)


def retrain_seconds() -> int:
    """ISSUE_ASSETS_RETRAIN_SECONDS: interval of the retraining sensor (default 300)."""
    return _positive_int("ISSUE_ASSETS_RETRAIN_SECONDS", 300)


def trials() -> int | None:
    """ISSUE_ASSETS_TRIALS: Optuna trials of a training run the retraining sensor starts (default: the asset's)."""
    return _positive_int("ISSUE_ASSETS_TRIALS", 0, "trials") or None


def outcomes_cron() -> str:
    """ISSUE_ASSETS_OUTCOMES_CRON: when prediction_outcomes judges the served predictions again (hourly)."""
    return os.environ.get("ISSUE_ASSETS_OUTCOMES_CRON") or "15 * * * *"
