"""Concurrent writers in separate processes, on a local folder and on S3 (moto's server): the outcome
equals the same jobs run one after another, for every shared structure.

One scenario per backend (run once, module scope): four processes ingest one repository at the same
moment, two against a server whose data changed in between (updated issues, new issues) and two
over overlapping time windows, each then merging the current tables and refreshing the features.
The tests below check each structure of that one run against the serial run.
"""

from __future__ import annotations

import copy
import uuid

import boto3
import optuna
import pandas as pd
import pytest
import reliability_workers as rw

from issue_assets.features.table import load_features, read_stored
from issue_assets.github.simulate import simulate_repository
from issue_assets.ingest.current import load_current
from issue_assets.ingest.rawlog import RawLog
from issue_assets.lake import keys
from issue_assets.lake.store import LocalStore
from issue_assets.registry import ModelRegistry
from issue_assets.registry.registry import CHAMPION_EVENTS, LATEST, POINTER

REPO = rw.REPO
N_WRITERS = 4


def scenario_data(edit_month: str = "2025-03"):
    """(issues with two that cannot be normalised, comments, a later state: 100 edited and 40 new issues,
    updated in `edit_month`)."""
    issues, comments = simulate_repository(REPO, n_issues=240, seed=11, start="2025-01-01T00:00:00Z", days=80)
    bad = [{**issues[7], "id": 90_000_001, "number": None, "title": "bad: no number"},
           {**issues[9], "id": 90_000_002, "created_at": "yesterday", "title": "bad: created_at"}]
    base = issues + bad
    changed = []
    for n, item in enumerate(issues[:: 2][:100]):
        item = copy.deepcopy(item)
        item.update(title=f"edited {n}", updated_at=f"{edit_month}-{10 + n % 12:02d}T{n % 24:02d}:00:00Z")
        changed.append(item)
    for n in range(40):
        item = copy.deepcopy(issues[n])
        item.update(id=80_000_000 + n, number=5000 + n, title=f"new {n}",
                    created_at=f"{edit_month}-{5 + n % 20:02d}T01:00:00Z",
                    updated_at=f"{edit_month}-{5 + n % 20:02d}T02:00:00Z")
        item.pop("pull_request", None)
        changed.append(item)
    return base, comments, changed


@pytest.fixture(scope="module")
def servers():
    from issue_assets.github.replay import ReplayServer

    base, comments, changed = scenario_data()
    before = ReplayServer(base, comments).start()
    after = ReplayServer(base, comments)
    after.add_issues(changed)
    after.start()
    yield before.url, after.url
    before.stop()
    after.stop()


def jobs(urls):
    """(server, window start, window end, fetch time) of each writer. Writers running together observe
    at the same moment: one fetch time (a writer that resumes from another's live checkpoint of the same
    window records no observation of its own for what that one stored, which is right with one GitHub,
    but would differ from a serial run if each writer had its own clock)."""
    before, after = urls
    now = "2030-01-01T00:00:01+00:00"
    return [(before, None, None, now), (after, None, None, now),
            (after, "2025-02-01T00:00:00+00:00", "2025-03-15T00:00:00+00:00", now),
            (before, "2025-02-15T00:00:00+00:00", None, now)]


@pytest.fixture(scope="module")
def serial(servers, tmp_path_factory):
    store = LocalStore(tmp_path_factory.mktemp("serial") / "lake")
    for job in jobs(servers):
        rw.ingest(("local", str(store.root)), *job)
    return store


@pytest.fixture(scope="module", params=["local", "s3"])
def concurrent(request, servers, tmp_path_factory):
    if request.param == "local":
        spec = ("local", str(tmp_path_factory.mktemp("concurrent") / "lake"))
    else:
        endpoint = request.getfixturevalue("moto_server")
        bucket = f"lake-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        spec = ("s3", endpoint, bucket, "shared/lake")
    codes = rw.run_together(rw.context(), rw.ingest_job, [(spec, *job) for job in jobs(servers)])
    assert codes == [0] * N_WRITERS, f"a writer failed: exit codes {codes}"
    return rw.open_spec(spec)


def _versions(store, kind):
    log = RawLog(store, kind, REPO)
    frames = [log.part(e) for e in log.manifest()["months"].values()]
    return pd.concat(frames, ignore_index=True).sort_values(["id", "updated_at"]).reset_index(drop=True)


@pytest.mark.parametrize("kind", ["issues", "comments"])
def test_raw_log_holds_every_version_of_every_writer(concurrent, serial, kind):
    got, want = _versions(concurrent, kind), _versions(serial, kind)
    pd.testing.assert_frame_equal(got, want)
    assert not got.duplicated(["id", "updated_at"]).any()
    if kind == "issues":  # the edits only the second server had, and the old versions only the first had
        assert got["payload"].str.contains('"edited 99"').sum() == 1 and got["id"].between(80_000_000, 80_000_039).sum() == 40
    got_doc, want_doc = RawLog(concurrent, kind, REPO).manifest(), RawLog(serial, kind, REPO).manifest()
    assert got_doc["cursor"] == want_doc["cursor"] and got_doc["checkpoints"] == {} == want_doc["checkpoints"]
    assert {m: e["rows"] for m, e in got_doc["months"].items()} == {m: e["rows"] for m, e in want_doc["months"].items()}


def test_rejects_of_every_writer_are_kept_once(concurrent, serial):
    got, want = RawLog(concurrent, "issues", REPO).rejects(), RawLog(serial, "issues", REPO).rejects()
    key = ["id", "reason"]
    assert sorted(map(tuple, got[key].to_numpy())) == sorted(map(tuple, want[key].to_numpy()))
    assert len(got) == 2


@pytest.mark.parametrize("kind", ["issues", "comments"])
def test_current_tables_equal_the_serial_run(concurrent, serial, kind):
    pd.testing.assert_frame_equal(load_current(concurrent, kind, REPO), load_current(serial, kind, REPO))


def test_feature_table_equals_the_serial_run_and_names_its_inputs(concurrent, serial):
    pd.testing.assert_frame_equal(load_features(concurrent, REPO), load_features(serial, REPO))
    _, meta, _, snaps = read_stored(concurrent, REPO)
    assert snaps is not None and set(meta["inputs"]) == {"issues", "comments"}


def test_no_writer_left_unreferenced_files(concurrent):
    """Parts written for a commit that lost its race are deleted by their writer, not left behind."""
    referenced = set()
    for kind in ("issues", "comments"):
        doc = RawLog(concurrent, kind, REPO).manifest()
        referenced |= {e["key"] for e in doc["months"].values()} | {e["key"] for e in doc["rejects"]}
    raw = {k for k in concurrent.list("raw/") if k.endswith(".parquet")}
    assert raw == referenced
    _, meta, _, _ = read_stored(concurrent, REPO)
    inputs = {k for k in concurrent.list("features/") if ".inputs." in k}
    assert inputs == {e["key"] for e in meta["inputs"].values()}


# ---- the registry pointer and history --------------------------------------------------------------

@pytest.fixture(params=["local", "s3"])
def registry_spec(request, tmp_path):
    if request.param == "local":
        return ("local", str(tmp_path / "registry"))
    endpoint = request.getfixturevalue("moto_server")
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return ("s3", endpoint, bucket, "registry")


def test_concurrent_registrations_promotions_and_rollbacks_lose_nothing(registry_spec):
    ctx = rw.context()
    codes = rw.run_together(ctx, rw.register_job, [(registry_spec, 2, seed) for seed in range(N_WRITERS)])
    assert codes == [0] * N_WRITERS
    reg = ModelRegistry(rw.open_spec(registry_spec))
    versions = reg.list_versions()
    assert [int(v[1:5]) for v in versions] == list(range(1, 2 * N_WRITERS + 1))  # distinct numbers, none lost
    plan = [(registry_spec, versions[i::N_WRITERS], 1 if i % 2 else 0) for i in range(N_WRITERS)]
    codes = rw.run_together(ctx, rw.promote_job, plan)
    assert codes == [0] * N_WRITERS
    changes = len(versions) + sum(p[2] for p in plan)
    pointer = reg.champion_pointer()
    events = sorted((e for e in reg.history() if e["event"] in CHAMPION_EVENTS), key=lambda e: e["sequence"])
    assert pointer["sequence"] == changes and [e["sequence"] for e in events] == list(range(1, changes + 1))
    assert sorted(e["version"] for e in events if e["event"] == "promoted") == versions  # every promotion kept
    stack = []
    for e in events:
        stack.append(e["version"]) if e["event"] == "promoted" else stack.pop()
    assert stack == pointer["stack"] and stack[-1] == pointer["version"] == reg.champion()
    store = reg.store
    assert store.get_bytes(LATEST) == store.get_bytes(f"models/{pointer['version']}/model.json")
    assert reg.rollback("after the race")["version"] == stack[-2]
    assert store.get_bytes(POINTER) and reg.champion() == stack[-2]


# ---- the Optuna storage ------------------------------------------------------------------------

def test_optuna_storage_initialised_by_many_processes_at_once(tmp_path):
    """Regression: two `issue-assets run` on a fresh home died with `UNIQUE constraint failed:
    alembic_version` / `table ... already exists` while both created the schema."""
    url = f"sqlite:///{tmp_path / 'home' / 'optuna.db'}"
    jobs_ = [(url, "shared-study", 3), (url, "shared-study", 3), (url, "own-a", 2), (url, "own-b", 2)]
    codes = rw.run_together(rw.context(), rw.optuna_job, jobs_)
    assert codes == [0] * len(jobs_)
    summaries = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)}
    assert summaries == {"shared-study": 6, "own-a": 2, "own-b": 2}  # what a serial run records


def test_feature_key_is_the_features_parquet_for_other_readers(concurrent):
    """Readers outside the features module (the retraining sensor) read the same key, verified."""
    frame = concurrent.get_bytes(keys.features_key(REPO))
    assert frame[:4] == b"PAR1"
