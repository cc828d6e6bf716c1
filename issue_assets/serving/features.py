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

import copy
import threading

import numpy as np
import pandas as pd
from sklearn.linear_model import SGDClassifier

from issue_assets.features.compute import HOUR_US, FeatureBuilder
from issue_assets.features.events import EventIndex
from issue_assets.features.frames import TS, normalize_comments, normalize_issues, to_utc_series
from issue_assets.features.text_score import hash_texts, period_start


def utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _us(ts: pd.Timestamp) -> float:
    return float(ts.value // 1000)


def _pack(repo_codes: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    return np.asarray(repo_codes, dtype="int64") * (1 << 32) + np.asarray(numbers, dtype="int64")


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
        events = b._events()
        self._events = {}
        for name, (keys, times, weights) in events.items():
            order = np.lexsort((times, keys))
            self._events[name] = (keys[order], times[order], weights[order])
        packed = _pack(b.comments["_rk"].to_numpy(), b.comments["issue_number"].to_numpy())
        self._comment_order = np.argsort(packed, kind="stable")
        self._comment_keys = packed[self._comment_order]
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
        keys = pd.MultiIndex.from_arrays([targets["repo"].astype("string"), targets["id"].astype("int64")])
        child = copy.copy(self._builder)
        child.scoring_us = _us(utc(scoring_time))
        child.as_of = utc(scoring_time)
        child.targets = keys
        child.timings = {}
        with self._coder_lock:
            rows = child._derive_issues(normalize_issues(targets))
        if len(rows) != len(targets) or rows.duplicated(["repo", "id"]).any():
            return self._reference(targets, scoring_time)
        t = rows["_t"].to_numpy()
        latest_period = period_start(t.astype("int64"), child.text_config).max()
        if (rows["_target"].to_numpy() & (rows["_known"].to_numpy() <= latest_period)).any():
            # Such a target is a text-score training document of its own period: the reference path.
            return self._reference(targets, scoring_time)
        child.issues = rows
        with self._coder_lock:
            child.comments = child._derive_comments(normalize_comments(None))
        own = child._events()
        child.indexes = {}
        for name, (keys_h, times_h, w_h) in self._events.items():
            keys_t, times_t, w_t = own[name]
            child.indexes[name] = EventIndex(np.concatenate([keys_h, keys_t]), np.concatenate([times_h, times_t]),
                                             np.concatenate([w_h, w_t]))
        child.comments = self._comments_of(rows)
        child._text_score = lambda sel, times: self._text_scores(rows, times, child)
        frame = child.target_features()
        self.fast += 1
        return _order_like_targets(frame, targets)

    def _reference(self, targets: pd.DataFrame, scoring_time) -> pd.DataFrame:
        self.fallbacks += 1
        return target_features(self.history_issues, self.history_comments, targets, scoring_time)

    def _comments_of(self, rows: pd.DataFrame) -> pd.DataFrame:
        wanted = _pack(rows["_rk"].to_numpy(), rows["number"].to_numpy())
        lo = np.searchsorted(self._comment_keys, wanted, side="left")
        hi = np.searchsorted(self._comment_keys, wanted, side="right")
        hits = np.concatenate([self._comment_order[a:b] for a, b in zip(lo, hi, strict=True)] + [np.arange(0)])
        return self._builder.comments.iloc[np.sort(hits)]

    def _text_scores(self, rows: pd.DataFrame, times: np.ndarray, child: FeatureBuilder) -> np.ndarray:
        out = np.full(len(rows), np.nan)
        if not child.use_text_score or len(rows) == 0:
            return out
        X = hash_texts(rows["title"], rows["body"], child.text_config)
        starts = period_start(np.asarray(times, dtype="int64"), child.text_config)
        for p0 in np.unique(starts):
            model = self._period_model(int(p0), child)
            if model is not None:
                sel = np.nonzero(starts == p0)[0]
                out[sel] = model.decision_function(X[sel])
        return out

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
