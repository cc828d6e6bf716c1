"""The long soak: the platform under the real dagster-daemon with the default sensor intervals (or the ones
given), live activity at the replay server, injected faults, a tight rate limit, a SIGKILL of the daemon
and of a run worker. Measures the time from an issue appearing at the server to its prediction in the lake,
and counts runs, retries and faults survived (harness: issue_assets_tests/soak.py, as the CI's short soak).

    .venv/bin/python bench/bench_soak.py [--minutes 15] [--poll 60] [--postgres] [--out bench/SOAK_RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "issue_assets_tests"))

from machine import cpu_model, load_average, write_results  # noqa: E402
from soak import Soak, SoakConfig, postgres_admin  # noqa: E402


def run(args) -> tuple[SoakConfig, dict]:
    config = SoakConfig(n_issues=args.issues, live_interval=args.live_interval, fault_rate=args.fault_rate,
                        rate_limit=args.rate_limit, rate_limit_window=args.rate_limit_window,
                        poll_seconds=args.poll, automation_seconds=args.automation, retrain_seconds=args.retrain,
                        retrain_threshold=args.threshold, trials=args.trials, kill_daemon=True, kill_worker=True,
                        max_runtime=args.max_runtime, live_seconds=args.minutes * 60, bound_seconds=600,
                        timeout=900)
    db = None
    if args.postgres:
        db = f"wt11_soakbench_{uuid.uuid4().hex[:8]}"
        postgres_admin(f"CREATE DATABASE {db}")
        config.postgres_db = db
    try:
        with tempfile.TemporaryDirectory() as tmp, Soak(Path(tmp), config) as soak:
            result = soak.run()
    finally:
        if db:
            postgres_admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return config, result.as_dict()


def _live(summary: dict) -> str:
    champ = summary.get("champion_live") or {}

    def fmt(value) -> str:
        return "undefined" if value is None or value != value else f"{value:.3f}"

    return (f"{summary.get('served', 0)} served, {summary.get('with_outcome', 0)} with a known outcome; champion "
            f"{summary.get('champion')}: live ROC AUC {fmt(champ.get('roc_auc'))} and Brier {fmt(champ.get('brier'))} "
            f"over {champ.get('n', 0)} predictions (its test ROC AUC {fmt(summary.get('champion_test_roc_auc'))})")


def report(config: SoakConfig, r: dict, command: str, loads: tuple[str, str]) -> str:
    lat = np.array(r["latencies"], dtype=float)
    lines = ["# Soak under the daemon", "",
             f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- machine: {os.cpu_count()} CPUs, {cpu_model()}; Python {platform.python_version()}; load average "
             f"before {loads[0]}, after {loads[1]} (a shared machine)",
             f"- command: `{command}`",
             f"- instance: {'PostgreSQL' if config.postgres_db else 'SQLite'}; sensors: poll every "
             f"{config.poll_seconds} s, automation-condition sensor every {config.automation_seconds} s, retraining "
             f"every {config.retrain_seconds} s (threshold {config.retrain_threshold}); replay server: "
             f"{config.n_issues} simulated items, a live event every ~{config.live_interval:g} s for "
             f"{config.live_seconds / 60:.0f} min, {config.fault_rate:.0%} faults, {config.rate_limit} requests per "
             f"{config.rate_limit_window:.0f} s",
             "", "| measure | value |", "|---|---|",
             f"| issues opened while predictions existed, scored | {len(lat)} (unscored: {len(r['unscored'])}) |",
             f"| time from the issue at the server to its prediction in the lake | median "
             f"{np.median(lat):.0f} s, p95 {np.percentile(lat, 95):.0f} s, max {lat.max():.0f} s |",
             f"| runs | {r['runs']} |", f"| runs by job | {r['runs_by_job']} |",
             f"| retries (re-executions by run_retries) | {r['retries']} |",
             f"| faults survived (502 / reset / truncated) | {r['faults']} {r['faults_by_kind']} |",
             f"| requests answered 403/429 for the rate limit | {r['rate_limited']}; client waits for a reset: "
             f"{r['rate_limit_waits']} |",
             f"| live events | {r['events']} |",
             f"| training runs (new labels each saw) | {r['training_new_labels']} |",
             f"| daemon killed during | {r['killed_during']}; a worker killed during: {r['killed_worker_of']} |",
             f"| duplicates / missing in the lake | {r['duplicates']} / {r['missing'] or 'none'} |",
             f"| champion (weak start {r['weak_champion']}) | {r['champion']}; latest predictions by "
             f"{r['latest_model_version']} |",
             f"| prediction_outcomes at the end (served predictions joined to their outcomes) | "
             f"{_live(r['live'])} |",
             f"| wall time | {r['wall_seconds']:.0f} s |", "", "Timeline:", "", "```", *r["timeline"], "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="live activity after the first predictions")
    parser.add_argument("--poll", type=int, default=60)
    parser.add_argument("--automation", type=int, default=30)
    parser.add_argument("--retrain", type=int, default=60)
    parser.add_argument("--threshold", type=int, default=5)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--issues", type=int, default=1500)
    parser.add_argument("--live-interval", type=float, default=10.0)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--rate-limit", type=int, default=120)
    parser.add_argument("--rate-limit-window", type=float, default=300.0)
    parser.add_argument("--max-runtime", type=int, default=300)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "SOAK_RESULTS.md"))
    args = parser.parse_args()
    command = ("python bench/bench_soak.py " + " ".join(sys.argv[1:])).strip()
    before = load_average()
    config, result = run(args)
    text = report(config, result, command, (before, load_average()))
    print(json.dumps(result, indent=1, default=str))
    write_results(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
