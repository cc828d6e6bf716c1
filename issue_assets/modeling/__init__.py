"""Modeling core: hyper-parameter tuning, training, evaluation and plots. No Dagster import here."""

from issue_assets.modeling.evaluation import check_alert, compare, evaluate
from issue_assets.modeling.training import (
    LABEL,
    REFERENCE_FEATURES,
    TrainedModel,
    TrainingConfig,
    TrainingResult,
    train_and_evaluate,
)
from issue_assets.modeling.tuning import TuningConfig, TuningResult, tune

__all__ = [
    "LABEL",
    "REFERENCE_FEATURES",
    "TrainedModel",
    "TrainingConfig",
    "TrainingResult",
    "TuningConfig",
    "TuningResult",
    "check_alert",
    "compare",
    "evaluate",
    "train_and_evaluate",
    "tune",
]
