"""Hyper-parameter search: seeded Optuna TPE over the XGBoost `hist` space, scored by forward chaining.

Scoring never uses random folds. The non-test rows are ordered by `created_at` and cut into
`n_folds + 1` consecutive blocks; fold k trains on blocks 0..k-1 and validates on block k, and its
training rows are purged of issues whose label was not yet known when block k starts (what a model
trained at that moment could have seen). A trial's value is the mean validation AUC over the folds.
Each fold early-stops on its validation block; a trial records the mean best round count as
`num_boost_round`.

Pruning: the first (earliest, cheapest) fold trains with a `PruningCallback` that reports its
validation AUC to the trial after every boosting round (every `pruning_interval_rounds`); the
MedianPruner stops trials whose AUC is below the median of completed trials at the same round, and
a pruned trial never pays for the larger folds. optuna-integration's `XGBoostPruningCallback` does
work with xgboost 3.x (it subclasses `xgboost.callback.TrainingCallback`); this callback is the same
idea plus a reporting interval, because every report and pruning check is an RDB round-trip.

Persistence: an RDB storage, `sqlite:///<ISSUE_ASSETS_HOME>/optuna.db` by default or any SQLAlchemy
URL (PostgreSQL for several machines). The study name comes from the as-of partition, so a re-run
of the same partition resumes: finished trials (completed or pruned) count toward `n_trials` and
only the remainder runs; a `MaxTrialsCallback` enforces the total when several workers share the
study. A new study warm-starts from the best parameters of the latest earlier as-of study in the
same storage (`enqueue_trial`). With heartbeats on, trials left RUNNING by a killed worker are
marked failed by the next run.

Determinism: one worker, one thread, a fixed seed and a fresh study give the same trials, the same
best parameters and therefore the same model.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import multiprocessing
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import sqlalchemy
import xgboost as xgb
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from issue_assets import config
from issue_assets.modeling.params import SEARCH_SPACE, booster_params, default_nthread, suggest_params
from issue_assets.modeling.plots import history_png

LABEL = "closed_within_7d"
STUDY_PREFIX = "issue-close-7d"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class TuningError(RuntimeError):
    """Tuning could not run (no usable folds, no completed trial)."""


@dataclass(frozen=True)
class TuningConfig:
    n_trials: int = 40
    timeout: float | None = None  # seconds for this call (per worker)
    n_jobs: int = 1  # Optuna threads per worker process
    workers: int = 1  # processes sharing the study; 1 = run in this process
    seed: int = 0
    n_folds: int = 3
    max_boost_round: int = 1000
    early_stopping_rounds: int = 30
    pruning: bool = True
    pruner_startup_trials: int = 5
    pruning_warmup_rounds: int = 10  # rounds of the first fold before a trial may be pruned
    pruning_interval_rounds: int = 1  # report/check every this many rounds
    nthread: int | None = None  # XGBoost threads per trial; default: cores / (workers * n_jobs)
    heartbeat_seconds: int | None = 60
    warm_start: bool = True
    study_prefix: str = STUDY_PREFIX


@dataclass
class TuningResult:
    study_name: str
    storage: str  # URL with any password hidden
    best_value: float
    best_params: dict[str, Any]  # search-space params + num_boost_round
    n_complete: int
    n_pruned: int
    n_failed: int
    n_run: int  # trials finished by this call
    warm_started_from: str | None
    history_png: bytes = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """Everything but the plot, JSON-ready."""
        out = asdict(self)
        out.pop("history_png")
        return out


class PruningCallback(xgb.callback.TrainingCallback):
    """Report the validation metric to an Optuna trial every `interval` rounds; raise TrialPruned when told."""

    def __init__(self, trial: optuna.trial.Trial, observation_key: str = "validation-auc", interval: int = 1):
        self.trial = trial
        self.dataset, _, self.metric = observation_key.partition("-")
        self.interval = max(1, int(interval))

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        if epoch % self.interval:
            return False
        value = float(evals_log[self.dataset][self.metric][-1])
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {epoch} ({self.dataset}-{self.metric}={value:.4f})")
        return False


def as_of_text(as_of: str | date | datetime) -> str:
    if isinstance(as_of, datetime):
        return as_of.date().isoformat()
    if isinstance(as_of, date):
        return as_of.isoformat()
    return str(as_of)


def study_name_for(as_of: str | date | datetime, prefix: str = STUDY_PREFIX) -> str:
    return f"{prefix}-asof-{as_of_text(as_of)}"


def default_storage_url(home: str | Path | None = None) -> str:
    """sqlite:///<home>/optuna.db, home = ISSUE_ASSETS_HOME (default ./data); the folder is created."""
    root = Path(home) if home else config.home()
    root = root.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'optuna.db'}"


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets worker processes read while one writes; synchronous=NORMAL skips the fsync per commit
    # (every per-round report is a commit) and still never corrupts the file.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_storage(url: str, heartbeat_seconds: int | None = 60) -> optuna.storages.RDBStorage:
    """An RDBStorage for `url`; SQLite gets a 60 s lock timeout, WAL and synchronous=NORMAL.

    Creating the schema of a fresh database is not safe for two processes at once (both create the
    tables, both stamp alembic_version: "table ... already exists", "UNIQUE constraint failed:
    alembic_version"): a SQLite file is initialised under an exclusive lock on a file beside it, and
    any URL retries the initialisation when it lost that race to another host.
    """
    sqlite = url.startswith("sqlite")
    engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    for attempt in range(INIT_ATTEMPTS):
        try:
            with _init_lock(url), warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_seconds,
                    grace_period=None if heartbeat_seconds is None else 4 * heartbeat_seconds,
                )
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.ProgrammingError) as exc:
            if attempt == INIT_ATTEMPTS - 1 or not _lost_init_race(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
    if sqlite:
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()
    return storage


INIT_ATTEMPTS = 8


def _lost_init_race(exc: Exception) -> bool:
    text = str(exc).lower()
    return "alembic_version" in text or "already exists" in text or "database is locked" in text \
        or "duplicate key" in text


@contextlib.contextmanager
def _init_lock(url: str):
    """An exclusive lock on `<database>.init.lock` for a SQLite file URL; nothing for other databases."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    path = Path(database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.init.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_sampler(seed: int, parallel: bool) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, constant_liar=parallel, n_startup_trials=8
        )


def make_pruner(config: TuningConfig) -> optuna.pruners.BasePruner:
    if not config.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=config.pruner_startup_trials, n_warmup_steps=config.pruning_warmup_rounds
    )


def forward_chaining_folds(df: pd.DataFrame, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Positional (train, validation) index pairs over `df` ordered by created_at.

    Fold k validates on time block k (1..n_folds) and trains on earlier rows whose label was known
    when block k begins. Folds whose validation block holds a single class are dropped.
    """
    if n_folds < 1:
        raise ValueError("n_folds must be >= 1")
    created = pd.to_datetime(df["created_at"], utc=True).to_numpy()
    known = pd.to_datetime(df["label_known_at"], utc=True).to_numpy()
    labels = df[LABEL].to_numpy()
    order = np.argsort(created, kind="stable")
    blocks = np.array_split(order, n_folds + 1)
    folds = []
    for k in range(1, n_folds + 1):
        valid = blocks[k]
        if len(valid) == 0:
            continue
        start = created[valid].min()
        earlier = np.concatenate(blocks[:k])
        train = earlier[(created[earlier] < start) & (known[earlier] <= start)]
        if len(np.unique(labels[valid])) < 2 or len(np.unique(labels[train])) < 2:
            continue
        folds.append((np.sort(train), np.sort(valid)))
    return folds


def _fold_matrices(df: pd.DataFrame, feature_names: list[str], folds) -> list[tuple[xgb.DMatrix, xgb.DMatrix]]:
    x = df[feature_names].to_numpy(dtype=np.float32)
    y = df[LABEL].to_numpy(dtype=np.float32)
    w = df["sample_weight"].to_numpy(dtype=np.float32) if "sample_weight" in df else None  # one issue, weight 1
    return [
        (
            xgb.DMatrix(x[tr], label=y[tr], weight=None if w is None else w[tr], feature_names=feature_names),
            xgb.DMatrix(x[va], label=y[va], weight=None if w is None else w[va], feature_names=feature_names),
        )
        for tr, va in folds
    ]


class _Objective:
    def __init__(self, df: pd.DataFrame, feature_names: list[str], config: TuningConfig, nthread: int):
        folds = forward_chaining_folds(df, config.n_folds)
        if not folds:
            raise TuningError("no forward-chaining fold has both classes in training and validation")
        self.matrices = _fold_matrices(df, feature_names, folds)
        self.config = config
        self.nthread = nthread

    def __call__(self, trial: optuna.trial.Trial) -> float:
        cfg = self.config
        # First, so pruned trials carry it too: which worker process ran each trial.
        trial.set_user_attr("worker_pid", os.getpid())
        params = booster_params(suggest_params(trial), nthread=self.nthread, seed=cfg.seed)
        scores, rounds = [], []
        for k, (dtrain, dvalid) in enumerate(self.matrices):
            callbacks = []
            if cfg.pruning and k == 0:
                callbacks.append(PruningCallback(trial, "validation-auc", cfg.pruning_interval_rounds))
            booster = xgb.train(
                params,
                dtrain,
                num_boost_round=cfg.max_boost_round,
                evals=[(dvalid, "validation")],
                early_stopping_rounds=cfg.early_stopping_rounds,
                verbose_eval=False,
                callbacks=callbacks,
            )
            scores.append(float(booster.best_score))
            rounds.append(int(booster.best_iteration) + 1)
        trial.set_user_attr("fold_auc", scores)
        trial.set_user_attr("num_boost_round", int(round(float(np.mean(rounds)))))
        return float(np.mean(scores))


def _previous_best(storage, name: str, prefix: str) -> tuple[str, dict[str, Any]] | None:
    """Best params of the latest study in `storage` named `<prefix>-asof-<earlier date>` with a completed trial."""
    marker = f"{prefix}-asof-"
    earlier = sorted(
        (s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
         if s.study_name.startswith(marker) and s.study_name < name),
        key=lambda s: s.study_name,
        reverse=True,
    )
    for summary in earlier:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            params = {k: v for k, v in study.best_trial.params.items() if k in SEARCH_SPACE}
            return summary.study_name, params
    return None


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def _optimize(
    frame: pd.DataFrame,
    feature_names: list[str],
    config: TuningConfig,
    storage_url: str,
    study_name: str,
    seed_offset: int,
    nthread: int,
) -> None:
    """One worker: load the study and run trials until the study holds n_trials finished ones."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(storage_url, config.heartbeat_seconds)
    parallel = config.workers * config.n_jobs > 1
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=make_sampler(config.seed + seed_offset, parallel),
        pruner=make_pruner(config),
    )
    finished = sum(_counts(study)[s] for s in FINISHED)
    remaining = config.n_trials - finished
    if remaining <= 0:
        return
    objective = _Objective(frame, feature_names, config, nthread)
    study.optimize(
        objective,
        n_trials=remaining,
        timeout=config.timeout,
        n_jobs=config.n_jobs,
        callbacks=[MaxTrialsCallback(config.n_trials, states=FINISHED)],
        catch=(xgb.core.XGBoostError,),
        gc_after_trial=False,
    )


def tune(
    df: pd.DataFrame,
    feature_names: list[str],
    as_of: str | date | datetime,
    config: TuningConfig | None = None,
    *,
    storage: str | None = None,
    home: str | Path | None = None,
    warm_start_params: dict[str, Any] | None = None,
) -> TuningResult:
    """Tune on the non-test rows of a training set; resume the as-of study if it exists.

    `storage` is a SQLAlchemy URL (default: sqlite in `home`). `warm_start_params`, when given,
    replace the automatic lookup of the previous as-of study's best parameters.
    """
    config = config or TuningConfig()
    missing = [c for c in [*feature_names, LABEL, "created_at", "label_known_at", "split"] if c not in df.columns]
    if missing:
        raise ValueError(f"training set lacks columns {missing}")
    frame = df.loc[df["split"] != "test", [*feature_names, LABEL, "created_at", "label_known_at",
                                           *(["sample_weight"] if "sample_weight" in df else [])]]
    frame = frame.reset_index(drop=True)
    url = storage or default_storage_url(home)
    name = study_name_for(as_of, config.study_prefix)
    rdb = make_storage(url, config.heartbeat_seconds)
    study = optuna.create_study(
        study_name=name, storage=rdb, direction="maximize", load_if_exists=True,
        sampler=make_sampler(config.seed, False), pruner=make_pruner(config),
    )
    study.set_user_attr("feature_names", list(feature_names))
    existing = len(study.get_trials(deepcopy=False))

    warm_from = None
    if existing == 0 and config.warm_start:
        if warm_start_params is not None:
            warm_from, params = "given", {k: v for k, v in warm_start_params.items() if k in SEARCH_SPACE}
        else:
            found = _previous_best(rdb, name, config.study_prefix)
            warm_from, params = found if found else (None, None)
        if params:
            study.enqueue_trial(params, user_attrs={"warm_start_from": warm_from}, skip_if_exists=True)
            study.set_user_attr("warm_started_from", warm_from)
    else:
        warm_from = study.user_attrs.get("warm_started_from")

    parallel = max(1, config.workers) * max(1, config.n_jobs)
    nthread = config.nthread or default_nthread(parallel)
    finished_before = sum(_counts(study)[s] for s in FINISHED)
    if config.workers <= 1:
        _optimize(frame, list(feature_names), config, url, name, existing, nthread)
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=config.workers, mp_context=ctx) as pool:
            futures = [
                pool.submit(_optimize, frame, list(feature_names), config, url, name, existing + 1000 * w, nthread)
                for w in range(config.workers)
            ]
            for future in futures:
                future.result()
    n_run = sum(_counts(study)[s] for s in FINISHED) - finished_before
    return summarize(study_name=name, storage=url, n_run=n_run)


def summarize(study_name: str, storage: str, n_run: int = 0) -> TuningResult:
    """The TuningResult of an existing study (best trial, counts, history plot)."""
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage, None))
    trials = study.get_trials(deepcopy=False)
    counts = _counts(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise TuningError(f"study {study_name} has no completed trial ({counts[TrialState.PRUNED]} pruned, "
                          f"{counts[TrialState.FAIL]} failed)")
    best = study.best_trial
    values = [
        t.value if t.state == TrialState.COMPLETE
        else (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        for t in trials
    ]
    return TuningResult(
        study_name=study_name,
        storage=redact(storage),
        best_value=float(best.value),
        best_params={**best.params, "num_boost_round": int(best.user_attrs.get("num_boost_round", 0))},
        n_complete=counts[TrialState.COMPLETE],
        n_pruned=counts[TrialState.PRUNED],
        n_failed=counts[TrialState.FAIL],
        n_run=n_run,
        warm_started_from=study.user_attrs.get("warm_started_from"),
        history_png=history_png(values, [t.state.name for t in trials], title=study_name),
    )
