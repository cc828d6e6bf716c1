"""A generated training set that follows the training-set contract, for tests and benchmarks.

Rows are issues created over `days` days across a few repositories, time-ordered and split
train/validation/test by creation time (test most recent). The label depends on a few features
(with an interaction and a slow drift) so a model has real signal to find; the ref_* columns mimic
the leaky "older public projects" feature set (labels and comment counts read after the fact).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES = [
    "title_length",
    "body_length",
    "has_code_block",
    "author_prior_issues",
    "author_prior_close_rate",
    "repo_open_issues",
    "repo_recent_close_rate",
    "hour_of_day",
    "is_weekend",
    "noise_a",
    "noise_b",
]

REPOS = ["acme/api", "acme/web", "octo/cli", "octo/docs"]


def make_training_set(
    n: int = 8000,
    seed: int = 0,
    days: int = 360,
    splits: tuple[float, float] = (0.7, 0.15),
    start: str = "2024-01-01",
    base_shift: float = 0.0,
) -> pd.DataFrame:
    """`n` issues with label `closed_within_7d`, split by creation time (fractions for train, validation;
    the rest is test). `base_shift` adds to the log-odds of the test window only (a base-rate drift)."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz="UTC")
    offsets = np.sort(rng.uniform(0, days * 86400.0, size=n))
    created = t0 + pd.to_timedelta(offsets, unit="s")
    repo_idx = rng.integers(0, len(REPOS), size=n)
    repo_effect = np.array([0.6, -0.2, 0.3, -0.7])[repo_idx]

    title_length = rng.gamma(4.0, 12.0, size=n).round()
    body_length = rng.lognormal(6.0, 1.2, size=n).round()
    has_code_block = (rng.random(n) < 0.3).astype(float)
    author_prior_issues = rng.poisson(3.0, size=n).astype(float)
    author_prior_close_rate = np.where(author_prior_issues > 0, rng.beta(2, 2, size=n), np.nan)
    repo_open_issues = rng.poisson(200 + 100 * repo_idx).astype(float)
    repo_recent_close_rate = np.clip(0.4 + 0.15 * repo_effect + rng.normal(0, 0.08, size=n), 0, 1)
    hour = created.hour.to_numpy().astype(float)
    weekend = (created.dayofweek.to_numpy() >= 5).astype(float)

    logit = (
        -0.4
        + repo_effect
        + 2.5 * (repo_recent_close_rate - 0.4)
        + 1.6 * (np.nan_to_num(author_prior_close_rate, nan=0.3) - 0.5)
        - 0.45 * (np.log1p(body_length) - 6.0)
        + 0.7 * has_code_block * (author_prior_issues > 2)
        - 0.002 * (repo_open_issues - 300)
        - 0.3 * weekend
        + 0.15 * np.sin(offsets / (days * 86400.0) * np.pi)
    )
    split = np.full(n, "test", dtype=object)
    n_train = int(n * splits[0])
    n_valid = int(n * (splits[0] + splits[1])) - n_train
    split[:n_train] = "train"
    split[n_train : n_train + n_valid] = "validation"
    logit = logit + np.where(split == "test", base_shift, 0.0)
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)

    close_after = np.where(label == 1, rng.uniform(0.05, 7.0, size=n), rng.uniform(7.5, 60.0, size=n))
    known_after = np.minimum(close_after, 7.0)
    label_known_at = created + pd.to_timedelta(known_after, unit="D")

    leak = label * 2.0 - 1.0
    frame = pd.DataFrame(
        {
            "repo": np.array(REPOS)[repo_idx],
            "id": np.arange(1_000_000, 1_000_000 + n),
            "number": np.arange(1, n + 1),
            "created_at": created,
            "label_known_at": label_known_at,
            "closed_within_7d": label,
            "split": split,
            "title_length": title_length,
            "body_length": body_length,
            "has_code_block": has_code_block,
            "author_prior_issues": author_prior_issues,
            "author_prior_close_rate": author_prior_close_rate,
            "repo_open_issues": repo_open_issues,
            "repo_recent_close_rate": repo_recent_close_rate,
            "hour_of_day": hour,
            "is_weekend": weekend,
            "noise_a": rng.normal(size=n),
            "noise_b": rng.random(n),
            "ref_title_length": title_length,
            "ref_body_length": body_length,
            "ref_label_count": np.clip(rng.poisson(1.0, size=n) + (leak > 0) * rng.poisson(0.6, size=n), 0, None),
            "ref_has_bug_label": (rng.random(n) < 0.25 + 0.1 * leak).astype(float),
            "ref_hour": hour,
            "ref_comment_count": rng.poisson(np.where(label == 1, 2.0, 3.5)).astype(float),
        }
    )
    return frame
