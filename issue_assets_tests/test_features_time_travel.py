"""The key proof: features computed from data truncated at T equal those from the full data, at every age
(rows of an issue still open at created_at + age, for ages reached by T), and the snapshot-time fields
(labels, counts, state ...) change no feature at all."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
from conftest_features import matomo_issues, rust_comments, rust_issues, snapshot_at

from issue_assets.features import AGES_HOURS, FEATURE_NAMES, compute_features


@cache
def full(name: str, text_score: bool = True) -> pd.DataFrame:
    issues, comments = (rust_issues(), rust_comments()) if name == "rust" else (matomo_issues(), None)
    return compute_features(issues, comments, text_score=text_score)


def assert_same_features(full_frame: pd.DataFrame, cut_frame: pd.DataFrame, cutoff: pd.Timestamp) -> int:
    expected = full_frame.loc[(full_frame["created_at"] < cutoff) & (full_frame["prediction_time"] <= cutoff)]
    actual = cut_frame.loc[cut_frame["created_at"] < cutoff]
    assert len(expected) > 100
    assert set(expected["age_hours"]) == set(AGES_HOURS)
    key = ["id", "age_hours"]
    assert expected[key].values.tolist() == actual[key].values.tolist()
    for name in FEATURE_NAMES:
        a, b = expected[name].to_numpy(), actual[name].to_numpy()
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=name)
    return len(expected)


def assert_labels_consistent(full_frame: pd.DataFrame, cut_frame: pd.DataFrame, cutoff: pd.Timestamp) -> None:
    merged = full_frame.merge(cut_frame, on=["repo", "id", "age_hours"], suffixes=("", "_cut"))
    settled = merged["label_known_at"] <= cutoff
    assert (merged.loc[settled, "closed_within_7d"] == merged.loc[settled, "closed_within_7d_cut"]).all()
    assert (merged.loc[settled, "label_known_at"] == merged.loc[settled, "label_known_at_cut"]).all()
    assert merged.loc[~settled, "closed_within_7d_cut"].isna().all()
    assert merged.loc[~settled, "label_known_at_cut"].isna().all()


@pytest.mark.parametrize("cutoff", ["2012-07-01 00:00:00.5", "2014-09-15 12:00"])
def test_rust_time_travel_at_creation(cutoff):
    cutoff = pd.Timestamp(cutoff, tz="UTC")
    issues, comments = snapshot_at(rust_issues(), rust_comments(), cutoff)
    cut = compute_features(issues, comments)
    n = assert_same_features(full("rust"), cut, cutoff)
    assert cut["text_score"].notna().sum() > n // 2
    assert_labels_consistent(full("rust"), cut, cutoff)


def test_rust_time_travel_at_later_ages_with_comments():
    cutoff = pd.Timestamp("2013-05-01 06:00", tz="UTC")
    issues, comments = snapshot_at(rust_issues(), rust_comments(), cutoff)
    cut = compute_features(issues, comments, text_score=False)
    ref = full("rust", False)
    assert_same_features(ref, cut, cutoff)
    # The comment features are live at later ages, and no row is of an issue already closed at its time.
    late = ref.loc[ref["age_hours"] == 24]
    assert (late["comments_so_far"] > 0).mean() > 0.3
    assert (late["hours_to_first_response"].dropna() <= 24).all()
    merged = ref.loc[ref["age_hours"] > 0].merge(rust_issues()[["id", "closed_at"]], on="id")
    assert ((merged["closed_at"].isna()) | (merged["closed_at"] > merged["prediction_time"])).all()


@pytest.mark.parametrize("cutoff", ["2012-03-01", "2018-06-01 00:00:00.5"])
def test_matomo_time_travel_at_creation(cutoff):
    cutoff = pd.Timestamp(cutoff, tz="UTC")
    issues, _ = snapshot_at(matomo_issues(), None, cutoff)
    cut = compute_features(issues)
    assert_same_features(full("matomo"), cut, cutoff)
    assert_labels_consistent(full("matomo"), cut, cutoff)


LATE_FIELDS = ["labels", "comments", "assignees_count", "milestone", "reactions_total", "state_reason",
               "locked", "state", "updated_at", "author_association", "user_type"]


def scramble(issues: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = issues.copy()
    for col in LATE_FIELDS:
        if col == "user_type":
            continue
        out[col] = out[col].to_numpy()[rng.permutation(len(out))]
    out["updated_at"] = out["created_at"] + pd.to_timedelta(rng.integers(0, 10**8, len(out)), unit="s")
    return out


@pytest.mark.parametrize("name", ["rust", "matomo"])
def test_snapshot_fields_change_no_feature(name):
    issues, comments = (rust_issues(), rust_comments()) if name == "rust" else (matomo_issues(), None)
    # matomo runs with the text score on: it reads title and body only, never a late field.
    text = name == "matomo"
    base = full(name, text)
    scrambled = compute_features(scramble(issues, 7), comments, text_score=text)
    assert base[["id", "age_hours"]].values.tolist() == scrambled[["id", "age_hours"]].values.tolist()
    for col in FEATURE_NAMES:
        np.testing.assert_array_equal(scrambled[col].to_numpy(), base[col].to_numpy(), err_msg=col)
    # The reference columns are the deliberately leaky ones: they do move.
    assert not np.array_equal(scrambled["ref_comment_count"].to_numpy(), base["ref_comment_count"].to_numpy())


def test_own_comment_count_at_24h_ignores_later_comments():
    cutoff_hours = 24
    frame = full("rust", False)
    frame = frame.loc[frame["age_hours"] == cutoff_hours].reset_index(drop=True)
    comments = rust_comments()
    first = frame.iloc[len(frame) // 2]
    on_issue = comments.loc[comments["issue_number"] == first["number"]]
    expected = (on_issue["created_at"] <= first["created_at"] + pd.Timedelta(hours=cutoff_hours)).sum()
    assert first["comments_so_far"] == expected
