"""Train/serve parity: for real issues at several ages, the features the HTTP service computes (POST /predict
with include_features, scoring time = created_at + age) equal the feature table's rows for the same issue and
age. The table and the service's snapshot are what the pipeline writes (`refresh_features`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import requests
import xgboost as xgb
from conftest import MATOMO_ISSUES, RUST_ISSUES
from conftest_features import matomo_issues, rust_comments, rust_issues
from test_serving import Service

from issue_assets.features.catalog import FEATURE_NAMES
from issue_assets.features.compute import AGES_HOURS
from issue_assets.features.table import load_features, refresh_features
from issue_assets.ingest.layout import current_key
from issue_assets.lake.store import LocalStore, write_parquet
from issue_assets.modeling.training import TrainedModel
from issue_assets.registry import ModelRegistry
from issue_assets.serving.service import create_app

PER_AGE = 12


@pytest.mark.parametrize("name", ["rust", "matomo"])
def test_service_features_equal_training_rows(tmp_path, exports, name):
    repo, export = ("rust-lang/rust", RUST_ISSUES) if name == "rust" else ("matomo-org/matomo", MATOMO_ISSUES)
    issues, comments = (rust_issues(), rust_comments()) if name == "rust" else (matomo_issues(), None)
    lake = LocalStore(tmp_path / "lake")
    write_parquet(lake, current_key("issues", repo), issues)
    if comments is not None:
        write_parquet(lake, current_key("comments", repo), comments)
    refresh_features(lake, repo)
    table = load_features(lake, repo)
    # a champion to answer with (any model over the catalog's features: the features are the subject here)
    sample = table.dropna(subset=["closed_within_7d"]).iloc[::25]
    booster = xgb.train({"max_depth": 2, "nthread": 1, "objective": "binary:logistic"},
                        xgb.DMatrix(sample[FEATURE_NAMES].to_numpy(np.float32), label=sample["closed_within_7d"]
                                    .astype(int).to_numpy(), feature_names=FEATURE_NAMES), 5)
    registry = ModelRegistry(LocalStore(tmp_path / "registry"))
    registry.promote(registry.register(TrainedModel(booster, FEATURE_NAMES), {"as_of": "parity"}))
    # rows at every age, spread over the history (text-score periods, authors, comments), real JSON items
    rng = np.random.default_rng(7)
    picks = pd.concat([table.loc[table["age_hours"] == age].sample(PER_AGE, random_state=rng) for age in AGES_HOURS])
    items = {i["id"]: i for i in exports.items(export) if i.get("id") in set(picks["id"])}
    svc = Service(create_app(registry, lake, reload_interval_s=60))
    try:
        for _, row in picks.iterrows():
            body = {"repository": repo, "issue": items[row["id"]], "include_features": True,
                    "scoring_time": row["prediction_time"].isoformat()}
            r = requests.post(f"{svc.url}/predict", json=body, timeout=120)
            assert r.status_code == 200, r.text
            got = r.json()["predictions"][0]
            assert got["status"] == "scored", (row["id"], row["age_hours"], got["status"])
            assert got["hours_observed"] == row["age_hours"]
            for feature in FEATURE_NAMES:
                want, value = row[feature], got["features"][feature]
                assert (value is None and np.isnan(want)) or value == want, (row["id"], row["age_hours"], feature,
                                                                             value, want)
    finally:
        svc.stop()
    assert picks["text_score"].notna().sum() > len(picks) // 2  # the text score's period models were compared
    assert (picks.loc[picks["age_hours"] > 0, "comments_so_far"] > 0).any() or name == "matomo"
