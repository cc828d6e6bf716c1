"""Sorted event logs with prefix sums: "how much happened for key k up to time t", for many (k, t) at once.

Public API:
    factorize(values) -> (int64 codes with -1 for NA, object ndarray of distinct values)
    KeyCoder()          dense int64 codes for keys; .encode(values) adds new keys, .lookup(values) does not
                        (unknown -> -1), .values() the keys in code order, KeyCoder.of(values) rebuilds one
    EventLog(keys, times, weights, by_time=False)
        keys: int64[n] (negative keys are dropped), times: int64[n] (microseconds), weights: float64[n, w]
        .sums_at(queries, shifts, inclusive=True) -> [float64[m, w] per shift]
            sum of weights with key == qk and time <= qt + shift (< if not inclusive)
        .last_time_at(queries, inclusive=True) -> float64[m]     latest such time (NaN if none)
        .first_time(qkeys) -> float64[m]                        earliest event time of the key (NaN if none)
    Overlay(base, added, removed)  an EventLog with a few events added and a few of its own removed (the
                        same three methods): a request's own rows on top of a stored history
    Queries(qkeys, qtimes, by_time=False)   many queries, sorted by (key, time) once for every log asked with them
    time_order(times) -> permutation sorting the times stably (None: sorted already), to share between logs
    stable_order(keys, times=None) -> int64 permutation: rows by (key, time), ties in row order
                        (np.lexsort((times, keys)), computed by packed-value sorts)

Events are sorted by (key, time); a query finds its key's segment and the position of its time inside
it. When (key, time) fits one int64 (times in whole seconds, as GitHub's are, or microseconds for small
key sets) one searchsorted on the packed pairs does it, with the queries in sorted order (front-to-back
searches); otherwise a vectorized bisection. No per-row Python.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

try:
    from pandas._libs.hashtable import StringHashTable as _StringHashTable
except ImportError:  # pragma: no cover
    _StringHashTable = None


def factorize(values) -> tuple[np.ndarray, np.ndarray]:
    """(int64 codes, -1 for NA; object ndarray of the distinct values) in order of first appearance.
    Python-backed strings go through pandas' string hash table on their object array (pd.factorize first
    rebuilds the array with NA as None: a scan and a copy)."""
    arr = values.array if isinstance(values, pd.Series) else values
    if isinstance(arr, pd.arrays.StringArray) and getattr(arr.dtype, "storage", "python") == "python":
        try:
            uniques, codes = _StringHashTable(len(arr)).factorize(arr._ndarray, na_sentinel=-1)
            return np.asarray(codes, dtype="int64"), np.asarray(uniques, dtype=object)
        except (AttributeError, TypeError, ValueError):  # pragma: no cover - another pandas version
            arr = arr._ndarray
    codes, uniques = pd.factorize(arr if isinstance(arr, np.ndarray) else values, use_na_sentinel=True)
    return np.asarray(codes, dtype="int64"), np.asarray(uniques, dtype=object)


class KeyCoder:
    """Dense codes for keys (strings, NA allowed, or int64 where < 0 means NA), stable as keys arrive."""

    def __init__(self) -> None:
        self._index = pd.Index([], dtype=object)
        self._dict: dict | None = None

    @classmethod
    def of(cls, values) -> KeyCoder:
        """A coder whose codes are the positions of `values` (e.g. a snapshot's .values())."""
        coder = cls()
        coder._index = pd.Index(values)
        return coder

    def __len__(self) -> int:
        return len(self._index)

    def values(self) -> np.ndarray:
        return np.asarray(self._index)

    def encode(self, values) -> np.ndarray:
        """Codes of `values`, adding unseen keys (one hash pass over the values, then the distinct ones)."""
        raw, uniques, keep = self._distinct(values)
        ucodes = np.full(len(uniques) + 1, -1, dtype="int64")
        if keep.any():
            distinct = pd.Index(uniques[keep])
            codes = self._index.get_indexer(distinct)
            missing = codes < 0
            if missing.any():
                add = distinct[missing]
                self._index = self._index.append(add) if len(self._index) else add
                self._dict = None
                codes = self._index.get_indexer(distinct)
            ucodes[:-1][keep] = codes
        return ucodes[raw]

    def lookup(self, values) -> np.ndarray:
        """Codes of known keys, -1 for unknown or NA; never changes the coder (safe to share)."""
        if len(values) <= 32:  # a request's few rows: a dict lookup each, no pandas call
            if self._dict is None:
                self._dict = {v: i for i, v in enumerate(self._index.tolist())}
            get = self._dict.get
            return np.array([-1 if _na(v) else get(v, -1) for v in values], dtype="int64")
        raw, uniques, keep = self._distinct(values)
        ucodes = np.full(len(uniques) + 1, -1, dtype="int64")
        ucodes[:-1][keep] = self._index.get_indexer(pd.Index(uniques[keep]))
        return ucodes[raw]

    @staticmethod
    def _distinct(values):
        if isinstance(values, np.ndarray) and values.dtype.kind == "i":
            raw, uniques = pd.factorize(np.where(values < 0, -1, values))
            return raw, np.asarray(uniques), np.asarray(uniques) >= 0
        raw, uniques = factorize(values if isinstance(values, pd.Series | np.ndarray)
                                 else pd.array(values, dtype="object"))
        return raw, uniques, np.ones(len(uniques), bool)


def _na(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, int | np.integer) and value < 0) \
        or (isinstance(value, float) and value != value)


# ------------------------------------------------------------------------------------------- orders
def _packed_argsort(values: np.ndarray, vmin: int, vmax: int) -> np.ndarray | None:
    """The stable argsort of int64 `values` in [vmin, vmax] as one value sort of (value << b) | row (the
    row makes values distinct, so any sort is stable; numpy's value sort beats a stable argsort). None if
    the packed values would not fit 62 bits."""
    n = len(values)
    bits = max(1, int(n - 1).bit_length())
    if (vmax - vmin).bit_length() + bits > 62:
        return None
    packed = values - vmin if vmin else values.copy()
    packed <<= bits
    packed |= np.arange(n, dtype="int64")
    packed.sort()
    packed &= (1 << bits) - 1
    return packed


def time_order(times: np.ndarray) -> np.ndarray | None:
    """A permutation sorting int64 times stably; None when they are already sorted."""
    times = np.asarray(times, dtype="int64")
    if len(times) < 2 or bool((times[1:] >= times[:-1]).all()):
        return None
    tmin, tmax = int(times.min()), int(times.max())
    order = _packed_argsort(times, tmin, tmax)
    if order is None:
        # Microseconds spanning years do not fit beside the row number; whole seconds (GitHub's) do.
        seconds = times // 1_000_000
        if not (times - seconds * 1_000_000).any():
            order = _packed_argsort(seconds, tmin // 1_000_000, tmax // 1_000_000)
    return order if order is not None else np.argsort(times, kind="stable")


def key_order(keys: np.ndarray) -> np.ndarray | None:
    """A permutation sorting int64 keys stably; None when they are already sorted."""
    if len(keys) < 2:
        return None
    kmin, kmax = int(keys.min()), int(keys.max())
    if kmin == kmax or bool((keys[1:] >= keys[:-1]).all()):
        return None
    if kmax - kmin < 8:  # a few keys (repositories): one stable partition per key beats any sort
        return np.concatenate([np.flatnonzero(keys == k) for k in range(kmin, kmax + 1)])
    order = _packed_argsort(keys, kmin, kmax)
    return order if order is not None else np.argsort(keys, kind="stable")


def stable_order(keys: np.ndarray, times: np.ndarray | None = None, *, by_time=False) -> np.ndarray:
    """Rows ordered by (key, time), ties in row order: a stable time sort, then a stable key sort.
    `by_time`: time_order(times), when the caller has it already (several logs or queries share times)."""
    keys = np.asarray(keys, dtype="int64")
    if by_time is False:
        by_time = time_order(times) if times is not None else None
    if by_time is None:
        korder = key_order(keys)
        return np.arange(len(keys)) if korder is None else korder
    korder = key_order(keys.take(by_time))
    return by_time if korder is None else by_time.take(korder)


def _searchsorted(hay: np.ndarray, needles: np.ndarray, side: str) -> np.ndarray:
    """np.searchsorted for sorted needles; a haystack smaller than the needles is searched the other way
    round (each element's place among the needles, then a running count: n log m + m steps)."""
    m = len(needles)
    if len(hay) * 4 >= m * 3:
        return np.searchsorted(hay, needles, side=side)
    k = np.searchsorted(needles, hay, side="left" if side == "right" else "right")
    return np.cumsum(np.bincount(k, minlength=m + 1)[:m])


class Queries:
    """Many (key, time) queries sorted once by (key, time): each log is then searched front to back and the
    answers are put back in query order by one gather. Keys < 0 (no key) count nothing."""

    def __init__(self, qkeys, qtimes, *, by_time=False, _like: Queries | None = None):
        self.keys = np.asarray(qkeys, dtype="int64")
        self.times = np.asarray(qtimes, dtype="int64")
        if _like is not None:
            self.order, self.sorted_keys, self.first_valid = _like.order, _like.sorted_keys, _like.first_valid
            self._inverse = _like._inverse
        else:
            self.order = stable_order(self.keys, self.times, by_time=by_time)
            self.sorted_keys = self.keys.take(self.order)
            self.first_valid = int(np.searchsorted(self.sorted_keys, 0, side="left"))
            self._inverse = None
        self.sorted_times = self.times.take(self.order)
        sk, st = self.sorted_keys, self.sorted_times
        #: (key, time) non-decreasing in sorted order (always, unless with_times gave other times)
        self.in_order = bool(((sk[1:] > sk[:-1]) | (st[1:] >= st[:-1])).all())
        sec = st // 1_000_000
        self.seconds = sec if not (st - sec * 1_000_000).any() else None

    def with_times(self, qtimes) -> Queries:
        """The same keys and order (which then need not sort the new times: it only makes searches faster)."""
        return Queries(self.keys, qtimes, _like=self)

    def __len__(self) -> int:
        return len(self.keys)

    def scatter(self, sorted_values: np.ndarray) -> np.ndarray:
        """Values computed in sorted order, back in query order."""
        if self._inverse is None:
            self._inverse = np.empty(len(self.order), dtype="int64")
            self._inverse[self.order] = np.arange(len(self.order))
        return np.take(sorted_values, self._inverse, axis=0)


# ------------------------------------------------------------------------------------------- logs
class EventLog:
    """Events sorted by (key, time) with prefix sums of their weights."""

    def __init__(self, keys, times, weights, *, by_time=False):
        """`by_time`: time_order(times) when the caller has it (logs over the same times share it)."""
        keys = np.asarray(keys, dtype="int64")
        times = np.asarray(times, dtype="int64")
        weights = np.asarray(weights, dtype="float64")
        if weights.ndim == 1:
            weights = weights[:, None]
        order = stable_order(keys, times, by_time=by_time)
        keys = keys.take(order)
        valid = int(np.searchsorted(keys, 0, side="left"))  # negative keys (no key) sort first: dropped
        order, keys = order[valid:], keys[valid:]
        times, weights = times.take(order), np.take(weights, order, axis=0)
        self.keys, self.times, self.weights = keys, times, weights
        self.cum = np.zeros((len(keys) + 1, weights.shape[1]), dtype="float64")
        np.cumsum(weights, axis=0, out=self.cum[1:])
        seconds = times // 1_000_000
        self._whole_seconds = bool(np.array_equal(seconds * 1_000_000, times))
        self._packed: dict[int, tuple | None] = {}
        self._seg: np.ndarray | None = None
        self._first: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def width(self) -> int:
        return self.cum.shape[1]

    def _composite(self, unit: int):
        """(tmin, tmax, span, key * span + time - tmin + 1) in `unit`, or None if it does not fit an int64."""
        if unit not in self._packed:
            packed = None
            if len(self.times):
                tmin, tmax = int(self.times.min()) // unit, int(self.times.max()) // unit
                span = tmax - tmin + 3
                if (int(self.keys.max()) + 1) * span < 2**62:
                    comp = self.keys * span
                    comp += self.times // unit
                    comp -= tmin - 1
                    packed = (tmin, tmax, span, comp)
            self._packed[unit] = packed
        return self._packed[unit]

    def _segment_starts(self, qkeys: np.ndarray) -> np.ndarray:
        """searchsorted(keys, qkeys, 'left') for qkeys >= 0: a table lookup when keys are dense codes."""
        if self._seg is None:
            n = len(self.keys)
            size = int(self.keys[-1]) + 2 if n else 1
            self._seg = np.searchsorted(self.keys, np.arange(size), side="left") if size <= 4 * n + 1024 \
                else np.zeros(0, dtype="int64")
        if len(self._seg):
            return self._seg.take(np.minimum(qkeys, len(self._seg) - 1))
        return np.searchsorted(self.keys, qkeys, side="left")

    def _positions(self, sk, st, sec, shifts, inclusive: bool, in_order: bool) -> tuple[np.ndarray, list]:
        """For sorted queries with keys >= 0: (segment starts, [end of the events <= time + shift per shift])."""
        start = self._segment_starts(sk)
        if len(self.keys) == 0 or len(sk) == 0:
            return start, [start.copy() for _ in shifts]
        unit = 1_000_000 if self._whole_seconds and sec is not None \
            and all(s % 1_000_000 == 0 for s in shifts) else 1
        packed = self._composite(unit)
        side = "right" if inclusive else "left"
        if packed is None:
            return start, [self._bisect(sk, st + s, inclusive, start) for s in shifts]
        tmin, tmax, span, comp = packed
        q = sec if unit != 1 else st
        # Keys past the log's last key all end at its end (clipping keeps the packed values in range).
        keyoff = np.minimum(sk, int(self.keys[-1]) + 1) * span - (tmin - 1)
        out = []
        for s in shifts:
            # (np.clip on small integer arrays costs more than the search: it looks up the dtype's limits)
            needle = np.minimum(np.maximum(q + s // unit, tmin - 1), tmax + 1) + keyoff
            out.append(_searchsorted(comp, needle, side) if in_order else np.searchsorted(comp, needle, side=side))
        return start, out

    def _bisect(self, qkeys, qtimes, inclusive: bool, start: np.ndarray) -> np.ndarray:
        lo = start.copy()
        hi = np.searchsorted(self.keys, qkeys, side="right")
        active = lo < hi
        while active.any():
            idx = np.nonzero(active)[0]
            mid = (lo[idx] + hi[idx]) // 2
            t = self.times[mid]
            right = t <= qtimes[idx] if inclusive else t < qtimes[idx]
            lo[idx] = np.where(right, mid + 1, lo[idx])
            hi[idx] = np.where(right, hi[idx], mid)
            active[idx] = lo[idx] < hi[idx]
        return lo

    def _sorted_parts(self, q: Queries, shifts, inclusive: bool):
        valid = slice(q.first_valid, None)
        sec = q.seconds[valid] if q.seconds is not None else None
        return valid, self._positions(q.sorted_keys[valid], q.sorted_times[valid], sec, shifts, inclusive, q.in_order)

    def sums_at(self, q: Queries, shifts=(0,), inclusive: bool = True) -> list[np.ndarray]:
        valid, (start, pos) = self._sorted_parts(q, shifts, inclusive)
        first = np.take(self.cum, start, axis=0)
        out = []
        for p in pos:
            # computed in sorted order straight into the rows of a result, then one gather back
            got = np.empty((len(q), self.width))
            got[: valid.start] = 0.0
            part = got[valid]
            np.take(self.cum, p, axis=0, out=part, mode="clip")  # (mode="raise" would buffer `out`)
            part -= first
            out.append(q.scatter(got))
        return out

    def last_time_at(self, q: Queries, inclusive: bool = True) -> np.ndarray:
        valid, (start, (pos,)) = self._sorted_parts(q, (0,), inclusive)
        got = np.full(len(q), np.nan)
        has = pos > start
        part = np.full(len(start), np.nan)
        part[has] = self.times[pos[has] - 1]
        got[valid] = part
        return q.scatter(got)

    def first_time(self, qkeys) -> np.ndarray:
        if self._first is None:
            # Keys are dense codes: one table of each key's earliest time answers any number of queries.
            size = int(self.keys[-1]) + 2 if len(self.keys) else 1
            first = np.full(size, np.nan)
            if len(self.keys):
                heads = np.flatnonzero(np.r_[True, self.keys[1:] != self.keys[:-1]])
                first[self.keys[heads]] = self.times[heads]
            self._first = first
        q = np.asarray(qkeys, dtype="int64")
        ok = (q >= 0) & (q < len(self._first) - 1)
        return np.where(ok, self._first[np.where(ok, q, len(self._first) - 1)], np.nan)


class Overlay:
    """A log with a few events added and a few of its own events removed, answering as the log rebuilt
    with those changes would: sums add the added and subtract the removed; first/last times skip removed
    events. A request's rows ride on a stored history this way without copying it."""

    def __init__(self, base: EventLog, added: EventLog | None = None, removed: EventLog | None = None):
        self.base = base
        self.added = added if added is not None and len(added) else None
        self.removed = removed if removed is not None and len(removed) else None

    def sums_at(self, q: Queries, shifts=(0,), inclusive: bool = True) -> list[np.ndarray]:
        out = self.base.sums_at(q, shifts, inclusive)
        for log, sign in ((self.added, 1.0), (self.removed, -1.0)):
            if log is not None:
                out = [o + sign * x for o, x in zip(out, log.sums_at(q, shifts, inclusive), strict=True)]
        return out

    def last_time_at(self, q: Queries, inclusive: bool = True) -> np.ndarray:
        out = self.base.last_time_at(q, inclusive) if self.removed is None else self._skip(q, inclusive, last=True)
        return out if self.added is None else np.fmax(out, self.added.last_time_at(q, inclusive))

    def first_time(self, qkeys) -> np.ndarray:
        qkeys = np.asarray(qkeys, dtype="int64")
        if self.removed is None:
            out = self.base.first_time(qkeys)
        else:
            far = np.full(len(qkeys), np.iinfo("int64").max // 2, dtype="int64")
            out = self._skip(Queries(qkeys, far), True, last=False)
        return out if self.added is None else np.fmin(out, self.added.first_time(qkeys))

    def _skip(self, q: Queries, inclusive: bool, last: bool) -> np.ndarray:
        """The base's last (or first) event time per query that is not a removed event. Only queries whose
        key has a removed event walk their key's segment (a removed multiset is tiny)."""
        out = self.base.last_time_at(q, inclusive) if last else self.base.first_time(q.keys)
        hit = np.flatnonzero(np.isin(q.keys, self.removed.keys) & (q.keys >= 0))
        base, rm = self.base, self.removed
        for i in hit.tolist():
            k, t = int(q.keys[i]), int(q.times[i])
            lo, hi = np.searchsorted(base.keys, k, "left"), np.searchsorted(base.keys, k, "right")
            end = lo + int(np.searchsorted(base.times[lo:hi], t, "right" if inclusive else "left"))
            gone = dict(zip(*np.unique(rm.times[rm.keys == k], return_counts=True), strict=True))
            walk = range(end - 1, lo - 1, -1) if last else range(lo, end)
            value = np.nan
            for j in walk:
                tj = int(base.times[j])
                if gone.get(tj, 0):
                    gone[tj] -= 1
                    continue
                value = float(tj)
                break
            out[i] = value
        return out
