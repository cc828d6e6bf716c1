"""The event store's public interface: a request's rows overlaid on a stored history give the features of a
history that holds them (new rows count like stored ones, a stored row is replaced), its snapshot answers as
the store it was written from, and nothing it reads is written."""

from __future__ import annotations

import numpy as np
import pandas as pd

from issue_assets.features.catalog import FEATURE_NAMES
from issue_assets.features.compute import feature_columns
from issue_assets.features.frames import normalize_issues
from issue_assets.features.labels import HOUR_US
from issue_assets.features.store import EventStore, raw_columns
from issue_assets.features.synthetic import synthetic_comments, synthetic_issues


def tables():
    issues = synthetic_issues(3000, repos=2, per_day=25, seed=5)  # 120 days: two text-score periods
    rng = np.random.default_rng(5)
    issues.loc[rng.random(len(issues)) < 0.05, ["user_id", "user_login"]] = pd.NA  # unknown authors
    issues.loc[rng.random(len(issues)) < 0.05, "user_id"] = pd.NA  # keyed by login
    issues["first_seen_at"] = issues["created_at"] + pd.to_timedelta(rng.integers(0, 10**6, len(issues)), unit="s")
    return issues, synthetic_comments(issues, seed=5)


def features_at(store: EventStore, targets: pd.DataFrame, t) -> dict[str, np.ndarray]:
    rows = store.rows(raw_columns(normalize_issues(targets)))
    return feature_columns(store.overlay(rows), rows, np.full(rows.n, float(t.value // 1000)))


def assert_same(a: dict, b: dict) -> None:
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-9, equal_nan=True, err_msg=name)


def test_overlay_equals_a_history_that_holds_the_rows():
    issues, comments = tables()
    issues = issues.sort_values("created_at").reset_index(drop=True)
    history, recent = issues.iloc[:-60], issues.iloc[-60:]
    T = recent["created_at"].max() + pd.Timedelta(hours=5)
    store = EventStore.build(history, comments, text_score=False, as_of=T)
    whole = EventStore.build(issues, comments, text_score=False, as_of=T)
    # new rows: unseen issues by known, new, login-only and unknown authors, some pull requests, some closed
    new = recent.copy()
    new.loc[new.index[::7], "user_login"] = "somebody-new"
    new.loc[new.index[::7], "user_id"] = pd.NA
    whole = EventStore.build(pd.concat([history, new]), comments, text_score=False, as_of=T)
    assert_same(features_at(store, new, T), features_at(whole, new, T))
    # stored rows in another version (closed now, another author, first seen later) replace the stored ones
    changed = history.iloc[-200::9].copy()
    changed["closed_at"] = changed["created_at"] + pd.Timedelta(hours=3)
    changed["user_id"] = changed["user_id"].iloc[::-1].to_numpy()
    changed["first_seen_at"] = T
    replaced = pd.concat([history.loc[~history["id"].isin(changed["id"])], changed])
    whole = EventStore.build(replaced, comments, text_score=False, as_of=T)
    assert_same(features_at(store, changed, T), features_at(whole, changed, T))
    # stored rows as they are: no event moves, the view reads the store's own logs
    same = history.iloc[-50:]
    assert store.overlay(store.rows(raw_columns(normalize_issues(same)))).logs is store.logs


def test_snapshot_answers_as_the_store_it_was_written_from():
    issues, comments = tables()
    store = EventStore.build(issues, comments, as_of=issues["created_at"].max())
    loaded = EventStore.from_bytes(store.to_bytes())
    targets = issues.loc[~issues["is_pull_request"]].iloc[::37]
    for hours in (0, 6, 72):
        T = targets["created_at"].max() + pd.Timedelta(hours=hours)
        a, b = features_at(store, targets, T), features_at(loaded, targets, T)
        assert_same(a, b)
        assert np.isfinite(a["text_score"]).any()
    ages = features_at(loaded, targets, T)["hours_observed"]
    np.testing.assert_allclose(ages, (T - targets["created_at"]).dt.total_seconds().to_numpy() * 1e6 / HOUR_US)


def test_building_and_overlaying_leave_their_inputs_unchanged():
    issues, comments = tables()
    copies = issues.copy(), comments.copy()
    store = EventStore.build(issues, comments)
    rows = store.rows(raw_columns(normalize_issues(issues.iloc[-30:])))
    before = {k: v.copy() for k, v in store.issues.items()}
    feature_columns(store.overlay(rows), rows, rows["c"] + HOUR_US)
    pd.testing.assert_frame_equal(issues, copies[0])
    pd.testing.assert_frame_equal(comments, copies[1])
    for k, v in before.items():
        np.testing.assert_array_equal(store.issues[k], v, err_msg=k)
