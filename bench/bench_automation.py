"""Benchmarks of the automation layer and the CLI (offline; loopback replay servers only):

1. a `new_activity_sensor` tick (the conditional poll) over 50 repositories, with and without changes, at
   a realistic per-request latency; and the rate-limit points an hour of polls costs with nothing changing;
2. a `new_labelled_issues_sensor` tick over 50 repositories (2,000-row feature tables);
3. Dagster's overhead around the core: the same pipeline as plain core calls and through the application
   layer (named asset jobs, in-process) on a persistent SQLite instance, step by step;
4. CLI start-up per command;
5. `issue-assets demo` end to end, with its steps.

    .venv/bin/python bench/bench_automation.py [--skip-demo] [--out bench/AUTOMATION_RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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
TOKEN = "ghp_BenchAutomationToken_0123456789"

from machine import cpu_model, load_average, write_results  # noqa: E402


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ISSUE_ASSETS_", "DAGSTER_", "LAKE_STORE", "MODEL_STORE", "OPTUNA_STORAGE",
                                "GITHUB_", "ALERT_WEBHOOK_URL", "RETRAIN_"))}
    env.update(extra)
    return env


def _fifty(n_repos: int = 50):
    from issue_assets.github.simulate import simulate_repository

    repos = [f"bench-org/repo-{i:02d}" for i in range(n_repos)]
    items, comments = [], []
    for i, repo in enumerate(repos):
        issues, notes = simulate_repository(repo, n_issues=4, seed=i, start="2026-01-01T00:00:00Z", days=60)
        items += issues
        comments += notes
    return repos, items, comments


def _ingest_all(store, repos, server, cache_dir) -> None:
    from issue_assets.ingest import sources
    from issue_assets.ingest.sync import sync_incremental

    for repo in repos:
        sources.add(repo, server.url, store=store)
        with sources.client_for(repo, store, cache_dir=cache_dir) as client:
            for kind in ("issues", "comments"):
                sync_incremental(client, store, repo, kind)


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


# ---- 1. the poll -----------------------------------------------------------------------------

def bench_poll(latency_ms: float = 100.0, ticks: int = 5, hour_ticks: int = 60) -> dict:
    import dagster as dg

    from issue_assets.github.replay import ReplayServer
    from issue_assets.lake.store import LocalStore
    from issue_assets.resources import GitHubResource, LakeResource
    from issue_assets.sensors import new_activity_sensor

    repos, items, comments = _fifty()
    out: dict = {"latency_ms": latency_ms, "repos": len(repos)}
    with tempfile.TemporaryDirectory() as tmp, ReplayServer(items, comments, token=TOKEN) as server:
        tmp = Path(tmp)
        os.environ.update(GITHUB_API_URL=server.url, GITHUB_TOKEN=TOKEN)
        store = LocalStore(tmp / "lake")
        _ingest_all(store, repos, server, tmp / "http_cache")
        server.latency_ms = latency_ms
        resources = {"lake": LakeResource(uri=str(tmp / "lake")),
                     "github": GitHubResource(token=TOKEN, cache_dir=str(tmp / "http_cache"))}
        with dg.DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions("repos", repos)

            def tick(cursor=None):
                began = time.perf_counter()
                with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                    result = new_activity_sensor(context)
                return time.perf_counter() - began, result

            for label, change in (("nothing new (304s)", False), ("a new issue in every repository", True)):
                if change:
                    server.add_issues(_fresh_issues(items, pd.Timestamp.now(tz="UTC")))
                times, requests = [], 0
                cursor = None
                for _ in range(ticks):
                    server.reset_stats()
                    seconds, result = tick(cursor)
                    cursor = result.cursor
                    times.append(seconds)
                    requests = server.stats()["requests"]
                out[label] = {"median_s": statistics.median(times), "max_s": max(times), "requests": requests,
                              "run_requests": len(result.run_requests or []),
                              "by_status": server.stats()["by_status"]}
            # An hour of 1-minute polls with nothing changing, compressed: the server's budget before and after.
            server.latency_ms = 0
            with tempfile.TemporaryDirectory() as quiet_tmp, ReplayServer(items, comments, token=TOKEN) as quiet:
                os.environ["GITHUB_API_URL"] = quiet.url
                quiet_store = LocalStore(Path(quiet_tmp) / "lake")
                _ingest_all(quiet_store, repos, quiet, Path(quiet_tmp) / "http_cache")
                resources["lake"] = LakeResource(uri=str(Path(quiet_tmp) / "lake"))
                resources["github"] = GitHubResource(token=TOKEN, cache_dir=str(Path(quiet_tmp) / "http_cache"))
                used = quiet.rate_limit_status()["used"]
                quiet.reset_stats()
                cursor = None
                for _ in range(hour_ticks):
                    _, result = tick(cursor)
                    cursor = result.cursor
                out["hour"] = {"ticks": hour_ticks, "requests": quiet.stats()["requests"],
                               "by_status": quiet.stats()["by_status"],
                               "points": quiet.rate_limit_status()["used"] - used}
        for name in ("GITHUB_API_URL", "GITHUB_TOKEN"):
            os.environ.pop(name, None)
    return out


# ---- 2. the retraining sensor ------------------------------------------------------------------

def bench_retraining(n_repos: int = 50, rows: int = 2000, ticks: int = 5) -> dict:
    import dagster as dg

    from issue_assets.github.replay import ReplayServer
    from issue_assets.lake import keys
    from issue_assets.lake.store import LocalStore, write_parquet
    from issue_assets.resources import GitHubResource, LakeResource, ModelStoreResource
    from issue_assets.sensors import new_labelled_issues_sensor

    repos, items, comments = _fifty(n_repos)
    rng = np.random.default_rng(0)
    now = pd.Timestamp.now(tz="UTC")
    out = {}
    with tempfile.TemporaryDirectory() as tmp, ReplayServer(items, comments) as server:
        tmp = Path(tmp)
        store = LocalStore(tmp / "lake")
        _ingest_all(store, repos, server, tmp / "http_cache")
        for n, repo in enumerate(repos):
            ingested = [i["id"] for i in items if i["repository_url"].endswith(f"/{repo}") and "pull_request" not in i]
            ids = np.concatenate([ingested, np.arange(rows - len(ingested)) + 10_000_000 * (n + 1)])
            known = now - pd.to_timedelta(rng.uniform(0, 700, rows), unit="D")
            write_parquet(store, keys.features_key(repo), pd.DataFrame({
                "id": ids.astype("int64"), "label_known_at": pd.Series(known).astype("datetime64[us, UTC]")}))
        resources = {"lake": LakeResource(uri=str(tmp / "lake")), "model_store": ModelStoreResource(uri=str(tmp / "r")),
                     "github": GitHubResource(cache_dir=str(tmp / "http_cache"))}
        os.environ["RETRAIN_THRESHOLD"] = str(10**9)
        with dg.DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions("repos", repos)
            for label, poll in (("with the sources' poll, nothing new (304s)", "1"), ("lake only (RETRAIN_POLL_GITHUB=0)", "0")):
                os.environ["RETRAIN_POLL_GITHUB"] = poll
                times = []
                server.reset_stats()
                for _ in range(ticks):
                    began = time.perf_counter()
                    with dg.build_sensor_context(instance=instance, resources=resources) as context:
                        result = new_labelled_issues_sensor(context)
                    times.append(time.perf_counter() - began)
                out[label] = {"median_s": statistics.median(times), "max_s": max(times),
                              "requests_per_tick": server.stats()["requests"] / ticks,
                              "message": result.skip_message[:140]}
        for name in ("RETRAIN_POLL_GITHUB", "RETRAIN_THRESHOLD"):
            os.environ.pop(name, None)
    return out


# ---- 3. Dagster overhead -----------------------------------------------------------------------

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
    with GitHubClient(api_url, None, cache=ConditionalCache(home / "http_cache.json")) as client:
        for kind in ("issues", "comments"):
            sync_window(client, store, REPO, kind, None, None)
    steps["ingest"] = time.perf_counter() - t
    t = time.perf_counter()
    merge_current(store, REPO, "issues")
    merge_current(store, REPO, "comments")
    refresh_features(store, REPO)
    steps["refresh"] = time.perf_counter() - t
    t = time.perf_counter()
    as_of = datetime.now(UTC).strftime("%Y-%m-%d")
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
    window = rows.loc[(rows["split"] == "test") & (rows["age_hours"] == 0)]  # as production_model does
    metrics = score_on_window(registry.load_model(version), window)
    passed, _ = check_alert(metrics, 0.6)
    decision = decide(metrics, None, passed, margin=0.0, champion_version=None)
    if decision.promote:
        registry.promote(version, decision.to_dict())
    steps["training"] = time.perf_counter() - t
    t = time.perf_counter()
    now = pd.Timestamp.now(tz="UTC")
    predictions = batch_open_issue_predictions(registry.load_model(version), version, load_snapshot(store, REPO),
                                               load_current(store, "issues", REPO), now)
    write_predictions(store, REPO, predictions, now)
    steps["predictions"] = time.perf_counter() - t
    return {"steps": steps, "champion": registry.champion()}


def application_pipeline(home: Path, api_url: str, trials: int) -> dict:
    """The same through the application layer: ingest_job, refresh_job, training_job, predictions_job,
    in-process on a persistent SQLite instance."""
    import dagster as dg

    from issue_assets import application

    os.environ["ISSUE_ASSETS_HOME"] = str(home)
    os.environ.pop("DAGSTER_HOME", None)
    dagster_home = application.ensure_dagster_home()
    steps = {}
    with dg.DagsterInstance.get() as instance:
        session = application.Session(instance, home / "runs.log")
        application.register(instance, REPO, api_url)
        for name, call in (("ingest", lambda: application.ingest(session, REPO)),
                           ("refresh", lambda: application.refresh(session, REPO)),
                           ("training", lambda: application.train(session, datetime.now(UTC).strftime("%Y-%m-%d"),
                                                                  trials)),
                           ("predictions", lambda: application.predict(session, REPO))):
            t = time.perf_counter()
            call()
            steps[name] = time.perf_counter() - t
        events = instance.get_event_records(dg.EventRecordsFilter(dg.DagsterEventType.ASSET_MATERIALIZATION),
                                            limit=10_000)
    os.environ.pop("ISSUE_ASSETS_HOME", None)
    os.environ.pop("DAGSTER_HOME", None)
    from issue_assets.lake.store import LocalStore
    from issue_assets.registry import ModelRegistry

    return {"steps": steps, "materializations": len(events), "dagster_home": str(dagster_home),
            "champion": ModelRegistry(LocalStore(home / "registry")).champion()}


def bench_overhead(n_issues: int, trials: int, repeats: int) -> dict:
    from issue_assets.github.replay import ReplayServer
    from issue_assets.github.simulate import simulate_repository

    issues, comments = simulate_repository(REPO, n_issues=n_issues, seed=1, start="2024-11-01T00:00:00Z", days=700)
    out: dict = {"issues": sum(1 for i in issues if "pull_request" not in i), "items": len(issues),
                 "comments": len(comments), "trials": trials, "runs": {"core": [], "application": []}}
    with ReplayServer(issues, comments) as server, tempfile.TemporaryDirectory() as tmp:
        for name in ("LAKE_STORE", "MODEL_STORE", "OPTUNA_STORAGE", "GITHUB_TOKEN", "GITHUB_API_URL"):
            os.environ.pop(name, None)
        for r in range(repeats):
            for label, fn in (("core", core_pipeline), ("application", application_pipeline)):
                home = Path(tmp) / f"{label}{r}"
                began = time.perf_counter()
                result = fn(home, server.url, trials)
                result["seconds"] = time.perf_counter() - began
                out["runs"][label].append(result)
                print(label, json.dumps(result, default=str), flush=True)
    return out


# ---- 4. CLI start-up ---------------------------------------------------------------------------

def bench_cli(home: Path, repeats: int = 5) -> dict:
    env = _clean_env(ISSUE_ASSETS_HOME=str(home))
    out = {}
    for args in (["--help"], ["repos", "list"], ["model", "list"], ["model", "show"], ["status"]):
        times, first = [], []
        for _ in range(repeats):
            began = time.perf_counter()
            proc = subprocess.Popen([str(VENV_BIN / "issue-assets"), *args], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            proc.stdout.readline()
            first.append(time.perf_counter() - began)
            proc.stdout.read()
            proc.wait()
            times.append(time.perf_counter() - began)
        out[" ".join(args)] = {"median_s": statistics.median(times), "max_s": max(times),
                               "first_line_s": statistics.median(first), "code": proc.returncode}
    return out


# ---- 5. the demo -------------------------------------------------------------------------------

def bench_demo(home: Path) -> dict:
    env = _clean_env(ISSUE_ASSETS_HOME=str(home))
    began = time.perf_counter()
    proc = subprocess.run([str(VENV_BIN / "issue-assets"), "demo"], cwd=home.parent, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - began
    output = proc.stdout + proc.stderr
    steps = {m.group(1): float(m.group(2)) for m in re.finditer(r"^✓ (.+?)(?::.*)?  \(([\d.]+)s\)$", output, re.M)}
    return {"seconds": seconds, "returncode": proc.returncode, "lines": len(output.splitlines()), "steps": steps,
            "output": output}


# ---- report ------------------------------------------------------------------------------------

def report(poll: dict, retraining: dict, overhead: dict, cli: dict, demo: dict | None, command: str,
           loads: dict) -> str:
    lines = ["# Automation benchmarks", "",
             f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- machine: {os.cpu_count()} CPUs, {cpu_model()}; Python {platform.python_version()}; load average "
             f"before {loads['before']}, after {loads['after']} (a shared machine)",
             f"- command: `{command}`",
             "- offline: replay servers on 127.0.0.1, temp folders; medians within one run", "",
             f"## 1. `new_activity_sensor` tick (the poll), {poll['repos']} repositories, "
             f"{poll['latency_ms']:.0f} ms per response", "",
             "Every repository ingested first (cursor and validators in place), a token meant for the server; "
             "2 endpoints per repository; at most 4 requests in flight (ISSUE_ASSETS_POLL_CONCURRENCY).", "",
             "| variant | median | max | requests | ingest runs requested | statuses |", "|---|---|---|---|---|---|"]
    for label in ("nothing new (304s)", "a new issue in every repository"):
        r = poll[label]
        lines.append(f"| {label} | {r['median_s']:.2f} s | {r['max_s']:.2f} s | {r['requests']} | "
                     f"{r['run_requests']} | {r['by_status']} |")
    h = poll["hour"]
    lines += ["", f"An hour of polls with nothing changing ({h['ticks']} ticks, as at the default 60 s interval, run "
              f"back to back): {h['requests']} requests, statuses {h['by_status']}, **{h['points']} rate-limit points** "
              "(the server's budget before and after).", "",
              "## 2. `new_labelled_issues_sensor` tick, 50 repositories, 2,000-row feature tables", "",
              "| variant | median | max | requests / tick |", "|---|---|---|---|"]
    for label, r in retraining.items():
        lines.append(f"| {label} | {r['median_s'] * 1000:.0f} ms | {r['max_s'] * 1000:.0f} ms | "
                     f"{r['requests_per_tick']:.0f} |")
    runs = overhead["runs"]
    core = statistics.median(r["seconds"] for r in runs["core"])
    app = statistics.median(r["seconds"] for r in runs["application"])
    step_names = list(runs["core"][0]["steps"])
    lines += ["", "## 3. Dagster's overhead around the core", "",
              f"Simulated repository: {overhead['items']} items ({overhead['issues']} issues), {overhead['comments']} "
              f"comments, 700 days; {overhead['trials']} Optuna trials, seed 0; fresh home per run, the same replay "
              f"server; medians of {len(runs['core'])} runs. The application layer runs each step as a named asset "
              "job in-process on a persistent SQLite instance (what `issue-assets run` and the demo do).", "",
              "| variant | wall | vs core | " + " | ".join(step_names) + " |", "|---|---|---|" + "---|" * len(step_names)]
    for label, secs in (("core (no Dagster)", core), ("application layer, SQLite instance", app)):
        key = "core" if label.startswith("core") else "application"
        cells = [f"{statistics.median(r['steps'][s] for r in runs[key]):.2f} s" for s in step_names]
        lines.append(f"| {label} | {secs:.1f} s | {secs / core:.2f}x | " + " | ".join(cells) + " |")
    ingest_core = statistics.median(r["steps"]["ingest"] for r in runs["core"])
    ingest_app = statistics.median(r["steps"]["ingest"] for r in runs["application"])
    lines += ["", f"History backfill (the ingest step) alone: {ingest_app:.2f} s vs {ingest_core:.2f} s core = "
              f"**{ingest_app / ingest_core:.2f}x**; whole pipeline **{app / core:.2f}x**; "
              f"{runs['application'][-1]['materializations']} materializations in the instance.", "",
              "## 4. CLI start-up (after the demo's home exists)", "",
              "| command | first line printed (median) | done (median) | done (max) | exit |", "|---|---|---|---|---|"]
    for label, r in cli.items():
        lines.append(f"| `issue-assets {label}` | {r['first_line_s']:.2f} s | {r['median_s']:.2f} s | "
                     f"{r['max_s']:.2f} s | {r['code']} |")
    if demo is not None:
        lines += ["", "## 5. `issue-assets demo` end to end", "",
                  f"Environment installed, fresh ISSUE_ASSETS_HOME: **{demo['seconds']:.1f} s**, exit code "
                  f"{demo['returncode']}, {demo['lines']} lines of output.", "",
                  "| step | seconds |", "|---|---|"]
        lines += [f"| {step} | {secs:.1f} |" for step, secs in demo["steps"].items()]
        rest = demo["seconds"] - sum(demo["steps"].values())
        lines.append(f"| start-up, summary and exit (the rest) | {rest:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "AUTOMATION_RESULTS.md"))
    parser.add_argument("--json", default=None, help="also write the raw figures here")
    args = parser.parse_args()
    command = ("python bench/bench_automation.py " + " ".join(sys.argv[1:])).strip()
    loads = {"before": load_average()}
    poll = bench_poll()
    print(json.dumps(poll, indent=1, default=str), flush=True)
    retraining = bench_retraining()
    print(json.dumps(retraining, indent=1, default=str), flush=True)
    overhead = bench_overhead(args.issues, args.trials, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        demo = None if args.skip_demo else bench_demo(home)
        if demo:
            print(demo["output"], flush=True)
        cli = bench_cli(home)
    print(json.dumps(cli, indent=1), flush=True)
    loads["after"] = load_average()
    text = report(poll, retraining, overhead, cli, demo, command, loads)
    write_results(args.out, text)
    if args.json:
        Path(args.json).write_text(json.dumps({"poll": poll, "retraining": retraining, "overhead": overhead,
                                               "cli": cli, "demo": demo}, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
