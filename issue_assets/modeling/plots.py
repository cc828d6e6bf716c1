"""PNG plots as bytes, drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _figure(title: str, xlabel: str, ylabel: str):
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def history_png(values: Sequence[float | None], states: Sequence[str], title: str = "Optuna history") -> bytes:
    """Objective per trial (completed dots, pruned crosses at their last reported value) and the best so far."""
    fig, ax = _figure(title, "trial", "mean forward-chaining validation AUC")
    numbers = np.arange(len(values))
    done = [(i, v) for i, (v, s) in enumerate(zip(values, states, strict=True)) if s == "COMPLETE" and v is not None]
    pruned = [(i, v) for i, (v, s) in enumerate(zip(values, states, strict=True)) if s == "PRUNED" and v is not None]
    if done:
        ax.scatter(*zip(*done, strict=True), s=18, label="completed")
        best, running = [], -np.inf
        for i in numbers:
            v = values[i]
            if states[i] == "COMPLETE" and v is not None:
                running = max(running, v)
            best.append(running if np.isfinite(running) else np.nan)
        ax.plot(numbers, best, color="tab:red", label="best so far")
    if pruned:
        ax.scatter(*zip(*pruned, strict=True), s=18, marker="x", color="gray", label="pruned (last report)")
    if done or pruned:
        ax.legend(loc="lower right")
    return _png(fig)


def roc_png(y_true, curves: Mapping[str, np.ndarray], title: str = "ROC, test window") -> bytes:
    fig, ax = _figure(title, "false positive rate", "true positive rate")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="chance")
    if 0 < int(np.sum(y_true)) < len(y_true):
        for name, proba in curves.items():
            fpr, tpr, _ = roc_curve(y_true, proba)
            ax.plot(fpr, tpr, label=name)
    ax.legend(loc="lower right")
    return _png(fig)


def pr_png(y_true, curves: Mapping[str, np.ndarray], title: str = "Precision-recall, test window") -> bytes:
    fig, ax = _figure(title, "recall", "precision")
    base = float(np.mean(y_true)) if len(y_true) else 0.0
    ax.axhline(base, linestyle="--", color="gray", label=f"base rate {base:.3f}")
    if 0 < int(np.sum(y_true)) < len(y_true):
        for name, proba in curves.items():
            precision, recall, _ = precision_recall_curve(y_true, proba)
            ax.plot(recall, precision, label=name)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper right")
    return _png(fig)


def reliability(y_true, proba, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean predicted vs observed frequency in equal-count bins: (mean_pred, observed, count)."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(proba, dtype=float)
    order = np.argsort(p, kind="stable")
    chunks = [c for c in np.array_split(order, min(bins, max(1, len(p)))) if len(c)]
    mean_pred = np.array([p[c].mean() for c in chunks])
    observed = np.array([y[c].mean() for c in chunks])
    count = np.array([len(c) for c in chunks])
    return mean_pred, observed, count


def calibration_png(y_true, curves: Mapping[str, np.ndarray], title: str = "Calibration, test window") -> bytes:
    fig, ax = _figure(title, "mean predicted probability", "observed close-within-7-days rate")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect")
    for name, proba in curves.items():
        if len(proba):
            mean_pred, observed, _ = reliability(y_true, proba)
            ax.plot(mean_pred, observed, marker="o", label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    return _png(fig)


def importance_png(features: Sequence[str], gains: Sequence[float], top: int = 20) -> bytes:
    fig, ax = _figure("Feature importance (gain)", "mean gain per split", "")
    pairs = sorted(zip(features, gains, strict=True), key=lambda fv: fv[1])[-top:]
    if pairs:
        names, values = zip(*pairs, strict=True)
        ax.barh(range(len(values)), values)
        ax.set_yticks(range(len(names)), labels=names)
    return _png(fig)
