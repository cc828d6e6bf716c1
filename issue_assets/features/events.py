"""Sorted event logs with prefix sums: "how much happened for key k up to time t", for many (k, t) at once.

Public API:
    KeyCoder()                      .encode(values: array-like) -> int64 codes (NA -> -1), stable across calls
    EventIndex(keys, times, weights)
        keys: int64[n] (negative keys are dropped), times: int64[n] (microseconds), weights: float64[n, w]
        .sums(qkeys, qtimes, inclusive=True, order=None) -> float64[m, w]
            sum of weights with key == qk and time <= qt (time < qt if not inclusive); `order`, an optional
            permutation sorting the queries by (key, time), only makes it faster
        .last_time(qkeys, qtimes, inclusive=True, order=None) -> float64[m] latest such time (NaN if none)
        .first_time(qkeys) -> float64[m]                         earliest event time of the key (NaN if none)
        .replace_from(cutoff, keys, times, weights) -> None      drop events at or after cutoff, insert the
                                                              given ones (all at or after cutoff): only a
                                                              small delta log is rebuilt; it is folded into
                                                              the base when it passes 1/8 of it

Events are sorted by (key, time); a query finds its key's segment with searchsorted and bisects the times
inside it, all queries together. When (key, time) fits one int64 (times in whole seconds, as GitHub's
are, or microseconds for small key sets) a single searchsorted on the packed pairs does it; otherwise a
vectorized bisection (about log2(segment) steps). No per-row Python.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class KeyCoder:
    """Dense codes for keys, stable as new keys arrive. Strings may be NA; integer keys < 0 mean NA."""

    def __init__(self) -> None:
        self._index: pd.Index | None = None

    def encode(self, values) -> np.ndarray:
        """Factorizes once (one hash pass over the values) and codes only the distinct values."""
        if isinstance(values, np.ndarray) and values.dtype.kind == "i":
            raw, uniques = pd.factorize(np.where(values < 0, -1, values))
            keep = uniques >= 0
        else:
            raw, uniques = pd.factorize(pd.array(values, dtype="object") if not isinstance(values, pd.Series)
                                        else values, use_na_sentinel=True)
            uniques = np.asarray(uniques, dtype=object)
            keep = np.ones(len(uniques), bool)
        ucodes = np.full(len(uniques) + 1, -1, dtype="int64")
        if keep.any():
            ucodes[:-1][keep] = self._encode_distinct(np.asarray(uniques)[keep])
        return ucodes[raw]

    def _encode_distinct(self, values) -> np.ndarray:
        if isinstance(values, np.ndarray) and values.dtype.kind == "i":
            values = pd.Index(values)
            na = np.asarray(values < 0)
        else:
            values = pd.Index(pd.array(values, dtype="object"))
            na = np.asarray(pd.isna(values))
        if self._index is None:
            self._index = values[~na].unique()
        codes = self._index.get_indexer(values)
        missing = (codes < 0) & ~na
        if missing.any():
            self._index = self._index.append(values[missing].unique())
            codes = self._index.get_indexer(values)
        codes = np.asarray(codes, dtype="int64")
        codes[na] = -1
        return codes


def _as_2d(weights: np.ndarray, n: int) -> np.ndarray:
    w = np.asarray(weights, dtype="float64")
    return w[:, None] if w.ndim == 1 else w.reshape(n, w.shape[1])


def _order(keys: np.ndarray, times: np.ndarray) -> np.ndarray:
    """A (key, time) order. Radix passes when keys fit 16 bits; times already sorted need only the key pass."""
    n = len(keys)
    if n == 0:
        return np.arange(0)
    kmax = int(keys.max())
    sorted_times = n < 2 or bool((times[1:] >= times[:-1]).all())
    if kmax < 2**16 - 1:
        k16 = keys.astype("uint16")
        if sorted_times:
            return np.argsort(k16, kind="stable")
        by_time = np.argsort(times, kind="stable")
        return by_time[np.argsort(k16[by_time], kind="stable")]
    tmin = int(times.min())
    span = int(times.max()) - tmin + 1
    if (kmax + 1) * span < 2**62:
        return np.argsort(keys * span + (times - tmin), kind="stable")
    return np.lexsort((times, keys))


class _SortedLog:
    """Events sorted by (key, time) with prefix sums of their weights."""

    def __init__(self, keys: np.ndarray, times: np.ndarray, weights: np.ndarray, presorted: bool = False):
        if not presorted:
            keep = keys >= 0
            if not keep.all():
                keys, times, weights = keys[keep], times[keep], weights[keep]
            order = _order(keys, times)
            keys, times, weights = keys.take(order), times.take(order), np.take(weights, order, axis=0)
        self.keys, self.times, self._w = keys, times, weights
        self._cum = np.zeros((len(weights) + 1, weights.shape[1]), dtype="float64")
        np.cumsum(weights, axis=0, out=self._cum[1:])
        self._whole_seconds = not (times % 1_000_000).any() if len(times) else True
        self._packed = {}
        self._perm = None
        self._first = None

    def __len__(self) -> int:
        return len(self.keys)

    def _composite(self, unit: int):
        """(key, time) packed into one sortable int64, or None if it would not fit."""
        if unit in self._packed:
            return self._packed[unit]
        packed = None
        if len(self.times):
            tmin, tmax = int(self.times.min()) // unit, int(self.times.max()) // unit
            span = tmax - tmin + 3
            kmax = int(self.keys.max()) + 1
            if kmax * span < 2**62:
                packed = (tmin, tmax, span, self.keys * span + (self.times // unit - (tmin - 1)))
        self._packed[unit] = packed
        return packed

    def window(self, start: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return np.take(self._cum, pos, axis=0) - np.take(self._cum, start, axis=0)

    def sorted_positions(self, qkeys: np.ndarray, qtimes: np.ndarray, inclusive: bool, order: np.ndarray):
        """Positions of the queries taken in `order` (sorted by key, time), in that order."""
        cached = self._perm
        if cached is not None and cached[0] is qkeys and cached[1] is order:
            qk_sorted, start_sorted = cached[2], cached[3]
        else:
            qk_sorted = qkeys.take(order)
            start_sorted = np.searchsorted(self.keys, qk_sorted, side="left")
            self._perm = (qkeys, order, qk_sorted, start_sorted)
        return self.positions(qk_sorted, qtimes.take(order), inclusive, start=start_sorted)

    def positions(self, qkeys: np.ndarray, qtimes: np.ndarray, inclusive: bool, order=None, start=None):
        if order is not None:
            # Queries sorted by (key, time) search the sorted log front to back: far fewer cache misses.
            cached = self._perm
            if cached is not None and cached[0] is qkeys and cached[1] is order:
                qk_sorted, start_sorted = cached[2], cached[3]
            else:
                qk_sorted = qkeys[order]
                start_sorted = np.searchsorted(self.keys, qk_sorted, side="left")
                self._perm = (qkeys, order, qk_sorted, start_sorted)
            start_s, pos_s = self.positions(qk_sorted, qtimes[order], inclusive, start=start_sorted)
            start, pos = np.empty_like(start_s), np.empty_like(pos_s)
            start[order], pos[order] = start_s, pos_s
            return start, pos
        if start is None:
            start = np.searchsorted(self.keys, qkeys, side="left")
        if len(self.keys) == 0:
            return start, start.copy()
        unit = 1_000_000 if self._whole_seconds and not (qtimes % 1_000_000).any() else 1
        packed = self._composite(unit)
        if packed is not None:
            tmin, tmax, span, comp = packed
            q = np.clip(qtimes // unit, tmin - 1, tmax + 1) - (tmin - 1)
            pos = np.searchsorted(comp, np.where(qkeys >= 0, qkeys, 0) * span + q,
                                  side="right" if inclusive else "left")
            return start, np.where(qkeys >= 0, pos, start)
        lo = start.copy()
        hi = np.searchsorted(self.keys, qkeys, side="right")
        times = self.times
        active = lo < hi
        while active.any():
            idx = np.nonzero(active)[0]
            mid = (lo[idx] + hi[idx]) // 2
            t = times[mid]
            go_right = t <= qtimes[idx] if inclusive else t < qtimes[idx]
            lo[idx] = np.where(go_right, mid + 1, lo[idx])
            hi[idx] = np.where(go_right, hi[idx], mid)
            active[idx] = lo[idx] < hi[idx]
        return start, lo

    def first_time(self, qkeys: np.ndarray) -> np.ndarray:
        if self._first is None:
            # Keys are dense codes: one table of each key's earliest time answers any number of queries.
            size = int(self.keys[-1]) + 2 if len(self.keys) else 1
            if size <= 4 * len(self.keys) + 1024:
                first = np.full(size, np.nan)
                heads = np.flatnonzero(np.r_[True, self.keys[1:] != self.keys[:-1]]) if len(self.keys) else []
                first[self.keys[heads]] = self.times[heads]
                self._first = first
            else:
                self._first = False
        if self._first is not False:
            q = np.asarray(qkeys, dtype="int64")
            ok = (q >= 0) & (q < len(self._first) - 1)
            return np.where(ok, self._first[np.where(ok, q, len(self._first) - 1)], np.nan)
        start = np.searchsorted(self.keys, qkeys, side="left")
        end = np.searchsorted(self.keys, qkeys, side="right")
        out = np.full(len(start), np.nan)
        has = end > start
        out[has] = self.times[start[has]]
        return out

    def before(self, cutoff: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keep = self.times < cutoff
        return self.keys[keep], self.times[keep], self._w[keep]

    def inserted(self, keys, times, weights) -> _SortedLog:
        """A new log with these (valid, (key, time)-sorted) events merged in: O(n) copies, no sort."""
        if len(keys) == 0:
            return self
        _, pos = self.positions(keys, times, inclusive=True)
        return _SortedLog(np.insert(self.keys, pos, keys), np.insert(self.times, pos, times),
                          np.insert(self._w, pos, weights, axis=0), presorted=True)


class EventIndex:
    """A large sorted base log (valid before `cut`) plus a small sorted delta log (events at or after `cut`).

    replace_from only rebuilds the delta, so a daily update costs O(changes), not O(history); the delta is
    folded into the base when it grows past an eighth of it (amortized O(1) per event)."""

    def __init__(self, keys: np.ndarray, times: np.ndarray, weights: np.ndarray):
        keys = np.asarray(keys, dtype="int64")
        times = np.asarray(times, dtype="int64")
        self._base = _SortedLog(keys, times, _as_2d(weights, len(keys)))
        self._cut: int | None = None  # base events at or after the cut are superseded by the delta
        self._delta: _SortedLog | None = None

    def __len__(self) -> int:
        return len(self._base_part()[0]) + (len(self._delta) if self._delta is not None else 0)

    def _base_part(self):
        b = self._base
        return b.before(self._cut) if self._cut is not None else (b.keys, b.times, b._w)

    @property
    def keys(self) -> np.ndarray:
        return self._merged().keys

    @property
    def times(self) -> np.ndarray:
        return self._merged().times

    def _merged(self) -> _SortedLog:
        if self._cut is None and self._delta is None:
            return self._base
        base = _SortedLog(*self._base_part(), presorted=True)
        if self._delta is not None:
            base = base.inserted(self._delta.keys, self._delta.times, self._delta._w)
        self._base, self._cut, self._delta = base, None, None
        return base

    def _base_positions(self, qkeys, qtimes, inclusive, order=None):
        start, pos = self._base.positions(qkeys, qtimes, inclusive, order)
        if self._cut is not None:
            _, cut_pos = self._base.positions(qkeys, np.full(len(qkeys), self._cut, dtype="int64"), False)
            pos = np.minimum(pos, cut_pos)
        return start, pos

    def sums(self, qkeys, qtimes, inclusive: bool = True, order=None) -> np.ndarray:
        qkeys = np.asarray(qkeys, dtype="int64")
        qtimes = np.asarray(qtimes, dtype="int64")
        if order is not None and self._cut is None and self._delta is None:
            # Sorted queries: sequential searches and gathers, one scatter of the result.
            start, pos = self._base.sorted_positions(qkeys, qtimes, inclusive, order)
            out = np.empty((len(qkeys), self._base._cum.shape[1]))
            out[order] = self._base.window(start, pos)
            return out
        start, pos = self._base_positions(qkeys, qtimes, inclusive, order)
        out = self._base.window(start, pos)
        if self._delta is not None and len(self._delta):
            ds, dp = self._delta.positions(qkeys, qtimes, inclusive)
            out += self._delta.window(ds, dp)
        return out

    def last_time(self, qkeys, qtimes, inclusive: bool = True, order=None) -> np.ndarray:
        qkeys = np.asarray(qkeys, dtype="int64")
        qtimes = np.asarray(qtimes, dtype="int64")
        out = np.full(len(qkeys), np.nan)
        parts = [(self._base, self._base_positions(qkeys, qtimes, inclusive, order))]
        if self._delta is not None and len(self._delta):
            parts.append((self._delta, self._delta.positions(qkeys, qtimes, inclusive)))
        for log, (start, pos) in parts:
            has = pos > start
            got = np.full(len(qkeys), np.nan)
            got[has] = log.times[pos[has] - 1]
            out = np.fmax(out, got)
        return out

    def first_time(self, qkeys) -> np.ndarray:
        qkeys = np.asarray(qkeys, dtype="int64")
        out = self._base.first_time(qkeys)
        if self._cut is not None:
            out[out >= self._cut] = np.nan
            # The key's first base event may be superseded while an earlier valid one cannot exist.
        if self._delta is not None and len(self._delta):
            out = np.fmin(out, self._delta.first_time(qkeys))
        return out

    def replace_from(self, cutoff: int, keys, times, weights) -> None:
        """Drop events at or after cutoff and insert the given ones (all at or after cutoff)."""
        cutoff = int(cutoff)
        keys = np.asarray(keys, dtype="int64")
        times = np.asarray(times, dtype="int64")
        weights = _as_2d(weights, len(keys))
        if len(times) and times.min() < cutoff:
            raise ValueError("replacement events must be at or after the cutoff")
        sel = keys >= 0
        keys, times, weights = keys[sel], times[sel], weights[sel]
        order = _order(keys, times)
        keys, times, weights = keys[order], times[order], weights[order]
        if self._cut is None or cutoff <= self._cut:
            self._cut = cutoff
            delta = _SortedLog(keys, times, weights, presorted=True)
        else:
            delta = _SortedLog(*self._delta.before(cutoff), presorted=True).inserted(keys, times, weights)
        self._delta = delta
        if len(delta) > max(4096, len(self._base) // 8):
            self._merged()
