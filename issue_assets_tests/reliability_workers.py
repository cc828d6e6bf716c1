"""What the reliability tests run in separate processes (importable by a forkserver child).

Each job opens its own store and client from a picklable spec, waits at a barrier so the writers
really start together, and does what one CLI command or Dagster step would do.
"""

from __future__ import annotations

import multiprocessing
import os
from datetime import datetime

REPO = "demo-org/reliability"
PRELOAD = ["pandas", "pyarrow.parquet", "boto3", "issue_assets.ingest.sync", "issue_assets.ingest.current",
           "issue_assets.features.table", "issue_assets.registry", "issue_assets.repair", "reliability_workers"]


def context():
    """forkserver: children start from a clean process with the heavy imports done once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def run_together(ctx, target, jobs: list[tuple], timeout: float = 240.0) -> list[int]:
    """Start one process per job (args after the barrier argument) and return their exit codes."""
    barrier = ctx.Barrier(len(jobs))
    procs = [ctx.Process(target=target, args=(barrier, *args)) for args in jobs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


def run_alone(ctx, target, args: tuple, env: dict[str, str] | None = None, timeout: float = 120.0) -> int:
    """One process with extra environment (e.g. the crash hook); its exit code."""
    proc = ctx.Process(target=_with_env, args=(env or {}, target, args))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return proc.exitcode


def _with_env(env: dict[str, str], target, args: tuple) -> None:
    from issue_assets.lake import faults

    os.environ.update(env)
    faults.reset()
    target(*args)


def open_spec(spec: tuple):
    from issue_assets.lake.store import LocalStore, S3Store

    if spec[0] == "local":
        return LocalStore(spec[1])
    import boto3

    _, endpoint, bucket, prefix = spec
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    return S3Store(client, bucket, prefix)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def ingest(spec: tuple, url: str, start: str | None, end: str | None, now: str, features: bool = True) -> None:
    """One `ingest` (a window of both kinds, then the merges) and the features refresh after it."""
    from issue_assets.features.table import refresh_features
    from issue_assets.github.client import GitHubClient
    from issue_assets.github.conditional_cache import ConditionalCache
    from issue_assets.ingest.current import merge_current
    from issue_assets.ingest.sync import sync_window

    store = open_spec(spec)
    fixed = datetime.fromisoformat(now)
    with GitHubClient(url, None, cache=ConditionalCache(), backoff_base=0.001) as client:
        for kind in ("issues", "comments"):
            sync_window(client, store, REPO, kind, _time(start), _time(end), now=lambda: fixed)
    for kind in ("issues", "comments"):
        merge_current(store, REPO, kind)
    if features:
        refresh_features(store, REPO)


def ingest_job(barrier, *args) -> None:
    barrier.wait(60)
    ingest(*args)


def promote_job(barrier, spec: tuple, versions: list[str], rollbacks: int) -> None:
    from issue_assets.registry import ModelRegistry

    reg = ModelRegistry(open_spec(spec), retry_delay=0.005)
    barrier.wait(60)
    for version in versions:
        reg.promote(version, {"reason": "test"})
    for _ in range(rollbacks):
        reg.rollback("test")


def register_job(barrier, spec: tuple, n: int, seed: int) -> None:
    from issue_assets.registry import ModelRegistry

    reg = ModelRegistry(open_spec(spec), retry_delay=0.005)
    model = small_model(seed)
    barrier.wait(60)
    for i in range(n):
        reg.register(model, {"as_of": f"2026-01-{i + 1:02d}", "metrics": {"roc_auc": 0.7}})


def small_model(seed: int):
    import numpy as np
    import xgboost as xgb

    from issue_assets.modeling.training import TrainedModel

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=200) > 0).astype(int)
    names = ["a", "b", "c"]
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1, "seed": seed},
                        xgb.DMatrix(x, label=y, feature_names=names), num_boost_round=3 + seed % 4)
    return TrainedModel(booster, names, None)


def promote(spec: tuple, version: str) -> None:
    from issue_assets.registry import ModelRegistry

    ModelRegistry(open_spec(spec), retry_delay=0.005).promote(version, {"reason": "crash test"})


def rollback(spec: tuple) -> None:
    from issue_assets.registry import ModelRegistry

    ModelRegistry(open_spec(spec), retry_delay=0.005).rollback("crash test")


def optuna_job(barrier, url: str, study: str, trials: int) -> None:
    import optuna

    from issue_assets.modeling.tuning import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    barrier.wait(60)
    storage = make_storage(url, heartbeat_seconds=None)
    created = optuna.create_study(study_name=study, storage=storage, direction="maximize", load_if_exists=True)
    created.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=trials)


def ingest_incremental(spec: tuple, url: str, now: str, cache_path: str, features: bool = True) -> None:
    """What `issue-assets ingest` does (incremental sync with the persisted ETag cache, then the merges),
    and the features refresh a run does after it."""
    from issue_assets.features.table import refresh_features
    from issue_assets.github.client import GitHubClient
    from issue_assets.github.conditional_cache import ConditionalCache
    from issue_assets.ingest.current import merge_current
    from issue_assets.ingest.sync import sync_incremental

    store = open_spec(spec)
    fixed = datetime.fromisoformat(now)
    with GitHubClient(url, None, cache=ConditionalCache(cache_path), backoff_base=0.001) as client:
        for kind in ("issues", "comments"):
            sync_incremental(client, store, REPO, kind, now=lambda: fixed)
            merge_current(store, REPO, kind)
    if features:
        refresh_features(store, REPO)
