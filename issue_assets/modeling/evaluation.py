"""Metrics for a probability forecast of "closed within 7 days", comparison of two models, the AUC alert.

Every metric is a plain float (or None when undefined, e.g. AUC on a window with one class) so the
dictionaries go straight into JSON metadata.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

EPS = 1e-6


def _as_arrays(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(proba, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} rows but proba has {p.size}")
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must be 0/1")
    if np.isnan(p).any():
        raise ValueError("proba contains NaN")
    return y.astype(int), np.clip(p, 0.0, 1.0)


def _precision_recall(y: np.ndarray, predicted: np.ndarray) -> tuple[float | None, float | None]:
    tp = int((predicted & (y == 1)).sum())
    flagged = int(predicted.sum())
    positives = int((y == 1).sum())
    precision = tp / flagged if flagged else None
    recall = tp / positives if positives else None
    return precision, recall


def evaluate(y_true, proba, threshold: float = 0.5, top_k_fraction: float = 0.10,
             sample_weight=None) -> dict[str, Any]:
    """ROC AUC, PR AUC (average precision), log loss, Brier, precision/recall at `threshold` and at the
    top k = `top_k_fraction` of rows by score (ties broken by row order), base rate and counts.
    `sample_weight` weighs the rows in ROC AUC, PR AUC, log loss and Brier (e.g. 1 / rows of an issue)."""
    y, p = _as_arrays(y_true, proba)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=float).ravel()
    n = int(y.size)
    positives = int(y.sum())
    both_classes = 0 < positives < n
    out: dict[str, Any] = {
        "n": n,
        "positives": positives,
        "base_rate": positives / n if n else None,
        "roc_auc": float(roc_auc_score(y, p, sample_weight=w)) if both_classes else None,
        "pr_auc": float(average_precision_score(y, p, sample_weight=w)) if both_classes else None,
        "log_loss": float(log_loss(y, np.clip(p, EPS, 1 - EPS), labels=[0, 1], sample_weight=w)) if n else None,
        "brier": float(brier_score_loss(y, p, pos_label=1, sample_weight=w)) if n else None,
        "threshold": float(threshold),
        "top_k_fraction": float(top_k_fraction),
    }
    prec, rec = _precision_recall(y, p >= threshold)
    out["precision_at_threshold"], out["recall_at_threshold"] = prec, rec
    k = max(1, int(round(top_k_fraction * n))) if n else 0
    top = np.zeros(n, dtype=bool)
    top[np.argsort(-p, kind="stable")[:k]] = True
    prec_k, rec_k = _precision_recall(y, top)
    out["top_k"] = k
    out["precision_at_top_k"], out["recall_at_top_k"] = prec_k, rec_k
    return out


def age_key(age: float) -> str:
    return f"{float(age):g}"


def evaluate_by_age(y_true, proba, ages, threshold: float = 0.5, top_k_fraction: float = 0.10) -> dict[str, Any]:
    """`evaluate` on the rows of each age (hours since creation at the prediction time), keyed "0", "6", ..."""
    y, p, a = np.asarray(y_true), np.asarray(proba), np.asarray(ages, dtype=float)
    return {age_key(age): evaluate(y[a == age], p[a == age], threshold, top_k_fraction) for age in np.unique(a)}


def _value(metrics: dict[str, Any] | None, metric: str) -> float | None:
    if not metrics:
        return None
    value = metrics.get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


# Metrics where a lower value is better; every other metric is "higher is better".
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


def compare(
    candidate_metrics: dict[str, Any],
    champion_metrics: dict[str, Any] | None,
    margin: float = 0.0,
    metric: str = "roc_auc",
) -> dict[str, Any]:
    """Is the candidate better than the champion by more than `margin` on `metric`?

    `improvement` is signed so that positive always means "candidate better" (for log loss and Brier
    it is champion - candidate). A tie is not better. A candidate without the metric is never better;
    a champion without it (None metrics) loses to any candidate that has it.
    """
    cand = _value(candidate_metrics, metric)
    champ = _value(champion_metrics, metric)
    if cand is None:
        improvement, better = None, False
    elif champ is None:
        improvement, better = None, True
    else:
        improvement = champ - cand if metric in LOWER_IS_BETTER else cand - champ
        better = improvement > margin
    return {
        "metric": metric,
        "candidate": cand,
        "champion": champ,
        "improvement": improvement,
        "margin": float(margin),
        "better": bool(better),
    }


def check_alert(
    metrics: dict[str, Any], alert_threshold: float = 0.6, metric: str = "roc_auc"
) -> tuple[bool, dict[str, Any]]:
    """The blocking quality check: test `metric` must be at least `alert_threshold`.

    Returns (passed, details); details["message"] is the line the caller logs as "[ALERT] ..." on failure.
    An undefined metric (one-class test window) fails.
    """
    value = _value(metrics, metric)
    passed = value is not None and value >= alert_threshold
    shown = "undefined" if value is None else f"{value:.4f}"
    relation = ">=" if passed else "<"
    message = (
        f"test {metric} {shown} {relation} alert threshold {alert_threshold:.4f} "
        f"(n={metrics.get('n')}, positives={metrics.get('positives')}, base rate={metrics.get('base_rate')})"
    )
    return passed, {
        "metric": metric,
        "value": value,
        "alert_threshold": float(alert_threshold),
        "passed": bool(passed),
        "n": metrics.get("n"),
        "base_rate": metrics.get("base_rate"),
        "message": message,
    }
