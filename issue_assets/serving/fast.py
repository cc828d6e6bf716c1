"""POST /predict for a few new issues on arrays only: the same answer as the general path, in a few ms.

The general path turns the request into DataFrames (GitHub JSON -> issue_versions -> issues table ->
normalize -> PreparedHistory.features -> score_features -> rows as dicts): right for batches, tens of
milliseconds of pandas for one issue. Here the validated request models become the raw columns of
`PreparedHistory.model_arrays` directly, the model reads a float32 matrix of the model's features in
its order, and the response dicts are built from the arrays.

`predict_fast(...)` returns None whenever it cannot give exactly the general path's answer, and the
caller then takes the general path, which also produces every error message. That is the case for:
more than FAST_MAX_ISSUES issues, a pull request, an issue id given twice or already in the lake
history, an issue created after the scoring time, a timestamp outside 2000-2200 or with a sub-minute
UTC offset, a target whose own label would be a text-score training document (`model_arrays` is None),
a text-score model of the period not fitted yet, or a booster whose feature names differ from the
model's. What each field becomes follows `github.normalize` (issue_versions + issues_from_versions):
title/body None -> "", lone surrogates -> '?', first_seen_at = fetched_at = the scoring time, a closed_at
before created_at -> created_at.

The model part equals `scoring.score_features` + `service._predictions`: probabilities of the float32
matrix of the model's features (then the calibrator), rank 1 = most likely (ties: older, then lower
number), and the top-k contributions from `scoring.top_contributions` itself (the function the general
path calls, so the two cannot drift apart). The probabilities come from the one XGBoost C call that
`booster.inplace_predict` makes (without the wrapper's ~0.15 ms of Python) once `warm(model)` found it
equal to `scoring.probabilities` for that model; `warm` also runs the contribution code once, so its
first-use costs (compiled kernels, per-booster tables) are never paid on the request path: a model that
is not warm yet is answered by the general path. The service warms each champion when it loads it. The
booster's feature names are checked once per model: the input is positional, as in the general path.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import xgboost as xgb

from issue_assets.modeling.training import TrainedModel
from issue_assets.serving.features import PreparedHistory
from issue_assets.serving.scoring import probabilities, top_contributions

FAST_MAX_ISSUES = 16
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_LO_US = (datetime(2000, 1, 1) - _EPOCH) // _ONE_US
_HI_US = (datetime(2200, 1, 1) - _EPOCH) // _ONE_US
_INT64 = 2**63
_names_ok: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
log = logging.getLogger(__name__)

try:  # the C API the xgboost package itself calls
    from xgboost.core import _LIB, _check_call, c_bst_ulong

    _C_API = hasattr(_LIB, "XGBoosterPredictFromDense")
except ImportError:  # pragma: no cover - another xgboost layout: the scoring module answers
    _C_API = False
_INPLACE_CONFIG = json.dumps({"type": 0, "training": False, "iteration_begin": 0, "iteration_end": 0,
                              "missing": float("nan"), "strict_shape": False, "cache_id": 0}).encode()
_direct_ok: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> direct call agrees
_warm: weakref.WeakSet = weakref.WeakSet()  # models whose scoring ran once off the request path


def _direct_predict(booster: xgb.Booster, X32: np.ndarray) -> np.ndarray:
    """booster.inplace_predict(X32) as float64: the one C call it makes, without the wrapper's Python."""
    preds = ctypes.POINTER(ctypes.c_float)()
    shape = ctypes.POINTER(c_bst_ulong)()
    dims = c_bst_ulong()
    _check_call(_LIB.XGBoosterPredictFromDense(booster.handle, json.dumps(X32.__array_interface__).encode(),
                                               _INPLACE_CONFIG, ctypes.c_void_p(), ctypes.byref(shape),
                                               ctypes.byref(dims), ctypes.byref(preds)))
    size = int(np.prod([shape[i] for i in range(dims.value)]))
    # the buffer belongs to the booster (this thread's): copy it before the next call
    return np.ctypeslib.as_array(preds, shape=(size,)).astype(float) if size else np.zeros(0)


def probabilities_of(model: TrainedModel, X32: np.ndarray) -> np.ndarray:
    """scoring.probabilities(model, X32): the booster's probabilities, then the calibrator. By a direct
    C call when warm() found it equal to scoring.probabilities for this model."""
    if _direct_ok.get(model):
        raw = _direct_predict(model.booster, np.ascontiguousarray(X32, dtype=np.float32))
        return model.calibrator.apply(raw) if model.calibrator else raw
    return probabilities(model, X32)


def warm(model: TrainedModel) -> bool:
    """Run the model's scoring once off the request path (compiled contribution kernels load, the
    booster's tables are built) and check the direct prediction call against scoring.probabilities.
    predict_fast answers with a model only after this. Returns whether the model is ready."""
    try:
        _names_match(model)
        rng = np.random.default_rng(0)
        X = rng.normal(scale=50.0, size=(64, len(model.feature_names)))
        X[rng.random(X.shape) < 0.2] = np.nan
        X[0] = 0.0
        X32 = X.astype(np.float32)
        want = np.asarray(probabilities(model, X32), dtype=float)
        ok = False
        if _C_API:
            try:
                raw = _direct_predict(model.booster, X32)
                got = np.asarray(model.calibrator.apply(raw) if model.calibrator else raw, dtype=float)
                ok = bool(np.array_equal(got, want))
            except Exception:
                log.exception("direct XGBoost prediction call failed; using scoring.probabilities")
            if not ok:
                log.warning("direct XGBoost prediction differs from scoring.probabilities; not using it")
        _direct_ok[model] = ok
        top_contributions(model, X[:1], 1, nthread=1, values=X[:1])
    except Exception:
        log.exception("warming the fast path for model %s failed; the general path answers", model.version)
        return False
    _warm.add(model)
    return True


def to_us(dt: datetime) -> int | None:
    """A request datetime as UTC microseconds (naive = UTC), as `to_utc` reads its ISO dump; None when
    outside 2000-2200 or with an offset that is not whole minutes (the general path decides those)."""
    off = dt.utcoffset()
    naive = dt.replace(tzinfo=None)
    if off is not None:
        if off % timedelta(minutes=1):
            return None
        try:
            naive = naive - off
        except OverflowError:
            return None
    us = (naive - _EPOCH) // _ONE_US
    return us if _LO_US <= us < _HI_US else None


def from_us(us: int) -> datetime:
    return _EPOCH_UTC + timedelta(microseconds=int(us))


def _text(value) -> str | None:
    """Strings as the lake stores them: lone surrogates (from JSON escapes) become '?'."""
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


def _names_match(model: TrainedModel) -> bool:
    ok = _names_ok.get(model)
    if ok is None:
        names = model.booster.feature_names
        ok = _names_ok[model] = names is None or list(names) == list(model.feature_names)
    return ok


def raw_columns(items: Sequence, repo: str, scoring_us: int) -> dict[str, np.ndarray] | None:
    """GitHubIssue models -> the raw columns PreparedHistory.model_arrays reads; None: general path."""
    n = len(items)
    ids, numbers, c, cl = [], [], [], []
    titles, bodies, logins, user_ids, types, assoc = [], [], [], [], [], []
    for item in items:
        if item.pull_request is not None:
            return None
        created = to_us(item.created_at)
        if created is None or created > scoring_us:
            return None
        closed = None
        if item.closed_at is not None:
            closed = to_us(item.closed_at)
            if closed is None:
                return None
            closed = max(closed, created)  # closed before created: closed at once
        user = item.user
        uid = user.id if user is not None else None
        if item.id >= _INT64 or item.number >= _INT64 or (uid is not None and not -_INT64 <= uid < _INT64):
            return None  # the lake's int64 columns cannot hold it: the general path reports that
        ids.append(item.id)
        numbers.append(item.number)
        c.append(created)
        cl.append(math.nan if closed is None else closed)
        titles.append(_text(item.title) or "")
        bodies.append(_text(item.body) or "")
        logins.append(_text(user.login) if user is not None else None)
        user_ids.append(uid)
        types.append(_text(user.type) if user is not None else None)
        assoc.append(_text(item.author_association))
    if len(set(ids)) != n:
        return None

    def objects(values):
        out = np.empty(n, dtype=object)
        out[:] = values
        return out

    return {
        "repo": objects([repo] * n), "id": np.asarray(ids, dtype="int64"),
        "number": np.asarray(numbers, dtype="int64"), "title": objects(titles), "body": objects(bodies),
        "labels": objects(["[]"] * n), "comments": np.zeros(n),  # read by the ref_* columns only
        "user_login": objects(logins), "user_id": objects(user_ids), "user_type": objects(types),
        "author_association": objects(assoc), "is_pull_request": np.zeros(n, dtype=bool),
        "c": np.asarray(c, dtype="float64"), "cl": np.asarray(cl, dtype="float64"),
        "fs": np.full(n, float(scoring_us)),
    }


def predict_fast(model: TrainedModel, version: str, prepared: PreparedHistory, repo: str, items: Sequence,
                 scoring_time: datetime | None, top_k: int, now: datetime | None = None) -> dict | None:
    """The POST /predict response for `items` (GitHubIssue models), or None for the general path.

    scoring_time: the request's (None: now, or the newest created_at if later)."""
    n = len(items)
    if n == 0 or n > FAST_MAX_ISSUES or model not in _warm or not _names_match(model):
        return None
    if scoring_time is not None:
        scoring_us = to_us(scoring_time)
    else:
        now_us = to_us(now or datetime.now(UTC))
        newest = [to_us(i.created_at) for i in items]
        scoring_us = None if now_us is None or None in newest else max(now_us, *newest)
    if scoring_us is None:
        return None
    raw = raw_columns(items, repo, scoring_us)
    if raw is None or any(prepared.has_issue(repo, int(i)) for i in raw["id"]):
        return None
    feats = prepared.model_arrays(raw, float(scoring_us))
    if feats is None:
        return None
    names = model.feature_names
    X = np.array([feats[name] for name in names], dtype="float64").T.copy()
    X32 = X.astype(np.float32)
    if np.isinf(X32).any():
        return None  # XGBoost refuses ±inf: the general path reports it
    probability = np.asarray(probabilities_of(model, X32), dtype=float)
    created = raw["c"].astype("int64")
    order = np.lexsort((raw["number"], created, -probability))
    rank = np.empty(n, dtype="int64")
    rank[order] = np.arange(1, n + 1)
    contributions: list[list[dict]] = [[] for _ in range(n)]
    if top_k:
        flat = top_contributions(model, X, top_k, nthread=1, values=X)  # the general path's function
        for r in range(n):
            row = contributions[r]
            for i in range(1, top_k + 1):
                feature = flat[f"contrib_{i}_feature"][r]
                if feature is None:
                    break
                value = float(flat[f"contrib_{i}_value"][r])
                row.append({"feature": str(feature), "value": None if math.isnan(value) else value,
                            "contribution": float(flat[f"contrib_{i}_contribution"][r])})
    scoring_dt = from_us(scoring_us)
    hours = feats["hours_observed"]
    predictions = []
    for r in range(n):
        h = float(hours[r])
        predictions.append({
            "repository": repo, "id": int(raw["id"][r]), "number": int(raw["number"][r]),
            "title": raw["title"][r], "created_at": from_us(created[r]),
            "prediction_time": from_us(feats["prediction_time"][r]),
            "hours_observed": None if math.isnan(h) else h,
            "probability": float(probability[r]), "rank": int(rank[r]), "model_version": str(version),
            "scoring_time": scoring_dt, "top_contributions": contributions[r],
        })
    return {"model_version": version, "scoring_time": scoring_dt, "count": n, "predictions": predictions}
