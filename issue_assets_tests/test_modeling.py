"""Tuning, training, calibration, evaluation and model round trips on generated training sets."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest
import xgboost as xgb

from issue_assets.modeling import evaluation
from issue_assets.modeling.params import DEFAULT_PARAMS
from issue_assets.modeling.synthetic import FEATURES, make_training_set
from issue_assets.modeling.training import (
    REFERENCE_FEATURES,
    Calibrator,
    TrainedModel,
    TrainingConfig,
    choose_calibration,
    train_and_evaluate,
)
from issue_assets.modeling.tuning import (
    PruningCallback,
    TuningConfig,
    forward_chaining_folds,
    study_name_for,
    tune,
)

PNG = b"\x89PNG\r\n\x1a\n"
FAST = dict(max_boost_round=120, early_stopping_rounds=10, nthread=1, heartbeat_seconds=None,
            pruning_interval_rounds=3, pruning_warmup_rounds=6, n_folds=2)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_training_set(3000, seed=3)


@pytest.fixture(scope="module")
def trained(frame):
    return train_and_evaluate(frame, FEATURES, DEFAULT_PARAMS, TrainingConfig(nthread=1, early_stopping_rounds=20))


def _sqlite(tmp_path, name="optuna.db") -> str:
    return f"sqlite:///{tmp_path / name}"


# ---- evaluation -------------------------------------------------------------------------------

def test_evaluate_known_values():
    y = np.array([0, 0, 1, 1, 1, 0, 1, 0, 0, 0])
    p = np.array([0.1, 0.2, 0.9, 0.8, 0.4, 0.6, 0.7, 0.3, 0.05, 0.15])
    m = evaluation.evaluate(y, p, threshold=0.5, top_k_fraction=0.2)
    assert m["n"] == 10 and m["positives"] == 4 and m["base_rate"] == pytest.approx(0.4)
    assert m["roc_auc"] == pytest.approx(23 / 24)  # one inverted pair: 0.6 (neg) above 0.4 (pos)
    assert m["precision_at_threshold"] == pytest.approx(3 / 4)  # 0.9, 0.8, 0.7 pos; 0.6 neg
    assert m["recall_at_threshold"] == pytest.approx(3 / 4)
    assert m["top_k"] == 2 and m["precision_at_top_k"] == 1.0 and m["recall_at_top_k"] == pytest.approx(0.5)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))


def test_evaluate_single_class_window_has_undefined_auc():
    m = evaluation.evaluate([1, 1, 1], [0.2, 0.5, 0.9])
    assert m["roc_auc"] is None and m["pr_auc"] is None and m["log_loss"] is not None
    passed, details = evaluation.check_alert(m)
    assert not passed and "undefined" in details["message"]


def test_compare_and_alert():
    assert evaluation.compare({"roc_auc": 0.71}, {"roc_auc": 0.70}, margin=0.0)["better"]
    assert not evaluation.compare({"roc_auc": 0.71}, {"roc_auc": 0.70}, margin=0.02)["better"]
    assert not evaluation.compare({"roc_auc": 0.70}, {"roc_auc": 0.70})["better"]
    lower = evaluation.compare({"log_loss": 0.5}, {"log_loss": 0.6}, metric="log_loss")
    assert lower["better"] and lower["improvement"] == pytest.approx(0.1)
    passed, details = evaluation.check_alert({"roc_auc": 0.58, "n": 100, "positives": 40, "base_rate": 0.4})
    assert not passed and details["value"] == 0.58 and "0.5800 < alert threshold 0.6000" in details["message"]
    assert evaluation.check_alert({"roc_auc": 0.6}, alert_threshold=0.6)[0]


# ---- folds ------------------------------------------------------------------------------------

def test_forward_chaining_folds_are_time_ordered_and_purged(frame):
    rows = frame[frame["split"] != "test"].reset_index(drop=True)
    folds = forward_chaining_folds(rows, 3)
    assert len(folds) == 3
    created = rows["created_at"].to_numpy()
    known = rows["label_known_at"].to_numpy()
    previous_valid_start = None
    for train, valid in folds:
        start = created[valid].min()
        assert created[train].max() < start  # never a random fold: training strictly precedes validation
        assert (known[train] <= start).all()  # rows whose label was still unknown are purged
        assert previous_valid_start is None or start > previous_valid_start
        previous_valid_start = start
    # the purge removed the most recent rows before each validation block
    first_block = len(rows) // 4
    assert len(folds[0][0]) < first_block


# ---- tuning -----------------------------------------------------------------------------------

def test_tuning_is_deterministic_with_one_worker_and_a_seed(frame, tmp_path):
    cfg = TuningConfig(n_trials=4, seed=7, pruning=False, **FAST)
    first = tune(frame, FEATURES, "2025-01-01", cfg, storage=_sqlite(tmp_path, "a.db"))
    second = tune(frame, FEATURES, "2025-01-01", cfg, storage=_sqlite(tmp_path, "b.db"))
    assert first.best_params == second.best_params
    assert first.best_value == second.best_value and 0.6 < first.best_value < 1.0
    assert set(first.best_params) >= {"max_depth", "eta", "min_child_weight", "subsample", "colsample_bytree",
                                      "reg_lambda", "reg_alpha", "gamma", "num_boost_round"}
    assert first.best_params["num_boost_round"] >= 1
    assert first.n_complete == 4 and first.history_png.startswith(PNG)
    tcfg = TrainingConfig(nthread=1, early_stopping_rounds=10)
    a = train_and_evaluate(frame, FEATURES, first.best_params, tcfg)
    b = train_and_evaluate(frame, FEATURES, second.best_params, tcfg)
    test = frame[frame["split"] == "test"]
    np.testing.assert_array_equal(a.model.predict_proba(test), b.model.predict_proba(test))


def test_interrupted_study_resumes_and_next_as_of_warm_starts(frame, tmp_path):
    url = _sqlite(tmp_path)
    cfg = TuningConfig(n_trials=3, seed=1, **FAST)
    first = tune(frame, FEATURES, "2025-01-01", cfg, storage=url)
    assert first.n_run == 3
    resumed = tune(frame, FEATURES, "2025-01-01", TuningConfig(n_trials=5, seed=1, **FAST), storage=url)
    assert resumed.n_run == 2
    assert resumed.n_complete + resumed.n_pruned == 5
    again = tune(frame, FEATURES, "2025-01-01", TuningConfig(n_trials=5, seed=1, **FAST), storage=url)
    assert again.n_run == 0  # nothing left to do

    nxt = tune(frame, FEATURES, "2025-01-08", TuningConfig(n_trials=1, seed=1, **FAST), storage=url)
    assert nxt.warm_started_from == study_name_for("2025-01-01")
    study = optuna.load_study(study_name=nxt.study_name, storage=url)
    previous_best = {k: v for k, v in resumed.best_params.items() if k != "num_boost_round"}
    assert study.trials[0].params == pytest.approx(previous_best)


def test_pruning_stops_hopeless_trials(frame, tmp_path):
    cfg = TuningConfig(n_trials=14, seed=0, pruner_startup_trials=2, **{**FAST, "n_folds": 3})
    result = tune(frame, FEATURES, "2025-02-01", cfg, storage=_sqlite(tmp_path))
    assert result.n_pruned >= 1
    assert result.n_complete >= 2 and result.n_complete + result.n_pruned == 14
    study = optuna.load_study(study_name=result.study_name, storage=_sqlite(tmp_path))
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(t.intermediate_values for t in pruned)  # pruned on reported per-round values


def test_pruning_callback_reports_each_interval_and_raises_when_told():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] + rng.normal(size=400) > 0).astype(int)
    dtrain, dvalid = xgb.DMatrix(x[:300], label=y[:300]), xgb.DMatrix(x[300:], label=y[300:])
    params = {"objective": "binary:logistic", "eval_metric": "auc", "nthread": 1}

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    xgb.train(params, dtrain, 10, evals=[(dvalid, "validation")], verbose_eval=False,
              callbacks=[PruningCallback(trial, "validation-auc", interval=2)])
    assert sorted(trial.storage.get_trial(trial._trial_id).intermediate_values) == [0, 2, 4, 6, 8]

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    trial = optuna.create_study(direction="maximize", pruner=AlwaysPrune()).ask()
    with pytest.raises(optuna.TrialPruned):
        xgb.train(params, dtrain, 10, evals=[(dvalid, "validation")], verbose_eval=False,
                  callbacks=[PruningCallback(trial, "validation-auc")])


# ---- training ---------------------------------------------------------------------------------

def test_training_metrics_and_reference_models(trained, frame):
    m = trained.metrics
    assert m["n"] == (frame["split"] == "test").sum()
    assert 0.65 < m["roc_auc"] < 0.95
    assert m["pr_auc"] > m["base_rate"]
    assert 0 < m["brier"] < 0.25 and 0 < m["log_loss"] < 0.69
    assert m["top_k"] == round(0.1 * m["n"])
    base = trained.reference_metrics["base_rate"]
    assert base["roc_auc"] == 0.5 and base["n"] == m["n"]
    older = trained.reference_metrics["older_projects"]
    assert older["features"] == REFERENCE_FEATURES and 0.5 < older["roc_auc"] < 1.0
    assert set(trained.plots) == {"roc.png", "pr.png", "calibration.png", "feature_importance.png"}
    assert all(png.startswith(PNG) for png in trained.plots.values())
    fi = trained.feature_importance
    assert list(fi.columns) == ["feature", "gain", "total_gain", "splits"] and set(fi["feature"]) == set(FEATURES)
    assert set(fi.head(4)["feature"]) & {"repo_recent_close_rate", "author_prior_close_rate", "body_length",
                                         "repo_open_issues"}
    assert trained.windows["test"]["created_from"] > trained.windows["validation"]["created_to"]
    meta = trained.metadata(as_of="2025-01-01", feature_registry_version="f1")
    assert meta["row_counts"] == {"train": 2100, "validation": 450, "test": 450}
    assert meta["params"]["num_boost_round"] == trained.best_iteration + 1
    assert trained.model.booster.num_boosted_rounds() == trained.best_iteration + 1


def test_fingerprint_changes_with_data(frame, trained):
    changed = frame.copy()
    changed.loc[changed.index[0], "closed_within_7d"] ^= 1
    from issue_assets.modeling.training import training_set_fingerprint

    assert training_set_fingerprint(frame.sample(frac=1.0, random_state=0), FEATURES) == trained.fingerprint
    assert training_set_fingerprint(changed, FEATURES) != trained.fingerprint


def test_calibration_applied_only_when_it_helps():
    rng = np.random.default_rng(11)
    true_p = rng.beta(2, 3, size=4000)
    y = (rng.random(4000) < true_p).astype(int)
    logit = np.log(true_p / (1 - true_p))
    overconfident = 1 / (1 + np.exp(-3 * logit))
    calibrator, info = choose_calibration(y, overconfident)
    assert info["applied"] and calibrator is not None and info["method"] in ("platt", "isotonic")
    assert info["validation_log_loss_calibrated"] < info["validation_log_loss_raw"] - 0.01

    calibrator, info = choose_calibration(y, true_p)
    assert not info["applied"] and calibrator is None and info["method"] == "none"
    assert set(info["candidates"]) == {"platt", "isotonic"}

    assert choose_calibration(y, overconfident, method="none")[1]["applied"] is False
    platt, info = choose_calibration(y, overconfident, method="platt")
    assert info["method"] == "platt" and platt.to_dict()["a"] == pytest.approx(1 / 3, abs=0.05)


def test_calibrator_json_round_trip():
    rng = np.random.default_rng(1)
    p = rng.random(500)
    y = (rng.random(500) < p**2).astype(int)
    for method in ("platt", "isotonic"):
        cal = Calibrator.fit(method, p, y)
        again = Calibrator.from_dict(cal.to_dict())
        np.testing.assert_array_equal(cal.apply(p), again.apply(p))
        assert np.all(np.diff(cal.apply(np.sort(p))) >= -1e-12)  # monotone


def test_save_load_round_trip_gives_identical_predictions(trained, frame):
    saved = trained.model.save()
    loaded = TrainedModel.load(saved.model_json, saved.calibration_json)
    test = frame[frame["split"] == "test"]
    np.testing.assert_array_equal(loaded.predict_proba(test), trained.model.predict_proba(test))
    assert loaded.feature_names == FEATURES
    bare = TrainedModel.load(saved.model_json)  # latest_model.json alone: booster + feature names
    np.testing.assert_array_equal(bare.predict_raw(test), trained.model.predict_raw(test))
    with pytest.raises(ValueError, match="different model"):
        other = train_and_evaluate(frame, FEATURES[:5], DEFAULT_PARAMS, TrainingConfig(nthread=1)).model.save()
        TrainedModel.load(saved.model_json, other.calibration_json)


def test_contributions_top_k(trained, frame):
    rows = frame[frame["split"] == "test"].head(3)
    contribs = trained.model.contributions(rows, top_k=4)
    assert len(contribs) == 3 and all(len(r) == 4 for r in contribs)
    full = trained.model.booster.predict(xgb.DMatrix(rows[FEATURES].to_numpy(np.float32), feature_names=FEATURES),
                                         pred_contribs=True)
    for i, row in enumerate(contribs):
        mags = [abs(c["contribution"]) for c in row]
        assert mags == sorted(mags, reverse=True)
        assert mags[0] == pytest.approx(np.abs(full[i, :-1]).max(), rel=1e-6)
        assert all(c["feature"] in FEATURES for c in row)


def test_missing_columns_are_refused(frame):
    with pytest.raises(ValueError, match="lacks columns"):
        train_and_evaluate(frame.drop(columns=["noise_a"]), FEATURES)
    no_ref = train_and_evaluate(frame.drop(columns=REFERENCE_FEATURES), FEATURES, DEFAULT_PARAMS,
                                TrainingConfig(nthread=1, early_stopping_rounds=10))
    assert "skipped" in no_ref.reference_metrics["older_projects"]
