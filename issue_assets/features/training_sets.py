"""Training sets as of a cutoff, and pure checks that Dagster asset checks can call.

Public API:
    build_training_set(features: DataFrame, cutoff: Timestamp, *, validation_fraction: float = 0.15,
                       test_fraction: float = 0.2) -> tuple[DataFrame, dict]
        Rows (every age) of the issues whose label is known at the cutoff (label_known_at <= cutoff), any
        repos, with a `split` column: the issues ordered by (created_at, repo, id) are cut into train /
        validation / test (test = the most recent `test_fraction` of the issues, validation just before),
        so all rows of one issue fall in one split. `sample_weight` = 1 / (the issue's rows): each issue
        counts once in training, however long it stayed open (measured: rust age-0 test ROC AUC +0.013,
        matomo +0.003 over unweighted rows, BENCHMARKS.md). The dict holds the cutoff, split boundaries (first/last
        created_at), row and issue counts, label rates, rows per age, and the feature catalog version.
    Checks, each -> tuple[bool, dict]:
    check_schema(frame, feature_names=FEATURE_NAMES)
    check_unique_ids(frame)                                   no (repo, id, age) twice
    check_null_rates(frame, max_null_rate=NULL_RATE_BOUNDS, default_max=0.0)
    check_label_rate(frame, low=0.05, high=0.95, previous=None, max_drift=0.15)
    check_labels_known(frame, cutoff)                         no row whose label is unknown at the cutoff
    check_availability(feature_names=FEATURE_NAMES)           no feature knowable only after prediction time
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from issue_assets.features.catalog import (
    ALLOWED_AVAILABILITY,
    FEATURE_NAMES,
    FEATURES_BY_NAME,
    feature_registry_version,
)
from issue_assets.features.compute import LABEL_COLUMNS, OUTPUT_KEY_COLUMNS

LABEL = "closed_within_7d"

#: Features that are legitimately missing sometimes, with the largest share of NaN we accept.
NULL_RATE_BOUNDS: dict[str, float] = {
    "author_prior_closed_7d_rate": 0.9,
    "author_days_since_first": 0.9,
    "author_days_since_last": 0.9,
    "repo_closed_7d_rate": 0.2,
    "repo_closed_7d_rate_90d": 0.5,
    "repo_capped_close_days_90d": 0.5,
    "hours_to_first_response": 1.0,
    "hours_to_first_maintainer_response": 1.0,
    "text_score": 0.5,
}


def _utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _summary(part: pd.DataFrame) -> dict:
    return {
        "rows": int(len(part)),
        "issues": int((part["age_hours"] == 0).sum()),
        "label_rate": float(part[LABEL].astype("float64").mean()) if len(part) else None,
        "first_created_at": part["created_at"].min().isoformat() if len(part) else None,
        "last_created_at": part["created_at"].max().isoformat() if len(part) else None,
        "repos": int(part["repo"].nunique()),
    }


def build_training_set(features: pd.DataFrame, cutoff, *, validation_fraction: float = 0.15,
                       test_fraction: float = 0.2) -> tuple[pd.DataFrame, dict]:
    if not 0 <= validation_fraction < 1 or not 0 <= test_fraction < 1 or validation_fraction + test_fraction >= 1:
        raise ValueError("validation_fraction and test_fraction must be in [0, 1) and sum below 1")
    cutoff = _utc(cutoff)
    known = features["label_known_at"].notna() & (features["label_known_at"] <= cutoff) & features[LABEL].notna()
    rows = features.loc[known].sort_values(["created_at", "repo", "id", "age_hours"], kind="stable")
    rows = rows.reset_index(drop=True)
    # Split on issue boundaries: the k-th issue in (created_at, repo, id) order is issue[k].
    first_of_issue = np.r_[True, (rows["id"].to_numpy()[1:] != rows["id"].to_numpy()[:-1])
                           | (rows["repo"].to_numpy(dtype=object)[1:] != rows["repo"].to_numpy(dtype=object)[:-1])] \
        if len(rows) else np.zeros(0, bool)
    issue = np.cumsum(first_of_issue) - 1
    n = int(first_of_issue.sum())
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * validation_fraction))
    split = np.full(len(rows), "train", dtype=object)
    split[issue >= n - n_test - n_val] = "validation"
    split[issue >= n - n_test] = "test"
    rows["split"] = pd.Series(split, dtype="string")
    rows["sample_weight"] = 1.0 / np.bincount(issue)[issue] if len(rows) else np.zeros(0)
    info = {
        "cutoff": cutoff.isoformat(),
        "rows": int(len(rows)),
        "issues": n,
        "rows_per_age": {f"{a:g}": int(k) for a, k in rows["age_hours"].value_counts().sort_index().items()},
        "label_rate": float(rows[LABEL].astype("float64").mean()) if n else None,
        "feature_registry_version": feature_registry_version(),
        "splits": {name: _summary(rows.loc[rows["split"] == name]) for name in ("train", "validation", "test")},
    }
    return rows, info


def check_schema(frame: pd.DataFrame, feature_names: list[str] = FEATURE_NAMES) -> tuple[bool, dict]:
    expected = OUTPUT_KEY_COLUMNS + list(feature_names) + LABEL_COLUMNS
    missing = [c for c in expected if c not in frame.columns]
    problems = {}
    if "age_hours" in frame and not pd.api.types.is_float_dtype(frame["age_hours"].dtype):
        problems["age_hours"] = str(frame["age_hours"].dtype)
    for col in ("created_at", "prediction_time", "label_known_at"):
        if col in frame and str(frame[col].dtype) != "datetime64[us, UTC]":
            problems[col] = str(frame[col].dtype)
    for col in feature_names:
        if col in frame and not pd.api.types.is_float_dtype(frame[col].dtype):
            problems[col] = str(frame[col].dtype)
    if LABEL in frame and str(frame[LABEL].dtype) != "boolean":
        problems[LABEL] = str(frame[LABEL].dtype)
    if "id" in frame and not pd.api.types.is_integer_dtype(frame["id"].dtype):
        problems["id"] = str(frame["id"].dtype)
    return not missing and not problems, {"missing_columns": missing, "wrong_types": problems}


def check_unique_ids(frame: pd.DataFrame) -> tuple[bool, dict]:
    dup = frame.duplicated(["repo", "id", "age_hours"], keep=False)
    examples = frame.loc[dup, ["repo", "id", "age_hours"]].drop_duplicates().head(10)
    return not dup.any(), {"duplicate_rows": int(dup.sum()),
                           "examples": [f"{r}#{i}@{a:g}h" for r, i, a in examples.itertuples(index=False)]}


def check_null_rates(frame: pd.DataFrame, max_null_rate: dict[str, float] | None = None,
                     default_max: float = 0.0, feature_names: list[str] = FEATURE_NAMES) -> tuple[bool, dict]:
    bounds = NULL_RATE_BOUNDS if max_null_rate is None else max_null_rate
    rates = {c: float(frame[c].isna().mean()) if len(frame) else 0.0 for c in feature_names if c in frame}
    over = {c: r for c, r in rates.items() if r > bounds.get(c, default_max)}
    return not over, {"null_rates": rates, "over_bound": over}


def check_label_rate(frame: pd.DataFrame, low: float = 0.05, high: float = 0.95,
                     previous: pd.DataFrame | float | None = None, max_drift: float = 0.15) -> tuple[bool, dict]:
    labels = frame[LABEL].dropna().astype("float64")
    rate = float(labels.mean()) if len(labels) else float("nan")
    details = {"label_rate": rate, "rows": int(len(labels)), "band": [low, high]}
    passed = len(labels) > 0 and low <= rate <= high
    if previous is not None:
        prev = float(previous) if not isinstance(previous, pd.DataFrame) else \
            float(previous[LABEL].dropna().astype("float64").mean())
        details["previous_label_rate"] = prev
        details["drift"] = abs(rate - prev)
        passed = passed and abs(rate - prev) <= max_drift
    return bool(passed), details


def check_labels_known(frame: pd.DataFrame, cutoff) -> tuple[bool, dict]:
    cutoff = _utc(cutoff)
    bad = frame[LABEL].isna() | frame["label_known_at"].isna() | (frame["label_known_at"] > cutoff)
    return not bad.any(), {"rows_with_unknown_label": int(bad.sum()), "cutoff": cutoff.isoformat()}


def check_availability(feature_names: list[str] = FEATURE_NAMES) -> tuple[bool, dict]:
    unknown = [n for n in feature_names if n not in FEATURES_BY_NAME]
    late = {n: FEATURES_BY_NAME[n].availability for n in feature_names
            if n in FEATURES_BY_NAME and FEATURES_BY_NAME[n].availability not in ALLOWED_AVAILABILITY}
    return not unknown and not late, {"unregistered": unknown, "known_after_prediction_time": late}
