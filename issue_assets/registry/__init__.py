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
from issue_assets.registry.repair import RegistryRepair, repair_registry

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
