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
                                                              given ones (all at or after cutoff), in O(n)

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
    """Stable (key, time) order: one argsort of packed pairs when they fit in an int64, else lexsort."""
    if len(keys) == 0:
        return np.arange(0)
    tmin = int(times.min())
    span = int(times.max()) - tmin + 1
    if (int(keys.max()) + 1) * span < 2**62:
        return np.argsort(keys * span + (times - tmin), kind="stable")
    return np.lexsort((times, keys))


class EventIndex:
    def __init__(self, keys: np.ndarray, times: np.ndarray, weights: np.ndarray):
        keys = np.asarray(keys, dtype="int64")
        times = np.asarray(times, dtype="int64")
        weights = _as_2d(weights, len(keys))
        keep = keys >= 0
        keys, times, weights = keys[keep], times[keep], weights[keep]
        order = _order(keys, times)
        self.keys, self.times, self._w = keys[order], times[order], weights[order]
        self._cum = self._cumsum(self._w)
        self._packed = None
        self._perm = None

    @staticmethod
    def _cumsum(w: np.ndarray) -> np.ndarray:
        cum = np.zeros((len(w) + 1, w.shape[1]), dtype="float64")
        np.cumsum(w, axis=0, out=cum[1:])
        return cum

    def __len__(self) -> int:
        return len(self.keys)

    def _composite(self, unit: int):
        """(key, time) packed into one sortable int64, or None if it would not fit."""
        cache = getattr(self, "_packed", None)
        if cache is not None and cache[0] == unit:
            return cache
        if len(self.times) == 0:
            return None
        tmin, tmax = int(self.times.min()) // unit, int(self.times.max()) // unit
        span = tmax - tmin + 3
        kmax = int(self.keys.max()) + 1
        if kmax * span >= 2**62:
            return None
        packed = self.keys * span + (self.times // unit - (tmin - 1))
        self._packed = (unit, tmin, tmax, span, packed)
        return self._packed

    def _positions(self, qkeys: np.ndarray, qtimes: np.ndarray, inclusive: bool, order=None, start=None):
        qkeys = np.asarray(qkeys, dtype="int64")
        qtimes = np.asarray(qtimes, dtype="int64")
        if order is not None:
            # Queries sorted by (key, time) search the sorted log front to back: far fewer cache misses.
            cached = getattr(self, "_perm", None)
            if cached is not None and cached[0] is qkeys and cached[1] is order:
                qk_sorted, start_sorted = cached[2], cached[3]
            else:
                qk_sorted = qkeys[order]
                start_sorted = np.searchsorted(self.keys, qk_sorted, side="left")
                self._perm = (qkeys, order, qk_sorted, start_sorted)
            start_s, pos_s = self._positions(qk_sorted, qtimes[order], inclusive, start=start_sorted)
            start, pos = np.empty_like(start_s), np.empty_like(pos_s)
            start[order], pos[order] = start_s, pos_s
            return start, pos
        if start is None:
            start = np.searchsorted(self.keys, qkeys, side="left")
        unit = 1_000_000 if not (self.times % 1_000_000).any() and not (qtimes % 1_000_000).any() else 1
        packed = self._composite(unit)
        if packed is not None:
            _, tmin, tmax, span, comp = packed
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

    def sums(self, qkeys, qtimes, inclusive: bool = True, order=None) -> np.ndarray:
        start, pos = self._positions(qkeys, qtimes, inclusive, order)
        return self._cum[pos] - self._cum[start]

    def last_time(self, qkeys, qtimes, inclusive: bool = True, order=None) -> np.ndarray:
        start, pos = self._positions(qkeys, qtimes, inclusive, order)
        out = np.full(len(pos), np.nan)
        has = pos > start
        out[has] = self.times[pos[has] - 1]
        return out

    def first_time(self, qkeys) -> np.ndarray:
        qkeys = np.asarray(qkeys, dtype="int64")
        start = np.searchsorted(self.keys, qkeys, side="left")
        end = np.searchsorted(self.keys, qkeys, side="right")
        out = np.full(len(start), np.nan)
        has = end > start
        out[has] = self.times[start[has]]
        return out

    def replace_from(self, cutoff: int, keys, times, weights) -> None:
        keys = np.asarray(keys, dtype="int64")
        times = np.asarray(times, dtype="int64")
        weights = _as_2d(weights, len(keys))
        if len(times) and times.min() < cutoff:
            raise ValueError("replacement events must be at or after the cutoff")
        keep = self.times < cutoff
        self._packed = None
        self._perm = None
        if not keep.all():
            self.keys, self.times, self._w = self.keys[keep], self.times[keep], self._w[keep]
        sel = keys >= 0
        keys, times, weights = keys[sel], times[sel], weights[sel]
        order = _order(keys, times)
        keys, times, weights = keys[order], times[order], weights[order]
        if len(keys):
            # Insert after the existing events of the same key and time: the result stays sorted.
            _, pos = self._positions(keys, times, inclusive=True)
            self.keys = np.insert(self.keys, pos, keys)
            self.times = np.insert(self.times, pos, times)
            self._w = np.insert(self._w, pos, weights, axis=0)
        self._cum = self._cumsum(self._w)
        self._packed = None
        self._perm = None
