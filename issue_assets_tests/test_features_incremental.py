"""Incremental updates equal a full recompute, and recompute only the rows the changes can reach."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest_features import matomo_issues, rust_comments, rust_issues, snapshot_at

from issue_assets.features import FeatureBuilder, compute_features, update_features
from issue_assets.features.synthetic import (
    changes_between,
    snapshot_tables,
    synthetic_comments,
    synthetic_issues,
)

T1 = pd.Timestamp("2013-06-01", tz="UTC")
T2 = pd.Timestamp("2013-06-08", tz="UTC")


def two_syncs(issues, comments, t1, t2):
    """The tables as synced at t1 and then at t2 (rows already seen at t1 keep first_seen_at = t1)."""
    old_issues, old_comments = snapshot_at(issues, comments, t1)
    new_issues, new_comments = snapshot_at(issues, comments, t2)
    seen = new_issues["id"].isin(old_issues["id"])
    new_issues.loc[seen, "first_seen_at"] = t1
    return old_issues, old_comments, new_issues, new_comments


def assert_frames_equal(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True),
                                  check_exact=False, rtol=1e-9, atol=1e-9)


def test_update_features_equals_full_recompute_rust_with_comments():
    old_i, old_c, new_i, new_c = two_syncs(rust_issues(), rust_comments(), T1, T2)
    previous = compute_features(old_i, old_c, text_score=False)
    got = update_features(previous, new_i, new_c, changed_since=T1, text_score=False)
    assert_frames_equal(got, compute_features(new_i, new_c, text_score=False))


def test_update_features_equals_full_recompute_matomo_with_text_score():
    t1, t2 = pd.Timestamp("2016-01-01", tz="UTC"), pd.Timestamp("2016-01-02", tz="UTC")
    old_i, _, new_i, _ = two_syncs(matomo_issues(), None, t1, t2)
    previous = compute_features(old_i)
    got = update_features(previous, new_i, changed_since=t1)
    assert_frames_equal(got, compute_features(new_i))


@pytest.mark.parametrize("hours", [0.0, 24.0])
def test_builder_upsert_equals_full_recompute(hours):
    old_i, old_c, new_i, new_c = two_syncs(rust_issues(), rust_comments(), T1, T2)
    builder = FeatureBuilder(hours_after_creation=hours, text_score=False)
    builder.fit(old_i, old_c)
    # Two changes a plain "new rows" feed would miss: an old issue reopened, an old title edited.
    reopened = new_i.index[(new_i["closed_at"] < T1 - pd.Timedelta(days=300)) & ~new_i["is_pull_request"]][0]
    edited = new_i.index[(new_i["created_at"] < T1 - pd.Timedelta(days=400)) & ~new_i["is_pull_request"]][5]
    new_i.loc[reopened, ["closed_at", "state"]] = [pd.NaT, "open"]
    new_i.loc[edited, "title"] = "an edited title with error and panic"
    merged = new_i.merge(old_i[["id", "closed_at", "first_seen_at", "title"]], on="id", how="left",
                         suffixes=("", "_old"))
    changed_mask = (merged["closed_at_old"].isna() & merged["closed_at"].notna()) | merged["first_seen_at_old"].isna() \
        | (merged["closed_at"].fillna(T2) != merged["closed_at_old"].fillna(T2)) | (merged["title"] != merged["title_old"])
    changed = new_i.loc[changed_mask.to_numpy()]
    fresh_comments = new_c.loc[~new_c["id"].isin(old_c["id"])]
    got = builder.update(changed, fresh_comments)
    expected = compute_features(new_i, new_c, hours_after_creation=hours, text_score=False)
    assert_frames_equal(got, expected)


def test_builder_update_with_text_score_recomputes_little():
    t1, t2 = pd.Timestamp("2016-01-01", tz="UTC"), pd.Timestamp("2016-01-02", tz="UTC")
    old_i, _, new_i, _ = two_syncs(matomo_issues(), None, t1, t2)
    builder = FeatureBuilder()
    builder.fit(old_i)
    changed = new_i.loc[~new_i["id"].isin(old_i["id"]) | new_i["closed_at"].gt(t1)]
    got = builder.update(changed)
    assert builder.last_recomputed < 50 < len(got)
    assert_frames_equal(got, compute_features(new_i))


def test_builder_update_requires_fit():
    with pytest.raises(RuntimeError):
        FeatureBuilder().update(rust_issues().iloc[:0])


def test_builder_daily_updates_on_a_multi_repo_history_with_ties():
    issues = synthetic_issues(6000, repos=3, per_day=200, seed=3)
    # Same-second creations in different repositories exercise the (created_at, repo, id) order.
    issues.loc[issues.index[-40::2], "created_at"] = issues["created_at"].iloc[-41::2].to_numpy()[:20]
    comments = synthetic_comments(issues, seed=3)
    end = issues["created_at"].max()
    days = [end - pd.Timedelta(days=k) for k in (3, 2, 1, 0)]
    builder = FeatureBuilder(include_pull_requests=True)
    builder.fit(*snapshot_tables(issues, comments, days[0]))
    for start, stop in zip(days, days[1:], strict=False):
        changed, fresh = changes_between(issues, comments, start, stop)
        got = builder.update(changed, fresh, as_of=stop)
        expected = compute_features(*snapshot_tables(issues, comments, stop), include_pull_requests=True,
                                    as_of=stop)
        assert_frames_equal(got, expected)
        assert builder.last_recomputed < len(got) // 4
