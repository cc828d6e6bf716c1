"""Point-in-time features and labels: DataFrame in, DataFrame out, no Dagster."""

from issue_assets.features.catalog import FEATURE_NAMES, REFERENCE_NAMES, feature_registry_version
from issue_assets.features.compute import AGES_HOURS, compute_features, update_features
from issue_assets.features.labels import closed_within_horizon

__all__ = [
    "AGES_HOURS", "FEATURE_NAMES", "REFERENCE_NAMES", "closed_within_horizon", "compute_features",
    "feature_registry_version", "update_features",
]
