"""The application layer of the CLI and the demo: the code location's asset jobs, executed in-process.

Every step is one run of a named asset job (`ingest_job`, `refresh_job`, `training_job`, `predictions_job`)
on the Dagster instance (DAGSTER_HOME, by default ISSUE_ASSETS_HOME/dagster_home), so the UI shows
what ran, by name, with its partition. No run starts another run; the order lives here, in plain code.
A run's event log goes to the session's log file (`run_file` logger), not to the terminal.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from issue_assets import config, progress
from issue_assets.ingest import layout, sources

log = logging.getLogger("issue_assets.application")

LOCAL_INSTANCE_YAML = """\
# The local Dagster instance of issue-assets: SQLite storage in this folder. Written by issue-assets on
# first use; deploy/dagster.yaml is the PostgreSQL instance of a scaled-out deployment.
telemetry:
  enabled: false
# Queued runs are launched by the daemon; it looks for them every 2 s (Dagster's default is 5).
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 2
concurrency:
  runs:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      # One ingest of a repository at a time: the poll, the daily reconciliation and a history run may ask at once.
      - key: issue_assets/ingest
        value:
          applyLimitPerUniqueValue: true
        limit: 1
      # One training chain at a time: they share the Optuna storage and the champion pointer.
      - key: issue_assets/kind
        value: training
        limit: 1
# A run whose worker never started (e.g. launched just before its daemon was killed) is failed after a
# minute, so it does not hold back what follows it; failed runs are retried twice (faults, killed workers);
# training runs are tagged not to retry a failed check.
run_monitoring:
  enabled: true
  start_timeout_seconds: 60
  poll_interval_seconds: 10
  # A run whose worker was killed stays STARTED (the default launcher cannot see its process) and would hold
  # back every run of its assets: after 30 minutes it is failed, and retried. History and training runs
  # carry longer limits (dagster/max_runtime); runs of the CLI none.
  max_runtime_seconds: 1800
run_retries:
  enabled: true
  max_retries: 2
# Runs the daemon launches print INFO and above to the console of `issue-assets dev` (Dagster's default is
# DEBUG: about 18 lifecycle lines per run, every minute under live activity). Every event is still stored
# and shown in the UI; the CLI's runs write their DEBUG event log to a file under the home.
python_logs:
  python_log_level: INFO
"""


class StepFailed(RuntimeError):
    """A run of the application failed; the message names the job, the partition and the failed step."""


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME (default ISSUE_ASSETS_HOME/dagster_home) exists, holds a dagster.yaml, and is exported."""
    home = config.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    target = home / "dagster.yaml"
    if not target.exists():
        target.write_text(LOCAL_INSTANCE_YAML)
    return home


@contextmanager
def instance():
    import dagster as dg

    ensure_dagster_home()
    with dg.DagsterInstance.get() as inst:
        yield inst


@dataclass
class StepResult:
    job: str
    partition: str | None
    run_id: str
    seconds: float
    metadata: dict[str, dict] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)

    def meta(self, asset: str) -> dict:
        return self.metadata.get(asset, {})


@dataclass
class Session:
    """An instance, the file the runs' event logs go to, and whether they also go to the terminal."""

    instance: object
    log_path: Path
    verbose: bool = False
    steps: list[StepResult] = field(default_factory=list)

    def run(self, job_name: str, *, partition_key: str | None = None, run_config: dict | None = None,
            tags: dict | None = None) -> StepResult:
        from issue_assets.definitions import defs, resources

        job = defs.resolve_job_def(job_name)
        loggers = {"run_file": {"config": {"path": str(self.log_path)}}}
        if self.verbose:
            loggers["console"] = {"config": {"log_level": "DEBUG"}}
        # The daemon must not re-run, nor time out, what the operator runs by hand (dagster.yaml).
        tags = {"dagster/max_retries": "0", "dagster/max_runtime": "0", **(tags or {})}
        began = time.perf_counter()
        # Resources from the environment as it is now (the code location read it when first imported).
        result = job.execute_in_process(run_config={**(run_config or {}), "loggers": loggers},
                                        instance=self.instance, partition_key=partition_key, tags=tags,
                                        resources=resources(), raise_on_error=False)
        seconds = time.perf_counter() - began
        where = f" [{partition_key}]" if partition_key else ""
        failed_checks = [f"{c.asset_key.to_user_string()}.{c.check_name}"
                         for c in result.get_asset_check_evaluations() if not c.passed]
        if not result.success:
            failures = [f"{e.step_key}: {_root_cause(e)}" for e in result.all_events if e.is_step_failure]
            why = failures[0] if failures else f"see run {result.run_id} in the Dagster UI"
            if failed_checks:
                why += f" (checks that did not pass: {', '.join(failed_checks)})"
            raise StepFailed(f"{job_name}{where} failed: {why} (log: {self.log_path})")
        metadata = {}
        for node in job.graph.node_dict:
            mats = result.asset_materializations_for_node(node)
            if mats:
                metadata[node] = {k: v.value for k, v in mats[-1].metadata.items()}
        step = StepResult(job_name, partition_key, result.run_id, seconds, metadata, failed_checks)
        self.steps.append(step)
        return step


def _root_cause(event) -> str:
    """The innermost error of a step failure (the user code's message, not Dagster's wrapper)."""
    from issue_assets.validate import one_line

    error = getattr(getattr(event, "step_failure_data", None), "error", None)
    return (one_line(error) if error is not None else event.message) or "failed"


def new_log_path(command: str) -> Path:
    folder = config.home() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{command}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"


# ---- repositories ---------------------------------------------------------------------------------

def register(inst, repo: str, api_url: str | None = None, *, token_env: str | None = None,
             simulated: bool = False, exports: dict | None = None) -> sources.Source:
    """Bind the repository to its API (validated first: nothing is stored for bad input) and add its
    partition to the instance."""
    source = sources.add(repo, api_url, token_env=token_env, simulated=simulated, exports=exports)
    if repo not in set(inst.get_dynamic_partitions("repos")):
        inst.add_dynamic_partitions("repos", [repo])
    return source


def unregister(inst, repo: str) -> bool:
    """Forget the binding and the partition (the lake keeps the repository's data)."""
    layout.check_repo(repo)
    removed = False
    # The partition first: the repositories sensor binds every listed partition it finds unbound.
    if inst is not None and repo in set(inst.get_dynamic_partitions("repos")):
        inst.delete_dynamic_partition("repos", repo)
        removed = True
    return sources.remove(repo) or removed


def ensure_registered(inst, repo: str, api_url: str | None = None) -> sources.Source:
    """The repository's binding: kept as it is unless an API URL is given (then rebound)."""
    bound = sources.all_sources().get(repo)
    if bound is not None and api_url is None:
        if repo not in set(inst.get_dynamic_partitions("repos")):
            inst.add_dynamic_partitions("repos", [repo])
        return bound
    return register(inst, repo, api_url)


# ---- the steps ------------------------------------------------------------------------------------

def ingest(session: Session, repo: str, *, full: bool = False, lookback_hours: float = 0.0) -> StepResult:
    cfg = {"full": full, "lookback_hours": lookback_hours}
    return session.run("ingest_job", partition_key=repo, tags={"issue_assets/ingest": repo},
                       run_config={"ops": {"raw_issues": {"config": cfg}, "raw_comments": {"config": cfg}}})


def refresh(session: Session, repo: str) -> StepResult:
    return session.run("refresh_job", partition_key=repo)


def train(session: Session, as_of: str, trials: int | None = None) -> StepResult:
    _route_optuna_logs()
    run_config = {"ops": {"tuned_params": {"config": {"n_trials": trials}}}} if trials else {}
    return session.run("training_job", partition_key=as_of, run_config=run_config,
                       tags={"dagster/retry_on_asset_or_op_failure": "false"})


def predict(session: Session, repo: str) -> StepResult:
    return session.run("predictions_job", partition_key=repo)


class _TrialProgress(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Trial "):
            progress.report("trial")


_TRIALS = _TrialProgress()


def _route_optuna_logs() -> None:
    """Optuna prints every trial to stderr through its own handler; its records go to the log file (root
    logger) and the progress lines instead."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna_logger = logging.getLogger("optuna")
    if _TRIALS not in optuna_logger.handlers:
        optuna_logger.addHandler(_TRIALS)


# ---- the whole pipeline, step by step -------------------------------------------------------------

@contextmanager
def _no_display(title: str):
    yield type("StepLine", (), {"summary": ""})()


def _n(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def describe_ingest(step: StepResult) -> str:
    i, c = step.meta("raw_issues"), step.meta("raw_comments")
    return (f"{_n(i.get('new_versions', 0))} new issue versions ({_n(i.get('pages', 0))} pages), "
            f"{_n(c.get('new_versions', 0))} new comment versions ({_n(c.get('pages', 0))} pages); "
            f"{_n(i.get('requests', 0) + c.get('requests', 0))} requests, "
            f"{_n(i.get('not_modified_304', 0) + c.get('not_modified_304', 0))} answered 304")


def describe_refresh(step: StepResult) -> str:
    i, f = step.meta("issues"), step.meta("issue_features")
    return (f"{_n(i.get('rows', 0))} items current ({_n(i.get('pull_requests', 0))} pull requests); features of "
            f"{_n(f.get('issues', 0))} issues at ages 0/6/24/72 h while open ({_n(f.get('rows', 0))} rows, "
            f"{_n(f.get('recomputed_rows', 0))} computed, {f.get('mode', '?')})")


def describe_training(step: StepResult) -> str:
    t, p, c, d = (step.meta(k) for k in ("training_set", "tuned_params", "candidate_model", "production_model"))
    auc = c.get("test_auc")
    decision = "PROMOTED" if d.get("promoted") else "champion kept"
    return (f"{_n(t.get('rows', 0))} labelled rows; {_n(p.get('trials_completed', 0))} trials completed, "
            f"{_n(p.get('trials_pruned', 0))} pruned; candidate {c.get('version')} test ROC AUC at age 0 "
            f"{auc:.4f}; {decision}" if isinstance(auc, float) else f"candidate {c.get('version')}; {decision}")


def describe_predictions(step: StepResult) -> str:
    p = step.meta("open_issue_predictions")
    return f"{_n(p.get('open_issues', 0))} issues scored by {p.get('model_version')}"


def run_all(session: Session, repos: list[str], *, trials: int | None = None, as_of: str | None = None,
            step=_no_display) -> dict:
    """Ingest and refresh every repository, train as of `as_of` (default today, UTC), score every repository.
    Raises StepFailed naming the job and partition that failed."""
    as_of = as_of or datetime.now(UTC).strftime("%Y-%m-%d")
    summary: dict = {"repos": {repo: {} for repo in repos}, "as_of": as_of}
    for repo in repos:
        with step(f"ingest_job {repo}") as line:
            done = ingest(session, repo)
            line.summary = describe_ingest(done)
        summary["repos"][repo]["ingest"] = done
        with step(f"refresh_job {repo}") as line:
            done = refresh(session, repo)
            line.summary = describe_refresh(done)
        summary["repos"][repo]["refresh"] = done
    with step(f"training_job as of {as_of}") as line:
        done = train(session, as_of, trials)
        line.summary = describe_training(done)
    summary["training"] = done
    for repo in repos:
        with step(f"predictions_job {repo}") as line:
            done = predict(session, repo)
            line.summary = describe_predictions(done)
        summary["repos"][repo]["predictions"] = done
    return summary
