"""The docs stay true: the feature table is the registry's, every CLI command is in the README."""

from pathlib import Path

from issue_assets.cli import main
from issue_assets.docs import features_doc
from issue_assets.features.catalog import FEATURE_NAMES, PREDICTION_MEANING

ROOT = Path(__file__).resolve().parents[1]


def test_features_doc_matches_the_registry():
    text = (ROOT / "docs" / "FEATURES.md").read_text()
    assert text == features_doc(), "run `issue-assets docs` to regenerate docs/FEATURES.md"
    assert all(f"`{name}`" in text for name in FEATURE_NAMES)
    assert PREDICTION_MEANING in text


def test_readme_names_every_cli_command_and_both_make_targets():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    missing = [name for name in main.commands if f"issue-assets {name}" not in readme]
    assert not missing, f"README does not mention: {missing}"
