"""The soak: the platform under the real `dagster-daemon`, with nobody at the UI.

A fresh instance (SQLite, or PostgreSQL) and a replay server whose repository keeps getting new issues,
comments and closes (LiveActivity), with injected faults and a tight rate limit. The registry starts with a
weak champion (random trees, cutoff = the soak's start), so the retraining sensor fires once enough live
closes have made new labels, a candidate is trained and promoted only if it beats the champion on the same
window, and predictions follow the new champion. The daemon is killed with SIGKILL while a run is in
progress, then started again. Used by `test_soak.py` (short) and `bench/bench_soak.py` (long).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path

import numpy as np
import pandas as pd

REPO = "demo-org/demo-project"
IN_PROGRESS = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")


@dataclass
class SoakConfig:
    n_issues: int = 800
    history_days: int = 240
    live_interval: float = 2.0
    fault_rate: float = 0.1
    rate_limit: int = 80
    rate_limit_window: float = 60.0
    poll_seconds: int = 5
    automation_seconds: int = 5
    retrain_seconds: int = 5
    retrain_threshold: int = 2
    trials: int = 3
    kill_daemon: bool = True
    kill_worker: bool = False  # SIGKILL the worker process of a run in progress (after the daemon's restart)
    max_runtime: int = 60  # run monitoring's limit for runs without their own (a killed worker's run)
    live_seconds: float = 45.0  # activity after the first predictions (the daemon is killed in between)
    bound_seconds: float = 180.0  # an issue opened at the server must have a prediction within this
    timeout: float = 240.0  # for each wait
    postgres_db: str | None = None
    seed: int = 0


@dataclass
class SoakResult:
    wall_seconds: float = 0.0
    runs: dict = field(default_factory=dict)
    retries: int = 0
    runs_by_job: dict = field(default_factory=dict)
    faults: int = 0
    faults_by_kind: dict = field(default_factory=dict)
    requests: int = 0
    rate_limited: int = 0
    rate_limit_waits: int = 0
    events: dict = field(default_factory=dict)
    latencies: list = field(default_factory=list)
    unscored: list = field(default_factory=list)
    weak_champion: str = ""
    champion: str = ""
    decisions: list = field(default_factory=list)
    training_new_labels: list = field(default_factory=list)
    killed_during: str = ""
    killed_worker_of: str = ""
    duplicates: dict = field(default_factory=dict)
    missing: dict = field(default_factory=dict)
    latest_model_version: str = ""
    live: dict = field(default_factory=dict)  # prediction_outcomes' summary at the end
    timeline: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class Soak:
    def __init__(self, root: Path, config: SoakConfig):
        self.root = root
        self.config = config
        self.home = root / "home"
        self.dagster_home = root / "dagster_home"
        self.result = SoakResult()
        self.daemons: list[subprocess.Popen] = []
        self.began = time.monotonic()
        self.quiet_at: float | None = None  # epoch seconds: a moment at the end when no run was in progress

    # ---- set-up ----------------------------------------------------------------------------

    def env(self) -> dict:
        c = self.config
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ISSUE_ASSETS_", "DAGSTER_", "LAKE_STORE", "MODEL_STORE", "OPTUNA_STORAGE",
                                    "GITHUB_", "ALERT_", "RETRAIN_"))}
        env.update(DAGSTER_HOME=str(self.dagster_home), ISSUE_ASSETS_HOME=str(self.home),
                   ISSUE_ASSETS_POLL_SECONDS=str(c.poll_seconds),
                   ISSUE_ASSETS_AUTOMATION_SECONDS=str(c.automation_seconds),
                   ISSUE_ASSETS_RETRAIN_SECONDS=str(c.retrain_seconds), RETRAIN_THRESHOLD=str(c.retrain_threshold),
                   ISSUE_ASSETS_TRIALS=str(c.trials), ALERT_AUC_THRESHOLD="0.55", PYTHONUNBUFFERED="1",
                   ISSUE_ASSETS_OUTCOMES_CRON="* * * * *")  # prediction_outcomes every minute, not hourly
        if c.postgres_db:
            env.update(DAGSTER_PG_HOST="127.0.0.1", DAGSTER_PG_PORT="5432", DAGSTER_PG_USERNAME="postgres",
                       DAGSTER_PG_PASSWORD="", DAGSTER_PG_DB=c.postgres_db)
        return env

    def _instance_yaml(self) -> str:
        from issue_assets.application import LOCAL_INSTANCE_YAML

        text = LOCAL_INSTANCE_YAML.replace("poll_interval_seconds: 10", "poll_interval_seconds: 5").replace(
            "start_timeout_seconds: 60", "start_timeout_seconds: 30").replace(
            "max_runtime_seconds: 1800", f"max_runtime_seconds: {self.config.max_runtime}")
        if self.config.postgres_db:
            deploy = (Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml").read_text()
            storage = deploy[deploy.index("storage:"):deploy.index("# Runs are queued")]
            text = storage + text
        return text

    def _weak_champion(self, registry) -> str:
        """A champion that predicts noise: any honest candidate beats it on the same window."""
        import xgboost as xgb

        from issue_assets.features.catalog import FEATURE_NAMES
        from issue_assets.modeling.training import TrainedModel

        rng = np.random.default_rng(self.config.seed)
        data = rng.normal(size=(400, len(FEATURE_NAMES))).astype(np.float32)
        booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1, "seed": 0},
                            xgb.DMatrix(data, label=rng.integers(0, 2, 400), feature_names=FEATURE_NAMES), 3)
        now = pd.Timestamp.now(tz="UTC")
        version = registry.register(TrainedModel(booster, FEATURE_NAMES, None), {
            "as_of": now.strftime("%Y-%m-%d"), "cutoff": now.isoformat(), "metrics": {"roc_auc": 0.5},
            "note": "soak: a deliberately weak champion"})
        registry.promote(version, {"promote": True, "reason": "soak: weak starting champion"})
        return version

    def start(self):
        from issue_assets.github.replay import ReplayServer
        from issue_assets.github.simulate import simulate_repository
        from issue_assets.ingest import sources
        from issue_assets.lake.store import LocalStore
        from issue_assets.registry import ModelRegistry

        c = self.config
        self.dagster_home.mkdir(parents=True)
        (self.dagster_home / "dagster.yaml").write_text(self._instance_yaml())
        end = pd.Timestamp.now(tz="UTC").floor("h")
        issues, comments = simulate_repository(REPO, n_issues=c.n_issues, seed=c.seed,
                                               start=(end - pd.Timedelta(days=c.history_days)).strftime(
                                                   "%Y-%m-%dT%H:%M:%SZ"), days=c.history_days)
        self.server = ReplayServer(issues, comments, fault_rate=c.fault_rate, seed=c.seed, rate_limit=c.rate_limit,
                                   rate_limit_window=c.rate_limit_window).start()
        self.lake = LocalStore(self.home / "lake")
        sources.add(REPO, self.server.url, simulated=True, store=self.lake)
        self.registry = ModelRegistry(LocalStore(self.home / "registry"))
        self.result.weak_champion = self._weak_champion(self.registry)
        self.live = self.server.start_live(REPO, interval=c.live_interval, seed=c.seed)
        self.start_daemon()
        return self

    def start_daemon(self) -> None:
        log = open(self.root / f"daemon-{len(self.daemons)}.log", "w")  # noqa: SIM115 - closed with the process
        exe = Path(sys.executable).with_name("dagster-daemon")
        self.daemons.append(subprocess.Popen([str(exe), "run", "-m", "issue_assets.definitions"], env=self.env(),
                                             cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True))
        self.note(f"daemon {len(self.daemons)} started (pid {self.daemons[-1].pid})")

    def note(self, text: str) -> None:
        self.result.timeline.append(f"{time.monotonic() - self.began:6.1f}s {text}")

    def stop(self) -> None:
        """Everything this soak started: the daemons' process groups (code servers, run workers), the server."""
        for proc in self.daemons:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    continue
                if sig == signal.SIGTERM:
                    time.sleep(1)
        self.server.stop()

    def __enter__(self) -> Soak:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- observation -----------------------------------------------------------------------

    def instance(self):
        import dagster as dg

        pg = {k: v for k, v in self.env().items() if k.startswith("DAGSTER_PG_")}
        saved = {k: os.environ.get(k) for k in pg}
        os.environ.update(pg)  # the PostgreSQL instance reads its connection from the environment
        try:
            return dg.DagsterInstance.from_config(str(self.dagster_home))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def runs(self, created_by: float | None = None) -> list:
        """Every run of the instance; with `created_by` (epoch seconds), those created by then."""
        with self.instance() as inst:
            records = inst.get_run_records()
        def created(rec) -> float:  # run storage keeps naive UTC times
            t = rec.create_timestamp
            return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()

        return [rec.dagster_run for rec in records if created_by is None or created(rec) <= created_by]

    def wait(self, what: str, check, timeout: float | None = None, every: float = 2.0):
        deadline = time.monotonic() + (timeout or self.config.timeout)
        while time.monotonic() < deadline:
            for proc in self.daemons[-1:]:
                if proc.poll() is not None:
                    raise AssertionError(f"the daemon exited ({proc.returncode}) while waiting for {what}; "
                                         f"see {self.root}/daemon-*.log")
            value = check()
            if value:
                self.note(what)
                return value
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout or self.config.timeout:.0f}s waiting for {what}; "
                             f"timeline: {self.result.timeline}; runs: {self._run_summary()}")

    def _run_summary(self) -> dict:
        return dict(Counter(f"{r.job_name}:{r.status.value}" for r in self.runs()))

    def batches(self) -> pd.DataFrame:
        """Every prediction batch written: number, model version, scoring time, status (scored or decided)."""
        from issue_assets.ingest.layout import repo_slug
        from issue_assets.lake.store import read_parquet

        keys = [k for k in self.lake.list(f"predictions/{repo_slug(REPO)}/") if not k.endswith("latest.parquet")]
        columns = ["number", "model_version", "scoring_time", "status"]
        frames = [read_parquet(self.lake, k, columns=columns) for k in keys]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    def _running_worker(self):
        """(pid, run) of a run in progress whose worker process is alive, or None. Runs with their own time limit
        (history, training: hours) are left alone; the instance's limit (`max_runtime`) frees the others."""
        import dagster as dg

        with self.instance() as inst:
            for run in inst.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
                if "dagster/max_runtime" in run.tags:
                    continue
                for entry in inst.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
                    found = re.search(r"Started process for run \(pid: (\d+)\)", entry.message or "")
                    if found:
                        pid = int(found.group(1))
                        try:
                            os.kill(pid, 0)
                        except ProcessLookupError:
                            continue
                        return pid, run
        return None

    def promoted(self) -> str | None:
        champion = self.registry.champion()
        return champion if champion != self.result.weak_champion else None

    # ---- the scenario ----------------------------------------------------------------------

    def run(self) -> SoakResult:
        from issue_assets.ingest.layout import current_key

        c, r = self.config, self.result
        self.wait("history ingested and current state merged",
                  lambda: self.lake.exists(current_key("issues", REPO)))
        self.wait("a candidate promoted over the weak champion", self.promoted)
        self.wait("predictions by the new champion",
                  lambda: (self.batches()["model_version"] == self.promoted()).any())
        first_prediction = time.time()
        if c.kill_daemon:
            running = self.wait("a run in progress", lambda: next(
                (run for run in self.runs() if run.status.value in ("STARTING", "STARTED")), None), every=0.5)
            r.killed_during = running.job_name
            os.kill(self.daemons[-1].pid, signal.SIGKILL)
            self.daemons[-1].wait()
            self.note(f"daemon killed with SIGKILL during {running.job_name} ({running.run_id[:8]})")
            time.sleep(2)
            self.start_daemon()
        if c.kill_worker:
            pid, run = self.wait("the worker of a run in progress", self._running_worker, every=0.5)
            os.kill(pid, signal.SIGKILL)
            r.killed_worker_of = run.job_name
            self.note(f"worker {pid} of {run.job_name} ({run.run_id[:8]}) killed with SIGKILL")
        time.sleep(max(0.0, c.live_seconds - (time.time() - first_prediction)))
        stopped_at = time.time()
        self.server._live_stop.set()  # no new activity from here: let the platform catch up
        self.note("live activity stopped")
        opened = [(t, n) for t, kind, n in self.live.events if kind == "open" and n not in self.live.pull_requests]
        want = {n for t, n in opened if t >= first_prediction}

        def scored() -> bool:
            batches = self.batches()
            return want <= set(batches.loc[batches["model_version"] == self.registry.champion(), "number"])

        self.wait("every issue opened after the first predictions scored", scored, timeout=c.bound_seconds + 60)
        self.wait("the lake holds exactly what the server serves", lambda: not self.differences()[1])

        def settled() -> bool:
            from issue_assets.serving.scoring import read_latest_predictions

            latest = read_latest_predictions(self.lake, REPO)
            return (not [x for x in self.runs() if x.status.value in IN_PROGRESS] and latest is not None
                    and (latest["model_version"] == self.registry.champion()).all())

        self.wait("nothing in progress and the latest predictions by the champion", settled)

        # A maintainer closes three issues the champion scored, so that outcomes of served predictions become
        # known (the live activity's few random closes can all miss them in a short soak). From here nobody
        # acts: the poll ingests the closes and prediction_outcomes judges them on its own.
        batches = self.batches()
        scored = batches.loc[(batches["model_version"] == self.registry.champion()) & (batches["status"] == "scored")]
        with self.server._data_lock:
            numbers = sorted(set(scored["number"]) & self.live.open_numbers())[-3:]
            self.server.add_issues([self.live.close(n, self.server.clock.time()) for n in numbers])
        self.note(f"issues {numbers} scored by the champion closed at the server")

        def judged() -> dict | None:
            from issue_assets.monitoring.live import read_summary

            summary = read_summary(self.lake, REPO)
            ok = summary and summary.get("champion") == self.registry.champion() and summary.get("with_outcome", 0) > 0
            return summary if ok and not self.differences()[1] else None

        r.live = self.wait("prediction_outcomes judged served predictions of the champion against outcomes", judged)

        def quiet() -> bool:
            # prediction_outcomes keeps judging every minute: the runs counted are those created by a moment
            # when none was in progress (each of them must have finished)
            at = time.time()
            if [x for x in self.runs() if x.status.value in IN_PROGRESS]:
                return False
            self.quiet_at = at
            return True

        self.wait("nothing in progress", quiet)
        r.wall_seconds = time.monotonic() - self.began
        self._collect(first_prediction, stopped_at, opened)
        return r

    def differences(self) -> tuple[dict, dict]:
        """(duplicates, missing) per table: ids stored twice; ids or versions the server has and the lake not."""
        from issue_assets.ingest.current import load_current
        from issue_assets.ingest.rawlog import RawLog

        repo = self.server._repo(REPO)
        with self.server._data_lock:
            served = {"issues": {e.id: e.updated for e in repo.issues.values()},
                      "comments": {e.id: e.updated for e in repo.comments.values()}}
        duplicates, missing = {}, {}
        for kind in ("issues", "comments"):
            current = load_current(self.lake, kind, REPO)
            duplicates[f"current {kind}"] = int(current["id"].duplicated().sum())
            stored = dict(zip(current["id"], current["updated_at"].map(lambda t: t.timestamp()), strict=True))
            missing[f"current {kind}"] = sorted(i for i, u in served[kind].items()
                                                if i not in stored or abs(stored[i] - u) > 1)[:20]
            rawlog = RawLog(self.lake, kind, REPO)  # the parts the manifest commits (not orphans, not rejects)
            manifest = rawlog.manifest()
            raw = [rawlog.read_month(manifest, month)[["id", "updated_at"]] for month in manifest["months"]]
            log = pd.concat(raw, ignore_index=True) if raw else pd.DataFrame(columns=["id", "updated_at"])
            duplicates[f"raw {kind}"] = int(log.duplicated(["id", "updated_at"]).sum())
        return duplicates, {k: v for k, v in missing.items() if v}

    def _collect(self, first_prediction: float, stopped_at: float, opened: list) -> None:
        r = self.result
        runs = self.runs(created_by=self.quiet_at)
        r.runs = dict(Counter(run.status.value for run in runs))
        r.runs_by_job = dict(Counter(f"{run.job_name}:{run.status.value}" for run in runs))
        r.retries = sum(1 for run in runs if run.tags.get("dagster/parent_run_id"))
        r.training_new_labels = sorted(int(run.tags["issue_assets/new_labels"]) for run in runs
                                       if run.job_name == "training_job" and "issue_assets/new_labels" in run.tags)
        stats = self.server.stats()
        r.faults, r.faults_by_kind, r.requests = stats["faults"], stats["faults_by_kind"], stats["requests"]
        r.rate_limited = stats["rate_limited"] + stats["secondary_limited"]
        r.events = dict(Counter(kind for _, kind, _ in self.live.events))
        batches = self.batches()
        first_seen = batches.groupby("number")["scoring_time"].min()
        for t, number in opened:
            if t < first_prediction:
                continue
            if number in first_seen.index:
                r.latencies.append(round(first_seen[number].timestamp() - t, 1))
            else:
                r.unscored.append(number)
        r.champion = self.registry.champion()
        r.decisions = [{"version": e.get("version"), "event": e["event"],
                        "promote": (e.get("decision") or {}).get("promote"),
                        "candidate_auc": (e.get("decision") or {}).get("candidate_value"),
                        "champion_auc": (e.get("decision") or {}).get("champion_value"),
                        "reason": (e.get("decision") or {}).get("reason")}
                       for e in self.registry.history() if e["event"] in ("decision", "promoted")]
        r.duplicates, r.missing = self.differences()
        from issue_assets.serving.scoring import read_latest_predictions

        latest = read_latest_predictions(self.lake, REPO)
        r.latest_model_version = str(latest["model_version"].iloc[0]) if latest is not None and len(latest) else ""
        for log in sorted(self.root.glob("daemon-*.log")):
            r.rate_limit_waits += log.read_text(errors="replace").count("rate limit exhausted: waiting")


def postgres_admin(sql: str) -> None:
    """CREATE / DROP DATABASE on the server at 127.0.0.1:5432 (outside a transaction)."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def summary(result: SoakResult) -> str:
    lat = np.array(result.latencies) if result.latencies else np.array([np.nan])
    return json.dumps({"wall_s": round(result.wall_seconds, 1), "runs": result.runs, "retries": result.retries,
                       "faults": result.faults, "rate_limited": result.rate_limited,
                       "latency_median_s": float(np.nanmedian(lat)), "latency_p95_s": float(np.nanpercentile(lat, 95)),
                       "scored": len(result.latencies), "killed_during": result.killed_during}, default=str)
