"""Champion/challenger decision: promote only a candidate that passes the blocking check and beats the
champion by more than a margin on the same, most recent labelled window (ties keep the champion)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from issue_assets.modeling.evaluation import compare, evaluate
from issue_assets.modeling.training import LABEL, TrainedModel


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    candidate_value: float | None
    champion_value: float | None
    improvement: float | None
    margin: float
    check_passed: bool
    champion_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate_metrics: dict[str, Any],
    champion_metrics: dict[str, Any] | None,
    check_passed: bool,
    margin: float = 0.0,
    metric: str = "roc_auc",
    champion_version: str | None = None,
) -> Decision:
    """Promote the first model if it passes the check; later, only a passing candidate that beats the
    champion by more than `margin` (`champion_metrics` None means there is no champion).

    `champion_version` is carried into the decision so `ModelRegistry.promote` can refuse it when the
    champion changed in the meantime.
    """
    cmp = compare(candidate_metrics, champion_metrics, margin, metric)
    common = dict(metric=metric, candidate_value=cmp["candidate"], champion_value=cmp["champion"],
                  improvement=cmp["improvement"], margin=float(margin), check_passed=bool(check_passed),
                  champion_version=champion_version)
    if not check_passed:
        return Decision(False, "candidate failed the blocking quality check", **common)
    if cmp["candidate"] is None:
        return Decision(False, f"candidate has no {metric} on the window", **common)
    if champion_metrics is None:
        return Decision(True, "first model: no champion yet and the check passed", **common)
    if cmp["champion"] is None:
        return Decision(True, f"champion has no {metric} on the window; candidate has {cmp['candidate']:.4f}",
                        **common)
    if cmp["better"]:
        return Decision(
            True, f"candidate {metric} {cmp['candidate']:.4f} beats champion {cmp['champion']:.4f} "
                  f"by {cmp['improvement']:.4f} > margin {margin:.4f}", **common)
    return Decision(
        False, f"candidate {metric} {cmp['candidate']:.4f} does not beat champion {cmp['champion']:.4f} "
               f"by more than margin {margin:.4f}; champion kept", **common)


def score_on_window(
    model: TrainedModel,
    df: pd.DataFrame,
    feature_names: list[str] | None = None,
    *,
    threshold: float = 0.5,
    top_k_fraction: float = 0.10,
) -> dict[str, Any]:
    """Metrics of `model` on a labelled window (e.g. the most recent one neither model trained on).

    The model predicts from its own feature list; `feature_names`, when given, is the feature set
    the caller allows (the current feature registry): a model needing a feature outside it is refused.
    """
    if feature_names is not None:
        outside = sorted(set(model.feature_names) - set(feature_names))
        if outside:
            raise ValueError(f"model {model.version or ''} needs features outside the given list: {outside}")
    if LABEL not in df.columns:
        raise ValueError(f"window lacks the label column {LABEL!r}")
    return evaluate(df[LABEL].to_numpy(), model.predict_proba(df), threshold, top_k_fraction)
