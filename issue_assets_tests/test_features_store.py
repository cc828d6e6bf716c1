"""The incremental structures behind FeatureBuilder.update: event logs patched through a delta, inputs
never written, and a long run of daily updates equal to a full recompute."""

from __future__ import annotations

import numpy as np
import pandas as pd

from issue_assets.features import FeatureBuilder, compute_features
from issue_assets.features.events import EventIndex
from issue_assets.features.synthetic import (
    changes_between,
    snapshot_tables,
    synthetic_comments,
    synthetic_issues,
)


def _events(rng, n, t0=0, span=10**6):
    keys = rng.integers(-1, 30, n)
    times = t0 + rng.integers(0, span, n)
    return keys, times, rng.random((n, 2))


def test_event_index_delta_equals_a_rebuilt_index():
    rng = np.random.default_rng(0)
    keys, times, w = _events(rng, 5000)
    index = EventIndex(keys, times, w)
    # The third patch is large enough to fold the delta into the base.
    for cutoff, size in ((900_000, 300), (950_000, 300), (700_000, 6000), (990_000, 300)):
        keep = times < cutoff
        nk, nt, nw = _events(rng, size, t0=cutoff, span=200_000)
        keys, times, w = (np.concatenate([keys[keep], nk]), np.concatenate([times[keep], nt]),
                          np.concatenate([w[keep], nw]))
        index.replace_from(cutoff, nk, nt, nw)
        fresh = EventIndex(keys, times, w)
        qk, qt = rng.integers(-1, 32, 2000), rng.integers(-10, 1_300_000, 2000)
        order = np.lexsort((qt, qk))
        for inclusive in (True, False):
            np.testing.assert_allclose(index.sums(qk, qt, inclusive), fresh.sums(qk, qt, inclusive))
            np.testing.assert_allclose(index.sums(qk, qt, inclusive, order), fresh.sums(qk, qt, inclusive))
            np.testing.assert_array_equal(index.last_time(qk, qt, inclusive), fresh.last_time(qk, qt, inclusive))
        np.testing.assert_array_equal(index.first_time(qk), fresh.first_time(qk))


def test_fit_and_update_leave_their_inputs_unchanged():
    issues = synthetic_issues(3000, repos=2, per_day=150, seed=5)
    comments = synthetic_comments(issues, seed=5)
    end = issues["created_at"].max()
    start = end - pd.Timedelta(days=1)
    old_i, old_c = snapshot_tables(issues, comments, start)
    changed, fresh = changes_between(issues, comments, start, end)
    copies = [x.copy() for x in (old_i, old_c, changed, fresh)]
    builder = FeatureBuilder(include_pull_requests=True, text_score=False)
    frame = builder.fit(old_i, old_c)
    frame["id"] = -1  # writing into the result must not reach the builder's tables or the input either
    builder.update(changed, fresh, as_of=end)
    for before, after in zip(copies, (old_i, old_c, changed, fresh), strict=True):
        pd.testing.assert_frame_equal(before, after)


def test_two_weeks_of_daily_updates_equal_full_recompute():
    issues = synthetic_issues(8000, repos=3, per_day=250, seed=11)
    # Seen when created: every snapshot then agrees on first_seen_at (the generator's default, the final
    # snapshot time, would move it for unchanged rows from one snapshot to the next).
    issues["first_seen_at"] = issues["created_at"]
    comments = synthetic_comments(issues, seed=11)
    end = issues["created_at"].max().floor("D")
    days = [end - pd.Timedelta(days=14 - k) for k in range(15)]
    builder = FeatureBuilder(include_pull_requests=True, text_score=False)
    builder.fit(*snapshot_tables(issues, comments, days[0]))
    for a, b in zip(days, days[1:], strict=False):
        changed, fresh = changes_between(issues, comments, a, b)
        got = builder.update(changed, fresh, as_of=b)
    expected = compute_features(*snapshot_tables(issues, comments, days[-1]), include_pull_requests=True,
                                text_score=False, as_of=days[-1])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_exact=False, rtol=1e-9, atol=1e-9)
