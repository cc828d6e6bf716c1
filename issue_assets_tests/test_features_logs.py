"""The fast paths behind the event logs: packed-value sorts, the fit's fused log build, batched sorted
queries, and per-log cutoffs in daily updates (first sightings that move)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from issue_assets.features import FeatureBuilder, compute_features
from issue_assets.features.events import EventIndex, Queries, stable_order
from issue_assets.features.synthetic import (
    changes_between,
    snapshot_tables,
    synthetic_comments,
    synthetic_issues,
)

DAY_US = 86_400_000_000


def test_stable_order_is_lexsort():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 2000))
        keys = rng.integers(int(rng.choice([0, -1])), int(rng.choice([1, 3, 9, 300, 70_000, 2**40])) + 1, n)
        unit = int(rng.choice([1, 1_000_000]))
        times = rng.integers(0, int(rng.choice([3, 1000, 2**45 // unit])), n) * unit
        if rng.random() < 0.3:
            times = np.sort(times)
        np.testing.assert_array_equal(stable_order(keys, times), np.lexsort((times, keys)))


def _table():
    issues = synthetic_issues(4000, repos=3, per_day=120, seed=7)
    rng = np.random.default_rng(7)
    issues.loc[rng.random(len(issues)) < 0.05, ["user_id", "user_login"]] = pd.NA  # unknown authors
    issues.loc[rng.random(len(issues)) < 0.05, "user_id"] = pd.NA  # keyed by login
    issues["first_seen_at"] = issues["created_at"] + pd.to_timedelta(rng.integers(0, 10**6, len(issues)), unit="s")
    comments = synthetic_comments(issues, seed=7)
    comments.loc[rng.random(len(comments)) < 0.05, ["user_id", "user_login"]] = pd.NA
    return issues, comments


def test_fused_log_build_equals_event_index_of_events():
    builder = FeatureBuilder(include_pull_requests=True, text_score=False)
    builder._load(*_table())
    events = builder._events()
    for name, index in builder.indexes.items():
        ref = EventIndex(*events[name])
        np.testing.assert_array_equal(index._base.keys, ref._base.keys, err_msg=name)
        np.testing.assert_array_equal(index._base.times, ref._base.times, err_msg=name)
        np.testing.assert_array_equal(index._base._cum, ref._base._cum, err_msg=name)


def test_batched_sorted_queries_equal_single_queries():
    rng = np.random.default_rng(1)
    for trial in range(30):
        n = int(rng.integers(0, 3000))
        keys, unit = rng.integers(-1, 40, n), int(rng.choice([1, 1_000_000]))
        times = rng.integers(0, 10**6, n) * unit
        index = EventIndex(keys, times, rng.random((n, 2)))
        if trial % 2:
            cut = int(rng.integers(0, 10**6)) * unit
            index.replace_from(cut, rng.integers(-1, 40, 30), cut + rng.integers(0, 10**5, 30) * unit,
                               rng.random((30, 2)))
        m = int(rng.integers(0, 1500))
        qk, qt = rng.integers(-1, 45, m), rng.integers(-5, 10**6 + 5, m) * int(rng.choice([1, 1_000_000]))
        q = Queries(qk, qt, np.lexsort((qt, qk)))
        shifts = (0, -DAY_US, -7, 3_000_000)
        for inclusive in (True, False):
            for got, s in zip(index.sums_at(q, shifts, inclusive), shifts, strict=True):
                np.testing.assert_array_equal(got, index.sums(qk, qt + s, inclusive))
            np.testing.assert_array_equal(index.last_time_at(q, inclusive), index.last_time(qk, qt, inclusive))


def _upsert(table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    keys = pd.MultiIndex.from_frame(table[["repo", "id"]])
    replaced = keys.isin(pd.MultiIndex.from_frame(rows[["repo", "id"]]))
    return pd.concat([table.loc[~replaced], rows], ignore_index=True)


def test_daily_updates_with_moving_first_sightings_equal_full_recompute():
    """The generator moves a changed issue's first_seen_at to the sync time (unchanged rows keep theirs):
    each day's update then has its a_seen log cut at the fit's snapshot and the others at the day's
    changes. The result equals a full computation on the tables the upserts built."""
    issues = synthetic_issues(6000, repos=3, per_day=200, seed=13)
    comments = synthetic_comments(issues, seed=13)
    end = issues["created_at"].max().floor("D")
    days = [end - pd.Timedelta(days=6 - k) for k in range(7)]
    table, seen = snapshot_tables(issues, comments, days[0])
    builder = FeatureBuilder(include_pull_requests=True, text_score=False)
    builder.fit(table, seen)
    for a, b in zip(days, days[1:], strict=False):
        changed, fresh = changes_between(issues, comments, a, b)
        got = builder.update(changed, fresh, as_of=b)
        table, seen = _upsert(table, changed), pd.concat([seen, fresh], ignore_index=True)
        # Every patched log answers as one built from scratch on the builder's current tables.
        rng = np.random.default_rng(len(table))
        for name, ev in builder._events().items():
            index, fresh_index = builder.indexes[name], EventIndex(*ev)
            qk = rng.integers(-1, int(max(ev[0].max(initial=0), 1)) + 2, 3000)
            qt = days[0].value // 1000 + rng.integers(-3, 8, 3000) * DAY_US // 2
            for inclusive in (True, False):
                np.testing.assert_allclose(index.sums(qk, qt, inclusive), fresh_index.sums(qk, qt, inclusive),
                                           rtol=1e-12, atol=1e-9, err_msg=name)
    expected = compute_features(table, seen, include_pull_requests=True, text_score=False, as_of=days[-1])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_exact=False, rtol=1e-9, atol=1e-9)
