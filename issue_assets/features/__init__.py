"""Point-in-time features and labels: DataFrame in, DataFrame out, no Dagster."""

from issue_assets.features.catalog import AGES_HOURS, FEATURE_NAMES, REFERENCE_NAMES, feature_registry_version

_COMPUTE = ("compute_features", "update_features")


def __getattr__(name: str):
    """The feature computation is imported on first use: it loads scikit-learn (about half a second), which
    readers of labels and the catalog (the CLI's `status`, the retraining sensor) do not need."""
    if name in _COMPUTE:
        from issue_assets.features import compute

        return getattr(compute, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AGES_HOURS", "FEATURE_NAMES", "REFERENCE_NAMES", "compute_features",
    "feature_registry_version", "update_features",
]
