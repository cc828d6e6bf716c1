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
from issue_assets.features.text_score import hash_texts, period_start


def utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _us(ts: pd.Timestamp) -> float:
    return float(ts.value // 1000)


def _pack(repo_codes: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    return np.asarray(repo_codes, dtype="int64") * (1 << 32) + np.asarray(numbers, dtype="int64")


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


class _WithBatch:
    """A prepared history EventIndex plus the scored rows' own events: the merged log's answers."""

    def __init__(self, base: EventIndex, keys, times, weights):
        self.base = base
        self.batch = EventIndex(keys, times, weights) if len(keys) else None

    def sums(self, qkeys, qtimes, inclusive=True, order=None):
        out = self.base.sums(qkeys, qtimes, inclusive)
        return out + self.batch.sums(qkeys, qtimes, inclusive) if self.batch is not None else out

    def first_time(self, qkeys):
        out = self.base.first_time(qkeys)
        return np.fmin(out, self.batch.first_time(qkeys)) if self.batch is not None else out

    def last_time(self, qkeys, qtimes, inclusive=True, order=None):
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
        out = own._feature_arrays(np.arange(n))
        out["hours_observed"] = (t - c) / HOUR_US
        out["prediction_time"] = t.astype("int64")
        return out

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
