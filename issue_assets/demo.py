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


def run_demo(n_issues: int = 3000, shared_data: str | None = None, echo: Callable[[str], None] = print) -> dict:
    import dagster as dg

    from issue_assets.assets import ingestion
    from issue_assets.cli import ingest_repos
    from issue_assets.github.replay import ReplayServer
    from issue_assets.resources import GitHubResource, LakeResource

    home = config.home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    issue_files, comment_files = _exports(shared_data, n_issues, echo)
    began = time.perf_counter()
    with ReplayServer.from_files(issue_files, comment_files) as server:
        echo(f"replay server on {server.url} serving {', '.join(server.repos)}")
        resources = {"lake": LakeResource(), "github": GitHubResource(api_url=server.url)}
        yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
        summary = {}
        with dg.DagsterInstance.get() as instance:
            known = set(instance.get_dynamic_partitions("repos"))
            instance.add_dynamic_partitions("repos", [r for r in server.repos if r not in known])
            for repo in server.repos:
                echo(f"{repo}: backfilling the whole history in one run (raw_issues, raw_comments)")
                result = dg.materialize(
                    [ingestion.raw_issues, ingestion.raw_comments], instance=instance, resources=resources,
                    tags={"dagster/asset_partition_range_start": f"{config.start_date()}|{repo}",
                          "dagster/asset_partition_range_end": f"{yesterday}|{repo}"},
                )
                if not result.success:
                    raise SystemExit(f"ingestion of {repo} failed; see the run in the Dagster UI")
                echo(f"{repo}: merging the current state (issues, issue_comments)")
                current = dg.materialize([ingestion.issues, ingestion.issue_comments], instance=instance,
                                         resources=resources, partition_key=repo)
                if not current.success:
                    raise SystemExit(f"current state of {repo} failed")
                meta = current.asset_materializations_for_node("issues")[0].metadata
                summary[repo] = {"issues": meta["rows"].value, "open": meta.get("open").value if "open" in meta else 0,
                                 "pull_requests": meta["pull_requests"].value if "pull_requests" in meta else 0}
            stats_full = server.stats()
            server.reset_stats()
            poll = ingest_repos(list(server.repos), api_url=server.url)
            stats_poll = server.stats()
    seconds = time.perf_counter() - began
    echo("")
    echo("== issue_assets demo summary ==")
    for repo, s in summary.items():
        echo(f"{repo}: {s['issues']} items in the current state ({s['pull_requests']} pull requests, {s['open']} open)")
    echo(f"full history backfill: {stats_full['requests']} requests to the replay server "
         f"({stats_full['by_endpoint']})")
    calls = sum(p["issues"]["requests"] + p["comments"]["requests"] for p in poll)
    not_mod = sum(p["issues"]["not_modified"] + p["comments"]["not_modified"] for p in poll)
    echo(f"incremental poll with nothing new: {calls} requests, {not_mod} answered 304 "
         f"(server saw {stats_poll['by_status']})")
    echo(f"done in {seconds:.1f}s; lake at {config.lake_uri()}")
    echo(f"see it in the UI: DAGSTER_HOME={os.environ['DAGSTER_HOME']} .venv/bin/dagster dev  (then http://127.0.0.1:3000)")
    return {"summary": summary, "full": stats_full, "poll": stats_poll, "seconds": seconds}
