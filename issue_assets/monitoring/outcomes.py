"""How good the served predictions turned out: each joined to its outcome once that outcome is known.

A served prediction of issue X is judged by the same label the model was trained on: closed within 7
days of creation, known at min(closed_at, created_at + 7 days) (`issue_assets.features.labels`). Only
predictions whose outcome is known at `now` count. Exact repeats (the same issue, prediction time and
model) count once.

Public API:
    join_outcomes(served, issues, now) -> DataFrame        served rows with `outcome` (bool), `outcome_known_at`
    quality(joined) -> dict                                n, issues, positives, roc_auc, brier, log_loss, ece,
                                                           mean_probability, observed_rate (each issue weighted
                                                           once per model: issue_weights)
    quality_by(joined, by) -> DataFrame                    the same per group ("week", "model_version", "age")
    calibration_table(joined, bins=10) -> DataFrame        mean predicted vs observed, equal-count bins
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from issue_assets.features.catalog import AGES_HOURS
from issue_assets.features.labels import DEFAULT_HORIZON_DAYS, horizon_us, known_by, us
from issue_assets.modeling.evaluation import evaluate
from issue_assets.modeling.plots import reliability

#: age buckets of a served prediction (hours since creation): from each training age to the next, the last
#: to the end of the 7-day window ([0, 6), [6, 24), [24, 72), [72, 168) with ages 0/6/24/72), so a bucket's
#: live quality stands beside the test quality at its training age
AGE_EDGES = (*(float(a) for a in AGES_HOURS), DEFAULT_HORIZON_DAYS * 24.0)
AGE_LABELS = tuple(f"{a:g}-{b:g}h" for a, b in zip(AGE_EDGES[:-1], AGE_EDGES[1:], strict=True))


def age_bucket(hours: pd.Series) -> pd.Series:
    return pd.cut(hours.astype("float64"), bins=list(AGE_EDGES), labels=list(AGE_LABELS), right=False)


def join_outcomes(served: pd.DataFrame, issues: pd.DataFrame, now, *,
                  horizon_days: float = DEFAULT_HORIZON_DAYS) -> pd.DataFrame:
    """Served predictions whose outcome is known at `now`, with that outcome."""
    now = pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    if not len(served) or not len(issues):
        return served.iloc[0:0].assign(outcome=pd.Series(dtype=bool),
                                       outcome_known_at=pd.Series(dtype="datetime64[us, UTC]"))
    table = issues[["id", "created_at", "closed_at"]].drop_duplicates("id", keep="last")
    decided, positive, known_at = known_by(us(table["created_at"]), us(table["closed_at"]), float(now.value // 1000),
                                           horizon_us(horizon_days))
    labels = pd.DataFrame({"id": table["id"].to_numpy()[decided], "outcome": positive[decided],
                           "outcome_known_at": pd.to_datetime(known_at[decided].astype("int64"), unit="us", utc=True)
                           .astype("datetime64[us, UTC]")})
    rows = served.drop_duplicates(["id", "prediction_time", "model_version"], keep="first")
    joined = rows.merge(labels, on="id", how="inner", validate="many_to_one")
    return joined.sort_values(["prediction_time", "id"], kind="stable").reset_index(drop=True)


def _ece(y: np.ndarray, p: np.ndarray, w: np.ndarray, bins: int = 10) -> float | None:
    """Expected calibration error: |observed - predicted| per equal-count bin of probabilities, the bins'
    weighted means averaged by weight."""
    if not len(y):
        return None
    order = np.argsort(p, kind="stable")
    total, err = 0.0, 0.0
    for chunk in (c for c in np.array_split(order, min(bins, len(p))) if len(c)):
        weight = w[chunk].sum()
        err += abs(np.average(y[chunk], weights=w[chunk]) - np.average(p[chunk], weights=w[chunk])) * weight
        total += weight
    return float(err / total)


def issue_weights(joined: pd.DataFrame) -> np.ndarray:
    """1 / (predictions of the issue by the model): every issue counts once per model, however often it was
    scored while open (as training weighs an issue's rows at several ages)."""
    if not len(joined):
        return np.zeros(0)
    counts = joined.groupby(["id", "model_version"], sort=False)["id"].transform("size").to_numpy(dtype=float)
    return 1.0 / counts


def quality(joined: pd.DataFrame) -> dict:
    """Live metrics, each issue weighted once per model (`issue_weights`); `n` counts predictions."""
    y = joined["outcome"].to_numpy(dtype=int)
    p = joined["probability"].to_numpy(dtype=float)
    w = issue_weights(joined)
    out = {"n": int(len(y)), "issues": int(joined["id"].nunique()) if len(joined) else 0,
           "positives": int(y.sum()), "roc_auc": None, "brier": None, "log_loss": None, "ece": None,
           "mean_probability": float(np.average(p, weights=w)) if len(p) else None,
           "observed_rate": float(np.average(y, weights=w)) if len(y) else None}
    if len(y):
        metrics = evaluate(y, p, sample_weight=w)
        out.update(roc_auc=metrics["roc_auc"], brier=metrics["brier"], log_loss=metrics["log_loss"],
                   ece=_ece(y, p, w))
    return out


def _groups(joined: pd.DataFrame, by: str) -> pd.Series:
    if by == "week":
        return joined["prediction_time"].dt.tz_convert("UTC").dt.tz_localize(None).dt.to_period("W-SUN") \
            .dt.start_time.dt.strftime("%Y-%m-%d")
    if by == "age":
        return age_bucket(joined["hours_observed"])
    return joined[by].astype("string")


def quality_by(joined: pd.DataFrame, by: str) -> pd.DataFrame:
    """One row of `quality` per group; `by` is "week" (Monday of the prediction's week), "model_version"
    or "age" (bucket of hours since creation)."""
    if not len(joined):
        return pd.DataFrame(columns=[by, *quality(joined).keys()])
    keys = _groups(joined, by)
    rows = [{by: str(key), **quality(part)} for key, part in joined.groupby(keys, sort=True, observed=True)]
    return pd.DataFrame(rows)


def calibration_table(joined: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    if not len(joined):
        return pd.DataFrame(columns=["mean_probability", "observed_rate", "n"])
    mean_pred, observed, count = reliability(joined["outcome"].to_numpy(dtype=float),
                                             joined["probability"].to_numpy(dtype=float), bins)
    return pd.DataFrame({"mean_probability": mean_pred, "observed_rate": observed, "n": count})

