"""Generated documentation: docs/FEATURES.md is rendered from the feature registry (`issue-assets docs`)."""

from pathlib import Path

from issue_assets.features.registry import feature_registry_version, features_markdown


def features_doc() -> str:
    return (f"# Features\n\nGenerated from `issue_assets/features/registry.py` (registry version "
            f"`{feature_registry_version()}`) by `issue-assets docs`; a test keeps this file equal to the registry.\n\n"
            f"{features_markdown()}\n")


def write_docs(root: Path) -> Path:
    path = root / "docs" / "FEATURES.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(features_doc())
    return path
