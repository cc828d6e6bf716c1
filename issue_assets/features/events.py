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
        .sums_at(queries: Queries, shifts, inclusive=True) -> [float64[m, w] per shift]
            .sums at qtimes + shift for each shift, the queries searched once in their sorted order
        .last_time_at(queries: Queries, inclusive=True) -> float64[m]
        EventIndex.presorted(keys, times, weights) -> EventIndex  events already valid and (key, time)-sorted
        .replace_from(cutoff, keys, times, weights) -> None      drop events at or after cutoff, insert the
                                                              given ones (all at or after cutoff): only a
                                                              small delta log is rebuilt; it is folded into
                                                              the base when it passes 1/8 of it
    Queries(qkeys, qtimes, order)   many queries and a permutation sorting them by (key, time), prepared once
                                    for every log asked with them
    stable_order(keys, times=None) -> int64 permutation: rows by (key, time), ties in row order (the
                                    result of np.lexsort((times, keys)), by packed-value sorts)
    time_order(times) -> int64 permutation sorting times stably (None if already sorted)

Events are sorted by (key, time); a query finds its key's segment with searchsorted and bisects the times
inside it, all queries together. When (key, time) fits one int64 (times in whole seconds, as GitHub's
are, or microseconds for small key sets) a single searchsorted on the packed pairs does it; otherwise a
vectorized bisection (about log2(segment) steps). No per-row Python.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

try:
    from pandas._libs.hashtable import StringHashTable as _StringHashTable
except ImportError:  # pragma: no cover
    _StringHashTable = None


def factorize(values) -> tuple[np.ndarray, np.ndarray]:
    """(int64 codes, -1 for NA; object ndarray of the distinct values) in order of first appearance, as
    pd.factorize gives them. Python-backed strings are factorized on their object array (pandas' own path
    for them first rebuilds the array with NA as None: a scan and a copy); Arrow-backed ones use
    pyarrow's dictionary_encode through pandas."""
    arr = values.array if isinstance(values, pd.Series) else values
    if isinstance(arr, pd.arrays.StringArray) and getattr(arr.dtype, "storage", "python") == "python":
        # Every cell a str or NA: pandas' string hash table, as pd.factorize picks for an all-str array
        # (it first checks every cell for that; a non-str cell, the NA, is coded -1 here).
        try:
            uniques, codes = _StringHashTable(len(arr)).factorize(arr._ndarray, na_sentinel=-1)
            return np.asarray(codes, dtype="int64"), np.asarray(uniques, dtype=object)
        except (AttributeError, TypeError, ValueError):  # pragma: no cover - another pandas version
            arr = arr._ndarray
    if isinstance(arr, np.ndarray):
        codes, uniques = pd.factorize(arr, use_na_sentinel=True)
    else:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return np.asarray(codes, dtype="int64"), np.asarray(uniques, dtype=object)


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
            raw, uniques = factorize(values if isinstance(values, pd.Series | np.ndarray)
                                     else pd.array(values, dtype="object"))
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


def _index_bits(n: int) -> int:
    return max(1, int(n - 1).bit_length())


def _packed_argsort(values: np.ndarray, vmin: int, vmax: int) -> np.ndarray | None:
    """The stable argsort of int64 `values` in [vmin, vmax], as one value sort of (value << b) | row (rows
    make the packed values distinct, so any sort gives the stable order; numpy's value sort is vectorized
    and several times faster than a stable argsort). None if the packed values would not fit 62 bits."""
    n = len(values)
    bits = _index_bits(n)
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
    n = len(times)
    if n < 2 or bool((times[1:] >= times[:-1]).all()):
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
    n = len(keys)
    if n < 2:
        return None
    kmin, kmax = int(keys.min()), int(keys.max())
    if kmin == kmax or bool((keys[1:] >= keys[:-1]).all()):
        return None
    if kmax - kmin < 8:
        # A few keys (repositories): one stable partition per key beats any sort.
        return np.concatenate([np.flatnonzero(keys == k) for k in range(kmin, kmax + 1)])
    order = _packed_argsort(keys, kmin, kmax)
    return order if order is not None else np.argsort(keys, kind="stable")


def stable_order(keys: np.ndarray, times: np.ndarray | None = None, *, by_time: np.ndarray | None = None,
                 times_sorted: bool = False) -> np.ndarray:
    """Rows ordered by (key, time), ties in row order: np.lexsort((times, keys)), computed as a stable time
    sort (skipped when `times_sorted`, or given as `by_time`) followed by a stable key sort."""
    keys = np.asarray(keys, dtype="int64")
    n = len(keys)
    if by_time is None and not times_sorted and times is not None:
        by_time = time_order(times)
    if by_time is None:
        korder = key_order(keys)
        return np.arange(n) if korder is None else korder
    korder = key_order(keys.take(by_time))
    return by_time if korder is None else by_time.take(korder)


def _searchsorted(hay: np.ndarray, needles: np.ndarray, side: str) -> np.ndarray:
    """np.searchsorted(hay, needles, side) for sorted needles. A haystack smaller than the needles is
    searched the other way round: each element's place among the needles, then a running count
    (n log m + m steps instead of m log n; the same positions)."""
    m = len(needles)
    if len(hay) * 4 >= m * 3:
        return np.searchsorted(hay, needles, side=side)
    # hay[j] counts for needle i (hay[j] <= needle[i], or < for side="left") iff i >= k[j]
    k = np.searchsorted(needles, hay, side="left" if side == "right" else "right")
    return np.cumsum(np.bincount(k, minlength=m + 1)[:m])


def _order(keys: np.ndarray, times: np.ndarray) -> np.ndarray:
    """A (key, time) order, ties in row order."""
    return stable_order(keys, times) if len(keys) else np.arange(0)


class Queries:
    """Many (key, time) queries with a permutation `order` sorting them by (key, time), prepared once for
    every log they are asked of: each log is then searched front to back (sorted searchsorted, sequential
    gathers) and answers are put back in query order by one gather. Keys < 0 (no key) count nothing."""

    def __init__(self, qkeys, qtimes, order: np.ndarray, *, _like: Queries | None = None):
        self.keys = np.asarray(qkeys, dtype="int64")
        self.times = np.asarray(qtimes, dtype="int64")
        self.order = np.asarray(order)
        self.sorted_times = self.times.take(self.order)
        self._seconds = None
        if _like is not None:
            self.sorted_keys, self.first_valid, self._shared = _like.sorted_keys, _like.first_valid, _like._shared
        else:
            self.sorted_keys = self.keys.take(self.order)
            keys_sorted = bool((self.sorted_keys[1:] >= self.sorted_keys[:-1]).all())
            self.first_valid = int(np.searchsorted(self.sorted_keys, 0, side="left")) if keys_sorted else None
            self._shared = {}
        sk, st = self.sorted_keys, self.sorted_times
        #: (key, time) non-decreasing in sorted order (always, unless with_times gave other times)
        self.in_order = self.first_valid is not None and bool(((sk[1:] > sk[:-1]) | (st[1:] >= st[:-1])).all())

    def with_times(self, qtimes) -> Queries:
        """The same keys and order (which need not sort the new times: it only makes searches faster)."""
        return Queries(self.keys, qtimes, self.order, _like=self)

    def __len__(self) -> int:
        return len(self.keys)

    def seconds(self) -> np.ndarray | None:
        """The sorted query times in whole seconds, or None if some are not whole seconds."""
        if self._seconds is None:
            sec = self.sorted_times // 1_000_000
            self._seconds = sec if not (self.sorted_times - sec * 1_000_000).any() else False
        return None if self._seconds is False else self._seconds

    def scatter(self, sorted_values: np.ndarray) -> np.ndarray:
        """Values computed in sorted order, back in query order (a gather of whole rows)."""
        inverse = self._shared.get("inverse")
        if inverse is None:
            inverse = np.empty(len(self.order), dtype="int64")
            inverse[self.order] = np.arange(len(self.order))
            self._shared["inverse"] = inverse
        return np.take(sorted_values, inverse, axis=0)


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
        self._ws = None
        self._packed = {}
        self._first = None
        self._seg = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def _whole_seconds(self) -> bool:
        if self._ws is None:
            self._seconds()
        return self._ws

    def _seconds(self) -> np.ndarray | None:
        """The times in whole seconds (None if some are not); sets _whole_seconds."""
        seconds = self.times // 1_000_000
        self._ws = not len(self.times) or bool(np.array_equal(seconds * 1_000_000, self.times))
        return seconds if self._ws else None

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
                scaled = self.times if unit == 1 else self._seconds() if unit == 1_000_000 else None
                if scaled is None:
                    scaled = self.times // unit
                comp = self.keys * span
                comp += scaled
                comp -= tmin - 1
                packed = (tmin, tmax, span, comp)
        self._packed[unit] = packed
        return packed

    def window(self, start: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return np.take(self._cum, pos, axis=0) - np.take(self._cum, start, axis=0)

    def segment_starts(self, qkeys: np.ndarray) -> np.ndarray:
        """searchsorted(keys, qkeys, 'left') for qkeys >= 0: a table lookup when keys are dense codes."""
        if self._seg is None:
            n = len(self.keys)
            size = int(self.keys[-1]) + 2 if n else 1
            self._seg = np.searchsorted(self.keys, np.arange(size), side="left") if size <= 4 * n + 1024 else False
        if self._seg is not False:
            return self._seg.take(np.minimum(qkeys, len(self._seg) - 1))
        return np.searchsorted(self.keys, qkeys, side="left")

    def shifted_positions(self, qkeys: np.ndarray, qtimes: np.ndarray, qseconds: np.ndarray | None, shifts,
                          inclusive: bool, start: np.ndarray, in_order: bool = False) -> list[np.ndarray]:
        """For queries with keys >= 0 (times qtimes; qseconds = qtimes in whole seconds, or None), the end of
        each key's events at time <= qtime + shift (< if not inclusive), one array per shift: the same
        positions as .positions(qkeys, qtimes + shift, inclusive). in_order: the queries are sorted by
        (key, time)."""
        if len(self.keys) == 0 or len(qkeys) == 0:
            return [start.copy() for _ in shifts]
        unit = 1_000_000 if self._whole_seconds and qseconds is not None \
            and all(s % 1_000_000 == 0 for s in shifts) else 1
        packed = self._composite(unit)
        if packed is None:
            return [self.positions(qkeys, qtimes + s, inclusive, start=start)[1] for s in shifts]
        tmin, tmax, span, comp = packed
        q = qseconds if unit != 1 else qtimes
        # Keys past the log's last key all end at its end (clipping them keeps the packed values in range).
        keyoff = np.minimum(qkeys, int(self.keys[-1]) + 1)
        keyoff *= span
        keyoff -= tmin - 1
        side = "right" if inclusive else "left"
        out = []
        needle = np.empty_like(keyoff)
        for s in shifts:
            np.add(q, s // unit, out=needle)
            np.clip(needle, tmin - 1, tmax + 1, out=needle)
            needle += keyoff
            out.append(_searchsorted(comp, needle, side) if in_order else np.searchsorted(comp, needle, side=side))
        return out

    def positions(self, qkeys: np.ndarray, qtimes: np.ndarray, inclusive: bool, order=None, start=None):
        if order is not None:
            # Queries sorted by (key, time) search the sorted log front to back: far fewer cache misses.
            qk_sorted = qkeys[order]
            start_s, pos_s = self.positions(qk_sorted, qtimes[order], inclusive)
            start, pos = np.empty_like(start_s), np.empty_like(pos_s)
            start[order], pos[order] = start_s, pos_s
            return start, pos
        if start is None:
            start = np.searchsorted(self.keys, qkeys, side="left")
        if len(self.keys) == 0:
            return start, start.copy()
        unit = 1_000_000 if self._whole_seconds and np.array_equal(qtimes // 1_000_000 * 1_000_000, qtimes) else 1
        packed = self._composite(unit)
        if packed is not None:
            tmin, tmax, span, comp = packed
            q = np.clip(qtimes // unit, tmin - 1, tmax + 1) - (tmin - 1)
            k = np.minimum(np.where(qkeys >= 0, qkeys, 0), int(self.keys[-1]) + 1)
            pos = np.searchsorted(comp, k * span + q, side="right" if inclusive else "left")
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

    @classmethod
    def presorted(cls, keys: np.ndarray, times: np.ndarray, weights: np.ndarray) -> EventIndex:
        """An index of events already valid (keys >= 0) and in (key, time) order, ties in input order."""
        index = cls.__new__(cls)
        index._base = _SortedLog(np.asarray(keys, dtype="int64"), np.asarray(times, dtype="int64"),
                                 _as_2d(weights, len(keys)), presorted=True)
        index._cut = None
        index._delta = None
        return index

    def _base_positions(self, qkeys, qtimes, inclusive, order=None):
        start, pos = self._base.positions(qkeys, qtimes, inclusive, order)
        if self._cut is not None:
            _, cut_pos = self._base.positions(qkeys, np.full(len(qkeys), self._cut, dtype="int64"), False)
            pos = np.minimum(pos, cut_pos)
        return start, pos

    def _sorted_parts(self, q: Queries, shifts, inclusive: bool):
        """(valid, [(log, start, [pos per shift])]) for the sorted queries with a key (`valid` selects them)."""
        valid = slice(q.first_valid, None) if q.first_valid is not None else np.flatnonzero(q.sorted_keys >= 0)
        sk, st = q.sorted_keys[valid], q.sorted_times[valid]
        sec = q.seconds()
        sec = sec[valid] if sec is not None else None
        base = self._base
        start = base.segment_starts(sk)
        pos = base.shifted_positions(sk, st, sec, shifts, inclusive, start, q.in_order)
        if self._cut is not None and len(sk):
            cut = np.full(len(sk), self._cut, dtype="int64")
            cut_sec = cut // 1_000_000 if self._cut % 1_000_000 == 0 else None
            cut_pos = base.shifted_positions(sk, cut, cut_sec, (0,), False, start, isinstance(valid, slice))[0]
            pos = [np.minimum(p, cut_pos) for p in pos]
        parts = [(base, start, pos)]
        if self._delta is not None and len(self._delta):
            d = self._delta
            dstart = d.segment_starts(sk)
            parts.append((d, dstart, d.shifted_positions(sk, st, sec, shifts, inclusive, dstart, q.in_order)))
        return valid, parts

    def sums_at(self, q: Queries, shifts=(0,), inclusive: bool = True) -> list[np.ndarray]:
        """[sums(q.keys, q.times + shift, inclusive) for shift in shifts]: float64[m, w] arrays."""
        w = self._base._cum.shape[1]
        m = len(q)
        valid, parts = self._sorted_parts(q, shifts, inclusive)
        (base, start, pos), *rest = parts
        first = np.take(base._cum, start, axis=0)
        out = []
        for j, p in enumerate(pos):
            # Computed in sorted order on contiguous rows, then one gather back to query order.
            got = np.empty((m, w))
            if isinstance(valid, slice):
                got[: valid.start] = 0.0
                part = got[valid]
                np.take(base._cum, p, axis=0, out=part, mode="clip")  # (mode="raise" buffers `out`)
            else:
                part = np.take(base._cum, p, axis=0)
            part -= first
            for log, dstart, dpos in rest:
                part += log.window(dstart, dpos[j])
            if not isinstance(valid, slice):
                got[:] = 0.0
                got[valid] = part
            out.append(q.scatter(got))
        return out

    def last_time_at(self, q: Queries, inclusive: bool = True) -> np.ndarray:
        """last_time(q.keys, q.times, inclusive)."""
        out = np.full(len(q), np.nan)
        valid, parts = self._sorted_parts(q, (0,), inclusive)
        got_all = None
        for log, start, (pos,) in parts:
            has = pos > start
            got = np.full(len(start), np.nan)
            got[has] = log.times[pos[has] - 1]
            got_all = got if got_all is None else np.fmax(got_all, got)
        out[valid] = got_all
        return q.scatter(out)

    def sums(self, qkeys, qtimes, inclusive: bool = True, order=None) -> np.ndarray:
        qkeys = np.asarray(qkeys, dtype="int64")
        qtimes = np.asarray(qtimes, dtype="int64")
        if order is not None:
            # Sorted queries: sequential searches and gathers, one scatter of the result.
            return self.sums_at(Queries(qkeys, qtimes, order), (0,), inclusive)[0]
        start, pos = self._base_positions(qkeys, qtimes, inclusive)
        out = self._base.window(start, pos)
        if self._delta is not None and len(self._delta):
            ds, dp = self._delta.positions(qkeys, qtimes, inclusive)
            out += self._delta.window(ds, dp)
        return out

    def last_time(self, qkeys, qtimes, inclusive: bool = True, order=None) -> np.ndarray:
        qkeys = np.asarray(qkeys, dtype="int64")
        qtimes = np.asarray(qtimes, dtype="int64")
        if order is not None:
            return self.last_time_at(Queries(qkeys, qtimes, order), inclusive)
        out = np.full(len(qkeys), np.nan)
        parts = [(self._base, self._base_positions(qkeys, qtimes, inclusive))]
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
        if not sel.all():
            keys, times, weights = keys[sel], times[sel], weights[sel]
        order = _order(keys, times)
        keys, times, weights = keys.take(order), times.take(order), np.take(weights, order, axis=0)
        if self._cut is None or cutoff <= self._cut:
            self._cut = cutoff
            delta = _SortedLog(keys, times, weights, presorted=True)
        else:
            delta = _SortedLog(*self._delta.before(cutoff), presorted=True).inserted(keys, times, weights)
        self._delta = delta
        if len(delta) > max(4096, len(self._base) // 8):
            self._merged()
