"""One scoring path for the batch job and the HTTP service, so both give the same numbers.

Public API:
    score_issues(model, model_version, history_issues, history_comments, targets, scoring_time, top_k=5)
        -> DataFrame, one row per target in the order given (PREDICTION_COLUMNS + contribution columns)
    score_prepared(model, model_version, prepared: PreparedHistory, targets, scoring_time, top_k=5)
        -> DataFrame, equal to score_issues on the history the PreparedHistory was built from
    score_features(model, model_version, features, scoring_time, top_k=5) -> DataFrame
        the model half of score_issues, for feature rows already computed
    open_issues(issues, scoring_time) -> DataFrame          issues (not PRs) open at the scoring time
    batch_open_issue_predictions(model, version, issues, comments, scoring_time, top_k=5) -> DataFrame
        every issue open at the scoring time, ranked (rank 1 first)
    write_predictions(store, repo, df, scoring_time) -> dict[str, str]   the keys written
    read_latest_predictions(store, repo) -> DataFrame | None
    contributions_of(row, top_k) -> list[dict]               a row's contribution columns as a list

Prediction time: see `issue_assets.serving.features` (t = scoring time; issues already closed then
are scored as of their creation). Top contributions are XGBoost's `pred_contribs` (SHAP values in
the booster's log-odds, before calibration), the `top_k` largest by absolute value, stored as flat
columns `contrib_<i>_feature`, `contrib_<i>_value`, `contrib_<i>_contribution` (i = 1..top_k) so
parquet and CSV hold them without nested types and a large batch needs no per-row Python.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import xgboost as xgb

from issue_assets.features.frames import TS
from issue_assets.ingest.layout import repo_slug
from issue_assets.lake.store import KeyNotFound, ObjectStore, read_parquet, write_parquet
from issue_assets.modeling.training import TrainedModel
from issue_assets.serving.features import PreparedHistory, target_features, utc

PREDICTION_COLUMNS = [
    "repo", "id", "number", "title", "created_at", "prediction_time", "hours_observed", "scoring_time",
    "model_version", "probability", "rank",
]
CONTRIBUTION_FIELDS = ("feature", "value", "contribution")


def contribution_columns(top_k: int) -> list[str]:
    return [f"contrib_{i}_{field}" for i in range(1, top_k + 1) for field in CONTRIBUTION_FIELDS]


def _check_targets(targets: pd.DataFrame, scoring_time: pd.Timestamp) -> None:
    missing = [c for c in ("repo", "id", "number", "created_at") if c not in targets.columns]
    if missing:
        raise ValueError(f"targets lack columns {missing}")
    created = pd.to_datetime(targets["created_at"], utc=True)
    late = created > scoring_time
    if late.any():
        numbers = targets.loc[late, "number"].tolist()[:10]
        raise ValueError(f"issues {numbers} were created after the scoring time {scoring_time.isoformat()}")
    if targets.duplicated(["repo", "id"]).any():
        raise ValueError("targets hold the same (repo, id) more than once")


def _ranks(probability: np.ndarray, created_at: pd.Series, number: np.ndarray) -> np.ndarray:
    """1 = most likely closed within 7 days; ties go to the older issue, then the lower number."""
    created = created_at.astype(TS).to_numpy(dtype="datetime64[us]").view("int64")
    order = np.lexsort((number, created, -probability))
    rank = np.empty(len(order), dtype="int64")
    rank[order] = np.arange(1, len(order) + 1)
    return rank


def _feature_matrix(model: TrainedModel, features: pd.DataFrame, values: np.ndarray | None = None) -> np.ndarray:
    """The model's feature columns as float32 (what XGBoost scores); ±inf refused as XGBoost's DMatrix does."""
    matrix = (features[model.feature_names].to_numpy(dtype=np.float32) if values is None
              else values.astype(np.float32))
    if np.isinf(matrix).any():
        bad = [name for name, col in zip(model.feature_names, np.isinf(matrix).any(axis=0), strict=True) if col]
        raise ValueError(f"features {bad} hold ±inf, which XGBoost does not accept (missing values are NaN)")
    return matrix


def probabilities(model: TrainedModel, matrix: xgb.DMatrix | np.ndarray) -> np.ndarray:
    """TrainedModel.predict_proba on a prepared DMatrix or float32 feature matrix: booster output, then
    the calibrator if any. A matrix goes through inplace_predict: the same numbers without building a
    DMatrix (which took ~2/3 of the time for 100,000 rows)."""
    if isinstance(matrix, np.ndarray):
        raw = model.booster.inplace_predict(matrix).astype(float)
    else:
        raw = model.booster.predict(matrix).astype(float)
    return model.calibrator.apply(raw) if model.calibrator else raw


def top_contributions(model: TrainedModel, features: pd.DataFrame, top_k: int,
                      matrix: xgb.DMatrix | None = None, nthread: int | None = None,
                      values: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The same numbers as TrainedModel.contributions, as flat columns, vectorized.

    Contributions are XGBoost's pred_contribs computed by `issue_assets.modeling.treeshap` (the same
    exact TreeSHAP, compiled; XGBoost's own path for boosters it does not handle). `values` is
    features[model.feature_names] as float64 when the caller already has it.
    """
    from issue_assets.modeling.treeshap import pred_contribs, top_k_contributions

    names = model.feature_names
    if values is None:
        values = features[names].to_numpy(dtype=float)
    contribs = pred_contribs(model.booster, values.astype(np.float32), names, nthread, matrix)
    order, picked = top_k_contributions(contribs[:, :-1], top_k)
    k = order.shape[1]
    feature_names = np.asarray(names, dtype=object)[order]
    raw_values = np.take_along_axis(values, order, axis=1)
    picked = picked.astype(float)
    out: dict[str, np.ndarray] = {}
    for i in range(top_k):
        if i < k:
            out[f"contrib_{i + 1}_feature"] = feature_names[:, i]
            out[f"contrib_{i + 1}_value"] = raw_values[:, i]
            out[f"contrib_{i + 1}_contribution"] = picked[:, i]
        else:
            out[f"contrib_{i + 1}_feature"] = np.full(len(features), None, dtype=object)
            out[f"contrib_{i + 1}_value"] = np.full(len(features), np.nan)
            out[f"contrib_{i + 1}_contribution"] = np.full(len(features), np.nan)
    return out


def score_features(model: TrainedModel, model_version: str, features: pd.DataFrame, scoring_time,
                   top_k: int = 5, titles: pd.Series | None = None, nthread: int | None = None) -> pd.DataFrame:
    """Probability, rank, model version, scoring time and top contributions for feature rows.

    `nthread` sets the threads that compute the contributions (the service uses 1; None = every core);
    the numbers do not change.
    """
    if top_k < 0:
        raise ValueError("top_k must be >= 0")
    missing = [c for c in model.feature_names if c not in features.columns]
    if missing:
        raise ValueError(f"input lacks model features {missing}")
    scoring_time = utc(scoring_time)
    n = len(features)
    # one conversion of the feature columns: float64 values for the contribution columns, float32 for XGBoost
    values = features[model.feature_names].to_numpy(dtype=float) if n and top_k else None
    probability = probabilities(model, _feature_matrix(model, features, values)) if n else np.zeros(0)
    index = pd.RangeIndex(n)
    frame = pd.DataFrame({
        "repo": pd.array(features["repo"].astype("string").to_numpy(), dtype="string"),
        "id": features["id"].to_numpy(dtype="int64"),
        "number": features["number"].to_numpy(dtype="int64"),
        "title": (pd.array(titles.astype("string").to_numpy(), dtype="string") if titles is not None
                  else pd.array([pd.NA] * n, dtype="string")),
        "created_at": features["created_at"].astype(TS).set_axis(index),
        "prediction_time": features["prediction_time"].astype(TS).set_axis(index),
        "hours_observed": features["hours_observed"].to_numpy(dtype=float) if "hours_observed" in features
        else np.full(n, np.nan),
        "scoring_time": pd.Series(np.full(n, scoring_time.tz_localize(None).to_datetime64(), dtype="datetime64[us]"),
                                  index=index).dt.tz_localize("UTC"),
        "model_version": pd.array(np.full(n, model_version, dtype=object), dtype="string"),
        "probability": np.asarray(probability, dtype=float),
    }, index=index)
    frame["rank"] = _ranks(frame["probability"].to_numpy(), frame["created_at"], frame["number"].to_numpy())
    if n and top_k:
        contribs = top_contributions(model, features, top_k, nthread=nthread, values=values)
    else:
        contribs = {c: np.zeros(0, dtype=object if c.endswith("feature") else float)
                    for c in contribution_columns(top_k)}
    # all contribution columns in one concat: assigning 3 * top_k columns one by one fragments the frame
    columns = {col: pd.array(vals, dtype="string") if col.endswith("_feature") else vals
               for col, vals in contribs.items()}
    return pd.concat([frame, pd.DataFrame(columns, index=index)], axis=1) if columns else frame


def score_issues(model: TrainedModel, model_version: str, history_issues: pd.DataFrame,
                 history_comments: pd.DataFrame | None, targets: pd.DataFrame, scoring_time,
                 top_k: int = 5) -> pd.DataFrame:
    """Score `targets` (issues-table rows) at `scoring_time` with the repository history as context.

    Targets the history lacks are appended to it; a target in the history replaces its row. One
    output row per target, in the order given; `rank` orders them (1 = most likely closed in 7 days).
    """
    scoring_time = utc(scoring_time)
    _check_targets(targets, scoring_time)
    targets = targets.reset_index(drop=True)
    features = target_features(history_issues, history_comments, targets, scoring_time)
    return score_features(model, model_version, features, scoring_time, top_k, titles=targets["title"]
                          if "title" in targets else None)


def score_prepared(model: TrainedModel, model_version: str, prepared: PreparedHistory, targets: pd.DataFrame,
                   scoring_time, top_k: int = 5, nthread: int | None = None) -> pd.DataFrame:
    """score_issues with a PreparedHistory of the same history tables: the same result, computed faster."""
    scoring_time = utc(scoring_time)
    _check_targets(targets, scoring_time)
    targets = targets.reset_index(drop=True)
    features = prepared.features(targets, scoring_time)
    return score_features(model, model_version, features, scoring_time, top_k, titles=targets["title"]
                          if "title" in targets else None, nthread=nthread)


def open_issues(issues: pd.DataFrame, scoring_time) -> pd.DataFrame:
    """Issues (not pull requests) created by the scoring time and not closed by it."""
    scoring_time = utc(scoring_time)
    created = pd.to_datetime(issues["created_at"], utc=True)
    closed = pd.to_datetime(issues["closed_at"], utc=True)
    pr = issues["is_pull_request"].fillna(False).astype(bool) if "is_pull_request" in issues else False
    mask = (created <= scoring_time) & (closed.isna() | (closed > scoring_time)) & ~pr
    return issues.loc[mask].reset_index(drop=True)


def batch_open_issue_predictions(model: TrainedModel, version: str, issues: pd.DataFrame,
                                 comments: pd.DataFrame | None, scoring_time, top_k: int = 5) -> pd.DataFrame:
    """Every issue of a repository open at the scoring time, scored and sorted by rank."""
    targets = open_issues(issues, scoring_time)
    scored = score_issues(model, version, issues, comments, targets, scoring_time, top_k)
    return scored.sort_values("rank", kind="stable").reset_index(drop=True)


def _stamp(scoring_time: pd.Timestamp) -> str:
    return utc(scoring_time).strftime("%Y%m%dT%H%M%SZ")


def prediction_keys(repo: str, scoring_time) -> dict[str, str]:
    slug = repo_slug(repo)
    stamp = _stamp(scoring_time)
    return {
        "parquet": f"predictions/{slug}/{stamp}.parquet",
        "csv": f"predict_outputs/{slug}/{stamp}.csv",
        "parquet_latest": f"predictions/{slug}/latest.parquet",
        "csv_latest": f"predict_outputs/{slug}/latest.csv",
    }


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    out = df.copy()
    for col in ("created_at", "prediction_time", "scoring_time"):
        if col in out:
            out[col] = out[col].map(lambda ts: ts.isoformat() if pd.notna(ts) else "")
    buf = io.StringIO()
    out.to_csv(buf, index=False, float_format="%.17g")
    return buf.getvalue().encode("utf-8")


def write_predictions(store: ObjectStore, repo: str, df: pd.DataFrame, scoring_time) -> dict[str, str]:
    """The batch as parquet and CSV, timestamped and as `latest`; each object written atomically,
    the `latest` pointers last so a reader never sees a batch whose timestamped files are missing."""
    keys = prediction_keys(repo, scoring_time)
    csv = to_csv_bytes(df)
    write_parquet(store, keys["parquet"], df)
    store.put_bytes(keys["csv"], csv)
    write_parquet(store, keys["parquet_latest"], df)
    store.put_bytes(keys["csv_latest"], csv)
    return keys


def read_latest_predictions(store: ObjectStore, repo: str) -> pd.DataFrame | None:
    try:
        return read_parquet(store, f"predictions/{repo_slug(repo)}/latest.parquet")
    except KeyNotFound:
        return None


def _clean(value):
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value.item() if isinstance(value, np.generic) else value


def contributions_of(row, top_k: int) -> list[dict]:
    """A scored row's contribution columns as [{feature, value, contribution}, ...] (JSON-ready)."""
    out = []
    for i in range(1, top_k + 1):
        feature = _clean(row.get(f"contrib_{i}_feature"))
        if feature is None:
            break
        out.append({"feature": str(feature), "value": _clean(row.get(f"contrib_{i}_value")),
                    "contribution": float(row.get(f"contrib_{i}_contribution"))})
    return out
