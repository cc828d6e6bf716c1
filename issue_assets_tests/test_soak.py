"""Acceptance: the platform keeps itself current under the real `dagster-daemon`, with nobody at the UI, through
injected faults, a tight rate limit and a SIGKILL of the daemon mid-run (short version; bench/bench_soak.py
runs a longer one). SQLite instance, and PostgreSQL where the server is available."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from conftest import postgres_unavailable
from soak import Soak, SoakConfig, postgres_admin, summary


def _check(soak: Soak) -> None:
    result = soak.run()
    print(summary(result))
    # New issues get predictions within a bounded time (every issue opened once predictions existed).
    assert result.latencies and not result.unscored, result.timeline
    assert max(result.latencies) <= soak.config.bound_seconds, result.latencies
    # The retraining sensor fired at the threshold: every training run carried at least that many new labels.
    assert result.training_new_labels and min(result.training_new_labels) >= soak.config.retrain_threshold
    # A candidate was trained and promoted only because it beat the champion on the same window.
    promotions = [d for d in result.decisions if d["event"] == "promoted" and d["version"] != result.weak_champion]
    assert promotions, result.decisions
    for d in promotions:
        assert d["promote"] is True and d["candidate_auc"] > d["champion_auc"], d
    for d in (d for d in result.decisions if d["event"] == "decision"):
        assert d["promote"] is False  # a kept champion is a decision, never a promotion
    assert result.champion != result.weak_champion
    # Predictions refreshed with the new champion.
    assert result.latest_model_version == result.champion
    # prediction_outcomes judged the champion's served predictions against the outcomes known so far.
    live = result.live
    assert live["served"] > 0 and live["with_outcome"] > 0 and live["champion"] == result.champion
    assert live["overall"]["n"] == live["with_outcome"] and live["overall"]["brier"] is not None
    # The lake has no duplicate and no missing id or version, after faults and the kill.
    assert not any(result.duplicates.values()), result.duplicates
    assert not result.missing, result.missing
    # Faults were met and survived; the daemon was killed during a run and everything completed.
    assert result.faults > 0 and result.events.get("open", 0) > 0 and result.events.get("close", 0) > 0
    assert result.killed_during if soak.config.kill_daemon else result.killed_worker_of
    assert not [k for k in result.runs if k in ("QUEUED", "STARTING", "STARTED", "NOT_STARTED")], result.runs
    assert np.isfinite(result.wall_seconds)


def test_soak_under_the_daemon_on_sqlite(tmp_path):
    with Soak(tmp_path, SoakConfig()) as soak:
        _check(soak)


@pytest.mark.postgres
@pytest.mark.skipif(postgres_unavailable() is not None, reason=postgres_unavailable() or "")
def test_soak_under_the_daemon_on_postgres(tmp_path):
    db = f"wt11_soak_{uuid.uuid4().hex[:10]}"
    postgres_admin(f"CREATE DATABASE {db}")
    try:
        # Here the worker of a run in progress is killed instead of the daemon: run monitoring fails the run at
        # its time limit and the retry completes it.
        with Soak(tmp_path, SoakConfig(postgres_db=db, kill_daemon=False, kill_worker=True)) as soak:
            _check(soak)
    finally:
        postgres_admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
