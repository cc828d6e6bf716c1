"""PNG plots as bytes, drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch).

Every line a plot draws is visible and named for what it is: a constant predictor (the base rate)
has the chance diagonal as its ROC curve and the base-rate line as its precision-recall curve, so it
is drawn as those reference lines, not as a curve hidden under them; the calibration plot names the
served model "calibrated" only when a calibrator was applied.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

#: one style per curve, in order: colour, line style, marker (distinct even where curves coincide)
_STYLES = (("tab:blue", "-", "o"), ("tab:orange", "--", "s"), ("tab:green", "-.", "^"), ("tab:purple", ":", "D"))


def _png(fig: Figure) -> bytes:
    """The figure as PNG; its title and legend entries also go into the PNG's text chunks (Title,
    Description) so a report or a test can read what the picture shows (`png_text`)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    labels = [text.get_text() for ax in fig.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
    metadata = {"Title": " / ".join(titles), "Description": "; ".join(labels), "Software": None}
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata=metadata)
    return buf.getvalue()


def png_text(data: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG (what `_png` wrote: Title, Description)."""
    out: dict[str, str] = {}
    pos = 8  # after the signature
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"tEXt" and b"\0" in body:
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        if kind == b"IEND":
            break
        pos += 12 + length
    return out


def _figure(title: str, xlabel: str, ylabel: str):
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _both_classes(y_true) -> bool:
    return 0 < int(np.sum(y_true)) < len(y_true)


def _constant(proba) -> bool:
    p = np.asarray(proba, dtype=float)
    return len(p) == 0 or bool(np.all(p == p[0]))


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
    """One curve per scored model with its AUC in the legend. A constant score (the base rate) has the
    diagonal as its ROC curve: it is named on the diagonal instead of drawn under it."""
    fig, ax = _figure(title, "false positive rate", "true positive rate")
    constants = [name for name, proba in curves.items() if _constant(proba)]
    chance = "chance, AUC 0.5" + (f" = {', '.join(constants)} (a constant score)" if constants else "")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label=chance)
    if _both_classes(y_true):
        drawn = [(name, proba) for name, proba in curves.items() if name not in constants]
        for (name, proba), (colour, line, _) in zip(drawn, _STYLES, strict=False):
            fpr, tpr, _ = roc_curve(y_true, proba)
            ax.plot(fpr, tpr, color=colour, linestyle=line, label=f"{name}, AUC {roc_auc_score(y_true, proba):.4f}")
    ax.legend(loc="lower right")
    return _png(fig)


def pr_png(y_true, curves: Mapping[str, np.ndarray], title: str = "Precision-recall, test window") -> bytes:
    """One curve per scored model with its average precision; a constant score is the base-rate line."""
    fig, ax = _figure(title, "recall", "precision")
    base = float(np.mean(y_true)) if len(y_true) else 0.0
    constants = [name for name, proba in curves.items() if _constant(proba)]
    label = f"base rate {base:.4f}" + (f" = {', '.join(constants)} (a constant score)" if constants else "")
    ax.axhline(base, linestyle="--", color="gray", label=label)
    if _both_classes(y_true):
        drawn = [(name, proba) for name, proba in curves.items() if name not in constants]
        for (name, proba), (colour, line, _) in zip(drawn, _STYLES, strict=False):
            precision, recall, _ = precision_recall_curve(y_true, proba)
            ap = average_precision_score(y_true, proba)
            ax.plot(recall, precision, color=colour, linestyle=line, label=f"{name}, AP {ap:.4f}")
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


def calibration_png(y_true, proba, raw=None, method: str | None = None,
                    title: str = "Calibration, test window") -> bytes:
    """Reliability of the probabilities the model serves (`proba`). With a calibrator applied (`method`,
    e.g. "platt"), the booster's raw probabilities (`raw`) are drawn beside them for comparison; without
    one the served probabilities ARE the booster's and are drawn once, named so."""
    fig, ax = _figure(title, "mean predicted probability", "observed close-within-7-days rate")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfectly calibrated")
    if method:
        curves = {f"model, {method}-calibrated (served)": proba}
        if raw is not None:
            curves["booster before calibration"] = raw
    else:
        curves = {"model (served; no calibrator: none lowered validation log loss)": proba}
    for (name, p), (colour, line, marker) in zip(curves.items(), _STYLES, strict=False):
        if len(p):
            mean_pred, observed, _ = reliability(y_true, p)
            ax.plot(mean_pred, observed, color=colour, linestyle=line, marker=marker, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize="small")
    return _png(fig)


def importance_png(features: Sequence[str], gains: Sequence[float], top: int = 20) -> bytes:
    fig, ax = _figure("Feature importance (gain)", "mean gain per split", "")
    pairs = sorted(zip(features, gains, strict=True), key=lambda fv: fv[1])[-top:]
    if pairs:
        names, values = zip(*pairs, strict=True)
        ax.barh(range(len(values)), values)
        ax.set_yticks(range(len(names)), labels=names)
    return _png(fig)


def live_quality_png(weeks: Sequence[str], roc_auc: Sequence[float | None], brier: Sequence[float | None],
                     test_auc: float | None, title: str = "Served predictions judged by their outcomes") -> bytes:
    """Live ROC AUC and Brier score per week of prediction, beside the champion's test ROC AUC."""
    fig, ax = _figure(title, "week of prediction", "ROC AUC / Brier score")
    x = np.arange(len(weeks))
    auc = np.array([np.nan if v is None else v for v in roc_auc], dtype=float)
    br = np.array([np.nan if v is None else v for v in brier], dtype=float)
    ax.plot(x, auc, color="tab:blue", marker="o", label="live ROC AUC")
    ax.plot(x, br, color="tab:orange", linestyle="--", marker="s", label="live Brier score")
    if test_auc is not None:
        ax.axhline(test_auc, color="tab:blue", linestyle=":", label=f"test ROC AUC of the champion {test_auc:.4f}")
    ax.axhline(0.5, color="gray", linestyle="-.", linewidth=0.8, label="chance ROC AUC 0.5")
    ax.set_xticks(x, labels=list(weeks), rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower left", fontsize="small")
    return _png(fig)


def live_calibration_png(mean_probability, observed_rate, title: str = "Calibration of served predictions") -> bytes:
    fig, ax = _figure(title, "mean served probability", "observed close-within-7-days rate")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfectly calibrated")
    ax.plot(mean_probability, observed_rate, color="tab:blue", marker="o", label="served predictions")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize="small")
    return _png(fig)
