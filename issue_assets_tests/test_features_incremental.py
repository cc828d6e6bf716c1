"""The incremental refresh (update_features, what refresh_features runs) equals a full recompute and computes
only the rows a change can reach: new issues, closes, comments, edits, ages newly reached."""

from __future__ import annotations

import pandas as pd
from conftest_features import matomo_issues, rust_comments, rust_issues, snapshot_at

from issue_assets.features import compute_features, update_features
from issue_assets.features.changes import earliest_change, input_snapshot
from issue_assets.features.synthetic import snapshot_tables, synthetic_comments, synthetic_issues

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


def refreshed(old_i, old_c, new_i, new_c, **options):
    previous = compute_features(old_i, old_c, **options)
    since = earliest_change(input_snapshot(old_i, old_c), input_snapshot(new_i, new_c))
    return update_features(previous, new_i, new_c, changed_since=since, **options)


def test_update_equals_full_recompute_rust_with_comments_and_edits():
    old_i, old_c, new_i, new_c = two_syncs(rust_issues(), rust_comments(), T1, T2)
    # Two changes a plain "new rows" feed would miss: an old issue reopened, an old title edited.
    reopened = new_i.index[(new_i["closed_at"] < T1 - pd.Timedelta(days=300)) & ~new_i["is_pull_request"]][0]
    edited = new_i.index[(new_i["created_at"] < T1 - pd.Timedelta(days=400)) & ~new_i["is_pull_request"]][5]
    new_i.loc[reopened, ["closed_at", "state"]] = [pd.NaT, "open"]
    new_i.loc[edited, "title"] = "an edited title with error and panic"
    got, recomputed = refreshed(old_i, old_c, new_i, new_c, text_score=False)
    expected = compute_features(new_i, new_c, text_score=False)
    assert_frames_equal(got, expected)
    assert 0 < recomputed < len(expected)


def test_update_equals_full_recompute_matomo_with_text_score():
    t1, t2 = pd.Timestamp("2016-01-01", tz="UTC"), pd.Timestamp("2016-01-02", tz="UTC")
    old_i, _, new_i, _ = two_syncs(matomo_issues(), None, t1, t2)
    got, recomputed = refreshed(old_i, None, new_i, None)
    expected = compute_features(new_i)
    assert_frames_equal(got, expected)
    assert recomputed < 100 < len(expected)  # a day of changes: a few new rows, ages newly reached


def test_daily_updates_on_a_multi_repo_history_with_ties():
    issues = synthetic_issues(6000, repos=3, per_day=200, seed=3)
    # Same-second creations in different repositories exercise the (created_at, repo, id) order.
    issues.loc[issues.index[-40::2], "created_at"] = issues["created_at"].iloc[-41::2].to_numpy()[:20]
    issues["first_seen_at"] = issues["created_at"]
    comments = synthetic_comments(issues, seed=3)
    end = issues["created_at"].max()
    days = [end - pd.Timedelta(days=k) for k in (3, 2, 1, 0)]
    options = {"include_pull_requests": True}
    previous = compute_features(*snapshot_tables(issues, comments, days[0]), as_of=days[0], **options)
    for start, stop in zip(days, days[1:], strict=False):
        old, new = snapshot_tables(issues, comments, start), snapshot_tables(issues, comments, stop)
        got, recomputed = update_features(previous, *new, changed_since=earliest_change(input_snapshot(*old),
                                                                                           input_snapshot(*new)),
                                          as_of=stop, **options)
        assert_frames_equal(got, compute_features(*new, as_of=stop, **options))
        assert recomputed < len(got) // 4
        previous = got
