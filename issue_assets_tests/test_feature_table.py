"""The stored feature table: incremental refreshes equal a full recompute (edits, closes, new issues, comments,
ages newly reached), and the snapshot the service loads is the store the table was computed from."""

import numpy as np
import pandas as pd
import pytest

from issue_assets.features.changes import earliest_change, input_snapshot
from issue_assets.features.compute import compute_features
from issue_assets.features.store import EventStore
from issue_assets.features.table import load_features, load_snapshot, refresh_features
from issue_assets.github.normalize import comment_versions, issue_versions, issues_from_versions
from issue_assets.github.simulate import simulate_repository
from issue_assets.ingest import layout
from issue_assets.lake.store import LocalStore, write_parquet

REPO = "demo-org/demo-project"


@pytest.fixture(scope="module")
def tables():
    items, comments = simulate_repository(REPO, n_issues=500, seed=11, start="2025-01-01T00:00:00Z", days=300)
    fetched = pd.Timestamp("2025-11-01", tz="UTC")
    issues = issues_from_versions(issue_versions(items, REPO, fetched)[0])
    return issues, comment_versions(comments, REPO, fetched)[0]


def _write(store, issues, comments):
    write_parquet(store, layout.current_key("issues", REPO), issues)
    write_parquet(store, layout.current_key("comments", REPO), comments)


def _assert_equal_to_full(store, issues, comments):
    stored = load_features(store, REPO)
    full = compute_features(issues, comments)
    pd.testing.assert_frame_equal(stored[full.columns], full, check_exact=False, rtol=1e-9)
    # The snapshot is the store the table was computed from: same logs, comments, key codes, documents.
    snapshot, built = load_snapshot(store, REPO), EventStore.build(issues, comments)
    for name, log in built.logs.items():
        for attr in ("keys", "times", "cum"):
            np.testing.assert_array_equal(getattr(snapshot.logs[name], attr), getattr(log, attr), err_msg=name)
    for name, values in built.comments.items():
        np.testing.assert_array_equal(snapshot.comments[name], values, err_msg=name)
    assert snapshot.coders.authors.values().tolist() == built.coders.authors.values().tolist()
    assert (snapshot.scorer.docs != built.scorer.docs).nnz == 0
    np.testing.assert_array_equal(snapshot.scorer.known_at_us, built.scorer.known_at_us)


def test_refresh_modes_and_equality_with_full_recompute(tmp_path, tables):
    issues, comments = tables
    store = LocalStore(tmp_path)
    # History up to September, then the rest arrives.
    cut = pd.Timestamp("2025-09-01", tz="UTC")
    early = issues.loc[issues["created_at"] < cut].copy()
    early.loc[early["closed_at"] >= cut, "closed_at"] = pd.NaT
    early_comments = comments.loc[comments["created_at"] < cut]
    _write(store, early, early_comments)
    assert refresh_features(store, REPO).mode == "full"
    _assert_equal_to_full(store, early, early_comments)
    unchanged = refresh_features(store, REPO)
    assert unchanged.mode == "unchanged" and unchanged.recomputed == 0 and unchanged.snapshot_bytes == 0

    _write(store, issues, comments)
    refresh = refresh_features(store, REPO)
    assert refresh.mode == "incremental" and 0 < refresh.recomputed < refresh.rows
    assert refresh.rows > refresh.issues  # several ages per issue
    _assert_equal_to_full(store, issues, comments)

    # Fetched an hour after the newest issue: its later ages are not reached yet, so it has one row.
    fresh = issues.copy()
    fresh["fetched_at"] = fresh["created_at"].max() + pd.Timedelta(hours=1)
    _write(store, fresh, comments)
    refresh_features(store, REPO)
    _assert_equal_to_full(store, fresh, comments)
    # Time passes (a later fetch) with no other change: ages newly reached appear, nothing else moves.
    later = fresh.assign(fetched_at=fresh["fetched_at"] + pd.Timedelta(days=4))
    _write(store, later, comments)
    before = len(load_features(store, REPO))
    refresh = refresh_features(store, REPO)
    assert refresh.mode == "incremental" and refresh.rows > before
    assert refresh.recomputed == refresh.rows - before  # only the new rows
    _assert_equal_to_full(store, later, comments)

    edited = issues.copy()
    victim = edited.index[len(edited) // 2]
    edited.loc[victim, "body"] = "Traceback (most recent call last):\n  panicked at 'boom'\n```\ncode\n```"
    _write(store, edited, comments)
    assert refresh_features(store, REPO).mode == "incremental"
    _assert_equal_to_full(store, edited, comments)


def test_earliest_change_sees_edits_closes_and_comments(tables):
    issues, comments = tables
    base = input_snapshot(issues, comments)
    assert earliest_change(base, base) is None
    closed = issues.copy()
    row = closed.index[closed["closed_at"].isna()][0]
    closed.loc[row, "closed_at"] = pd.Timestamp("2025-10-30", tz="UTC")
    assert earliest_change(base, input_snapshot(closed, comments)) == pd.Timestamp("2025-10-30", tz="UTC")
    edited = issues.copy()
    edited.loc[edited.index[3], "title"] = "something else entirely"
    assert earliest_change(base, input_snapshot(edited, comments)) == issues.loc[issues.index[3], "created_at"]
    fewer = comments.iloc[:-1]
    assert earliest_change(base, input_snapshot(issues, fewer)) == comments.iloc[-1]["created_at"]
