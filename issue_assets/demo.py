"""The offline demo behind `make demo`: simulated (or shared) exports served by the replay server on loopback,
each repository bound to it, then the platform's asset jobs on the local Dagster instance, a poll that
finds nothing new, and a short summary of what happened."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from issue_assets import application, config
from issue_assets.ingest import layout

DEMO_REPO = "demo-org/demo-project"


def exports(shared_data: str | None, n_issues: int) -> dict[str, dict]:
    """repo -> {"issues": [paths], "comments": [paths], "simulated": bool}."""
    from issue_assets.github.export import iter_export, repo_of

    if shared_data:
        folder = Path(shared_data)
        found = sorted(folder.glob("*_issues.jsonl*"))
        if not found:
            raise ValueError(f"no *_issues.jsonl[.gz] exports in {folder}")
        out = {}
        for path in found:
            repo = next((repo_of(item) for item in iter_export(path)), None)
            if repo is None:
                raise ValueError(f"{path} holds no item with a repository_url")
            comments = sorted(folder.glob(path.name.replace("_issues.", "_comments.")))
            out[repo] = {"issues": [path.resolve()], "comments": [c.resolve() for c in comments],
                         "simulated": False}
        return out
    from issue_assets.github.simulate import simulate_repository, write_export

    out_dir = config.home() / "simulated"
    # Up to now: recent issues are still inside their 7-day window, and `make dev` carries on from here.
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    issues, comments = simulate_repository(DEMO_REPO, n_issues=n_issues, seed=0,
                                           start=(end - timedelta(days=720)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                           days=720)
    slug = layout.repo_slug(DEMO_REPO)
    return {DEMO_REPO: {"issues": [write_export(issues, out_dir / f"{slug}_issues.jsonl.gz")],
                        "comments": [write_export(comments, out_dir / f"{slug}_comments.jsonl.gz")],
                        "simulated": True, "counts": (len(issues), len(comments))}}


def run_demo(session: application.Session, steps, *, n_issues: int = 3000, shared_data: str | None = None,
             trials: int = 15) -> dict:
    """Everything the demo does; returns what its summary reports. `steps` shows progress (display.Steps)."""
    from issue_assets.github.replay import ReplayServer
    from issue_assets.ingest import poll
    from issue_assets.lake.store import open_store

    began = time.perf_counter()
    with steps.step("simulate" if not shared_data else f"read exports in {shared_data}") as line:
        data = exports(shared_data, n_issues)
        line.summary = "; ".join(
            f"{repo}: {d['counts'][0]:,} issues and pull requests, {d['counts'][1]:,} comments (DEMO data, not a real "
            "repository)" if d["simulated"] else f"{repo}: {', '.join(p.name for p in d['issues'] + d['comments'])}"
            for repo, d in data.items())
    with steps.step("replay server") as line:
        server = ReplayServer.from_files([p for d in data.values() for p in d["issues"]],
                                         [p for d in data.values() for p in d["comments"]]).start()
        for repo, d in data.items():
            application.register(session.instance, repo, server.url, simulated=d["simulated"],
                                 exports={"issues": d["issues"], "comments": d["comments"]})
        line.summary = f"{server.url} serves {', '.join(server.repos)}; bound to it (issue-assets repos list)"
    try:
        summary = application.run_all(session, server.repos, trials=trials, step=steps.step)
        with steps.step("poll with nothing new") as line:
            used = server.rate_limit_status()["used"]
            report = poll.poll(server.repos, open_store(config.lake_uri()))
            line.summary = (f"{report.requests} conditional requests, {report.counts().get('unchanged', 0)} answered "
                            f"304 (no change); the server's rate limit used {server.rate_limit_status()['used'] - used} "
                            "points for them (GitHub charges a 304 only without a token)")
        summary["poll"] = report
        summary["server"] = server.stats()
    finally:
        server.stop()
    summary["seconds"] = time.perf_counter() - began
    return summary


def summary_lines(summary: dict) -> list[str]:
    """The demo's closing summary: every number read from what was stored or served."""
    import pandas as pd

    from issue_assets.features.catalog import REFERENCE_FEATURES
    from issue_assets.ingest.current import load_current
    from issue_assets.lake.store import open_store
    from issue_assets.registry import default_registry
    from issue_assets.registry.reports import report_key
    from issue_assets.registry.states import test_roc_auc
    from issue_assets.status import window_split

    store = open_store(config.lake_uri())
    registry = default_registry()
    by_endpoint = summary["server"]["by_endpoint_status"]
    requests = " · ".join(
        f"{endpoint} {sum(codes.values()):,} ({codes.get('304', 0):,} answered 304)"
        for endpoint, codes in sorted(by_endpoint.items()) if endpoint in ("issues", "comments"))
    lines = ["", "Summary", f"  requests    {requests} (as the replay server counted them, poll included)"]
    now = pd.Timestamp.now(tz="UTC")
    for repo, r in summary["repos"].items():
        split = window_split(load_current(store, "issues", repo), now)
        scored = r["predictions"].meta("open_issue_predictions")
        lines.append(f"  open        {repo}: {split['open']:,} open = {split['pull_requests']:,} pull requests + "
                     f"{split['in_window']:,} issues inside their 7-day window + {split['decided']:,} decided "
                     f"(open for more than 7 days)")
        lines.append(f"  predictions {scored.get('open_issues', 0):,} rows by {scored.get('model_version')} -> "
                     f"{scored.get('csv')}")
    decision = summary["training"].meta("production_model")
    version = summary["training"].meta("candidate_model").get("version")
    meta = registry.get_metadata(version)
    metrics, refs = meta.get("metrics", {}), meta.get("reference_metrics", {})
    leaky = ", ".join(f.name for f in REFERENCE_FEATURES if "leak" in f.description)
    age0 = test_roc_auc(meta)
    lines.append(f"  model       {version}: test ROC AUC {metrics.get('roc_auc', float('nan')):.4f} over every age "
                 + (f"({age0:.4f} at age 0) " if age0 is not None else "") + "vs base rate "
                 f"{refs.get('base_rate', {}).get('roc_auc', float('nan')):.4f} and older projects' features "
                 f"{refs.get('older_projects', {}).get('roc_auc', float('nan')):.4f} (LEAKY: {leaky} are read long "
                 "after the issue was opened)")
    lines.append(f"  promotion   {'PROMOTED' if decision.get('promoted') else 'not promoted'}: {decision.get('reason')}")
    if registry.store.exists(report_key(version)):
        lines.append(f"  report      {registry.store.uri}/{report_key(version)}")
    lines.append(f"  UI          make dev -> http://127.0.0.1:3000 (DAGSTER_HOME={config.dagster_home()}): the runs "
                 "above by job name; a replay server keeps adding activity and the daemon follows it")
    lines.append(f"  done in {summary['seconds']:.1f}s")
    return lines
