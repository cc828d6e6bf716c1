"""Training sets as of a cutoff, and the pure checks the Dagster asset checks call."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
from conftest_features import matomo_issues, rust_issues

from issue_assets.features import FEATURE_NAMES, compute_features
from issue_assets.features.training_sets import (
    NULL_RATE_BOUNDS,
    build_training_set,
    check_availability,
    check_label_rate,
    check_labels_known,
    check_null_rates,
    check_schema,
    check_unique_ids,
)

CUTOFF = pd.Timestamp("2015-06-01", tz="UTC")


@cache
def both_repos() -> pd.DataFrame:
    issues = pd.concat([rust_issues(), matomo_issues()], ignore_index=True)
    return compute_features(issues, text_score=False)


def test_training_set_holds_only_labels_known_at_the_cutoff_across_repos():
    features = both_repos()
    rows, info = build_training_set(features, CUTOFF)
    assert set(rows["repo"]) == {"rust-lang/rust", "matomo-org/matomo"}
    assert (rows["label_known_at"] <= CUTOFF).all() and rows["closed_within_7d"].notna().all()
    eligible = features["label_known_at"].le(CUTOFF).sum()
    assert len(rows) == eligible == info["rows"]
    assert set(rows["age_hours"]) == {0.0, 6.0, 24.0, 72.0} and info["rows_per_age"]["0"] == info["issues"]
    # Issues created just before the cutoff whose label is not settled stay out.
    assert not rows["created_at"].between(CUTOFF - pd.Timedelta(days=1), CUTOFF).all()
    order = {"train": 0, "validation": 1, "test": 2}
    ranks = rows["split"].map(order).to_numpy()
    assert (np.diff(ranks) >= 0).all() and rows["created_at"].is_monotonic_increasing
    # Split on issue boundaries: every row of an issue in one split; fractions count issues.
    assert rows.groupby(["repo", "id"])["split"].nunique().max() == 1
    # each issue weighs 1 in training, spread over its rows
    np.testing.assert_allclose(rows.groupby(["repo", "id"])["sample_weight"].sum(), 1.0)
    issues = rows.loc[rows["age_hours"] == 0, "split"].value_counts()
    assert issues["test"] == round(info["issues"] * 0.2) and issues["validation"] == round(info["issues"] * 0.15)
    assert info["splits"]["test"]["issues"] == issues["test"]
    assert info["splits"]["validation"]["last_created_at"] <= info["splits"]["test"]["first_created_at"]
    assert 0.2 < info["label_rate"] < 0.5
    # Built without the text score (to keep the test fast): the null check notices an all-NaN column.
    assert check_null_rates(rows)[1]["over_bound"] == {"text_score": 1.0}
    no_text = {**NULL_RATE_BOUNDS, "text_score": 1.0}
    for check in (check_schema(rows), check_unique_ids(rows), check_null_rates(rows, no_text),
                  check_label_rate(rows), check_labels_known(rows, CUTOFF), check_availability()):
        assert check[0], check[1]


def test_fractions_are_validated():
    with pytest.raises(ValueError):
        build_training_set(both_repos(), CUTOFF, validation_fraction=0.6, test_fraction=0.5)


def test_checks_catch_bad_sets():
    rows, _ = build_training_set(both_repos(), CUTOFF)
    ok, details = check_unique_ids(pd.concat([rows, rows.iloc[[3]]]))
    assert not ok and details["duplicate_rows"] == 2
    # The same id in two repositories, or at another age, is fine.
    other = rows.iloc[[3]].assign(repo="someone/else")
    assert check_unique_ids(pd.concat([rows, other]))[0]
    assert check_unique_ids(pd.concat([rows, rows.iloc[[3]].assign(age_hours=1.5)]))[0]
    ok, details = check_labels_known(rows, CUTOFF - pd.Timedelta(days=30))
    assert not ok and details["rows_with_unknown_label"] > 0
    broken = rows.copy()
    broken["repo_open_issues"] = np.nan
    ok, details = check_null_rates(broken)
    assert not ok and "repo_open_issues" in details["over_bound"]
    ok, details = check_schema(rows.drop(columns=["text_score"]).assign(created_at=rows["created_at"].astype(str)))
    assert not ok and details["missing_columns"] == ["text_score"] and "created_at" in details["wrong_types"]
    all_positive = rows.assign(closed_within_7d=pd.array([True] * len(rows), dtype="boolean"))
    assert not check_label_rate(all_positive)[0]
    ok, details = check_label_rate(rows, previous=0.9)
    assert not ok and details["drift"] > 0.15
    assert check_label_rate(rows, previous=rows)[0]
    ok, details = check_availability(FEATURE_NAMES + ["ref_comment_count", "nonsense"])
    assert not ok and details["known_after_prediction_time"] == {"ref_comment_count": "snapshot"}
    assert details["unregistered"] == ["nonsense"]
