"""Point-in-time features and labels: DataFrame in, DataFrame out, no Dagster."""

from issue_assets.features.catalog import FEATURE_NAMES, REFERENCE_NAMES, feature_registry_version
from issue_assets.features.compute import AGES_HOURS, compute_features, update_features

__all__ = [
    "AGES_HOURS", "FEATURE_NAMES", "REFERENCE_NAMES", "compute_features",
    "feature_registry_version", "update_features",
]
