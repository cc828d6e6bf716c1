"""Two Optuna worker processes sharing one study in PostgreSQL (127.0.0.1:5432, user postgres, db test)."""

from __future__ import annotations

import uuid

import optuna
import pytest
from conftest import postgres_unavailable

from issue_assets.modeling.synthetic import FEATURES, make_training_set
from issue_assets.modeling.tuning import TuningConfig, study_name_for, tune

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(postgres_unavailable() is not None, reason=postgres_unavailable() or ""),
]


def test_two_worker_processes_share_one_study():
    prefix = f"pytest-{uuid.uuid4().hex[:8]}"
    cfg = TuningConfig(n_trials=8, workers=2, seed=3, nthread=1, max_boost_round=80, early_stopping_rounds=10,
                       n_folds=2, pruning_interval_rounds=3, heartbeat_seconds=None, study_prefix=prefix)
    frame = make_training_set(2000, seed=9)
    name = study_name_for("2025-03-01", prefix)
    try:
        result = tune(frame, FEATURES, "2025-03-01", cfg, storage=PG_URL)
        study = optuna.load_study(study_name=name, storage=PG_URL)
        finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                           optuna.trial.TrialState.PRUNED)]
        # the shared MaxTrialsCallback stops both workers at the total; at most one extra in flight
        assert 8 <= len(finished) <= 9 and result.n_run == len(finished)
        assert len({t.user_attrs["worker_pid"] for t in finished}) == 2
        assert len({t.number for t in study.trials}) == len(study.trials)
        assert result.storage.startswith("postgresql+psycopg2://postgres@127.0.0.1:5432/test")

        resumed = tune(frame, FEATURES, "2025-03-01", cfg, storage=PG_URL)
        assert resumed.n_run == 0 and resumed.best_params == result.best_params
    finally:
        if name in optuna.study.get_all_study_names(storage=PG_URL):
            optuna.delete_study(study_name=name, storage=PG_URL)
