"""`issue-assets`: the command line of the platform.

Quiet by default: long commands show one progress line per step; the runs' event logs and the library logs
go to a file under ISSUE_ASSETS_HOME/logs whose path is printed (`--verbose` shows them live). An expected
failure prints one `error:` line and exits 1 (`--debug` shows the traceback). Heavy modules are imported
by the commands that need them, so `repos list`, `model list` and `status` start fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

import click

from issue_assets import config

log = logging.getLogger("issue_assets.cli")


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Conditions a user can meet with a correct installation: bad input, unreachable or refusing services,
    a failed run. Imported here so that listing them does not slow the commands that never meet them."""
    from issue_assets.application import StepFailed
    from issue_assets.github.client import GitHubError
    from issue_assets.lake.store import StoreError

    errors: list[type[BaseException]] = [ValueError, StepFailed, GitHubError, StoreError, OSError]
    if "issue_assets.registry.registry" in sys.modules:
        errors.append(sys.modules["issue_assets.registry.registry"].RegistryError)
    if "dagster" in sys.modules:
        errors.append(sys.modules["dagster"].DagsterError)
    return tuple(errors)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if ctx.meta.get("issue_assets.debug") or not isinstance(exc, _expected_errors()):
                raise
            click.echo(f"error: {exc}", err=True)
            click.echo("(run with --debug for the traceback)", err=True)
            ctx.exit(1)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show the runs' event logs and debug logging live on stderr.")
@click.option("--debug", is_flag=True, help="Print the traceback of any failure.")
@click.pass_context
def main(ctx: click.Context, verbose: bool, debug: bool) -> None:
    """Learn which new GitHub issues will be closed within 7 days; keep the model honest and current."""
    ctx.meta["issue_assets.debug"] = debug
    ctx.meta["issue_assets.verbose"] = verbose
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.addHandler(console)
    logging.captureWarnings(True)
    for noisy in ("urllib3", "botocore", "boto3", "alembic", "numba", "matplotlib", "PIL", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _session(command: str):
    """A Session on the local instance whose runs (and this process's logs) go to a new log file."""
    from issue_assets import application

    ctx = click.get_current_context()
    path = application.new_log_path(command)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    click.echo(f"log: {path}" + ("" if ctx.meta.get("issue_assets.verbose") else "  (--verbose shows it live)"),
               err=True)
    inst = ctx.with_resource(application.instance())
    return application.Session(inst, path, verbose=bool(ctx.meta.get("issue_assets.verbose")))


def _steps():
    from issue_assets.display import Steps

    return Steps()


# ---- data for tests, the demo and benchmarks ------------------------------------------------------

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
@click.option("--live", "live_interval", default=None, type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="Keep adding activity (new issues, comments, closes) to every repository, one event every "
                   "SECONDS on average.")
def replay_server(data_files, comments_files, host, port, latency_ms, fault_rate, seed, rate_limit,
                  rate_limit_window, secondary_limit_rate, require_token_env, live_interval) -> None:
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
          secondary_limit_rate=secondary_limit_rate, token=token, live_interval=live_interval, live_seed=seed)


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

    check_repo(repo)
    out = Path(out_dir) if out_dir else config.home() / "simulated"
    issues, comments = simulate_repository(repo, n_issues=n_issues, seed=seed)
    ipath = write_export(issues, out / f"{repo_slug(repo)}_issues.jsonl.gz")
    cpath = write_export(comments, out / f"{repo_slug(repo)}_comments.jsonl.gz")
    click.echo(f"simulated (demo data, not a real repository) {repo}: {len(issues)} issues -> {ipath}")
    click.echo(f"                                                {len(comments)} comments -> {cpath}")


# ---- repositories ---------------------------------------------------------------------------------

@main.group()
def repos() -> None:
    """Repositories and the API each one is fetched from (stored in the lake: sources/repositories.json)."""


@repos.command("add")
@click.argument("names", nargs=-1, required=True)
@click.option("--api-url", default=None, help="The API the repositories live at (default GITHUB_API_URL, else "
                                              "https://api.github.com): GitHub Enterprise https://HOST/api/v3, or a "
                                              "replay server.")
@click.option("--token-env", default=None, metavar="VAR",
              help="Environment variable holding the token for this API (default: GITHUB_TOKEN, only for "
                   "GITHUB_API_URL's host).")
def repos_add(names, api_url, token_env) -> None:
    """Bind repositories to their API and add them as partitions; the daemon then ingests their history."""
    from issue_assets import application, validate
    from issue_assets.ingest import sources

    validate.repositories(names)  # everything is checked before anything is stored
    url = sources.check_api_url(api_url or config.api_url())
    with application.instance() as inst:
        for name in names:
            source = application.register(inst, name, url, token_env=token_env)
            click.echo(f"{name} -> {source.describe()}")


@repos.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the bindings as JSON.")
def repos_list(as_json) -> None:
    """Every registered repository and its source."""
    from issue_assets.ingest import sources

    bound = sources.all_sources()
    if as_json:
        click.echo(json.dumps({repo: s.as_dict() for repo, s in bound.items()}, indent=2))
        return
    if not bound:
        click.echo("no repositories registered: issue-assets repos add OWNER/NAME [--api-url URL]")
    for repo, source in bound.items():
        click.echo(f"{repo}  {source.describe()}")


@repos.command("remove")
@click.argument("names", nargs=-1, required=True)
def repos_remove(names) -> None:
    """Forget repositories (their binding and partition); the lake keeps their data."""
    from issue_assets import application
    from issue_assets.ingest import layout

    for name in names:
        layout.check_repo(name)
    with application.instance() as inst:
        for name in names:
            removed = application.unregister(inst, name)
            click.echo(f"{name}: {'removed' if removed else 'was not registered'}")


# ---- running the pipeline -------------------------------------------------------------------------

def _repos_or_env(repos) -> list[str]:
    """The repositories named (or ISSUE_ASSETS_REPOS), checked, and a writable home: before any work."""
    from issue_assets import validate

    repos = list(repos) or config.repos()
    if not repos:
        _fail("name at least one --repo OWNER/NAME (or set ISSUE_ASSETS_REPOS)")
    validate.repositories(repos)
    validate.writable_folder(config.home())
    return repos


@main.command()
@click.option("--repo", "repos", multiple=True, help="OWNER/NAME; repeatable (default ISSUE_ASSETS_REPOS).")
@click.option("--api-url", default=None, help="Bind the repositories to this API first (default: keep their binding).")
@click.option("--full", is_flag=True, help="Sweep the whole history again instead of since the cursor.")
def ingest(repos, api_url, full) -> None:
    """Fetch issues and comments (whole history first, then only what changed) and merge the current state:
    ingest_job and refresh_job per repository."""
    from issue_assets import application

    repos = _repos_or_env(repos)
    session = _session("ingest")
    steps = _steps()
    for repo in repos:
        application.ensure_registered(session.instance, repo, api_url)
        with steps.step(f"ingest_job {repo}") as line:
            fetched = application.ingest(session, repo, full=full)
            line.summary = application.describe_ingest(fetched)
        with steps.step(f"refresh_job {repo}") as line:
            current = application.refresh(session, repo)
            line.summary = application.describe_refresh(current)
        i, c = fetched.meta("raw_issues"), fetched.meta("raw_comments")
        ci, cc = current.meta("issues"), current.meta("issue_comments")
        click.echo(f"{repo}: {ci.get('rows', 0)} issues (+{ci.get('inserted', 0)} new, {ci.get('updated', 0)} updated, "
                   f"{i.get('rejected', 0)} rejected), {cc.get('rows', 0)} comments (+{cc.get('inserted', 0)} new); "
                   f"{i.get('requests', 0) + c.get('requests', 0)} requests, "
                   f"{i.get('not_modified_304', 0) + c.get('not_modified_304', 0)} answered 304")


@main.command()
@click.option("--repo", "repos", multiple=True, help="OWNER/NAME; repeatable (default ISSUE_ASSETS_REPOS).")
@click.option("--trials", default=20, show_default=True, help="Optuna trials of the as-of study.")
@click.option("--api-url", default=None, help="Bind the repositories to this API first (default: keep their binding).")
@click.option("--as-of", default=None, help="As-of day of the training set (default today, UTC).")
def run(repos, trials, api_url, as_of) -> None:
    """Everything for these repositories, as named runs on the local instance: ingest_job, refresh_job,
    training_job (as of today), predictions_job."""
    from issue_assets import application, validate

    validate.trials(trials)
    as_of = validate.as_of(as_of)
    repos = _repos_or_env(repos)
    session = _session("run")
    for repo in repos:
        application.ensure_registered(session.instance, repo, api_url)
    application.run_all(session, repos, trials=trials, as_of=as_of, step=_steps().step)


@main.command()
@click.option("--issues", "n_issues", default=3000, show_default=True, help="Size of the simulated repository.")
@click.option("--shared-data", default=None, type=click.Path(file_okay=False),
              help="Use the real exports in this folder instead of simulating (e.g. ../shared/data).")
@click.option("--trials", default=15, show_default=True, help="Optuna trials of the tuning study.")
def demo(n_issues, shared_data, trials) -> None:
    """Offline demo: simulate a repository, serve it on loopback, run the platform's jobs, summarize."""
    from issue_assets.demo import run_demo, summary_lines

    click.echo("issue-assets demo: a simulated repository on a loopback replay server, the platform's asset jobs "
               f"on the local Dagster instance ({config.dagster_home()})")
    session = _session("demo")
    summary = run_demo(session, _steps(), n_issues=n_issues, shared_data=shared_data, trials=trials)
    for line in summary_lines(summary):
        click.echo(line)


@main.command()
@click.option("--port", default=3000, show_default=True, help="Port of the Dagster UI.")
@click.option("--live", "live_interval", default=20.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between new events (issue, comment, close) on each simulated repository.")
def dev(port, live_interval) -> None:
    """The Dagster UI and daemon on the local instance (`dagster dev`), with a live replay server for every
    repository the demo (or `repos add` of exports) bound to one: new activity keeps arriving, and the
    sensors follow it with nobody at the UI."""
    import subprocess

    from issue_assets import application
    from issue_assets.github.replay import ReplayServer
    from issue_assets.ingest import sources

    served = {repo: s for repo, s in sources.all_sources().items() if s.exports}
    server = None
    if served:
        missing = [p for s in served.values() for kind in ("issues", "comments") for p in s.exports.get(kind, [])
                   if not Path(p).exists()]
        if missing:
            _fail(f"the exports of {', '.join(served)} are gone ({missing[0]}); run `make demo` again")
        server = ReplayServer.from_files([p for s in served.values() for p in s.exports.get("issues", [])],
                                         [p for s in served.values() for p in s.exports.get("comments", [])]).start()
        for repo, source in served.items():
            sources.add(repo, server.url, token_env=source.token_env, simulated=source.simulated,
                        exports=source.exports)
            if source.simulated:
                server.start_live(repo, interval=live_interval)
            click.echo(f"{repo}: served at {server.url}" + (f", a new event every ~{live_interval:g}s"
                                                            if source.simulated else ""))
    home = application.ensure_dagster_home()
    workspace = Path(__file__).resolve().parents[1] / "workspace.yaml"
    target = ["-w", str(workspace)] if workspace.exists() else ["-m", "issue_assets.definitions"]
    exe = Path(sys.executable).with_name("dagster")
    click.echo(f"dagster dev on http://127.0.0.1:{port} with DAGSTER_HOME={home} (Ctrl-C stops both)")
    # Its own process group: a stop (Ctrl-C, SIGTERM) reaches dagster dev, which shuts down its webserver,
    # daemon and code servers; whatever is left of the group after that is ended with it.
    # Dagster's own CLI warns that `dagster dev` is superseded by `dg dev` (a separate package); nothing to act on.
    env = {**os.environ, "DAGSTER_HOME": str(home),
           "PYTHONWARNINGS": "ignore:Function `dev_command` is superseded"}
    # SIGINT restored to its default: started from a background shell it would be inherited as ignored, and
    # dagster dev (which maps SIGTERM to SIGINT) could then not be stopped.
    proc = subprocess.Popen([str(exe if exe.exists() else "dagster"), "dev", *target, "-p", str(port)], env=env,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stop = {"signal": None}

    def forward(signum, _frame) -> None:
        stop["signal"] = signum
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    try:
        code = proc.wait()
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if server is not None:
            server.stop()
    sys.exit(0 if stop["signal"] else code)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json) -> None:
    """Per repository: its source, last ingest, open issues (inside their window / decided); new labels
    against the retraining threshold; the champion; freshness; the last promotion decisions."""
    from issue_assets import status as view

    lake = view.collect_lake()
    if not as_json:  # what the lake and the registry say first; the instance's records follow
        for line in view.format_lake(lake):
            click.echo(line)
    from issue_assets import application

    with application.instance() as inst:
        result = lake | view.collect_instance(inst, lake)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    for line in view.format_instance(result):
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
    from issue_assets.serving.service import run_server

    click.echo(f"serving predictions on http://{host}:{port} (OpenAPI at /docs)", err=True)
    run_server(host, port, registry=_registry(), max_batch=max_batch,
               max_body_bytes=max_body_bytes, reload_interval_s=reload_interval)


@main.command()
@click.option("--root", default=".", show_default=True, type=click.Path(file_okay=False))
def docs(root) -> None:
    """Regenerate docs/FEATURES.md from the feature registry."""
    from issue_assets.docs import write_docs

    click.echo(f"wrote {write_docs(Path(root))}")


@main.command()
@click.option("--repo", "repos", multiple=True, help="OWNER/NAME; repeatable (default: every repository the lake holds).")
@click.option("--rebuild", is_flag=True, help="Also recompute the derived tables (current state, features) that look whole.")
@click.option("--offline", is_flag=True, help="Do not re-read damaged raw parts from the sources now; the next "
                                                "ingest does (the manifest records where to start).")
def repair(repos, rebuild, offline) -> None:
    """Check every lake file of the repositories and restore the damaged ones from their source: raw parts
    from GitHub, manifests from their parts, current tables from the raw log, features from the current
    tables, prediction batches from their twin. Exits 1 if anything could not be restored."""
    from issue_assets import validate
    from issue_assets.ingest import sources
    from issue_assets.lake.store import open_store
    from issue_assets.repair import repair_lake

    store = open_store(config.lake_uri())

    def client_for(repo: str):
        """The repository's own source, or None (offline, or not bound: the next ingest re-reads)."""
        if offline or not sources.source_of(repo, store).bound:
            return None
        return sources.client_for(repo, store, save_validators=False, max_retries=2)

    reports = repair_lake(store, validate.repositories(repos) if repos else None, client_for=client_for,
                          rebuild=rebuild)
    if not reports:
        click.echo(f"no repository in the lake at {store.uri}")
        return
    failed = False
    for report in reports:
        for line in report.lines():
            click.echo(line)
        failed = failed or not report.ok
    if failed:
        sys.exit(1)


# ---- the model registry ---------------------------------------------------------------------------

@main.group()
def model() -> None:
    """The model registry (MODEL_STORE, default ISSUE_ASSETS_HOME/registry)."""


def _registry():
    from issue_assets.registry import default_registry

    return default_registry()


@model.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the versions and their states as JSON.")
def model_list(as_json) -> None:
    """Every registered version: its state (champion, former champion, rejected, failed check, candidate),
    as-of day and test ROC AUC at age 0; the reason of a rejection."""
    from issue_assets.registry import RegistryError
    from issue_assets.registry.states import test_roc_auc, version_states

    registry = _registry()
    try:
        champion = registry.champion()
    except RegistryError as exc:
        click.echo(f"warning: {exc}", err=True)
        pointer = registry.champion_pointer()
        champion = pointer["version"] if pointer else None
    states = version_states(registry.history(), champion)
    rows = []
    for version in registry.list_versions():
        meta = registry.get_metadata(version)
        state = states.get(version)
        rows.append({"version": version, "state": state.state if state else None,
                     "reason": state.reason if state else None, "as_of": meta.get("as_of"),
                     "test_roc_auc": test_roc_auc(meta)})
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no model versions registered yet")
        return
    for r in rows:
        auc = r["test_roc_auc"]
        shown = f"{auc:.4f}" if isinstance(auc, float) else "n/a"
        why = f"  ({r['reason']})" if r["state"] in ("rejected", "failed check") and r["reason"] else ""
        click.echo(f"{'*' if r['state'] == 'champion' else ' '} {r['version']}  {r['state']:<15}  as of "
                   f"{r['as_of']}  test ROC AUC {shown}{why}")


@model.command("show")
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the version's metadata as JSON.")
def model_show(version, as_json) -> None:
    """A version's metadata (the champion by default)."""
    registry = _registry()
    version = version or registry.champion()
    if version is None:
        _fail("no champion yet: nothing has been promoted")
    meta = dict(registry.get_metadata(version))
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
    from issue_assets.registry.reports import write_reports

    registry = _registry()
    pointer = registry.promote(version, {"promote": True, "reason": reason, "operator": True})
    write_reports(registry, [version, pointer.get("previous")])
    click.echo(f"champion is now {pointer.get('version', version)}")


@model.command("repair")
def model_repair() -> None:
    """Restore damaged or missing registry files (history, metadata, champion pointer, latest_model.json)
    from the records written before them. Exits 1 if anything could not be restored."""
    from issue_assets.registry.repair import repair_registry

    report = repair_registry(_registry())
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        sys.exit(1)


@model.command("rollback")
@click.option("--reason", default="operator rollback", show_default=True)
def model_rollback(reason) -> None:
    """Make the previous champion the champion again."""
    from issue_assets.registry.reports import write_reports

    registry = _registry()
    pointer = registry.rollback(reason)
    write_reports(registry, [pointer.get("version"), pointer.get("previous")])
    click.echo(f"champion is now {pointer.get('version')}")


if __name__ == "__main__":
    main()
