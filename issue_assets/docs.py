"""Generated documentation: docs/FEATURES.md is rendered from the feature registry (`issue-assets docs`)."""

from pathlib import Path

from issue_assets.features.catalog import (
    AGES_HOURS,
    PREDICTION_MEANING,
    feature_registry_version,
    features_markdown,
)


def features_doc() -> str:
    ages = ", ".join(f"{a:g} h" for a in AGES_HOURS)
    return (f"# Features\n\nGenerated from `issue_assets/features/catalog.py` (catalog version "
            f"`{feature_registry_version()}`) by `issue-assets docs`; a test keeps this file equal to the catalog.\n\n"
            f"## What a prediction means\n\n{PREDICTION_MEANING}\n\n"
            f"Training sets hold one row per issue and age ({ages}) while the issue is still open at that age, "
            "keyed by (repo, id, age_hours); the label is the issue's, known at min(closed_at, created_at + 7 "
            "days). The service and the batch score an issue at its current age.\n\n"
            f"## Features\n\n{features_markdown()}\n")


def write_docs(root: Path) -> Path:
    path = root / "docs" / "FEATURES.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(features_doc())
    return path
