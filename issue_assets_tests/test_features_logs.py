"""The event logs: packed-value sorts, sums and first/last times at shifted instants against a brute-force
count, and the overlay (events added and removed) against a log rebuilt with those events."""

from __future__ import annotations

import numpy as np

from issue_assets.features.events import EventLog, Overlay, Queries, stable_order

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


def brute(keys, times, weights, qk, qt, inclusive):
    """(sums, last time, first time) per query by a full scan."""
    sums = np.zeros((len(qk), weights.shape[1]))
    last, first = np.full(len(qk), np.nan), np.full(len(qk), np.nan)
    for i, (k, t) in enumerate(zip(qk, qt, strict=True)):
        mine = keys == k
        hit = mine & ((times <= t) if inclusive else (times < t))
        sums[i] = weights[hit].sum(axis=0)
        if hit.any():
            last[i] = times[hit].max()
        if mine.any() and k >= 0:
            first[i] = times[mine].min()
    return sums, last, first


def random_log(rng, n, unit):
    keys = rng.integers(-1, 40, n)
    times = rng.integers(0, 10**6, n) * unit
    return keys, times, rng.random((n, 2))


def test_sums_and_times_at_shifted_instants_equal_a_full_scan():
    rng = np.random.default_rng(1)
    for trial in range(40):
        unit = int(rng.choice([1, 1_000_000]))  # microseconds, or whole seconds (the packed search)
        keys, times, w = random_log(rng, int(rng.integers(0, 600)), unit)
        log = EventLog(keys, times, w)
        m = int(rng.integers(1, 300))
        qk, qt = rng.integers(-1, 45, m), rng.integers(-5, 10**6 + 5, m) * int(rng.choice([1, unit]))
        q = Queries(qk, qt)
        shifts = (0, -DAY_US, -7, 3_000_000)
        valid = keys >= 0
        for inclusive in (True, False):
            for got, s in zip(log.sums_at(q, shifts, inclusive), shifts, strict=True):
                want = brute(keys[valid], times[valid], w[valid], qk, qt + s, inclusive)[0]
                np.testing.assert_allclose(got, want, atol=1e-9, err_msg=f"trial {trial} shift {s}")
            _, last, first = brute(keys[valid], times[valid], w[valid], qk, qt, inclusive)
            np.testing.assert_array_equal(log.last_time_at(q, inclusive), last)
        np.testing.assert_array_equal(log.first_time(qk), first)


def test_overlay_equals_the_log_rebuilt_with_the_changes():
    rng = np.random.default_rng(2)
    for trial in range(60):
        unit = int(rng.choice([1, 1_000_000]))
        keys, times, w = random_log(rng, int(rng.integers(1, 400)), unit)
        keys[keys < 0] = 0
        # remove a few of the log's own events (duplicates included), add a few new ones
        gone = rng.choice(len(keys), size=int(rng.integers(0, min(5, len(keys)) + 1)), replace=False)
        if len(gone) and rng.random() < 0.3:  # an event equal to another one: only one copy goes
            keys = np.append(keys, keys[gone[0]])
            times = np.append(times, times[gone[0]])
            w = np.vstack([w, w[gone[0]]])
        ak, at, aw = random_log(rng, int(rng.integers(0, 4)), unit)
        keep = np.ones(len(keys), bool)
        keep[gone] = False
        rebuilt = EventLog(np.r_[keys[keep], ak], np.r_[times[keep], at], np.vstack([w[keep], aw]))
        overlay = Overlay(EventLog(keys, times, w), EventLog(ak, at, aw), EventLog(keys[gone], times[gone], w[gone]))
        probe = np.r_[keys[gone], ak, rng.integers(-1, 42, 50)]
        qt = np.r_[times[gone], at, rng.integers(0, 10**6, 50) * unit][: len(probe)]
        q = Queries(probe, qt)
        for inclusive in (True, False):
            for a, b in zip(overlay.sums_at(q, (0, -3 * unit), inclusive), rebuilt.sums_at(q, (0, -3 * unit), inclusive),
                            strict=True):
                np.testing.assert_allclose(a, b, atol=1e-9, err_msg=f"trial {trial}")
            np.testing.assert_array_equal(overlay.last_time_at(q, inclusive), rebuilt.last_time_at(q, inclusive))
        np.testing.assert_array_equal(overlay.first_time(probe), rebuilt.first_time(probe))
