"""Point-in-time features and labels for issues, computed in bulk and updated incrementally.

Public API:
    compute_features(issues: DataFrame, comments: DataFrame | None = None, *, horizon_days: float = 7,
                     hours_after_creation: float = 0.0, include_pull_requests: bool = False,
                     text_score: bool = True, as_of: Timestamp | None = None) -> DataFrame
    update_features(previous: DataFrame, issues: DataFrame, comments: DataFrame | None = None, *,
                    changed_since: Timestamp, horizon_days: float = 7, hours_after_creation: float = 0.0,
                    include_pull_requests: bool = False, text_score: bool = True,
                    as_of: Timestamp | None = None) -> DataFrame
        `issues`/`comments` are the full current tables; rows of `previous` whose prediction_time is before
        `changed_since` (the earliest event time among the changes: new creations, closes, comments, first
        sightings) are carried, the rest recomputed. Equal to compute_features on the same tables.
    FeatureBuilder(*, horizon_days=7, hours_after_creation=0.0, include_pull_requests=False,
                   text_score=True, as_of=None)
        .fit(issues, comments=None) -> DataFrame            full computation; keeps sorted event logs
        .update(changed_issues, new_comments=None, as_of=None) -> DataFrame
            upsert the changed/new issue rows and new comments, find the earliest affected time itself
            (new creations, changed closes, first sightings, new comments; an edited title/body/author
            recomputes that row, and with the text score on, every row after its label settled),
            patch the event logs (a small delta log per index, folded into the base when it grows; each
            log from its own earliest change, so a moved first sighting only re-cuts the a_seen log, and
            the rows whose events are at or after a log's cut come from time indexes, not table scans) and
            recompute only the affected rows. When the upsert only touches existing rows in place and
            appends newer issues (a daily sync), the column store, the result and the labels are patched
            in O(changes) plus O(log n) (amortized: spare capacity, lookups and time indexes built on the
            fit or the first update); otherwise the tables are re-sorted.
        .frame: DataFrame                                   the current result, built on demand from the
                                                            result columns without copying: a frame kept
                                                            across update() sees patched rows (copy it)
        .last_recomputed: int                               rows computed by the last fit/update
        .timings: dict[str, float]                          seconds per stage (load, event_logs, history,
                                                            text, text_score, reference, assemble, update)
    OUTPUT_KEY_COLUMNS, LABEL_COLUMNS

Output: one row per issue (pull requests only if include_pull_requests) with columns
    repo, id, number, created_at, prediction_time, <FEATURE_NAMES>, <REFERENCE_NAMES>,
    closed_within_7d (boolean, NA while unknown at as_of), label_known_at (NaT while unknown)
sorted by (created_at, repo, id). prediction_time = created_at + hours_after_creation. With
hours_after_creation > 0, issues already closed at their prediction time (nothing left to predict) and
issues whose prediction time is after as_of (not reached yet) are left out.

The point-in-time rule: a feature of issue X at t uses X's title, body, author and created_at; other
issues' created_at <= t and closed_at <= t; label outcomes settled (min(closed_at, created_at + horizon))
at or before t, never X's own; comments with created_at <= t; author associations seen on comments
written by t or on items first seen by t. Never X's labels, counts, assignees, milestone, reactions,
state, state_reason, locked or updated_at. as_of only decides which labels are known.
Authors are keyed by (repo, user id), falling back to the login; a missing user is an unknown author
with no history. Comments attach to issues by (repo, number).

Inside, the tables are numpy columns (`_Columns`: int64/float64 microseconds, dense key codes from one
factorize per column, object arrays for text) with spare capacity; `.issues`/`.comments` are DataFrame views
of them for callers that want frames (the serving module). The fit builds the event logs without a general
sort (logs on the same time column share one stable time order, then a stable pass over each log's keys,
both as value sorts of packed integers) and asks each log once per set of window shifts with the queries in
(key, time) order (`events.Queries`).
"""

from __future__ import annotations

import time
import zlib
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from issue_assets.features.events import (
    EventIndex,
    KeyCoder,
    Queries,
    factorize,
    key_order,
    stable_order,
    time_order,
)
from issue_assets.features.frames import TS, normalize_comments, normalize_issues
from issue_assets.features.labels import DEFAULT_HORIZON_DAYS
from issue_assets.features.registry import FEATURE_NAMES, REFERENCE_NAMES
from issue_assets.features.text import label_columns, text_columns
from issue_assets.features.text_score import TextScoreConfig, hash_texts, text_scores

OUTPUT_KEY_COLUMNS = ["repo", "id", "number", "created_at", "prediction_time"]
LABEL_COLUMNS = ["closed_within_7d", "label_known_at"]
MAINTAINER_ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR")
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
NAT = np.iinfo("int64").min
USER_BITS = 2**40
ISSUE_KEY_BITS = 2**32
_TS_DTYPE = pd.DatetimeTZDtype("us", "UTC")
_PY_STRING = pd.array([], dtype=pd.StringDtype("python"))

#: numeric issue columns the builder keeps (derived by _derive_issues, plus the inputs it needs)
ISSUE_NUMERIC = ("_rk", "_ak", "_uid", "_c", "_cl", "_fs", "_pos", "_known", "_capped", "_maint", "_t", "_target",
                 "_bot", "is_pull_request", "id", "number")
ISSUE_OBJECTS = ("repo", "title", "body", "labels")
#: input issue columns the builder reads
ISSUE_INPUTS = ("repo", "id", "number", "title", "body", "labels", "comments", "user_login", "user_id", "user_type",
                "author_association", "created_at", "closed_at", "first_seen_at", "fetched_at", "is_pull_request")
COMMENT_NUMERIC = ("_rk", "_ak", "_uid", "_ct", "_maint", "id", "issue_number")


# ---------------------------------------------------------------------------------------------- arrays
def _us(series: pd.Series) -> np.ndarray:
    """UTC timestamps -> float64 microseconds since the epoch (exact below 2**53), NaN for NaT."""
    values = (series if series.dtype == TS else series.astype(TS)).array.asi8
    out = values.astype("float64")
    out[values == NAT] = np.nan
    return out


def _ts(us: np.ndarray) -> pd.arrays.DatetimeArray:
    """int64 microseconds (NAT for missing) -> datetime64[us, UTC] array, without a copy."""
    return pd.arrays.DatetimeArray._simple_new(np.asarray(us, dtype="int64").view("M8[us]"), dtype=_TS_DTYPE)


def _float_to_us(x: np.ndarray) -> np.ndarray:
    missing = np.isnan(x)
    if not missing.any():
        return x.astype("int64")
    out = np.where(missing, 0.0, x).astype("int64")
    out[missing] = NAT
    return out


def _objects(series: pd.Series) -> np.ndarray:
    """A string column as an object ndarray (NA as pd.NA); zero-copy for python-backed strings."""
    arr = series.array
    if isinstance(arr, pd.arrays.StringArray) and getattr(arr.dtype, "storage", "python") == "python":
        return arr._ndarray
    return series.astype("string[python]").array._ndarray


def _strings(objects: np.ndarray, dtype=None):
    """Object ndarray of str/pd.NA -> a string array (python storage: no copy, no validation pass)."""
    arr = _PY_STRING._from_backing_data(objects)
    if dtype is None or dtype == arr.dtype:
        return arr
    return pd.array(arr, dtype=dtype)


def _isin(series: pd.Series, values) -> np.ndarray:
    """series.isin(values) with NA -> False, one hash pass plus a check per distinct value."""
    codes, uniques = factorize(series)
    flags = np.append(np.isin(uniques, list(values)), False)
    return flags[codes]


def _is_bot(login: pd.Series, user_type: pd.Series) -> np.ndarray:
    codes, uniques = factorize(login)
    names = pa.array(uniques, type=pa.string())
    flags = pc.fill_null(pc.ends_with(pc.utf8_lower(names), "[bot]"), False).to_numpy(zero_copy_only=False)
    return np.append(flags, False)[codes] | _isin(user_type, ("Bot",))


def _author_key(repo_codes: np.ndarray, user_id: pd.Series, login: pd.Series, logins: KeyCoder) -> np.ndarray:
    """(repo, user id) as one int64; a login stands in for a missing id; -1 for an unknown author."""
    uid = user_id if user_id.dtype == "Int64" else user_id.astype("Int64")
    has_id = ~uid.isna().to_numpy()
    who = uid.to_numpy(dtype="int64", na_value=0) & (USER_BITS // 2 - 1)  # = % 2**39 (floor), without a division
    by_login = ~has_id
    if by_login.any():
        by_login[by_login] = login[by_login].notna().to_numpy()
    if by_login.any():
        who[by_login] = USER_BITS // 2 + logins.encode(login[by_login].to_numpy(dtype=object))
    key = repo_codes * USER_BITS + who
    key[~(has_id | by_login) | (repo_codes < 0)] = -1
    return key


def repo_code(repo, codes: np.ndarray | None = None, names=None) -> np.ndarray:
    """A stable number per repository name (crc32). `codes`/`names` (repo = names[codes]) skip the hashing."""
    if codes is None or names is None or (len(codes) and (codes.min() < 0 or codes.max() >= len(names))):
        codes, names = pd.factorize(np.asarray(repo, dtype=object))
    crc = np.array([zlib.crc32(str(name).encode("utf-8")) & 0x7FFFFFFF for name in names], dtype="float64")
    return crc[codes]


#: name: (table, key column, time column, rows considered (None: all), mask, weight columns) of each event
#: log; "_issue" is "not a pull request", "_one" a weight of 1. Must agree with FeatureBuilder._events.
_LOGS = {
    "r_created": ("iss", "_rk", "_c", None, None, ("_issue", "is_pull_request")),
    "r_closed": ("iss", "_rk", "_cl", None, None, ("_issue", "is_pull_request")),
    "r_label": ("iss", "_rk", "_known", "_issue", None, ("_one", "_pos", "_capped")),
    "a_created": ("iss", "_ak", "_c", None, None, ("_issue", "is_pull_request")),
    "a_issue_closed": ("iss", "_ak", "_cl", None, "_issue", ("_one",)),
    "a_label": ("iss", "_ak", "_known", "_issue", None, ("_one", "_pos")),
    "a_seen": ("iss", "_ak", "_fs", "_maint", None, ("_one",)),
    "r_comments": ("com", "_rk", "_ct", None, None, ("_one",)),
    "a_comments": ("com", "_ak", "_ct", None, None, ("_one", "_maint")),
}


#: (table, time column) -> rows considered (None: all): the time indexes updates use to find the rows
#: whose event in a log is at or after its cutoff (first sightings count for maintainers only: a_seen)
_TIME_INDEXED = {("iss", "_cl"): None, ("iss", "_fs"): "_maint", ("com", "_ct"): None}


def _with_columns(df: pd.DataFrame, cols: dict[str, np.ndarray]) -> pd.DataFrame:
    """df plus these columns, sharing every array (assigning columns one by one copies each)."""
    data = {name: df[name] for name in df.columns if name not in cols}
    data.update(cols)
    return pd.DataFrame(data, index=df.index, copy=False)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(len(num), np.nan), where=den > 0)


def _key_order(keys: np.ndarray, t: np.ndarray, t_sorted: bool) -> np.ndarray:
    """Rows ordered by (key, t), ties in row order (np.lexsort((t, keys)))."""
    return stable_order(keys, t, times_sorted=t_sorted)


def _sums_at(index, q: Queries, shifts=(0,)) -> list[np.ndarray]:
    """[index.sums(q.keys, q.times + shift) for shift in shifts]; indexes without the batched method (the
    serving module's wrappers) are asked once per shift."""
    if hasattr(index, "sums_at"):
        return index.sums_at(q, shifts)
    return [index.sums(q.keys, q.times + s, True, q.order) for s in shifts]


def _last_time_at(index, q: Queries, inclusive: bool) -> np.ndarray:
    if hasattr(index, "last_time_at"):
        return index.last_time_at(q, inclusive)
    return index.last_time(q.keys, q.times, inclusive, q.order)


def _ranges(lo: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """concat(arange(lo[i], lo[i] + lens[i]) for i), vectorized."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype="int64")
    starts = np.cumsum(lens) - lens
    return np.repeat(lo - starts, lens) + np.arange(total)


class _Columns:
    """Named numpy columns with spare capacity: reads are views, appends are amortized O(rows appended).

    Columns may start as borrowed arrays (views of the caller's frames); the first write copies them into
    buffers of their own with room to grow, so no input is ever written."""

    def __init__(self, cols: dict[str, np.ndarray]):
        self._buf = dict(cols)
        self.n = len(next(iter(cols.values()))) if cols else 0
        self._owned = False

    def __getitem__(self, name: str) -> np.ndarray:
        return self._buf[name][: self.n]

    def __contains__(self, name: str) -> bool:
        return name in self._buf

    def names(self) -> list[str]:
        return list(self._buf)

    def _own(self, need: int) -> None:
        for name, buf in self._buf.items():
            if not self._owned or len(buf) < need:
                cap = max(need + max(need // 8, 1024), len(buf) if self._owned else 0)
                grown = np.empty((cap,) + buf.shape[1:], dtype=buf.dtype)
                grown[: self.n] = buf[: self.n]
                self._buf[name] = grown
        self._owned = True

    def append(self, cols: dict[str, np.ndarray]) -> None:
        m = len(next(iter(cols.values())))
        need = self.n + m
        if not self._owned or any(len(b) < need for b in self._buf.values()):
            self._own(need)
        for name, buf in self._buf.items():
            buf[self.n:need] = cols[name]
        self.n = need

    def replace(self, name: str, values: np.ndarray) -> None:
        """A whole new column of n values (borrowed until the next write)."""
        if self._owned:
            self._buf[name][: self.n] = values
        else:
            self._buf[name] = values

    def put(self, rows: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        if not self._owned:
            self._own(self.n)
        for name, values in cols.items():
            self._buf[name][rows] = values


class _Lookup:
    """int64 key -> row position: a sorted base plus a small sorted tail, merged when the tail grows."""

    def __init__(self, keys: np.ndarray):
        # (keys >> 40, keys & (2**40 - 1)) sorts as the keys do (any int64): a packed time-style sort of the
        # low part and a pass over the few high parts (repositories) beat a general stable argsort.
        self._order = stable_order(keys >> 40, keys & (2**40 - 1))
        self._sorted = keys[self._order]
        self._extra_keys = np.zeros(0, dtype="int64")
        self._extra_pos = np.zeros(0, dtype="int64")

    @staticmethod
    def _find(sorted_keys: np.ndarray, positions: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:
        if len(sorted_keys):
            i = np.minimum(np.searchsorted(sorted_keys, q), len(sorted_keys) - 1)
            hit = sorted_keys[i] == q
            out[hit] = positions[i[hit]]

    def get(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype="int64")
        out = np.full(len(q), -1, dtype="int64")
        self._find(self._sorted, self._order, q, out)
        self._find(self._extra_keys, self._extra_pos, q, out)
        return out

    def add(self, keys: np.ndarray, positions: np.ndarray) -> None:
        keys = np.asarray(keys, dtype="int64")
        order = np.argsort(keys, kind="stable")
        # The tail stays sorted: an O(tail) insert per call, no hashing of the whole tail per lookup.
        at = np.searchsorted(self._extra_keys, keys[order], side="right")
        self._extra_keys = np.insert(self._extra_keys, at, keys[order])
        self._extra_pos = np.insert(self._extra_pos, at, np.asarray(positions, dtype="int64")[order])
        if len(self._extra_keys) > max(1024, len(self._sorted) // 8):
            keys_all = np.concatenate([self._sorted, self._extra_keys])
            pos_all = np.concatenate([self._order, self._extra_pos])
            order = np.argsort(keys_all, kind="stable")
            self._sorted, self._order = keys_all[order], pos_all[order]
            self._extra_keys = self._extra_keys[:0]
            self._extra_pos = self._extra_pos[:0]


class _TimeIndex:
    """Rows of a table whose time column is at or after a given time, without scanning the table: a
    time-sorted snapshot of the rows plus the rows written since (appended, or patched in place, which
    the table's writer reports with .touch). Rebuilt by its owner when the written rows pass 1/8."""

    def __init__(self, times: np.ndarray, keep: np.ndarray | None = None, *, sorted_rows=None):
        """keep: the only rows that matter (others are never returned unless written since).
        sorted_rows: (int64 times of the whole column, those rows in time order); gathered when first used."""
        if sorted_rows is None:
            ok = ~np.isnan(times)
            rows = np.flatnonzero(ok if keep is None else ok & keep)
            ti = times[rows].astype("int64")
            order = time_order(ti)
            if order is not None:
                rows, ti = rows.take(order), ti.take(order)
        else:
            ti, rows = sorted_rows
            ti = (ti, rows)  # gathered on first use
        self._rows, self._times, self.n = rows, ti, len(times)
        self._touched: list[np.ndarray] = []
        self.written = 0

    def touch(self, rows: np.ndarray) -> None:
        self._touched.append(np.asarray(rows, dtype="int64"))
        self.written += len(rows)

    def stale(self, n_now: int) -> bool:
        return self.written + (n_now - self.n) > max(4096, self.n // 8)

    def rows_from(self, since: float, times_now: np.ndarray) -> np.ndarray:
        """Ascending rows with times_now[row] >= since."""
        if isinstance(self._times, tuple):
            self._times = self._times[0].take(self._times[1])
        cand = self._rows[np.searchsorted(self._times, int(np.ceil(since)), side="left"):]
        extra = self._touched + [np.arange(self.n, len(times_now))]
        cand = np.unique(np.concatenate([cand, *extra])) if any(len(e) for e in extra) else np.sort(cand)
        return cand[times_now[cand] >= since]


class FeatureBuilder:
    def __init__(self, *, horizon_days: float = DEFAULT_HORIZON_DAYS, hours_after_creation: float = 0.0,
                 include_pull_requests: bool = False, text_score: bool = True, as_of=None,
                 text_config: TextScoreConfig | None = None):
        self.horizon_days = horizon_days
        self.hours_after_creation = float(hours_after_creation)
        self.include_pull_requests = include_pull_requests
        self.use_text_score = text_score
        self.text_config = text_config or TextScoreConfig()
        self._as_of_arg = as_of
        self._out: _Columns | None = None
        self._frame_df: pd.DataFrame | None = None
        self._issues_df: pd.DataFrame | None = None
        self._comments_df: pd.DataFrame | None = None
        self._iss: _Columns | None = None
        self._com: _Columns | None = None
        self._uid_lookup: _Lookup | None = None
        self._cuid_lookup: _Lookup | None = None
        self._cidx = None
        self._c_order: bool | None = None
        self._tidx: dict = {}
        self._in_frame_buf = np.zeros(0, bool)
        self._in_frame_n = 0
        self._repo_dtype = None
        self._fetched_us = np.nan
        self.timings: dict[str, float] = {}

    @contextmanager
    def _timed(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    @property
    def _h_us(self) -> float:
        return pd.Timedelta(days=self.horizon_days).value / 1000

    # ------------------------------------------------------------------ tables and derived columns
    def _derive_issues(self, df: pd.DataFrame) -> pd.DataFrame:
        h_us = self._h_us
        rk = self._repos.encode(df["repo"])
        c, cl, fs = _us(df["created_at"]), _us(df["closed_at"]), _us(df["first_seen_at"])
        dur = cl - c
        pos = ~np.isnan(dur) & (dur <= h_us)
        derived = {
            "_rk": rk,
            "_ak": self._authors.encode(_author_key(rk, df["user_id"], df["user_login"], self._logins)),
            "_uid": rk * USER_BITS + df["id"].to_numpy(),
            "_c": c, "_cl": cl, "_fs": fs, "_pos": pos,
            "_known": np.where(pos, cl, c + h_us),
            "_capped": np.where(pos, dur, h_us) / DAY_US,
            "_maint": _isin(df["author_association"], MAINTAINER_ASSOCIATIONS),
            "_t": c + self.hours_after_creation * HOUR_US,
            "_target": self.include_pull_requests | ~df["is_pull_request"].to_numpy(),
            "_bot": _is_bot(df["user_login"], df["user_type"]),
        }
        return _with_columns(df, derived)

    def _derive_comments(self, df: pd.DataFrame) -> pd.DataFrame:
        rk = self._repos.encode(df["repo"])
        return _with_columns(df, {
            "_rk": rk,
            "_ak": self._authors.encode(_author_key(rk, df["user_id"], df["user_login"], self._logins)),
            "_uid": rk * USER_BITS + df["id"].to_numpy(),
            "_ct": _us(df["created_at"]),
            "_maint": _isin(df["author_association"], MAINTAINER_ASSOCIATIONS),
        })

    def _issue_columns(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        n = len(df)
        cols = {name: df[name].to_numpy() for name in ISSUE_NUMERIC}
        for name in ("repo", "title", "body"):
            cols[name] = _objects(df[name])
        if "labels" not in df:
            cols["labels"] = np.full(n, "[]", dtype=object)
        elif isinstance(df["labels"].array, pd.arrays.StringArray) and df["labels"].dtype.storage == "python":
            cols["labels"] = df["labels"].array._ndarray  # what to_numpy(dtype=object) copies (NA as pd.NA)
        else:
            cols["labels"] = df["labels"].to_numpy(dtype=object)
        cols["_refc"] = df["comments"].fillna(0).to_numpy(dtype="float64") if "comments" in df else np.zeros(n)
        cols["_slot"] = np.full(n, -1, dtype="int64")  # set when the rows enter the result
        return cols

    @property
    def issues(self) -> pd.DataFrame:
        """The issues table (normalized, sorted, with derived columns); built from the column store on demand."""
        if self._issues_df is None and self._iss is not None:
            s = self._iss
            data = {"repo": _strings(s["repo"], self._repo_dtype), "id": s["id"], "number": s["number"],
                    "title": _strings(s["title"]), "body": _strings(s["body"]), "labels": s["labels"],
                    "comments": s["_refc"], "is_pull_request": s["is_pull_request"],
                    "created_at": _ts(_float_to_us(s["_c"])), "closed_at": _ts(_float_to_us(s["_cl"])),
                    "first_seen_at": _ts(_float_to_us(s["_fs"]))}
            data.update({name: s[name] for name in ISSUE_NUMERIC if name not in data})
            data["_slot"] = s["_slot"]
            self._issues_df = pd.DataFrame(data, copy=False)
        return self._issues_df

    @issues.setter
    def issues(self, df: pd.DataFrame) -> None:
        self._repo_dtype = df["repo"].dtype
        self._iss = _Columns(self._issue_columns(df))
        self._issues_df = df
        self._uid_lookup = None
        self._c_order = None
        self._tidx = {k: v for k, v in getattr(self, "_tidx", {}).items() if k[0] != "iss"}
        if "fetched_at" in df and df["fetched_at"].notna().any():
            self._fetched_us = df["fetched_at"].max().value / 1000
        else:
            self._fetched_us = np.nan

    @property
    def comments(self) -> pd.DataFrame:
        if self._comments_df is None and self._com is not None:
            self._comments_df = pd.DataFrame({name: self._com[name] for name in COMMENT_NUMERIC}, copy=False)
        return self._comments_df

    @comments.setter
    def comments(self, df: pd.DataFrame) -> None:
        self._com = _Columns({name: df[name].to_numpy() for name in COMMENT_NUMERIC})
        self._comments_df = df
        self._cuid_lookup = None
        self._cidx = None
        self._tidx = {k: v for k, v in getattr(self, "_tidx", {}).items() if k[0] != "com"}

    def _events(self, since=None) -> dict[str, tuple]:
        """Every event log as (keys, times, weights). `since`, a time or {log name: time}, keeps only the
        events at or after it (and, as a dict, only the logs it names)."""
        s, cs = self._iss, self._com
        tables = {"iss": s, "com": cs}
        out = {}
        for name, (table, key_col, time_col, within, mask, weights) in _LOGS.items():
            start = since.get(name) if isinstance(since, dict) else since
            if isinstance(since, dict) and start is None:
                continue
            t = tables[table]
            rows = slice(None) if start is None else self._rows_from(table, time_col, start)

            def col(name, t=t, rows=rows):
                return ~t["is_pull_request"][rows] if name == "_issue" else t[name][rows]

            times = col(time_col)
            sel = ~np.isnan(times)
            for m in (within, mask):
                if m is not None:
                    sel &= col(m)
            if start is not None:
                sel &= times >= start
            w = np.empty((int(sel.sum()), len(weights)))
            for j, wc in enumerate(weights):
                w[:, j] = 1.0 if wc == "_one" else col(wc)[sel]
            out[name] = (col(key_col)[sel], times[sel].astype("int64"), w)
        return out

    def _rows_from(self, table: str, col: str, since: float):
        """Rows of a table whose `col` time can be at or after `since` (a superset; in table order)."""
        if table == "iss" and col in ("_c", "_known"):
            # known <= created_at + horizon: rows created before since - horizon have no label event after it
            lo = since if col == "_c" else since - self._h_us - 1
            c = self._iss["_c"]
            return slice(int(np.searchsorted(c, lo, side="left")), None) if self._c_sorted() \
                else np.flatnonzero(c >= lo)
        t = self._iss if table == "iss" else self._com
        key = (table, col)
        index = self._tidx.get(key)
        if index is None or index.stale(t.n):
            within = _TIME_INDEXED[key]
            index = self._tidx[key] = _TimeIndex(t[col], t[within] if within else None)
        return index.rows_from(since, t[col])

    def _touch(self, table: str, rows: np.ndarray) -> None:
        """Rows of a table written in place: the time indexes must look at them again."""
        for (name, _), index in self._tidx.items():
            if name == table:
                index.touch(rows)

    def _build_indexes(self) -> dict[str, EventIndex]:
        """The event logs of the whole tables (what EventIndex(*self._events()[name]) builds, identically),
        sorted without a general sort: logs on the same times share one stable time order (created_at is
        the table's order already), each log then needs only a stable pass over its keys, and every column
        is gathered once, straight into sorted order."""
        s, cs = self._iss, self._com
        issue = ~s["is_pull_request"]
        tables = {"iss": s, "com": cs}
        extra = {"iss": {"_issue": issue}, "com": {}}
        times: dict[tuple, tuple] = {}

        def time_rows(table: str, col: str, within: str | None):
            """(int64 times, rows with a time (and `within`), in stable time order)."""
            key = (table, col, within)
            if key not in times:
                f = tables[table][col]
                ti = _float_to_us(f)
                ok = ~np.isnan(f)
                if within is not None:
                    ok &= extra[table][within] if within in extra[table] else tables[table][within]
                rows = np.arange(len(ok)) if ok.all() else np.flatnonzero(ok)
                in_order = table == "iss" and col == "_c" and self._c_sorted()
                order = None if in_order else time_order(ti.take(rows))
                times[key] = (ti, rows if order is None else rows.take(order))
                if _TIME_INDEXED.get((table, col), "") == within:
                    # The same time order serves the updates' "rows at or after" lookups.
                    self._tidx[(table, col)] = _TimeIndex(f, sorted_rows=times[key])
            return times[key]

        out = {}
        for name, (table, key_col, time_col, within, mask, weights) in _LOGS.items():
            t = tables[table]
            ti, rows = time_rows(table, time_col, within)
            keys = t[key_col]
            sel = keys >= 0
            if mask is not None:
                sel &= extra[table][mask] if mask in extra[table] else t[mask]
            if not sel.all():
                rows = rows[sel.take(rows)]
            k = keys.take(rows)
            korder = key_order(k)
            if korder is not None:
                rows = rows.take(korder)
                k = k.take(korder)
            w = np.empty((len(rows), len(weights)))
            for j, col in enumerate(weights):
                if col == "_one":
                    w[:, j] = 1.0
                else:
                    w[:, j] = (extra[table][col] if col in extra[table] else t[col]).take(rows)
            out[name] = EventIndex.presorted(k, ti.take(rows), w)
        return out

    def _c_sorted(self) -> bool:
        """Issues in created_at order (as normalized tables are; kept by in-place patches and appends of
        newer issues)."""
        if self._c_order is None:
            c = self._iss["_c"]
            self._c_order = len(c) < 2 or bool((c[1:] >= c[:-1]).all())
        return self._c_order

    def _load(self, issues: pd.DataFrame, comments: pd.DataFrame | None) -> None:
        self._repos, self._authors, self._logins = KeyCoder(), KeyCoder(), KeyCoder()
        with self._timed("load"):
            # Only the columns the builder reads (a re-sort then moves no others), without copying them.
            issues = pd.DataFrame({c: issues[c] for c in ISSUE_INPUTS if c in issues}, copy=False)
            self.issues = self._derive_issues(normalize_issues(issues))
            self.comments = self._derive_comments(normalize_comments(comments, sort=False))
            self.as_of = self._resolve_as_of(self._as_of_arg)
        with self._timed("event_logs"):
            self.indexes = self._build_indexes()
        with self._timed("text_score"):
            self._X = hash_texts(pd.Series(self._iss["title"]), pd.Series(self._iss["body"]), self.text_config) \
                if self.use_text_score else None

    def _resolve_as_of(self, as_of) -> pd.Timestamp:
        if as_of is None:
            if not np.isnan(self._fetched_us):
                return pd.Timestamp(int(self._fetched_us * 1000), tz="UTC")
            s = self._iss
            events = np.concatenate([s["_c"], s["_cl"]])
            events = events[~np.isnan(events)]
            if len(events):
                return pd.Timestamp(int(events.max() * 1000), tz="UTC")
            return pd.Timestamp.max.tz_localize("UTC")
        ts = pd.Timestamp(as_of)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    # ------------------------------------------------------------------ which rows exist
    def _target_mask(self) -> np.ndarray:
        s = self._iss
        mask = s["_target"].copy()
        if self.hours_after_creation > 0:
            t, cl = s["_t"], s["_cl"]
            mask &= np.isnan(cl) | (cl > t)
            mask &= t <= self.as_of.value / 1000
        return mask

    # ------------------------------------------------------------------ features for chosen rows
    def _features(self, rows: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(self._wrap(self._feature_arrays(np.asarray(rows))), copy=False)

    def _wrap(self, cols: dict) -> dict:
        """Raw output arrays -> pandas column arrays (no copies)."""
        out = dict(cols)
        out["repo"] = _strings(cols["repo"], self._repo_dtype)
        for name in ("created_at", "prediction_time", "label_known_at"):
            if name in cols:
                out[name] = _ts(cols[name])
        if "_lv" in cols:
            del out["_lv"], out["_lm"]
            out["closed_within_7d"] = pd.arrays.BooleanArray(cols["_lv"], cols["_lm"])
            out["label_known_at"] = out.pop("label_known_at")
        return out

    def _feature_arrays(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        s = self._iss
        full = len(rows) == s.n and (len(rows) == 0 or (rows[0] == 0 and rows[-1] == s.n - 1))

        def g(name):
            return s[name] if full else s[name][rows]

        n = len(rows)
        with self._timed("history"):
            t = g("_t")
            f = self._history(g, t)
            f.update(self._activity(g, t))
        with self._timed("text"):
            f.update(text_columns(pd.Series(g("title"), dtype=object), pd.Series(g("body"), dtype=object)))
        with self._timed("text_score"):
            f["text_score"] = self._text_score(rows, t) if self.use_text_score else np.full(n, np.nan)
        with self._timed("assemble"):
            c = g("_c").astype("int64")
            own = (lambda name: g(name).copy()) if full else g  # the result never aliases the input
            cols = {"repo": own("repo"), "id": own("id"), "number": own("number"), "created_at": c,
                    "prediction_time": c + pd.Timedelta(hours=self.hours_after_creation).value // 1000}
            cols.update({name: f[name] for name in FEATURE_NAMES})
        with self._timed("reference"):
            labels = label_columns(pd.Series(g("labels"), dtype=object))
            ref = {"ref_title_length": f["title_length"], "ref_body_length": f["body_length"],
                   "ref_label_count": labels["ref_label_count"], "ref_has_bug_label": labels["ref_has_bug_label"],
                   "ref_hour": f["created_hour"], "ref_comment_count": g("_refc")}
            cols.update({name: ref[name] for name in REFERENCE_NAMES})
        return cols

    def _history(self, g, t: np.ndarray) -> dict[str, np.ndarray]:
        ix = self.indexes
        rk, ak = g("_rk"), g("_ak")
        ti = t.astype("int64")
        c, cl, known = g("_c"), g("_cl"), g("_known")
        pos, capped = g("_pos"), g("_capped")
        pr = g("is_pull_request")
        issue = ~pr
        has_author = ak >= 0
        n = len(t)
        t_sorted = n < 2 or bool((ti[1:] >= ti[:-1]).all())
        by_author = _key_order(ak, ti, t_sorted)
        by_repo = _key_order(rk, ti, t_sorted)
        # Each log is searched once per distinct shift with the queries in (key, time) order.
        qa, qr = Queries(ak, ti, by_author), Queries(rk, ti, by_repo)

        def sums(name, *shifts):
            """[float64[n, w] per shift]: the log's sums at t + shift."""
            return _sums_at(ix[name], qr if name.startswith("r_") else qa, shifts or (0,))

        def within(own_time, width_us):
            return (own_time <= t) & (own_time > t - width_us)

        f: dict[str, np.ndarray] = {}
        # author
        own_issue_a = issue & has_author
        f["author_unknown"] = (~has_author).astype("float64")
        f["author_is_bot"] = g("_bot").astype("float64")
        created, created_24h = sums("a_created", 0, -DAY_US)
        f["author_prior_issues"] = created[:, 0] - own_issue_a
        f["author_prior_prs"] = created[:, 1] - (pr & has_author)
        lab = sums("a_label")[0]
        own_lab = own_issue_a & (known <= t)
        f["author_prior_labelled"] = lab[:, 0] - own_lab
        f["author_prior_closed_7d"] = lab[:, 1] - (own_lab & pos)
        f["author_prior_closed_7d_rate"] = _ratio(f["author_prior_closed_7d"], f["author_prior_labelled"])
        closed = sums("a_issue_closed")[0][:, 0] - (own_issue_a & (cl <= t))
        f["author_open_issues"] = f["author_prior_issues"] - closed
        first = ix["a_created"].first_time(ak)
        f["author_days_since_first"] = np.where(first < c, (t - first) / DAY_US, np.nan)
        last = _last_time_at(ix["a_created"], qa.with_times(c.astype("int64")), False)
        f["author_days_since_last"] = (t - last) / DAY_US
        f["author_issues_24h"] = created[:, 0] - created_24h[:, 0] \
            - (own_issue_a & within(c, DAY_US))
        comments = sums("a_comments")[0]
        f["author_prior_comments"] = comments[:, 0]
        seen = sums("a_seen")[0][:, 0]
        f["author_maintainer_known"] = ((comments[:, 1] + seen) > 0).astype("float64")
        for name in [k for k in f if k.startswith("author_") and k not in ("author_unknown", "author_is_bot")]:
            if name.startswith("author_days") or name.endswith("_rate"):
                f[name] = np.where(has_author, f[name], np.nan)
            else:
                f[name] = np.where(has_author, f[name], 0.0)
        # repository
        repos = getattr(self, "_repos", None)
        names = repos._index if repos is not None and repos._index is not None else None
        f["repo_code"] = repo_code(g("repo"), rk, names)
        opened, opened_1d_ago, opened_7d_ago, opened_30d_ago = sums("r_created", 0, -DAY_US, -7 * DAY_US,
                                                                      -30 * DAY_US)
        shut, shut_7d_ago, shut_30d_ago = sums("r_closed", 0, -7 * DAY_US, -30 * DAY_US)
        own_closed = cl <= t
        f["repo_open_issues"] = (opened[:, 0] - issue) - (shut[:, 0] - (issue & own_closed))
        f["repo_open_prs"] = (opened[:, 1] - pr) - (shut[:, 1] - (pr & own_closed))
        opened_24h = opened - opened_1d_ago
        opened_7d = opened - opened_7d_ago
        opened_30d = opened - opened_30d_ago
        f["repo_issues_opened_24h"] = opened_24h[:, 0] - (issue & within(c, DAY_US))
        f["repo_issues_opened_7d"] = opened_7d[:, 0] - (issue & within(c, 7 * DAY_US))
        f["repo_issues_opened_30d"] = opened_30d[:, 0] - (issue & within(c, 30 * DAY_US))
        f["repo_issues_closed_7d"] = (shut[:, 0] - shut_7d_ago[:, 0]) \
            - (issue & within(cl, 7 * DAY_US))
        f["repo_issues_closed_30d"] = (shut[:, 0] - shut_30d_ago[:, 0]) \
            - (issue & within(cl, 30 * DAY_US))
        f["repo_prs_opened_7d"] = opened_7d[:, 1] - (pr & within(c, 7 * DAY_US))
        f["repo_burst_ratio"] = f["repo_issues_opened_24h"] * 30.0 / (f["repo_issues_opened_30d"] + 1.0)
        own_w = np.column_stack([np.ones(n), pos, capped])
        label_now, label_90d_ago = sums("r_label", 0, -90 * DAY_US)
        lab_all = label_now - (issue & (known <= t))[:, None] * own_w
        lab_old = label_90d_ago - (issue & (known <= t - 90 * DAY_US))[:, None] * own_w
        lab90 = lab_all - lab_old
        f["repo_labelled_issues"] = lab_all[:, 0]
        f["repo_closed_7d_rate"] = _ratio(lab_all[:, 1], lab_all[:, 0])
        f["repo_closed_7d_rate_90d"] = _ratio(lab90[:, 1], lab90[:, 0])
        f["repo_capped_close_days_90d"] = _ratio(lab90[:, 2], lab90[:, 0])
        repo_comments, repo_comments_7d_ago = sums("r_comments", 0, -7 * DAY_US)
        f["repo_comments_7d"] = (repo_comments - repo_comments_7d_ago)[:, 0]
        f["repo_age_days"] = (t - ix["r_created"].first_time(rk)) / DAY_US
        # calendar
        day_us = _float_to_us(c) // 1_000_000 // 86_400
        f["created_hour"] = ((_float_to_us(c) // 3_600_000_000) % 24).astype("float64")
        f["created_dow"] = ((day_us + 3) % 7).astype("float64")
        return f

    def _comment_index(self):
        """Comments sorted by their issue key (repo code, issue number); later appends form a small tail."""
        if self._cidx is not None and self._com.n - self._cidx[2] > max(4096, self._cidx[2] // 8):
            self._cidx = None  # the unsorted tail of later comments has grown: fold it in
        if self._cidx is None:
            cs = self._com
            key = cs["_rk"] * ISSUE_KEY_BITS + cs["issue_number"]
            order = stable_order(key)
            self._cidx = (key[order], order, cs.n)
        return self._cidx

    def _comments_of(self, rk: np.ndarray, number: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, comment position) pairs for every comment on the given rows' issues."""
        skeys, order, n0 = self._comment_index()
        cs = self._com
        rkey = rk * ISSUE_KEY_BITS + number
        qorder = stable_order(rkey)
        qs = rkey[qorder]
        lo = np.searchsorted(skeys, qs, side="left")
        lens = np.searchsorted(skeys, qs, side="right") - lo
        row = np.repeat(qorder, lens)
        cpos = order[_ranges(lo, lens)]
        if cs.n > n0:
            dk = cs["_rk"][n0:] * ISSUE_KEY_BITS + cs["issue_number"][n0:]
            lo2 = np.searchsorted(qs, dk, side="left")
            lens2 = np.searchsorted(qs, dk, side="right") - lo2
            row = np.concatenate([row, qorder[_ranges(lo2, lens2)]])
            cpos = np.concatenate([cpos, n0 + np.repeat(np.arange(len(dk)), lens2)])
        return row, cpos

    def _activity(self, g, t: np.ndarray) -> dict[str, np.ndarray]:
        n = len(t)
        c, ak = g("_c"), g("_ak")
        counts = np.zeros(n)
        author_counts = np.zeros(n)
        participants = np.zeros(n)
        first = np.full(n, np.nan)
        first_m = np.full(n, np.nan)
        if self._com.n and n:
            row, cpos = self._comments_of(g("_rk"), g("number"))
            ct = self._com["_ct"][cpos]
            ok = ct <= t[row]
            row, cpos, ct = row[ok], cpos[ok], ct[ok]
            cak = self._com["_ak"][cpos]
            own_ak = ak[row]
            by_author = (cak == own_ak) & (own_ak >= 0)
            counts = np.bincount(row, minlength=n).astype("float64")
            author_counts = np.bincount(row[by_author], minlength=n).astype("float64")
            other = ~by_author
            orow, oct, ocak = row[other], ct[other], cak[other]
            width = int(ocak.max()) + 2 if len(ocak) else 1
            pairs = np.unique(orow * width + (ocak + 1))
            participants = np.bincount(pairs // width, minlength=n).astype("float64")
            first = np.full(n, np.inf)
            np.minimum.at(first, orow, oct)
            m = self._com["_maint"][cpos][other]
            first_m = np.full(n, np.inf)
            np.minimum.at(first_m, orow[m], oct[m])
            first[np.isinf(first)] = np.nan
            first_m[np.isinf(first_m)] = np.nan
        return {
            "hours_observed": np.full(n, self.hours_after_creation),
            "comments_so_far": counts,
            "participants_so_far": participants,
            "author_comments_so_far": author_counts,
            "hours_to_first_response": (first - c) / HOUR_US,
            "hours_to_first_maintainer_response": (first_m - c) / HOUR_US,
        }

    def _text_score(self, rows: np.ndarray, t: np.ndarray) -> np.ndarray:
        s = self._iss
        docs = s["_target"]
        known = s["_known"].copy()
        as_of_us = self.as_of.value / 1000
        known[~docs | (known > as_of_us)] = np.nan
        return text_scores(self._X, s["_pos"], known, t.astype("int64"), rows, self.text_config)

    # ------------------------------------------------------------------ labels and the result store
    def _label_arrays(self, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positive, unknown mask, label_known_at us) at as_of for table rows."""
        s = self._iss
        c, cl = s["_c"][rows], s["_cl"][rows]
        a = self.as_of.value / 1000
        h = self._h_us
        closed = np.where(cl <= a, cl, np.nan)
        positive = (closed - c) <= h
        known_at = np.where(positive, closed, c + h)
        known = known_at <= a
        at = np.full(len(c), NAT, dtype="int64")
        at[known] = known_at[known].astype("int64")
        return positive & known, ~known, at

    def _install(self, rows: np.ndarray, cols: dict[str, np.ndarray], target: np.ndarray) -> None:
        """Make `cols` (feature arrays of table rows `rows`, in table order) the result; labels at as_of."""
        lv, lm, at = self._label_arrays(rows)
        cols = dict(cols)
        cols["_lv"], cols["_lm"], cols["label_known_at"] = lv, lm, at
        self._out = _Columns(cols)
        self._frame_df = None
        self._after_reorder(target)

    def _after_reorder(self, target: np.ndarray) -> None:
        s = self._iss
        s.replace("_slot", np.where(target, np.cumsum(target) - 1, -1))
        self._in_frame = target.copy()
        cl = s["_cl"]
        self._future = np.nonzero(cl > self.as_of.value / 1000)[0]

    def _install_frame(self, frame: pd.DataFrame, target: np.ndarray) -> None:
        cols = {"repo": _objects(frame["repo"]), "id": frame["id"].to_numpy(), "number": frame["number"].to_numpy(),
                "created_at": frame["created_at"].array.asi8, "prediction_time": frame["prediction_time"].array.asi8}
        for name in FEATURE_NAMES + REFERENCE_NAMES:
            cols[name] = frame[name].to_numpy(dtype="float64")
        label = frame["closed_within_7d"]
        cols["_lv"] = label.to_numpy(dtype=bool, na_value=False)
        cols["_lm"] = label.isna().to_numpy()
        cols["label_known_at"] = frame["label_known_at"].array.asi8
        self._out = _Columns(cols)
        self._after_reorder(target)
        self._frame_df = frame

    @property
    def frame(self) -> pd.DataFrame | None:
        """The current result. Built on demand from the result columns; it shares their memory, so a frame
        kept across an update() sees the patched rows (copy it to keep a snapshot)."""
        if self._frame_df is None and self._out is not None:
            o = self._out
            cols = {name: o[name] for name in o.names()}
            self._frame_df = pd.DataFrame(self._wrap(cols), copy=False)
        return self._frame_df

    def _labels(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Labels at as_of. `frame` holds exactly the target rows, in the issues table's order."""
        target = self._target_mask()
        ids = self._iss["id"][target]
        if len(ids) != len(frame) or not (ids == frame["id"].to_numpy()).all():
            raise AssertionError("feature rows out of step with the issues table")
        lv, lm, at = self._label_arrays(np.nonzero(target)[0])
        frame["closed_within_7d"] = pd.arrays.BooleanArray(lv, lm)
        frame["label_known_at"] = _ts(at)
        return frame

    def _assemble(self, recompute: np.ndarray, previous: pd.DataFrame | None) -> pd.DataFrame:
        self.last_recomputed = int(recompute.sum())
        fresh = self._features(np.nonzero(recompute)[0])
        with self._timed("assemble"):
            carry = self._target_mask() & ~recompute
            if previous is not None and carry.any():
                target = pd.DataFrame({"repo": _strings(self._iss["repo"][carry], self._repo_dtype),
                                       "id": self._iss["id"][carry]})
                carried = previous.merge(target, on=["repo", "id"], how="inner")[list(fresh.columns)]
                fresh = pd.concat([carried, fresh], ignore_index=True) if len(fresh) else carried
                fresh = fresh.sort_values(["created_at", "repo", "id"], kind="stable").reset_index(drop=True)
            return self._labels(fresh)

    # ------------------------------------------------------------------ public
    def fit(self, issues: pd.DataFrame, comments: pd.DataFrame | None = None) -> pd.DataFrame:
        self._load(issues, comments)
        target = self._target_mask()
        rows = np.nonzero(target)[0]
        self.last_recomputed = len(rows)
        cols = self._feature_arrays(rows)
        with self._timed("assemble"):
            self._install(rows, cols, target)
            return self.frame

    def recompute_since(self, previous: pd.DataFrame, changed_since) -> pd.DataFrame:
        since = pd.Timestamp(changed_since)
        since = since.tz_localize("UTC") if since.tzinfo is None else since.tz_convert("UTC")
        target = self._target_mask()
        known = pd.MultiIndex.from_arrays([previous["repo"], previous["id"]])
        seen = pd.MultiIndex.from_arrays([self.issues["repo"], self.issues["id"]]).isin(known)
        recompute = target & ((self._iss["_t"] >= since.value / 1000) | ~seen)
        self._install_frame(self._assemble(recompute, previous), target)
        return self.frame

    def update(self, changed_issues: pd.DataFrame, new_comments: pd.DataFrame | None = None,
               as_of=None) -> pd.DataFrame:
        if self._out is None:
            raise RuntimeError("call fit() before update()")
        with self._timed("update_tables"):
            changed = self._derive_issues(normalize_issues(changed_issues))
            comments = self._derive_comments(normalize_comments(new_comments, sort=False))
            cols = self._issue_columns(changed)
            pos = self._issue_lookup().get(cols["_uid"])
            since, per_log, own_uids = self._earliest_change(cols, pos, comments)
            old_as_of = self.as_of.value / 1000
            fast = self._upsert_issues(changed, cols, pos)
            if len(comments):
                self._upsert_comments(comments)
            if "fetched_at" in changed and changed["fetched_at"].notna().any():
                self._fetched_us = np.fmax(self._fetched_us, changed["fetched_at"].max().value / 1000)
            self.as_of = self._resolve_as_of(as_of if as_of is not None else self._as_of_arg)
        with self._timed("event_logs"):
            # Each log from its own earliest change: a moved first sighting only touches the a_seen log.
            per_log = {name: t for name, t in per_log.items() if np.isfinite(t)}
            if per_log:
                for name, ev in self._events(per_log).items():
                    self.indexes[name].replace_from(int(per_log[name]), *ev)
        self._issues_df = None
        if fast is not None and self.hours_after_creation == 0:
            self._patch(since, fast, old_as_of)
        else:
            target = self._target_mask()
            uids = self._iss["_uid"]
            own = np.isin(uids, own_uids) if len(own_uids) else np.zeros(len(uids), bool)
            recompute = target & ((self._iss["_t"] >= since) | ~self._in_frame | own)
            self._install_frame(self._assemble(recompute, self.frame), target)
        return self.frame

    @property
    def _in_frame(self) -> np.ndarray:
        """Table rows that have a result row (a view of a buffer with spare capacity)."""
        return self._in_frame_buf[: self._in_frame_n]

    @_in_frame.setter
    def _in_frame(self, values: np.ndarray) -> None:
        self._in_frame_buf = np.asarray(values, dtype=bool)
        self._in_frame_n = len(values)

    def _grow_in_frame(self, k: int) -> None:
        n = self._in_frame_n
        if len(self._in_frame_buf) < n + k:
            buf = np.zeros(n + k + max((n + k) // 8, 1024), dtype=bool)
            buf[:n] = self._in_frame_buf[:n]
            self._in_frame_buf = buf
        self._in_frame_buf[n:n + k] = False
        self._in_frame_n = n + k

    def _issue_lookup(self) -> _Lookup:
        if self._uid_lookup is None:
            self._uid_lookup = _Lookup(self._iss["_uid"])
        return self._uid_lookup

    def _comment_lookup(self) -> _Lookup:
        if self._cuid_lookup is None:
            self._cuid_lookup = _Lookup(self._com["_uid"])
        return self._cuid_lookup

    def _upsert_issues(self, changed: pd.DataFrame, cols: dict, pos: np.ndarray):
        """Put the changed rows in the table. In place plus an append of newer issues (a daily sync) returns
        the positions the upsert touched; anything else re-sorts the table and returns None."""
        s = self._iss
        exists = pos >= 0
        where = pos[exists]
        old_c = s["_c"]
        last = old_c[-1] if len(old_c) else -np.inf
        new_c = cols["_c"]
        fast = bool((old_c[where] == new_c[exists]).all()) \
            and bool((s["_target"][where] == cols["_target"][exists]).all()) \
            and (exists.all() or new_c[~exists].min() > last)
        hashed = None
        if self.use_text_score:
            with self._timed("text_score"):
                hashed = hash_texts(changed["title"], changed["body"], self.text_config)
        if fast:
            if len(where):
                s.put(where, {k: v[exists] for k, v in cols.items() if k != "_slot"})
                self._touch("iss", where)
            n_old = s.n
            fresh = ~exists
            if fresh.any():
                s.append({k: v[fresh] for k, v in cols.items()})
                self._issue_lookup().add(cols["_uid"][fresh], np.arange(n_old, s.n))
                self._grow_in_frame(int(fresh.sum()))
            if hashed is not None:
                take = np.arange(s.n)
                take[where] = n_old + np.nonzero(exists)[0]
                take[n_old:] = n_old + np.nonzero(fresh)[0]
                self._X = sp.vstack([self._X, hashed], format="csr")[take]
            return np.concatenate([where, np.arange(n_old, s.n)])
        current = self.issues
        replaced = np.zeros(len(current), bool)
        replaced[where] = True
        merged = pd.concat([current.loc[~replaced], changed], ignore_index=True)
        # (created_at, repo name, id): the order normalize_issues gives a full table.
        names = np.asarray(self._repos._index.astype(str))
        rank = np.empty(len(names), dtype="int64")
        rank[np.argsort(names, kind="stable")] = np.arange(len(names))
        order = np.lexsort((merged["id"].to_numpy(), rank[merged["_rk"].to_numpy()], merged["_c"].to_numpy()))
        in_frame = np.concatenate([self._in_frame[~replaced], np.zeros(len(changed), bool)])
        fetched = self._fetched_us
        self.issues = merged.iloc[order].reset_index(drop=True)
        self._fetched_us = fetched
        self._in_frame = in_frame[order]
        if hashed is not None:
            self._X = sp.vstack([self._X[np.nonzero(~replaced)[0]], hashed], format="csr")[order]
        return None

    def _upsert_comments(self, comments: pd.DataFrame) -> None:
        cols = {name: comments[name].to_numpy() for name in COMMENT_NUMERIC}
        cs = self._com
        hit = self._comment_lookup().get(cols["_uid"])
        exists = hit >= 0
        if exists.any():
            where = hit[exists]
            moved = (cs["_rk"][where] != cols["_rk"][exists]) | \
                (cs["issue_number"][where] != cols["issue_number"][exists])
            cs.put(where, {k: v[exists] for k, v in cols.items()})
            self._touch("com", where)
            if moved.any():
                self._cidx = None
        if (~exists).any():
            n_old = cs.n
            cs.append({k: v[~exists] for k, v in cols.items()})
            self._comment_lookup().add(cols["_uid"][~exists], np.arange(n_old, cs.n))
        self._comments_df = None

    def _patch(self, since: float, touched: np.ndarray, old_as_of: float) -> None:
        """Fast path of update(): recompute the rows at or after `since` and the touched ones, append new
        result rows, and relabel only the rows whose label can have moved. O(changes) plus O(log n)."""
        s, o = self._iss, self._out
        n = s.n
        c = s["_c"]
        start = int(np.searchsorted(c, since, side="left")) if np.isfinite(since) else n
        target = s["_target"]
        rows = np.union1d(np.arange(start, n), touched).astype("int64")
        rows = rows[target[rows]]
        slot = s["_slot"]
        new = rows[slot[rows] < 0]
        if len(new):
            s.put(new, {"_slot": o.n + np.arange(len(new))})
            self._in_frame[new] = True
        self.last_recomputed = len(rows)
        cols = self._feature_arrays(rows)
        with self._timed("assemble"):
            lv, lm, at = self._label_arrays(rows)
            cols["_lv"], cols["_lm"], cols["label_known_at"] = lv, lm, at
            at_slot = slot[rows]
            is_new = np.isin(rows, new)
            if (~is_new).any():
                o.put(at_slot[~is_new], {k: v[~is_new] for k, v in cols.items()})
            if is_new.any():
                o.append({k: v[is_new] for k, v in cols.items()})
            self._relabel(old_as_of, touched, rows)
            self._frame_df = None

    def _relabel(self, old_as_of: float, touched: np.ndarray, done: np.ndarray) -> None:
        s, o = self._iss, self._out
        a = self.as_of.value / 1000
        target = s["_target"]
        if a < old_as_of:
            rows = np.nonzero(target)[0]
            self._future = np.nonzero(s["_cl"] > a)[0]
        else:
            c, cl = s["_c"], s["_cl"]
            h = self._h_us
            lo = int(np.searchsorted(c, old_as_of - h, side="right"))
            hi = int(np.searchsorted(c, a - h, side="right"))
            future = np.union1d(self._future, touched).astype("int64")
            due = future[cl[future] <= a]
            self._future = future[cl[future] > a]
            rows = np.union1d(np.union1d(np.arange(lo, hi), due), touched).astype("int64")
            rows = np.setdiff1d(rows, done, assume_unique=True)
            rows = rows[target[rows]]
        if len(rows):
            lv, lm, at = self._label_arrays(rows)
            o.put(s["_slot"][rows], {"_lv": lv, "_lm": lm, "label_known_at": at})

    def _earliest_change(self, cols: dict, pos: np.ndarray, comments: pd.DataFrame
                         ) -> tuple[float, dict[str, float], np.ndarray]:
        """Earliest event time the upserts can move (overall, and per event log), and the uids of rows
        whose own fields changed."""
        s = self._iss
        exists = pos >= 0
        where = pos[exists]
        fresh = ~exists
        times = [cols["_c"][fresh]]

        def differs(col):
            a, b = s[col][where], cols[col][exists]
            if a.dtype == object or b.dtype == object:
                a, b = a.astype(object), b.astype(object)
                na_a, na_b = pd.isna(a), pd.isna(b)
                same = na_a & na_b
                both = ~na_a & ~na_b
                same[both] = a[both] == b[both]
                return ~same
            if a.dtype.kind == "f":
                return ~((a == b) | (np.isnan(a) & np.isnan(b)))
            return a != b

        def old_new(col):
            return np.fmin(s[col][where], cols[col][exists])

        times.append(old_new("_cl")[differs("_cl")])
        times.append(old_new("_fs")[differs("_fs") | differs("_maint")])
        author, kind = differs("_ak"), differs("is_pull_request")
        identity = differs("_c") | author | kind | differs("number")
        times.append(old_new("_c")[identity])
        own = differs("title") | differs("body") | differs("_bot") | differs("labels") | differs("_refc") | identity
        if self.use_text_score:
            # An edited text changes the training documents of every model fitted after its label settled.
            times.append(old_new("_known")[own])
        comment_times = []
        if len(comments):
            comment_times.append(comments["_ct"].to_numpy())
            hit = self._comment_lookup().get(comments["_uid"].to_numpy())
            comment_times.append(self._com["_ct"][hit[hit >= 0]])

        def earliest(parts) -> float:
            values = np.concatenate([np.asarray(x, dtype="float64") for x in parts]) if parts else np.zeros(0)
            values = values[~np.isnan(values)]
            return float(values.min()) if len(values) else np.inf

        # Per log: the times of the events an upsert adds or removes there (new rows: all their events;
        # changed rows: old and new times of a log whose key, time, mask or weights moved).
        label = differs("_known") | differs("_pos") | differs("_capped") | kind
        moved = {
            "_c": {"r": differs("_c") | kind, "a": differs("_c") | kind | author},
            "_cl": {"r": differs("_cl") | kind, "a": differs("_cl") | kind | author},
            "_known": {"r": label, "a": label | author},
            "_fs": {"a": differs("_fs") | differs("_maint") | author},
        }
        per_log = {}
        for name, (table, _, time_col, _, _, _) in _LOGS.items():
            if table == "com":
                per_log[name] = earliest(comment_times)
            else:
                changed = moved[time_col][name[0]]
                per_log[name] = earliest([cols[time_col][fresh], old_new(time_col)[changed]])
        since = min(earliest(times + comment_times), *per_log.values())
        return since, per_log, cols["_uid"][exists][own]


def compute_features(issues: pd.DataFrame, comments: pd.DataFrame | None = None, *,
                     horizon_days: float = DEFAULT_HORIZON_DAYS, hours_after_creation: float = 0.0,
                     include_pull_requests: bool = False, text_score: bool = True, as_of=None) -> pd.DataFrame:
    builder = FeatureBuilder(horizon_days=horizon_days, hours_after_creation=hours_after_creation,
                             include_pull_requests=include_pull_requests, text_score=text_score, as_of=as_of)
    return builder.fit(issues, comments)


def update_features(previous: pd.DataFrame, issues: pd.DataFrame, comments: pd.DataFrame | None = None, *,
                    changed_since, horizon_days: float = DEFAULT_HORIZON_DAYS, hours_after_creation: float = 0.0,
                    include_pull_requests: bool = False, text_score: bool = True, as_of=None) -> pd.DataFrame:
    builder = FeatureBuilder(horizon_days=horizon_days, hours_after_creation=hours_after_creation,
                             include_pull_requests=include_pull_requests, text_score=text_score, as_of=as_of)
    builder._load(issues, comments)
    return builder.recompute_since(previous, changed_since)
