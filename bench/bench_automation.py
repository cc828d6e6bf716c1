"""Benchmarks of the automation layer (offline; loopback replay server only):

1. one `new_labelled_issues_sensor` tick over 50 repositories (2,000-row feature tables), with and without
   the GitHub poll (median of 5 ticks);
2. Dagster's overhead around the core: the same pipeline as plain core calls, through
   `pipeline.run_pipeline` (ephemeral and persistent SQLite instance), and as `dagster job execute`;
3. `issue-assets demo` end to end (one run).

    .venv/bin/python bench/bench_automation.py [--skip-demo] [--out bench/AUTOMATION_RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent
REPO = "demo-org/demo-project"

from machine import cpu_model  # noqa: E402


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ISSUE_ASSETS_", "DAGSTER_", "LAKE_STORE", "MODEL_STORE", "OPTUNA_STORAGE",
                                "GITHUB_", "ALERT_WEBHOOK_URL", "RETRAIN_"))}
    env.update(extra)
    return env


# ---- 1. sensor tick --------------------------------------------------------------------------

def bench_sensor(n_repos: int = 50, rows: int = 2000, ticks: int = 5) -> dict:
    import dagster as dg

    from issue_assets.github.client import GitHubClient
    from issue_assets.github.conditional_cache import ConditionalCache
    from issue_assets.github.replay import ReplayServer
    from issue_assets.github.simulate import simulate_repository
    from issue_assets.ingest.sync import sync_incremental
    from issue_assets.lake import keys
    from issue_assets.lake.store import LocalStore, write_parquet
    from issue_assets.resources import GitHubResource, LakeResource, ModelStoreResource
    from issue_assets.sensors import new_labelled_issues_sensor

    repos = [f"bench-org/repo-{i:02d}" for i in range(n_repos)]
    rng = np.random.default_rng(0)
    now = pd.Timestamp.now(tz="UTC")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = LocalStore(tmp / "lake")
        cache_path = tmp / "http_cache.json"
        items = []
        for i, repo in enumerate(repos):
            issues, _ = simulate_repository(repo, n_issues=4, seed=i, start="2026-01-01T00:00:00Z", days=60)
            items += issues
        with ReplayServer(items) as server:
            # The state a daily ingest leaves: raw log, cursor, and the cursor's page primed for a 304.
            with GitHubClient(server.url, None, cache=ConditionalCache(cache_path)) as client:
                for repo in repos:
                    sync_incremental(client, store, repo, "issues")
            for n, repo in enumerate(repos):
                ingested = [i["id"] for i in items if i["repository_url"].endswith(f"/{repo}")
                            and "pull_request" not in i]
                ids = np.concatenate([ingested, np.arange(rows - len(ingested)) + 10_000_000 * (n + 1)])
                known = now - pd.to_timedelta(rng.uniform(0, 700, rows), unit="D")
                write_parquet(store, keys.features_key(repo), pd.DataFrame({
                    "id": ids.astype("int64"), "label_known_at": pd.Series(known).astype("datetime64[us, UTC]")}))
            resources = {"lake": LakeResource(uri=str(tmp / "lake")),
                         "model_store": ModelStoreResource(uri=str(tmp / "registry")),
                         "github": GitHubResource(api_url=server.url, cache_path=str(cache_path))}
            os.environ["RETRAIN_THRESHOLD"] = str(10**9)
            out = {}
            with dg.DagsterInstance.ephemeral() as instance:
                instance.add_dynamic_partitions("repos", repos)
                variants = (("with GitHub poll, nothing new (304s)", "1"),
                            ("store only (RETRAIN_POLL_GITHUB=0)", "0"),
                            ("with GitHub poll, 1 new closed issue per repo (200s)", "1"))
                for label, poll in variants:
                    if "new closed" in label:
                        server.add_issues(_fresh_issues(items, now))
                    os.environ["RETRAIN_POLL_GITHUB"] = poll
                    times, message = [], ""
                    server.reset_stats()
                    for _ in range(ticks):
                        began = time.perf_counter()
                        with dg.build_sensor_context(instance=instance, resources=resources) as context:
                            result = new_labelled_issues_sensor(context)
                        times.append(time.perf_counter() - began)
                        message = result.skip_message
                    stats = server.stats()
                    out[label] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                                  "requests_per_tick": stats["requests"] / ticks,
                                  "by_status": stats["by_status"], "message": message}
            os.environ.pop("RETRAIN_POLL_GITHUB", None)
            os.environ.pop("RETRAIN_THRESHOLD", None)
    return out


def _fresh_issues(items: list[dict], now: pd.Timestamp) -> list[dict]:
    """One new issue per repository, opened 9 days ago and closed 2 days ago: labelled, not ingested."""
    fresh, seen = [], set()
    for item in items:
        repo_url = item["repository_url"]
        if repo_url in seen or "pull_request" in item:
            continue
        seen.add(repo_url)
        new = dict(item, id=item["id"] + 900_000_000, number=item["number"] + 9000, state="closed",
                   created_at=(now - pd.Timedelta(days=9)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   closed_at=(now - pd.Timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   updated_at=(now - pd.Timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        new["url"] = item["url"].rsplit("/", 1)[0] + f"/{new['number']}"
        fresh.append(new)
    return fresh


# ---- 2. Dagster overhead ---------------------------------------------------------------------

def _simulated(n_issues: int):
    from issue_assets.github.simulate import simulate_repository

    return simulate_repository(REPO, n_issues=n_issues, seed=1, start="2024-11-01T00:00:00Z", days=700)


def core_pipeline(home: Path, api_url: str, trials: int) -> dict:
    """What the assets do, without Dagster: the same core calls in the same order."""
    from issue_assets.assets.training import cutoff_of
    from issue_assets.features import training_sets as ts
    from issue_assets.features.catalog import FEATURE_NAMES, feature_registry_version
    from issue_assets.features.table import load_features, load_snapshot, refresh_features
    from issue_assets.github.client import GitHubClient
    from issue_assets.github.conditional_cache import ConditionalCache
    from issue_assets.ingest.current import load_current, merge_current
    from issue_assets.ingest.sync import sync_window
    from issue_assets.lake import keys
    from issue_assets.lake.documents import write_json
    from issue_assets.lake.store import LocalStore, write_parquet
    from issue_assets.modeling.evaluation import check_alert
    from issue_assets.modeling.training import TrainingConfig, train_and_evaluate
    from issue_assets.modeling.tuning import TuningConfig, tune
    from issue_assets.registry import ModelRegistry, decide, score_on_window
    from issue_assets.serving.scoring import batch_open_issue_predictions, write_predictions

    steps = {}
    t = time.perf_counter()
    store = LocalStore(home / "lake")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with GitHubClient(api_url, None, cache=ConditionalCache(home / "http_cache.json")) as client:
        for kind in ("issues", "comments"):
            sync_window(client, store, REPO, kind, None, today)
    steps["ingest"] = time.perf_counter() - t
    t = time.perf_counter()
    merge_current(store, REPO, "issues")
    merge_current(store, REPO, "comments")
    refresh_features(store, REPO)
    steps["current state + features"] = time.perf_counter() - t
    t = time.perf_counter()
    as_of = today.strftime("%Y-%m-%d")
    rows, info = ts.build_training_set(load_features(store, REPO), cutoff_of(as_of))
    write_parquet(store, keys.training_set_key(as_of), rows)
    write_json(store, keys.training_info_key(as_of), info)
    tuned = tune(rows, FEATURE_NAMES, as_of, TuningConfig(n_trials=trials, seed=0),
                 storage=f"sqlite:///{home / 'optuna.db'}")
    write_json(store, keys.tuning_key(as_of), tuned.summary())
    result = train_and_evaluate(rows, FEATURE_NAMES, tuned.best_params, TrainingConfig(seed=0))
    metadata = result.metadata(as_of=as_of, feature_registry_version=feature_registry_version())
    metadata["cutoff"] = info["cutoff"]
    registry = ModelRegistry(LocalStore(home / "registry"))
    version = registry.register(result.model, metadata, artifacts=result.plots)
    steps["training"] = time.perf_counter() - t
    t = time.perf_counter()
    window = rows.loc[(rows["split"] == "test") & (rows["age_hours"] == 0)]  # as production_model does
    metrics = score_on_window(registry.load_model(version), window)
    passed, _ = check_alert(metrics, 0.6)
    decision = decide(metrics, None, passed, margin=0.0, champion_version=None)
    if decision.promote:
        registry.promote(version, decision.to_dict())
    steps["promotion"] = time.perf_counter() - t
    t = time.perf_counter()
    now = pd.Timestamp.now(tz="UTC")
    predictions = batch_open_issue_predictions(registry.load_model(version), version, load_snapshot(store, REPO),
                                               load_current(store, "issues", REPO), now)
    write_predictions(store, REPO, predictions, now)
    steps["predictions"] = time.perf_counter() - t
    return {"steps": steps, "champion": registry.champion()}


def _event_counts(dagster_home: Path) -> dict:
    counts: dict[str, int] = {}
    for db in [dagster_home / "history" / "runs.db", *sorted((dagster_home / "history" / "runs").glob("*.db"))]:
        if not db.exists() or db.name == "index.db":
            continue
        with sqlite3.connect(db) as conn:
            try:
                for kind, n in conn.execute("SELECT dagster_event_type, count(*) FROM event_logs "
                                            "WHERE dagster_event_type IS NOT NULL GROUP BY 1"):
                    counts[kind] = counts.get(kind, 0) + n
            except sqlite3.OperationalError:
                pass
    return counts


def bench_overhead(n_issues: int, trials: int) -> dict:
    import dagster as dg

    from issue_assets.github.replay import ReplayServer
    from issue_assets.lake.store import LocalStore
    from issue_assets.pipeline import run_pipeline
    from issue_assets.registry import ModelRegistry

    issues, comments = _simulated(n_issues)
    out: dict = {"issues": sum(1 for i in issues if "pull_request" not in i), "items": len(issues),
                 "comments": len(comments), "trials": trials}
    with ReplayServer(issues, comments) as server, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("LAKE_STORE", "MODEL_STORE", "OPTUNA_STORAGE", "GITHUB_TOKEN", "ISSUE_ASSETS_START_DATE"):
            os.environ.pop(name, None)

        home = tmp / "core"
        began = time.perf_counter()
        core = core_pipeline(home, server.url, trials)
        out["core"] = {"seconds": time.perf_counter() - began, "steps": core["steps"], "champion": core["champion"]}

        for label, persistent in (("run_pipeline, ephemeral instance", False),
                                  ("run_pipeline, persistent SQLite instance", True)):
            home = tmp / label.replace(" ", "_").replace(",", "")
            os.environ["ISSUE_ASSETS_HOME"] = str(home)
            dagster_home = home / "dagster_home"
            dagster_home.mkdir(parents=True)
            steps: dict[str, float] = {}

            def echo(line: str, _steps=steps) -> None:
                if ": done in " in line:
                    step, secs = line.strip().rsplit(": done in ", 1)
                    _steps[step] = float(secs.rstrip("s"))

            began = time.perf_counter()
            instance = dg.DagsterInstance.from_config(str(dagster_home)) if persistent \
                else dg.DagsterInstance.ephemeral()
            with instance:
                run_pipeline([REPO], api_url=server.url, trials=trials, instance=instance, echo=echo)
            seconds = time.perf_counter() - began
            out[label] = {"seconds": seconds, "steps": steps,
                          "champion": ModelRegistry(LocalStore(home / "registry")).champion(),
                          "events": _event_counts(dagster_home) if persistent else {}}
        os.environ.pop("ISSUE_ASSETS_HOME", None)

        home = tmp / "job_execute"
        dagster_home = home / "dagster_home"
        dagster_home.mkdir(parents=True)
        run_config = tmp / "run.yaml"
        run_config.write_text(json.dumps({"ops": {"run_full_pipeline": {"config": {"trials": trials,
                                                                                    "api_url": server.url}}}}))
        env = _clean_env(DAGSTER_HOME=str(dagster_home), ISSUE_ASSETS_HOME=str(home), ISSUE_ASSETS_REPOS=REPO,
                         GITHUB_API_URL=server.url)
        began = time.perf_counter()
        proc = subprocess.run([str(VENV_BIN / "dagster"), "job", "execute", "-m", "issue_assets.definitions",
                               "-j", "full_pipeline_job", "-c", str(run_config)],
                              cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - began
        if proc.returncode != 0:
            raise SystemExit(f"dagster job execute failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        steps = {}
        for line in (proc.stdout + proc.stderr).splitlines():
            if ": done in " in line and "run_full_pipeline" in line:
                step, secs = line.split(" -   ", 1)[-1].rsplit(": done in ", 1)
                steps[step] = float(secs.rstrip("s"))
        out["dagster job execute (subprocess, SQLite)"] = {
            "seconds": seconds, "steps": steps,
            "champion": ModelRegistry(LocalStore(home / "registry")).champion(),
            "events": _event_counts(dagster_home)}
    return out


# ---- 3. make demo ----------------------------------------------------------------------------

def bench_demo() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = _clean_env(ISSUE_ASSETS_HOME=tmp)
        began = time.perf_counter()
        proc = subprocess.run([str(VENV_BIN / "issue-assets"), "demo"], cwd=tmp, env=env, capture_output=True,
                              text=True)
        seconds = time.perf_counter() - began
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
    return {"seconds": seconds, "returncode": proc.returncode, "tail": tail}


# ---- report ----------------------------------------------------------------------------------

def report(sensor: dict, overhead: dict, demo: dict | None, command: str) -> str:
    lines = ["# Automation benchmarks", "",
             f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- Machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; Python {platform.python_version()}",
             f"- Command: `{command}`", "- Offline: replay server on 127.0.0.1, temp folders; shared machine, "
             "single runs unless stated, so treat differences under ~10 % as noise.", "",
             "## 1. `new_labelled_issues_sensor` tick, 50 repositories", "",
             "Feature tables of 2,000 rows per repository written directly into a temp lake; the replay server "
             "serves the 50 repositories with 4 items each, ingested once so every repository has a cursor and "
             "the cursor's page primed for a conditional request. Median of 5 ticks.", "",
             "| variant | median | min | max | requests / tick | statuses |", "|---|---|---|---|---|---|"]
    for label, r in sensor.items():
        lines.append(f"| {label} | {r['median_s'] * 1000:.0f} ms | {r['min_s'] * 1000:.0f} ms | "
                     f"{r['max_s'] * 1000:.0f} ms | {r['requests_per_tick']:.0f} | {r['by_status']} |")
    lines += ["", "Skip reason of each variant's last tick:", ""]
    lines += [f"- {label}: `{r['message'][:160]}`" for label, r in sensor.items()]
    lines.append("")

    core = overhead["core"]["seconds"]
    lines += ["## 2. Dagster overhead around the core", "",
              f"Simulated repository: {overhead['items']} items ({overhead['issues']} issues, the rest pull "
              f"requests), {overhead['comments']} comments, 700 days from 2024-11-01; {overhead['trials']} "
              "Optuna trials, seed 0; each variant in a fresh ISSUE_ASSETS_HOME against the same replay server. "
              "Default first partition day 2024-01-01, so the single-run history backfill covers every day "
              "partition up to yesterday.", "",
              "| variant | wall | vs core | ingest | current + features | training | promotion | predictions |",
              "|---|---|---|---|---|---|---|---|"]
    order = ["core", "run_pipeline, ephemeral instance", "run_pipeline, persistent SQLite instance",
             "dagster job execute (subprocess, SQLite)"]
    for label in order:
        r = overhead[label]
        s = list(r["steps"].values())
        cells = [f"{v:.1f} s" for v in s] + [""] * (5 - len(s))
        lines.append(f"| {label} | {r['seconds']:.1f} s | {r['seconds'] / core:.2f}x | " + " | ".join(cells[:5]) + " |")
    lines.append("")
    for label in order[2:]:
        ev = overhead[label]["events"]
        if ev:
            lines.append(f"- {label}: {sum(ev.values())} events in SQLite, of which "
                         f"{ev.get('ASSET_MATERIALIZATION', 0)} ASSET_MATERIALIZATION and "
                         f"{ev.get('ASSET_MATERIALIZATION_PLANNED', 0)} ASSET_MATERIALIZATION_PLANNED.")
    lines += ["", "Champion promoted in every variant: " +
              ", ".join(f"{k}: {overhead[k]['champion']}" for k in order), ""]
    if demo is not None:
        lines += ["## 3. `make demo` end to end", "",
                  f"`.venv/bin/issue-assets demo` with a temp ISSUE_ASSETS_HOME (environment already installed): "
                  f"**{demo['seconds']:.0f} s**, exit code {demo['returncode']}; one run.", "", "```",
                  *demo["tail"], "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "AUTOMATION_RESULTS.md"))
    parser.add_argument("--json", default=None, help="also write the raw figures here")
    args = parser.parse_args()
    command = "python bench/bench_automation.py " + " ".join(sys.argv[1:])
    sensor = bench_sensor()
    print(json.dumps(sensor, indent=1, default=str), flush=True)
    overhead = bench_overhead(args.issues, args.trials)
    print(json.dumps(overhead, indent=1, default=str), flush=True)
    demo = None if args.skip_demo else bench_demo()
    print(json.dumps(demo, indent=1, default=str), flush=True)
    text = report(sensor, overhead, demo, command.strip())
    Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"sensor": sensor, "overhead": overhead, "demo": demo},
                                              indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
