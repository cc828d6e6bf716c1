"""Model registry (versions, champion pointer, history) and the promotion decision. No Dagster import."""

from issue_assets.registry.registry import (
    HISTORY,
    LATEST,
    POINTER,
    ModelRegistry,
    PromotionConflict,
    RegistryError,
    default_registry,
)
from issue_assets.registry.repair import RegistryRepair, repair_registry

_PROMOTION = ("Decision", "decide", "score_on_window")


def __getattr__(name: str):
    """The promotion decision is imported on first use: it needs xgboost and scikit-learn, which the
    registry's readers (`issue-assets model list`, `status`) do not."""
    if name in _PROMOTION:
        from issue_assets.registry import promotion

        return getattr(promotion, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HISTORY",
    "LATEST",
    "POINTER",
    "Decision",
    "ModelRegistry",
    "PromotionConflict",
    "RegistryError",
    "RegistryRepair",
    "decide",
    "default_registry",
    "repair_registry",
    "score_on_window",
]
