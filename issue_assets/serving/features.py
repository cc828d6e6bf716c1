"""Point-in-time features of issues to score, with the repository's history as context.

A target's prediction time is the scoring time T: t = max(created_at, T). A target already closed
at T has nothing left to predict; it is scored as of its creation (t = created_at), the setting the
model was trained and evaluated in. `issue_assets.features` takes one scalar `hours_after_creation`
for every row, so `PointInTimeBuilder` (a FeatureBuilder) sets each row's own prediction time and
restricts the computed rows to the targets; `hours_observed` and `prediction_time` are then per row.

Two ways to the same numbers:

* `target_features(history_issues, history_comments, targets, T)`: the reference path. Targets
  replace history rows with the same (repo, id), the rest are appended, and the builder runs over
  the whole table. The batch job uses it.
* `PreparedHistory(history_issues, history_comments)`: the service's path. The history is normalized,
  its event logs sorted and its texts hashed once; a request for issues that are not in the history
  only derives their rows, merges their own events into the logs and reuses the text-score model of
  the period (fitted once per period and cached). Targets the history already holds, or whose label
  could be a text-score training document, go through the reference path instead.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pandas as pd
from sklearn.linear_model import SGDClassifier

from issue_assets.features.compute import (
    COMMENT_NUMERIC,
    DAY_US,
    HOUR_US,
    MAINTAINER_ASSOCIATIONS,
    USER_BITS,
    FeatureBuilder,
    _Columns,
)
from issue_assets.features.events import EventIndex, KeyCoder
from issue_assets.features.frames import TS, normalize_issues, to_utc_series
from issue_assets.features.registry import FEATURE_NAMES
from issue_assets.features.text_score import hash_texts, period_start
from issue_assets.serving.text_rows import decision, hashed_row, text_rows


def utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _us(ts: pd.Timestamp) -> float:
    return float(ts.value // 1000)


def _us_col(series: pd.Series) -> np.ndarray:
    values = series.astype(TS).array.asi8
    out = values.astype("float64")
    out[values == np.iinfo("int64").min] = np.nan
    return out


def _codes(coder: KeyCoder) -> dict:
    """A KeyCoder's value -> code table (codes are positions in its index)."""
    index = coder._index
    if index is None:
        return {}
    return {value: code for code, value in enumerate(index.tolist())}


_EMPTY_COMMENTS = _Columns({name: np.zeros(0, dtype="float64" if name == "_ct" else
                                           (bool if name == "_maint" else "int64")) for name in COMMENT_NUMERIC})


class _Rows(dict):
    """The few columns FeatureBuilder._feature_arrays/_events read, for the rows to score."""

    def __init__(self, cols: dict, n: int):
        super().__init__(cols)
        self.n = n


def _segment(log, qk: int, qt: int, inclusive: bool) -> tuple[int, int]:
    """log.positions(...) of a _SortedLog for one query, by bisecting the key's segment: the same (start,
    pos) as its packed or bisected search (a negative key, or an empty log: pos = start)."""
    keys = log.keys
    start = int(keys.searchsorted(qk, "left"))
    if qk < 0 or not len(keys):
        return start, start
    end = int(keys.searchsorted(qk, "right"))
    return start, start + int(log.times[start:end].searchsorted(qt, "right" if inclusive else "left"))


def _first1(log, qk: int) -> float:
    """log.first_time([qk])[0] of a _SortedLog."""
    if log._first is None:
        log.first_time(np.zeros(1, dtype="int64"))  # builds its table (or decides against one)
    table = log._first
    if table is not False:
        return float(table[qk]) if 0 <= qk < len(table) - 1 else math.nan
    start, end = int(log.keys.searchsorted(qk, "left")), int(log.keys.searchsorted(qk, "right"))
    return float(log.times[start]) if end > start else math.nan


def _plain_log(index: EventIndex):
    """The index's single sorted log when it has no delta (as a prepared history's indexes), else None.
    Only then are the one-query answers below used; they read the log's sorted arrays and prefix sums."""
    log = getattr(index, "_base", None)
    if getattr(index, "_cut", 0) is not None or getattr(index, "_delta", 0) is not None or log is None:
        return None
    if not all(hasattr(log, name) for name in ("keys", "times", "_cum", "_first", "first_time")):
        return None
    return log


class _WithBatch:
    """A prepared history EventIndex plus the scored rows' own events: the merged log's answers.

    One query (one scored row) skips the vectorized machinery: the base log is searched for that key
    alone (_segment, _first1) and a batch of one event (what one new issue adds to each log) is answered
    directly (a one-event log's prefix-sum difference is that event's weights or zeros). Same numbers."""

    def __init__(self, base: EventIndex, keys, times, weights):
        self.base = base
        self._log = _plain_log(base)
        keys = np.asarray(keys, dtype="int64")
        self._args = (keys, times, weights) if len(keys) else None
        self._single = None  # (key, time, weights) of a one-event batch; None: no event or several
        if len(keys) == 1 and keys[0] >= 0:  # EventIndex drops negative keys
            w = np.asarray(weights, dtype="float64").reshape(1, -1)[0]
            self._single = (int(keys[0]), int(np.asarray(times, dtype="int64")[0]), w)
        self._batch = None

    @property
    def batch(self) -> EventIndex | None:
        if self._batch is None and self._args is not None:
            self._batch = EventIndex(*self._args)
        return self._batch

    def _one(self, qkeys) -> bool:
        """A single query that the scalar code answers (plain base log, at most one batch event)."""
        return len(qkeys) == 1 and self._log is not None and (self._args is None or len(self._args[0]) == 1)

    def _hit(self, qk: int, qt: int, inclusive: bool):
        """The one batch event if it counts for the query, else None."""
        one = self._single
        if one is not None and qk >= 0 and one[0] == qk and (one[1] <= qt if inclusive else one[1] < qt):
            return one
        return None

    def sums(self, qkeys, qtimes, inclusive=True, order=None):
        if self._one(qkeys):
            qk, qt = int(qkeys[0]), int(qtimes[0])
            start, pos = _segment(self._log, qk, qt, inclusive)
            cum = self._log._cum
            out = cum[pos] - cum[start]
            if self._args is not None:  # + the batch log's answer: its weights, or zeros
                hit = self._hit(qk, qt, inclusive)
                out = out + (hit[2] if hit is not None else out - out)
            return out[None, :]
        out = self.base.sums(qkeys, qtimes, inclusive)
        return out + self.batch.sums(qkeys, qtimes, inclusive) if self.batch is not None else out

    def first_time(self, qkeys):
        if self._one(qkeys):
            qk = int(qkeys[0])
            out = _first1(self._log, qk)
            one = self._single
            if one is not None and qk >= 0 and one[0] == qk:
                out = float(np.fmin(out, float(one[1])))
            return np.array([out])
        out = self.base.first_time(qkeys)
        return np.fmin(out, self.batch.first_time(qkeys)) if self.batch is not None else out

    def last_time(self, qkeys, qtimes, inclusive=True, order=None):
        if self._one(qkeys):
            qk, qt = int(qkeys[0]), int(qtimes[0])
            start, pos = _segment(self._log, qk, qt, inclusive)
            out = float(self._log.times[pos - 1]) if pos > start else math.nan
            hit = self._hit(qk, qt, inclusive)
            if hit is not None:
                out = float(np.fmax(out, float(hit[1])))
            return np.array([out])
        out = self.base.last_time(qkeys, qtimes, inclusive)
        return np.fmax(out, self.batch.last_time(qkeys, qtimes, inclusive)) if self.batch is not None else out


class _FastRows(FeatureBuilder):
    """FeatureBuilder's row formulas over the prepared history and the given rows (no table of its own)."""

    def __init__(self, prepared: PreparedHistory, rows: _Rows, scoring_us: float):  # noqa: F821
        b = prepared._builder
        self.horizon_days = b.horizon_days
        self.hours_after_creation = 0.0
        self.include_pull_requests = False
        self.use_text_score = b.use_text_score
        self.text_config = b.text_config
        self._repo_dtype = b._repo_dtype
        self._repos = b._repos  # read only: repo codes of the history (rows' codes beyond it are new repos)
        self._cidx = b._cidx
        self._iss = rows
        self.timings = {}
        self._prepared = prepared

    def _text_score(self, rows: np.ndarray, t: np.ndarray) -> np.ndarray:
        s = self._iss
        out = np.full(len(rows), np.nan)
        X = hash_texts(pd.Series(s["title"][rows], dtype=object), pd.Series(s["body"][rows], dtype=object),
                       self.text_config)
        starts = period_start(np.asarray(t, dtype="int64"), self.text_config)
        for p0 in np.unique(starts):
            model = self._prepared._period_model(int(p0), self)
            if model is not None:
                sel = np.nonzero(starts == p0)[0]
                out[sel] = model.decision_function(X[sel])
        return out

    def _text_score_rows(self, t: np.ndarray) -> np.ndarray | None:
        """_text_score of every row, row by row (text_rows.hashed_row/decision: the same numbers without
        pandas/sklearn overhead); None if a period's model is not fitted yet (fitting is not for here)."""
        s = self._iss
        out = np.full(len(t), np.nan)
        models = self._prepared._period_models
        for i, p0 in enumerate(period_start(np.asarray(t, dtype="int64"), self.text_config).tolist()):
            if p0 not in models:
                return None
            model = models[p0]
            if model is not None:
                out[i] = decision(model, hashed_row(s["title"][i], s["body"][i], self.text_config))
        return out


class PointInTimeBuilder(FeatureBuilder):
    """A FeatureBuilder whose rows are the given targets, each at its own prediction time."""

    def __init__(self, scoring_time, targets: pd.MultiIndex | None = None, **kwargs):
        super().__init__(hours_after_creation=0.0, include_pull_requests=False, as_of=utc(scoring_time), **kwargs)
        self.scoring_us = _us(utc(scoring_time))
        self.targets = targets

    def _derive_issues(self, df: pd.DataFrame) -> pd.DataFrame:
        df = super()._derive_issues(df)
        c, cl = df["_c"].to_numpy(), df["_cl"].to_numpy()
        closed = ~np.isnan(cl) & (cl <= self.scoring_us)
        df["_t"] = np.where(closed, c, np.maximum(c, self.scoring_us))
        return df

    def _target_mask(self) -> np.ndarray:
        if self.targets is None:
            return np.zeros(len(self.issues), dtype=bool)
        return pd.MultiIndex.from_arrays([self.issues["repo"], self.issues["id"]]).isin(self.targets)

    def _features(self, rows: np.ndarray) -> pd.DataFrame:
        frame = super()._features(rows)
        iss = self.issues.iloc[rows]
        t, c = iss["_t"].to_numpy(), iss["_c"].to_numpy()
        frame["hours_observed"] = (t - c) / HOUR_US
        frame["prediction_time"] = pd.to_datetime(t.astype("int64"), unit="us", utc=True).astype(TS)
        return frame

    def target_features(self) -> pd.DataFrame:
        """Features of the target rows, without labels (nothing about them is known yet)."""
        rows = np.nonzero(self._target_mask())[0]
        self.last_recomputed = len(rows)
        return self._features(rows)


def prepare_targets(targets: pd.DataFrame, scoring_time) -> pd.DataFrame:
    """Targets as issues-table rows: first seen / fetched at the scoring time unless the lake says earlier."""
    scoring_time = utc(scoring_time)
    out = targets.copy()
    for col in ("first_seen_at", "fetched_at"):
        values = to_utc_series(out[col]) if col in out else pd.Series(pd.NaT, index=out.index, dtype=TS)
        out[col] = values.fillna(scoring_time)
    return out


def _merge_history(history: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    if history is None or len(history) == 0:
        return targets.reset_index(drop=True)
    keys = pd.MultiIndex.from_arrays([history["repo"].astype("string"), history["id"].astype("int64")])
    replaced = keys.isin(pd.MultiIndex.from_arrays([targets["repo"].astype("string"), targets["id"].astype("int64")]))
    return pd.concat([history.loc[~replaced], targets], ignore_index=True)


def _order_like_targets(frame: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Feature rows in the order of the targets given (the builder sorts by created_at)."""
    index = pd.MultiIndex.from_arrays([frame["repo"].astype("string"), frame["id"].astype("int64")])
    wanted = pd.MultiIndex.from_arrays([targets["repo"].astype("string"), targets["id"].astype("int64")])
    pos = index.get_indexer(wanted)
    if (pos < 0).any():
        missing = [f"{r}#{n}" for r, n, p in zip(targets["repo"], targets["number"], pos, strict=True) if p < 0]
        raise ValueError(f"targets without a created_at cannot be scored: {missing[:10]}")
    return frame.iloc[pos].reset_index(drop=True)


def target_features(history_issues: pd.DataFrame, history_comments: pd.DataFrame | None, targets: pd.DataFrame,
                    scoring_time) -> pd.DataFrame:
    """Reference path: features of `targets` (issues-table rows) at the scoring time, one row per target."""
    targets = prepare_targets(targets, scoring_time)
    keys = pd.MultiIndex.from_arrays([targets["repo"].astype("string"), targets["id"].astype("int64")])
    builder = PointInTimeBuilder(scoring_time, keys)
    builder._load(_merge_history(history_issues, targets), history_comments)
    return _order_like_targets(builder.target_features(), targets)


class PreparedHistory:
    """A repository's history made ready once, so scoring a new issue only computes that issue's row.

    Thread-safe: the shared state is read-only after construction except the key coders (guarded by
    a lock) and the per-period text-score models (a cache filled under a lock).
    """

    def __init__(self, history_issues: pd.DataFrame, history_comments: pd.DataFrame | None):
        self.history_issues = history_issues
        self.history_comments = history_comments
        # as_of far in the future: the history's labels all count as training documents; a period's
        # model only uses labels known at its start, which is never after a scoring time in it.
        self._builder = PointInTimeBuilder(pd.Timestamp("2200-01-01", tz="UTC"))
        self._builder._load(history_issues, history_comments)
        b = self._builder
        self._keys = pd.MultiIndex.from_arrays([b.issues["repo"], b.issues["id"]])
        self._indexes = b.indexes
        b._comment_index()  # built once, read-only afterwards
        self._repo_codes = _codes(b._repos)
        self._n_repos = len(self._repo_codes)
        self._author_codes = _codes(b._authors)
        self._n_authors = len(self._author_codes)
        self._login_codes = _codes(b._logins)
        docs = b.issues["_target"].to_numpy()
        known = b.issues["_known"].to_numpy().copy()
        known[~docs] = np.nan
        self._doc_known = known
        self._doc_positive = b.issues["_pos"].to_numpy()
        codes, names = pd.factorize(b.issues["repo"].to_numpy(dtype=object))
        ids = b.issues["id"].to_numpy(dtype="int64")
        self._ids = {name: np.sort(ids[codes == k]) for k, name in enumerate(names)}
        self._coder_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._period_models: dict[int, SGDClassifier | None] = {}
        self.fast = 0  # requests answered by the prepared path
        self.fallbacks = 0  # requests that needed the reference path

    def __len__(self) -> int:
        return len(self._keys)

    def contains(self, targets: pd.DataFrame) -> np.ndarray:
        return pd.MultiIndex.from_arrays([targets["repo"].astype("string"), targets["id"].astype("int64")]) \
            .isin(self._keys)

    def has_issue(self, repo: str, issue_id: int) -> bool:
        """True if the history holds (repo, id): contains() for one key, without pandas."""
        ids = self._ids.get(repo)
        if ids is None or not len(ids):
            return False
        i = int(np.searchsorted(ids, issue_id))
        return i < len(ids) and int(ids[i]) == issue_id

    def features(self, targets: pd.DataFrame, scoring_time) -> pd.DataFrame:
        """Equal to target_features(history..., targets, scoring_time)."""
        targets = prepare_targets(targets, scoring_time)
        if len(targets) == 0 or self.contains(targets).any():
            return self._reference(targets, scoring_time)
        norm = normalize_issues(targets)
        if len(norm) != len(targets) or norm.duplicated(["repo", "id"]).any() or norm["is_pull_request"].any():
            return self._reference(targets, scoring_time)
        cols = self.fast_arrays(self._rows_of(norm), _us(utc(scoring_time)))
        if cols is None:
            return self._reference(targets, scoring_time)
        frame = pd.DataFrame(self._builder._wrap(cols), copy=False)
        frame["prediction_time"] = pd.to_datetime(cols["prediction_time"], unit="us", utc=True).astype(TS)
        self.fast += 1
        return _order_like_targets(frame, targets)

    @staticmethod
    def _rows_of(norm: pd.DataFrame) -> dict[str, np.ndarray]:
        """Normalized issues-table rows as the raw columns fast_arrays reads."""
        n = len(norm)

        def obj(name):
            return norm[name].to_numpy(dtype=object, na_value=None) if name in norm else np.full(n, None, object)

        return {
            "repo": norm["repo"].to_numpy(dtype=object), "id": norm["id"].to_numpy(dtype="int64"),
            "number": norm["number"].to_numpy(dtype="int64"),
            "title": norm["title"].array._ndarray if hasattr(norm["title"].array, "_ndarray")
            else norm["title"].to_numpy(dtype=object),
            "body": norm["body"].array._ndarray if hasattr(norm["body"].array, "_ndarray")
            else norm["body"].to_numpy(dtype=object),
            "labels": norm["labels"].to_numpy(dtype=object) if "labels" in norm else np.full(n, "[]", dtype=object),
            "comments": norm["comments"].fillna(0).to_numpy(dtype="float64") if "comments" in norm else np.zeros(n),
            "user_login": obj("user_login"), "user_id": obj("user_id"), "user_type": obj("user_type"),
            "author_association": obj("author_association"),
            "is_pull_request": norm["is_pull_request"].to_numpy(dtype=bool),
            "c": _us_col(norm["created_at"]), "cl": _us_col(norm["closed_at"]), "fs": _us_col(norm["first_seen_at"]),
        }

    def fast_arrays(self, raw: dict[str, np.ndarray], scoring_us: float) -> dict[str, np.ndarray] | None:
        """Feature arrays (FeatureBuilder._feature_arrays columns, hours_observed and prediction_time per
        row) of new issues (not in the history, not pull requests) given as raw columns; None when the
        reference path must answer (a target is a text-score training document of a scored period)."""
        own = self._own_rows(raw, scoring_us)
        if own is None:
            return None
        t, c = own._iss["_t"], own._iss["_c"]
        out = own._feature_arrays(np.arange(len(t)))
        out["hours_observed"] = (t - c) / HOUR_US
        out["prediction_time"] = t.astype("int64")
        return out

    def model_arrays(self, raw: dict[str, np.ndarray], scoring_us: float) -> dict[str, np.ndarray] | None:
        """fast_arrays' FEATURE_NAMES columns and prediction_time, computed for the model only: the text
        features of text_rows (plain `re`, one row at a time) and the text score row by row, no reference
        (ref_*) columns. None when fast_arrays is None or a period's text-score model is not fitted yet."""
        own = self._own_rows(raw, scoring_us)
        if own is None:
            return None
        s = own._iss
        t, c = s["_t"], s["_c"]

        def g(name):
            return s[name]

        f = own._history(g, t)
        f.update(own._activity(g, t))
        f.update(text_rows(s["title"], s["body"]))
        if own.use_text_score:
            score = own._text_score_rows(t)
            if score is None:
                return None
            f["text_score"] = score
        else:
            f["text_score"] = np.full(len(t), np.nan)
        f["hours_observed"] = (t - c) / HOUR_US
        out = {name: f[name] for name in FEATURE_NAMES}
        out["prediction_time"] = t.astype("int64")
        return out

    def _own_rows(self, raw: dict[str, np.ndarray], scoring_us: float) -> _FastRows | None:
        """The rows as a _FastRows over the prepared logs plus their own events; None when the reference
        path must answer (a target is a text-score training document of a scored period)."""
        b = self._builder
        n = len(raw["id"])
        h = b._h_us
        c, cl, fs = raw["c"], raw["cl"], raw["fs"]
        dur = cl - c
        pos = ~np.isnan(dur) & (dur <= h)
        known = np.where(pos, cl, c + h)
        closed = ~np.isnan(cl) & (cl <= scoring_us)
        t = np.where(closed, c, np.maximum(c, scoring_us))
        latest_period = period_start(t.astype("int64"), b.text_config).max()
        if (known <= latest_period).any():
            return None
        fresh_repos: dict = {}
        fresh_authors: dict = {}
        rk = np.empty(n, dtype="int64")
        ak = np.empty(n, dtype="int64")
        bot = np.zeros(n, dtype=bool)
        maint = np.zeros(n, dtype=bool)
        half = USER_BITS // 2
        for i in range(n):
            repo = raw["repo"][i]
            code = self._repo_codes.get(repo)
            if code is None:
                code = fresh_repos.setdefault(repo, self._n_repos + len(fresh_repos))
            rk[i] = code
            uid, login = raw["user_id"][i], raw["user_login"][i]
            if uid is not None:
                who = ("id", code, int(uid) % half)
                key = code * USER_BITS + int(uid) % half
            elif login is not None:
                lc = self._login_codes.get(login)
                who = ("login", code, login)
                key = code * USER_BITS + half + lc if lc is not None else None
            else:
                who, key = None, None
            if who is None:
                ak[i] = -1
            else:
                a = self._author_codes.get(key) if key is not None and code < self._n_repos else None
                ak[i] = a if a is not None else fresh_authors.setdefault(who, self._n_authors + len(fresh_authors))
            utype = raw["user_type"][i]
            bot[i] = (isinstance(login, str) and login.lower().endswith("[bot]")) or utype == "Bot"
            maint[i] = raw["author_association"][i] in MAINTAINER_ASSOCIATIONS
        cols = _Rows({
            "repo": raw["repo"], "id": raw["id"], "number": raw["number"], "title": raw["title"],
            "body": raw["body"], "labels": raw["labels"], "_refc": raw["comments"],
            "is_pull_request": raw["is_pull_request"], "_rk": rk, "_ak": ak, "_c": c, "_cl": cl, "_fs": fs,
            "_pos": pos, "_known": known, "_capped": np.where(pos, dur, h) / DAY_US, "_maint": maint,
            "_t": t, "_target": ~raw["is_pull_request"], "_bot": bot,
        }, n)
        own = _FastRows(self, cols, scoring_us)
        own._com = _EMPTY_COMMENTS
        batch = FeatureBuilder._events(own)
        own._com = b._com
        own.indexes = {name: _WithBatch(index, *batch[name]) for name, index in self._indexes.items()}
        return own

    def _reference(self, targets: pd.DataFrame, scoring_time) -> pd.DataFrame:
        self.fallbacks += 1
        return target_features(self.history_issues, self.history_comments, targets, scoring_time)

    def _period_model(self, p0: int, child: FeatureBuilder) -> SGDClassifier | None:
        """The text-score model of the period starting at p0, fitted as text_scores() fits it."""
        with self._model_lock:
            if p0 in self._period_models:
                return self._period_models[p0]
            config = child.text_config
            known = self._doc_known
            idx = np.nonzero(~np.isnan(known))[0]
            order = idx[np.argsort(known[idx], kind="stable")]
            n = int(np.searchsorted(known[order], p0, side="right"))
            rows = np.sort(order[max(0, n - config.max_train_rows):n])
            model = None
            y = np.asarray(self._doc_positive, dtype="int8")[rows]
            if len(rows) >= config.min_train_rows and y.min() != y.max():
                model = SGDClassifier(loss="log_loss", alpha=config.alpha, max_iter=config.epochs, tol=None,
                                      random_state=0, shuffle=True)
                model.fit(self._builder._X[rows], y)
            self._period_models[p0] = model
            return model
