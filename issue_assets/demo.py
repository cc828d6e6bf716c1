"""The offline demo behind `make demo`: simulated (or shared) exports, the replay server, Dagster."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from issue_assets import config


def _exports(shared_data: str | None, n_issues: int, echo) -> tuple[list[Path], list[Path]]:
    if shared_data:
        folder = Path(shared_data)
        issues = sorted(folder.glob("*_issues.jsonl*"))
        if not issues:
            raise SystemExit(f"no *_issues.jsonl[.gz] exports in {folder}")
        return issues, sorted(folder.glob("*_comments.jsonl*"))
    from issue_assets.github.simulate import simulate_repository, write_export

    out = config.home() / "simulated"
    repo = "demo-org/demo-project"
    # The history ends a week ago, so recent daily partitions hold data and some issues are still open.
    first = (datetime.now(UTC) - timedelta(days=727)).strftime("%Y-%m-01T00:00:00Z")
    issues, comments = simulate_repository(repo, n_issues=n_issues, seed=0, start=first, days=720)
    ipath = write_export(issues, out / "demo-org__demo-project_issues.jsonl.gz")
    cpath = write_export(comments, out / "demo-org__demo-project_comments.jsonl.gz")
    echo(f"simulated DEMO data (not a real repository): {repo}, {len(issues)} issues, {len(comments)} comments")
    return [ipath], [cpath]


def run_demo(n_issues: int = 3000, shared_data: str | None = None, trials: int = 15,
             echo: Callable[[str], None] = print) -> dict:
    import dagster as dg

    from issue_assets.cli import ingest_repos
    from issue_assets.github.replay import ReplayServer
    from issue_assets.pipeline import format_summary, run_pipeline

    home = config.home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home"))
    dagster_home = Path(config.dagster_home())
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        # SQLite storage under DAGSTER_HOME (the default); deploy/dagster.yaml is the PostgreSQL one.
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    issue_files, comment_files = _exports(shared_data, n_issues, echo)
    began = time.perf_counter()
    with ReplayServer.from_files(issue_files, comment_files) as server:
        echo(f"replay server on {server.url} serving {', '.join(server.repos)}")
        with dg.DagsterInstance.get() as instance:
            summary = run_pipeline(list(server.repos), api_url=server.url, trials=trials, instance=instance,
                                   echo=echo)
        catch_up = ingest_repos(list(server.repos), api_url=server.url)
        server.reset_stats()
        poll = ingest_repos(list(server.repos), api_url=server.url)
        stats_poll = server.stats()
    seconds = time.perf_counter() - began
    echo("")
    for line in format_summary(summary):
        echo(line)
    first = sum(p["issues"]["requests"] + p["comments"]["requests"] for p in catch_up)
    echo(f"incremental sync from the stored cursor: {first} page requests")
    calls = sum(p["issues"]["requests"] + p["comments"]["requests"] for p in poll)
    not_mod = sum(p["issues"]["not_modified"] + p["comments"]["not_modified"] for p in poll)
    echo(f"incremental poll with nothing new: {calls} requests, {not_mod} answered 304 "
         f"(server saw {stats_poll['by_status']})")
    echo(f"done in {seconds:.1f}s; lake at {config.lake_uri()}, models at {config.model_store_uri()}")
    echo(f"see it in the UI: DAGSTER_HOME={dagster_home} .venv/bin/dagster dev -w workspace.yaml "
         "(or `make dev`), then http://127.0.0.1:3000")
    summary["poll"] = stats_poll
    summary["seconds"] = seconds
    return summary
