"""`issue-assets`: the command line of the platform."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import click

from issue_assets import config


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
def main(verbose: bool) -> None:
    """Learn which new GitHub issues will be closed within 7 days; keep the model honest and current."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("urllib3", "botocore", "boto3", "alembic", "optuna"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@main.command("replay-server")
@click.option("--data", "data_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Issues export (JSON lines or array, gzip or not); repeatable.")
@click.option("--comments", "comments_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Comments export; repeatable.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, help="0 picks a free port and prints it.")
@click.option("--latency-ms", default=0.0, show_default=True, help="Delay added to every API response.")
@click.option("--fault-rate", default=0.0, show_default=True, help="Share of requests answered 502, reset or truncated.")
@click.option("--seed", default=0, show_default=True, help="Seed of the fault and secondary-limit draws.")
@click.option("--rate-limit", default=5000, show_default=True, help="Primary rate-limit budget per window.")
@click.option("--rate-limit-window", default=3600.0, show_default=True, help="Seconds before the budget refills.")
@click.option("--secondary-limit-rate", default=0.0, show_default=True,
              help="Share of requests answered 403/429 with retry-after.")
@click.option("--require-token-env", default=None, metavar="VAR",
              help="Require the bearer token held in this environment variable (401 otherwise).")
def replay_server(data_files, comments_files, host, port, latency_ms, fault_rate, seed, rate_limit,
                  rate_limit_window, secondary_limit_rate, require_token_env) -> None:
    """Serve exports through GitHub's REST endpoints on loopback (tests, demo, benchmarks)."""
    from issue_assets.github.replay import serve

    if not data_files and not comments_files:
        _fail("give at least one --data or --comments file")
    token = None
    if require_token_env:
        token = config.env(require_token_env)
        if not token:
            _fail(f"environment variable {require_token_env} is empty")
    serve(list(data_files), list(comments_files), host, port, latency_ms=latency_ms, fault_rate=fault_rate,
          seed=seed, rate_limit=rate_limit, rate_limit_window=rate_limit_window,
          secondary_limit_rate=secondary_limit_rate, token=token)


@main.command()
@click.option("--repo", default="demo-org/demo-project", show_default=True, help="OWNER/NAME of the simulated repository.")
@click.option("--issues", "n_issues", default=3000, show_default=True, help="How many issues and pull requests.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for the exports (default ISSUE_ASSETS_HOME/simulated).")
def simulate(repo, n_issues, seed, out_dir) -> None:
    """Generate a deterministic, realistic DEMO repository history in GitHub's JSON shape."""
    from issue_assets.github.simulate import simulate_repository, write_export
    from issue_assets.ingest.layout import check_repo, repo_slug

    try:
        check_repo(repo)
    except ValueError as exc:
        _fail(str(exc))
    out = Path(out_dir) if out_dir else config.home() / "simulated"
    issues, comments = simulate_repository(repo, n_issues=n_issues, seed=seed)
    ipath = write_export(issues, out / f"{repo_slug(repo)}_issues.jsonl.gz")
    cpath = write_export(comments, out / f"{repo_slug(repo)}_comments.jsonl.gz")
    click.echo(f"simulated (demo data, not a real repository) {repo}: {len(issues)} issues -> {ipath}")
    click.echo(f"                                                {len(comments)} comments -> {cpath}")


def _progress(kind: str, info: dict) -> None:
    if kind == "wait":
        click.echo(f"  waiting {info.get('seconds', 0):.1f}s: {info.get('reason', '')}", err=True)
    elif kind == "retry":
        click.echo(f"  retry: {info.get('reason', info)}", err=True)


@contextmanager
def _client(api_url: str | None):
    from issue_assets.github.client import GitHubClient
    from issue_assets.github.conditional_cache import ConditionalCache

    home = config.home()
    home.mkdir(parents=True, exist_ok=True)
    client = GitHubClient(api_url or config.api_url(), config.github_token(),
                          cache=ConditionalCache(home / "http_cache.json"), on_event=_progress)
    try:
        yield client
    finally:
        client.close()


def ingest_repos(repos: list[str], api_url: str | None = None, full: bool = False) -> list[dict]:
    """Incremental sync (whole history the first time) of issues and comments, then the current state."""
    from issue_assets.github.client import GitHubError
    from issue_assets.ingest.current import merge_current
    from issue_assets.ingest.layout import check_repo
    from issue_assets.ingest.sync import sync_incremental, sync_window
    from issue_assets.lake.store import open_store

    store = open_store(config.lake_uri())
    summaries = []
    with _client(api_url) as client:
        for repo in repos:
            check_repo(repo)
            began = time.perf_counter()
            try:
                client.get_repo(repo)
            except GitHubError as exc:
                raise click.ClickException(str(exc)) from None
            line = {"repo": repo}
            for kind in ("issues", "comments"):
                def show(msg, _kind=kind):
                    click.echo(f"  {msg}", err=True)
                sync = (sync_window(client, store, repo, kind, None, None, on_progress=show) if full
                        else sync_incremental(client, store, repo, kind, on_progress=show))
                merged = merge_current(store, repo, kind)
                line[kind] = {"fetched": sync.items_fetched, "new_versions": sync.new_versions,
                              "rejected": sync.rejected, "requests": sync.requests, "not_modified": sync.not_modified,
                              "rows": merged.rows, "inserted": merged.inserted, "updated": merged.updated}
            line["seconds"] = round(time.perf_counter() - began, 2)
            summaries.append(line)
    return summaries


def _print_ingest(summaries: list[dict]) -> None:
    for s in summaries:
        i, c = s["issues"], s["comments"]
        click.echo(f"{s['repo']}: {i['rows']} issues (+{i['inserted']} new, {i['updated']} updated, {i['rejected']} rejected), "
                   f"{c['rows']} comments (+{c['inserted']} new); {i['requests'] + c['requests']} requests, "
                   f"{i['not_modified'] + c['not_modified']} answered 304; {s['seconds']}s")


@main.command()
@click.option("--repo", "repos", multiple=True, help="OWNER/NAME; repeatable (default ISSUE_ASSETS_REPOS).")
@click.option("--api-url", default=None, help="GitHub API base URL (default GITHUB_API_URL or api.github.com).")
@click.option("--full", is_flag=True, help="Sweep the whole history again instead of since the cursor.")
def ingest(repos, api_url, full) -> None:
    """Fetch issues and comments (whole history first, then only what changed) into the lake."""
    repos = list(repos) or config.repos()
    if not repos:
        _fail("name at least one --repo OWNER/NAME (or set ISSUE_ASSETS_REPOS)")
    try:
        summaries = ingest_repos(repos, api_url, full)
    except ValueError as exc:
        _fail(str(exc))
    _print_ingest(summaries)


@main.group()
def repos() -> None:
    """Repository partitions of the Dagster instance (DAGSTER_HOME)."""


@repos.command("add")
@click.argument("names", nargs=-1, required=True)
def repos_add(names) -> None:
    """Register repositories as partitions (the UI can then backfill them)."""
    import dagster as dg

    from issue_assets.ingest.layout import check_repo

    try:
        for name in names:
            check_repo(name)
    except ValueError as exc:
        _fail(str(exc))
    with dg.DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions("repos"))
        new = [n for n in names if n not in known]
        if new:
            instance.add_dynamic_partitions("repos", new)
        click.echo(f"registered {len(new)} new repositories ({len(known) + len(new)} in all)")


@repos.command("list")
def repos_list() -> None:
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        for name in instance.get_dynamic_partitions("repos"):
            click.echo(name)


@main.command()
@click.option("--issues", "n_issues", default=3000, show_default=True, help="Size of the simulated repository.")
@click.option("--shared-data", default=None, type=click.Path(file_okay=False),
              help="Use the real exports in this folder instead of simulating (e.g. ../shared/data).")
@click.option("--trials", default=15, show_default=True, help="Optuna trials of the tuning study.")
def demo(n_issues, shared_data, trials) -> None:
    """Offline demo: simulate a repository, serve it on loopback, run the whole pipeline through Dagster."""
    from issue_assets.demo import run_demo
    from issue_assets.pipeline import PipelineError

    try:
        run_demo(n_issues=n_issues, shared_data=shared_data, trials=trials, echo=click.echo)
    except PipelineError as exc:
        _fail(str(exc))


@main.command()
@click.option("--repo", "repos", multiple=True, help="OWNER/NAME; repeatable (default ISSUE_ASSETS_REPOS).")
@click.option("--trials", default=20, show_default=True, help="Optuna trials of the as-of study.")
@click.option("--api-url", default=None, help="GitHub API base URL (default GITHUB_API_URL or api.github.com).")
@click.option("--as-of", default=None, help="As-of day of the training set (default today, UTC).")
def run(repos, trials, api_url, as_of) -> None:
    """Materialize everything for these repositories in-process: ingest, features, training set as of
    today, tuning, candidate, promotion decision; print a summary."""
    from issue_assets.ingest.layout import check_repo
    from issue_assets.pipeline import PipelineError, format_summary, run_pipeline

    repos = list(repos) or config.repos()
    if not repos:
        _fail("name at least one --repo OWNER/NAME (or set ISSUE_ASSETS_REPOS)")
    try:
        for repo in repos:
            check_repo(repo)
        summary = run_pipeline(repos, api_url=api_url, trials=trials, as_of=as_of, echo=click.echo)
    except (ValueError, PipelineError) as exc:
        _fail(str(exc))
    for line in format_summary(summary):
        click.echo(line)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--max-batch", default=1000, show_default=True, help="Most issues one POST /predict may carry.")
@click.option("--max-body-bytes", default=50_000_000, show_default=True, help="Largest request body accepted.")
@click.option("--reload-interval", default=2.0, show_default=True,
              help="Seconds between checks of the registry's champion (hot swap).")
def serve(host, port, max_batch, max_body_bytes, reload_interval) -> None:
    """HTTP prediction service (POST /predict, GET /model, /healthz, /metrics, batch predictions)."""
    from issue_assets.resources import ModelStoreResource
    from issue_assets.serving.service import run_server

    click.echo(f"serving predictions on http://{host}:{port} (OpenAPI at /docs)", err=True)
    run_server(host, port, registry=ModelStoreResource().registry(), max_batch=max_batch,
               max_body_bytes=max_body_bytes, reload_interval_s=reload_interval)


@main.command()
@click.option("--root", default=".", show_default=True, type=click.Path(file_okay=False))
def docs(root) -> None:
    """Regenerate docs/FEATURES.md from the feature registry."""
    from issue_assets.docs import write_docs

    click.echo(f"wrote {write_docs(Path(root))}")


@main.group()
def model() -> None:
    """The model registry (MODEL_STORE, default ISSUE_ASSETS_HOME/registry)."""


def _registry():
    from issue_assets.resources import ModelStoreResource

    return ModelStoreResource().registry()


@model.command("list")
def model_list() -> None:
    """Every registered version with its test AUC; * marks the champion."""
    from issue_assets.registry import RegistryError

    registry = _registry()
    try:
        champion = registry.champion()
    except RegistryError as exc:
        click.echo(f"warning: {exc}", err=True)
        champion = None
    versions = registry.list_versions()
    if not versions:
        click.echo("no model versions registered yet")
        return
    for version in versions:
        meta = registry.get_metadata(version)
        auc = (meta.get("metrics") or {}).get("roc_auc")
        shown = f"{auc:.4f}" if isinstance(auc, float) else "n/a"
        click.echo(f"{'*' if version == champion else ' '} {version}  as of {meta.get('as_of')}  test AUC {shown}")


@model.command("show")
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the version's metadata as JSON.")
def model_show(version, as_json) -> None:
    """A version's metadata (the champion by default)."""
    import json

    from issue_assets.registry import RegistryError

    registry = _registry()
    try:
        version = version or registry.champion()
        if version is None:
            _fail("no champion yet: nothing has been promoted")
        meta = registry.get_metadata(version)
    except RegistryError as exc:
        _fail(str(exc))
    meta = dict(meta)
    meta.setdefault("metrics", {}).setdefault("test_auc", meta["metrics"].get("roc_auc"))
    if as_json:
        click.echo(json.dumps(meta, indent=2, default=str))
        return
    m = meta["metrics"]
    click.echo(f"version {meta['version']} (as of {meta.get('as_of')})")
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "base_rate"):
        click.echo(f"  {key}: {m.get(key)}")
    for name, ref in (meta.get("reference_metrics") or {}).items():
        click.echo(f"  reference {name}: roc_auc {ref.get('roc_auc')}")


@model.command("promote")
@click.argument("version")
@click.option("--reason", default="operator promotion", show_default=True)
def model_promote(version, reason) -> None:
    """Make VERSION the champion (an operator override; recorded in the history)."""
    from issue_assets.registry import RegistryError

    try:
        pointer = _registry().promote(version, {"promote": True, "reason": reason, "operator": True})
    except RegistryError as exc:
        _fail(str(exc))
    click.echo(f"champion is now {pointer.get('version', version)}")


@model.command("rollback")
@click.option("--reason", default="operator rollback", show_default=True)
def model_rollback(reason) -> None:
    """Make the previous champion the champion again."""
    from issue_assets.registry import RegistryError

    try:
        pointer = _registry().rollback(reason)
    except RegistryError as exc:
        _fail(str(exc))
    click.echo(f"champion is now {pointer.get('version')}")


if __name__ == "__main__":
    main()
