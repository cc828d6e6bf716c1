"""Reliability benchmark: the soak version of the reliability tests, into bench/RELIABILITY_RESULTS.md.

    .venv/bin/python bench/bench_reliability.py [--writers 2 4 8] [--repeats 3] [--flips 6]

- concurrent writers per structure, in separate processes, on a local folder and on S3 (moto's server,
  its PutObject made atomic as S3's is): the raw log, rejects, current tables and features (ingest jobs
  against two servers whose data differ, and over overlapping windows), the registry pointer and
  history (registrations, promotions, rollbacks), the Optuna storage (a fresh SQLite file); each run
  compared with the same jobs run one after another;
- crash points: an ingest (first and incremental) and a promotion and a rollback, killed before and
  after every store write they make, then the next commands run; the state compared with a run
  without a crash;
- corruptions: each lake and registry file kind truncated and flipped at several places; detected
  when the next operation names it, repaired when the repair restores the state.

It drives the jobs the tests use (issue_assets_tests/reliability_workers.py), more of them and repeated.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "issue_assets_tests"))

import boto3  # noqa: E402
import pandas as pd  # noqa: E402
import reliability_workers as rw  # noqa: E402
import test_reliability_concurrency as conc  # noqa: E402
import test_reliability_corruption as corr  # noqa: E402
import test_reliability_crash as crash  # noqa: E402
from conftest import moto_s3_server  # noqa: E402
from machine import cpu_model, load_average  # noqa: E402

from issue_assets.github.replay import ReplayServer  # noqa: E402
from issue_assets.lake import faults  # noqa: E402
from issue_assets.lake.store import LocalStore  # noqa: E402
from issue_assets.registry import ModelRegistry  # noqa: E402


class Tally:
    def __init__(self):
        self.rows: dict[str, dict] = {}

    def add(self, name: str, held: bool, detail: str = "", **counts) -> None:
        row = self.rows.setdefault(name, {"tried": 0, "held": 0, "failed": 0, "details": [], **dict.fromkeys(counts, 0)})
        row["tried"] += 1
        row["held" if held else "failed"] += 1
        for key, value in counts.items():
            row[key] = row.get(key, 0) + value
        if not held and detail:
            row["details"].append(detail)


def _spec(backend: str, tmp: Path, endpoint: str, name: str) -> tuple:
    if backend == "local":
        return ("local", str(tmp / f"{name}-{uuid.uuid4().hex[:6]}"))
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return ("s3", endpoint, bucket, "lake")


def _lake_equal(got, want) -> tuple[bool, int, str]:
    """(equal, versions missing from `got`, first difference)."""
    missing = 0
    try:
        for kind in ("issues", "comments"):
            a, b = conc._versions(got, kind), conc._versions(want, kind)
            keys = set(zip(b["id"], b["updated_at"], strict=True)) - set(zip(a["id"], a["updated_at"], strict=True))
            missing += len(keys)
            pd.testing.assert_frame_equal(a, b)
            pd.testing.assert_frame_equal(conc.load_current(got, kind, conc.REPO), conc.load_current(want, kind, conc.REPO))
        pd.testing.assert_frame_equal(conc.load_features(got, conc.REPO), conc.load_features(want, conc.REPO))
        return True, missing, ""
    except AssertionError as exc:
        return False, missing, str(exc).splitlines()[0][:160]


def concurrency(tally: Tally, tmp: Path, endpoint: str, writers: list[int], repeats: int) -> None:
    base, comments, changed = conc.scenario_data()
    before = ReplayServer(base, comments).start()
    after = ReplayServer(base, comments)
    after.add_issues(changed)
    after.start()
    ctx = rw.context()
    try:
        for n in writers:
            jobs = [conc.jobs((before.url, after.url))[i % 4] for i in range(n)]
            serial = LocalStore(tmp / f"serial-{n}")
            for job in jobs:
                rw.ingest(("local", str(serial.root)), *job)
            for backend in ("local", "s3"):
                for _ in range(repeats):
                    spec = _spec(backend, tmp, endpoint, "lake")
                    began = time.perf_counter()
                    codes = rw.run_together(ctx, rw.ingest_job, [(spec, *job) for job in jobs])
                    seconds = time.perf_counter() - began
                    ok, missing, why = (False, -1, f"exit codes {codes}") if codes != [0] * n else \
                        _lake_equal(rw.open_spec(spec), serial)
                    tally.add(f"raw log + rejects + current tables + features, {n} ingest processes, {backend}",
                              ok, why, lost=max(missing, 0), seconds=seconds)
                    spec = _spec(backend, tmp, endpoint, "models")
                    codes = rw.run_together(ctx, rw.register_job, [(spec, 2, s) for s in range(n)])
                    reg = ModelRegistry(rw.open_spec(spec), retry_delay=0.005)
                    versions = reg.list_versions()
                    plan = [(spec, versions[i::n], i % 2) for i in range(n)]
                    codes += rw.run_together(ctx, rw.promote_job, plan)
                    changes = len(versions) + sum(p[2] for p in plan)
                    events = sorted((e for e in reg.history() if e["event"] in ("promoted", "rolled_back")),
                                    key=lambda e: e["sequence"])
                    ok = codes == [0] * (2 * n) and len(versions) == 2 * n \
                        and [e["sequence"] for e in events] == list(range(1, changes + 1)) \
                        and reg.champion() == reg.champion_pointer()["stack"][-1]
                    tally.add(f"registry pointer + history, {n} processes, {backend}", ok, f"codes {codes}",
                              lost=2 * n + changes - len(versions) - len(events))
            for _ in range(repeats):
                url = f"sqlite:///{tmp / f'optuna-{uuid.uuid4().hex[:6]}.db'}"
                codes = rw.run_together(ctx, rw.optuna_job, [(url, "shared", 3)] * n)
                import optuna

                trials = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)} if codes == [0] * n else {}
                tally.add(f"Optuna storage (fresh SQLite), {n} processes", trials == {"shared": 3 * n},
                          f"codes {codes}, trials {trials}", lost=3 * n - trials.get("shared", 0))
    finally:
        before.stop()
        after.stop()


def crashes(tally: Tally, tmp: Path) -> None:
    base, comments, changed = conc.scenario_data(edit_month="2025-04")
    servers = (ReplayServer(base, comments).start(), ReplayServer(base, comments))
    servers[1].add_issues(changed)
    servers[1].start()
    try:
        home = tmp / "crash-reference"
        home.mkdir()
        crash._ingest(home, servers[0], 0)
        first = tmp / "crash-after-first"
        shutil.copytree(home, first)
        crash._ingest(home, servers[1], 1)
        want = crash._state(LocalStore(home / "lake"))
        for stage in (0, 1):
            def start(case, stage=stage):
                path = tmp / f"crash-{stage}-{case}"
                shutil.copytree(first, path) if stage else path.mkdir()
                return path

            counting = start("count")
            writes = crash._writes(tmp, lambda env, c=counting, s=stage: crash._ingest(c, servers[s], s, env))
            for n in range(1, len(writes) + 1):
                for when in ("before", "after"):
                    case = start(f"{n}-{when}")
                    try:
                        code = crash._ingest(case, servers[stage], stage, {faults.CRASH_AT: f"{n}:{when}"})
                        assert code == faults.CRASH_EXIT
                        if (case / "lake").exists():
                            crash._assert_consistent(LocalStore(case / "lake"), servers[stage])
                        for later in range(stage, 2):
                            crash._ingest(case, servers[later], later)
                        crash._assert_same(crash._state(LocalStore(case / "lake")), want)
                        tally.add(f"ingest ({'incremental' if stage else 'first'}), {len(writes)} writes", True)
                    except Exception as exc:  # noqa: BLE001 - counted and shown
                        tally.add(f"ingest ({'incremental' if stage else 'first'}), {len(writes)} writes", False,
                                  f"write {n} {when}: {type(exc).__name__}: {str(exc)[:120]}")
                    shutil.rmtree(case, ignore_errors=True)
    finally:
        for server in servers:
            server.stop()
    start_root = tmp / "registry-start"
    reg = ModelRegistry(LocalStore(start_root), retry_delay=0.001)
    v1, v2, v3 = (reg.register(rw.small_model(s), {"as_of": f"2026-01-0{s + 1}"}) for s in range(3))
    reg.promote(v1)
    reg.promote(v2)
    for command, target in (("promote", (v3,)), ("rollback", ())):
        fn = rw.promote if command == "promote" else rw.rollback

        def run(root, env, fn=fn, target=target):
            return rw.run_alone(rw.context(), fn, (("local", str(root)), *target), env)

        counting = tmp / f"{command}-count"
        shutil.copytree(start_root, counting)
        writes = crash._writes(tmp, lambda env, c=counting, r=run: r(c, env))
        for n in range(1, len(writes) + 1):
            for when in ("before", "after"):
                root = tmp / f"{command}-{n}-{when}"
                shutil.copytree(start_root, root)
                try:
                    assert run(root, {faults.CRASH_AT: f"{n}:{when}"}) == faults.CRASH_EXIT
                    crash.check_registry_recovers(root, command, (v1, v2, v3))
                    tally.add(f"model {command}, {len(writes)} writes", True)
                except Exception as exc:  # noqa: BLE001
                    tally.add(f"model {command}, {len(writes)} writes", False,
                              f"write {n} {when}: {type(exc).__name__}: {exc!s:.120}")


def corruptions(tally: Tally, tmp: Path, flips: int) -> None:
    base, comments, changed = conc.scenario_data(edit_month="2025-04")
    servers = (ReplayServer(base, comments).start(), ReplayServer(base, comments))
    servers[1].add_issues(changed)
    servers[1].start()

    try:
        built = corr.build(servers, tmp / "corruption-built")
        damages = [("truncated", corr._truncate)] + [(f"byte flipped at {w:.0%}", corr._flip(w))
                                                      for w in [i / (flips + 1) for i in range(1, flips + 1)]]
        for case, (pick, _, operation, refetched) in corr.LAKE_CASES.items():
            for label, damage in damages:
                work = tmp / f"corr-{uuid.uuid4().hex[:6]}"
                # A flipped byte keeps a part's size: what reads every month part is a full ingest.
                op = "ingest --full" if case.startswith("raw part") and label != "truncated" else operation
                try:
                    corr.check_lake_damage(built, servers, work, pick, damage, op, refetched)
                    tally.add(f"lake: {case}", True)
                except BaseException as exc:  # noqa: BLE001 - pytest.fail raises BaseException
                    tally.add(f"lake: {case}", False, f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                shutil.rmtree(work, ignore_errors=True)
        for case, (pick, _, operation) in corr.REGISTRY_CASES.items():
            for label, damage in damages:
                work = tmp / f"corr-{uuid.uuid4().hex[:6]}"
                work.mkdir()
                try:
                    corr.check_registry_damage(built, work, pick, damage, operation)
                    tally.add(f"registry: {case}", True)
                except BaseException as exc:  # noqa: BLE001
                    tally.add(f"registry: {case}", False, f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                shutil.rmtree(work, ignore_errors=True)
    finally:
        for server in servers:
            server.stop()


def write(out: Path, sections: dict[str, Tally], args, began: str, load: str, seconds: float) -> None:
    lines = ["# Reliability benchmark", "",
             f"- date: {began}",
             f"- machine: {cpu_model()}, load average at start {load} (a shared machine: other jobs were running)",
             f"- command: `.venv/bin/python bench/bench_reliability.py --writers {' '.join(map(str, args.writers))} "
             f"--repeats {args.repeats} --flips {args.flips}` ({seconds / 60:.1f} min)",
             "- S3 is moto's server over HTTP, its PutObject serialized because moto checks If-Match/If-None-Match "
             "and writes in two unlocked steps where S3 makes them one; the processes share it as hosts share S3",
             ""]
    total = {"tried": 0, "held": 0, "failed": 0}
    for title, tally in sections.items():
        lines += [f"## {title}", "", "| case | tried | held | failed | versions/events lost |", "|---|---|---|---|---|"]
        for name, row in tally.rows.items():
            lines.append(f"| {name} | {row['tried']} | {row['held']} | {row['failed']} | {row.get('lost', 0)} |")
            for key in total:
                total[key] += row[key]
        failures = [f"- {name}: {d}" for name, row in tally.rows.items() for d in row["details"][:3]]
        lines += ["", *(failures or ["No case failed."]), ""]
    lines += ["## All cases", "", f"{total['tried']} tried, {total['held']} held, {total['failed']} failed. "
              "The fuzzed HTTP requests and their 5xx count: the next section (`bench/bench_fuzz.py`).", ""]
    notes = out.read_text().split("\n## Notes", 1) if out.exists() else []
    if len(notes) == 2:  # written by hand after a run: kept when the script rewrites the figures
        lines += ["## Notes" + notes[1].rstrip(), ""]
    out.write_text("\n".join(lines))


def main() -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    logging.getLogger("issue_assets").setLevel(logging.ERROR)  # the repairs' expected warnings
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flips", type=int, default=6, help="byte flips per file kind (besides one truncation)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RELIABILITY_RESULTS.md")
    args = parser.parse_args()
    began = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = load_average()
    start = time.perf_counter()
    sections = {"Concurrent writers, compared with the same jobs run one after another": Tally(),
                "Crash points (killed before and after every store write, then the next commands)": Tally(),
                "Corruptions (detected: the next operation names the file; repaired: the state restored)": Tally()}
    tallies = list(sections.values())
    with moto_s3_server() as endpoint, tempfile.TemporaryDirectory(prefix="bench-reliability-") as tmp:
        tmp = Path(tmp)
        for step, run in enumerate((lambda: concurrency(tallies[0], tmp, endpoint, args.writers, args.repeats),
                                    lambda: crashes(tallies[1], tmp),
                                    lambda: corruptions(tallies[2], tmp, args.flips))):
            began_step = time.perf_counter()
            try:
                run()
            except Exception:  # noqa: BLE001 - a crashed section is reported, the others still run
                tallies[step].add("the section itself", False, traceback.format_exc().splitlines()[-1])
            print(f"section {step + 1} done in {time.perf_counter() - began_step:.0f}s", flush=True)
    write(args.out, sections, args, began, load, time.perf_counter() - start)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
