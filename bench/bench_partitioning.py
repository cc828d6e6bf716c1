"""How the raw log's partitioning decides Dagster's cost of a history backfill (offline, loopback only).

The same core sweep (`ingest.sync.sync_window` of issues and comments for one repository's whole
history) is run five ways on a persistent SQLite instance, each in a fresh home against the same
replay server:

1. core: the sweeps as plain function calls (no Dagster);
2. repository x day partitions, one single-run backfill over every day (the layout until 2026-12);
3. the same with DAGSTER_EVENT_BATCH_SIZE=1000 (Dagster's opt-in batched event writes);
4. repository x month partitions, one single-run backfill over every month;
5. repository partitions only (what the platform uses): one materialization per sweep.

Variants 2-4 define their assets here (same body, other partitions) so they stay measurable after the
platform stopped using them. Reported: wall time of the materialization, the ratio to the core, and
what Dagster wrote to SQLite.

    .venv/bin/python bench/bench_partitioning.py [--issues 3000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REPO = "demo-org/demo-project"
START = "2024-01-01"

from machine import cpu_model, load_average, write_results  # noqa: E402


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


def _sweep(api_url: str, home: Path, start=None, end=None) -> dict:
    from issue_assets.github.client import GitHubClient
    from issue_assets.github.conditional_cache import ConditionalCache
    from issue_assets.ingest.sync import sync_window
    from issue_assets.lake.store import LocalStore

    store = LocalStore(home / "lake")
    out = {}
    with GitHubClient(api_url, None, cache=ConditionalCache(home / "http_cache.json")) as client:
        for kind in ("issues", "comments"):
            out[kind] = sync_window(client, store, REPO, kind, start, end).new_versions
    return out


def _variant_assets(kind: str):
    """raw_issues / raw_comments with the partitioning of `kind` ("day", "month" or "repo")."""
    import dagster as dg

    repos = dg.DynamicPartitionsDefinition(name="repos")
    if kind == "repo":
        partitions = repos
    else:
        time_def = (dg.DailyPartitionsDefinition(start_date=START, timezone="UTC") if kind == "day"
                    else dg.MonthlyPartitionsDefinition(start_date=START, timezone="UTC"))
        partitions = dg.MultiPartitionsDefinition({"repo": repos, kind: time_def})

    def body(context, which: str):
        from issue_assets.github.client import GitHubClient
        from issue_assets.github.conditional_cache import ConditionalCache
        from issue_assets.ingest.sync import sync_window
        from issue_assets.lake.store import LocalStore

        home = Path(os.environ["ISSUE_ASSETS_HOME"])
        if kind == "repo":
            start, end = None, None
        else:
            keys = sorted(k.keys_by_dimension[kind] for k in context.partition_keys)
            first = datetime.fromisoformat(keys[0]).replace(tzinfo=UTC)
            last = datetime.fromisoformat(keys[-1]).replace(tzinfo=UTC)
            start = None if keys[0] == START else first
            end = last + timedelta(days=1) if kind == "day" else \
                (last.replace(day=28) + timedelta(days=4)).replace(day=1)
        with GitHubClient(os.environ["BENCH_API_URL"], None,
                          cache=ConditionalCache(home / "http_cache.json")) as client:
            result = sync_window(client, LocalStore(home / "lake"), REPO, which, start, end)
        return dg.MaterializeResult(metadata={"new_versions": result.new_versions, "requests": result.requests})

    extra = {} if kind == "repo" else {"backfill_policy": dg.BackfillPolicy.single_run()}

    @dg.asset(name="raw_issues", partitions_def=partitions, **extra)
    def raw_issues(context):
        return body(context, "issues")

    @dg.asset(name="raw_comments", partitions_def=partitions, **extra)
    def raw_comments(context):
        return body(context, "comments")

    return [raw_issues, raw_comments]


def run_variant(kind: str, api_url: str, home: Path, batch: bool = False) -> dict:
    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    os.environ["ISSUE_ASSETS_HOME"] = str(home)
    os.environ["BENCH_API_URL"] = api_url
    if batch:
        os.environ["DAGSTER_EVENT_BATCH_SIZE"] = "1000"
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assets = _variant_assets(kind)
    today = datetime.now(UTC)
    try:
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            instance.add_dynamic_partitions("repos", [REPO])
            began = time.perf_counter()
            if kind == "repo":
                result = dg.materialize(assets, instance=instance, partition_key=REPO)
            else:
                last = (today - timedelta(days=1)).strftime("%Y-%m-%d") if kind == "day" else today.strftime("%Y-%m-01")
                result = dg.materialize(assets, instance=instance, tags={
                    # Dimensions are ordered by name ("day"/"month" before "repo").
                    "dagster/asset_partition_range_start": f"{START}|{REPO}",
                    "dagster/asset_partition_range_end": f"{last}|{REPO}"})
            seconds = time.perf_counter() - began
            assert result.success
            partitions = len(result.asset_materializations_for_node("raw_issues"))
    finally:
        os.environ.pop("DAGSTER_EVENT_BATCH_SIZE", None)
    events = _event_counts(dagster_home)
    return {"seconds": seconds, "partitions_per_asset": partitions, "events": sum(events.values()),
            "materializations": events.get("ASSET_MATERIALIZATION", 0),
            "planned": events.get("ASSET_MATERIALIZATION_PLANNED", 0)}


VARIANTS = [("core (no Dagster)", None, False), ("repository x day (until 2026-12)", "day", False),
            ("repository x day, DAGSTER_EVENT_BATCH_SIZE=1000", "day", True),
            ("repository x month", "month", False), ("repository only (chosen)", "repo", False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "PARTITIONING_RESULTS.md"))
    args = parser.parse_args()
    from issue_assets.github.replay import ReplayServer
    from issue_assets.github.simulate import simulate_repository

    load_before = load_average()
    first = (datetime.now(UTC) - timedelta(days=727)).strftime("%Y-%m-01T00:00:00Z")
    issues, comments = simulate_repository(REPO, n_issues=args.issues, seed=0, start=first, days=720)
    results: dict[str, list[dict]] = {label: [] for label, _, _ in VARIANTS}
    with ReplayServer(issues, comments) as server, tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for n, (label, kind, batch) in enumerate(VARIANTS):
                home = Path(tmp) / f"r{r}v{n}"
                if kind is None:
                    began = time.perf_counter()
                    _sweep(server.url, home)
                    results[label].append({"seconds": time.perf_counter() - began})
                else:
                    results[label].append(run_variant(kind, server.url, home, batch))
                print(label, json.dumps(results[label][-1]), flush=True)
    core = statistics.median(r["seconds"] for r in results["core (no Dagster)"])
    lines = ["# Partitioning of the raw log: Dagster's cost of a history backfill", "",
             f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}; "
             f"load average before {load_before}, after {load_average()}",
             f"- command: `.venv/bin/python bench/bench_partitioning.py --issues {args.issues} --repeats {args.repeats}`",
             f"- data: simulated repository, {len(issues)} issues and pull requests, {len(comments)} comments over "
             f"720 days; first partition day {START}; persistent SQLite instance, fresh home per run; medians of "
             f"{args.repeats} runs", "",
             "| variant | partitions per asset | wall s | vs core | events in SQLite | materializations | planned |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label, kind, _ in VARIANTS:
        runs = results[label]
        secs = statistics.median(r["seconds"] for r in runs)
        if kind is None:
            lines.append(f"| {label} | | {secs:.2f} | 1.00x | | | |")
            continue
        last = runs[-1]
        lines.append(f"| {label} | {last['partitions_per_asset']} | {secs:.2f} | {secs / core:.2f}x | "
                     f"{last['events']} | {last['materializations']} | {last['planned']} |")
    text = "\n".join(lines) + "\n"
    write_results(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
