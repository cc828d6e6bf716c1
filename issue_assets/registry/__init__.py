"""Model registry (versions, champion pointer, history) and the promotion decision. No Dagster import."""

from issue_assets.registry.promotion import Decision, decide, score_on_window
from issue_assets.registry.registry import (
    HISTORY,
    LATEST,
    POINTER,
    ModelRegistry,
    PromotionConflict,
    RegistryError,
    default_registry,
)

__all__ = [
    "HISTORY",
    "LATEST",
    "POINTER",
    "Decision",
    "ModelRegistry",
    "PromotionConflict",
    "RegistryError",
    "decide",
    "default_registry",
    "score_on_window",
]
