"""Point-in-time features and labels: DataFrame in, DataFrame out, no Dagster."""

from issue_assets.features.compute import FeatureBuilder, compute_features, update_features
from issue_assets.features.labels import closed_within_horizon
from issue_assets.features.registry import FEATURE_NAMES, REFERENCE_NAMES, feature_registry_version

__all__ = [
    "FEATURE_NAMES", "REFERENCE_NAMES", "FeatureBuilder", "closed_within_horizon", "compute_features",
    "feature_registry_version", "update_features",
]
