"""Kill -9 at every store write an ingest or a promotion makes (the ISSUE_ASSETS_CRASH_AT hook, not
timing luck): the state is consistent right after, and the next command completes with nothing lost.

The writes a command makes are counted first (ISSUE_ASSETS_CRASH_LOG); then, for each write n, the
command runs in a fresh process that ends itself with os._exit just before (and, separately, just
after) write n, on a copy of the same starting lake.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import reliability_workers as rw
from test_reliability_concurrency import scenario_data

from issue_assets.features.table import load_features
from issue_assets.ingest.current import load_current
from issue_assets.ingest.rawlog import RawLog
from issue_assets.ingest.sync import parse_time
from issue_assets.lake import faults, keys
from issue_assets.lake.store import LocalStore
from issue_assets.registry import ModelRegistry
from issue_assets.registry.registry import CHAMPION_EVENTS, LATEST

REPO = rw.REPO
NOW = ("2030-01-01T00:00:01+00:00", "2030-01-02T00:00:01+00:00")


@pytest.fixture(scope="module")
def servers():
    from issue_assets.github.replay import ReplayServer

    base, comments, changed = scenario_data(edit_month="2025-04")  # changes after the first ingest
    before = ReplayServer(base, comments).start()
    after = ReplayServer(base, comments)
    after.add_issues(changed)
    after.start()
    yield (before, after)
    before.stop()
    after.stop()


def _ingest(home, server, stage: int, env=None):
    args = (("local", str(home / "lake")), server.url, NOW[stage], str(home / "http_cache.json"))
    if env is None:
        rw.ingest_incremental(*args)
        return 0
    return rw.run_alone(rw.context(), rw.ingest_incremental, args, env)


def _writes(tmp_path, run) -> list[str]:
    log = tmp_path / "writes.log"
    log.unlink(missing_ok=True)
    assert run({faults.CRASH_LOG: str(log)}) == 0
    return log.read_text().splitlines()


def _state(store):
    out = {}
    for kind in ("issues", "comments"):
        log = RawLog(store, kind, REPO)
        doc = log.manifest()
        parts = [log.part(e) for e in doc["months"].values()]
        out[f"raw {kind}"] = pd.concat(parts, ignore_index=True).sort_values(["id", "updated_at"]).reset_index(drop=True)
        out[f"cursor {kind}"] = doc["cursor"]
        out[f"current {kind}"] = load_current(store, kind, REPO)
    out["rejects"] = RawLog(store, "issues", REPO).rejects().sort_values("id").reset_index(drop=True)
    out["features"] = load_features(store, REPO)
    return out


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        if isinstance(want[name], pd.DataFrame):
            pd.testing.assert_frame_equal(got[name], want[name], obj=name)
        else:
            assert got[name] == want[name], name


def _assert_consistent(store, server) -> None:
    """Right after the kill: everything committed reads back whole, and no cursor is ahead of the log
    (every version the server holds at or before the cursor is stored, or rejected with a reason)."""
    for kind in ("issues", "comments"):
        log = RawLog(store, kind, REPO)
        doc = log.manifest()
        stored = set()
        for entry in doc["months"].values():
            part = log.part(entry)
            stored |= set(zip(part["id"].tolist(), (part["updated_at"].astype("int64") // 10**6).tolist(), strict=True))
        rejects = log.rejects()
        rejected = set() if rejects is None else set(rejects["id"].dropna().astype("int64").tolist())
        cursor = parse_time(doc["cursor"])
        load_current(store, kind, REPO)
        if cursor is None:
            continue
        held = server._repo(REPO).issues if kind == "issues" else server._repo(REPO).comments
        behind = [(i.id, i.updated) for i in held.values() if i.updated <= cursor.timestamp()
                  and (i.id, int(i.updated)) not in stored and i.id not in rejected]
        assert not behind, f"{kind}: versions at or before the cursor {doc['cursor']} are not stored: {behind[:3]}"


@pytest.fixture(scope="module")
def reference(servers, tmp_path_factory):
    """Both ingests without a crash, and the lake after the first one (the second stage's start)."""
    home = tmp_path_factory.mktemp("reference")
    _ingest(home, servers[0], 0)
    first = tmp_path_factory.mktemp("after-first")
    shutil.copytree(home, first, dirs_exist_ok=True)
    _ingest(home, servers[1], 1)
    return _state(LocalStore(home / "lake")), first


@pytest.mark.parametrize("stage", [0, 1], ids=["first-ingest", "incremental-ingest"])
def test_ingest_killed_at_every_write_then_rerun_loses_nothing(servers, reference, tmp_path, stage):
    want, after_first = reference

    def start(case):
        home = tmp_path / case
        if stage == 1:
            shutil.copytree(after_first, home)
        else:
            home.mkdir()
        return home

    counting = start("count")
    writes = _writes(tmp_path, lambda env: _ingest(counting, servers[stage], stage, env))
    assert len(writes) >= 10, writes
    tried = 0
    for n in range(1, len(writes) + 1):
        for when in ("before", "after"):
            home = start(f"{n}-{when}")
            code = _ingest(home, servers[stage], stage, {faults.CRASH_AT: f"{n}:{when}"})
            assert code == faults.CRASH_EXIT, f"no crash at write {n} {when} ({writes[n - 1]})"
            store = LocalStore(home / "lake")
            if (home / "lake").exists():
                _assert_consistent(store, servers[stage])
            for later in range(stage, 2):  # the next commands: this ingest again, then the second one
                _ingest(home, servers[later], later)
            _assert_same(_state(store), want)
            tried += 1
    assert tried == 2 * len(writes)


# ---- promotion and rollback --------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry_start(tmp_path_factory):
    """Three versions; v1 then v2 promoted (v2 champion, pointer sequence 2)."""
    root = tmp_path_factory.mktemp("registry-start")
    reg = ModelRegistry(LocalStore(root), retry_delay=0.001)
    versions = [reg.register(rw.small_model(seed), {"as_of": f"2026-01-0{seed + 1}"}) for seed in range(3)]
    reg.promote(versions[0])
    reg.promote(versions[1])
    return root, versions


def _check_registry(root, expected_champions: set[str]) -> ModelRegistry:
    reg = ModelRegistry(LocalStore(root), retry_delay=0.001)
    champion = reg.champion()  # completes a copy a killed promoter left undone
    assert champion in expected_champions
    pointer = reg.champion_pointer()
    events = sorted((e for e in reg.history() if e["event"] in CHAMPION_EVENTS), key=lambda e: e["sequence"])
    assert [e["sequence"] for e in events] == list(range(1, pointer["sequence"] + 1))
    stack = []
    for e in events:
        stack.append(e["version"]) if e["event"] == "promoted" else stack.pop()
    assert stack == pointer["stack"] and stack[-1] == champion
    assert reg.store.get_bytes(LATEST) == reg.store.get_bytes(f"models/{champion}/model.json")
    return reg


def check_registry_recovers(root, command: str, versions: tuple[str, str, str]) -> None:
    """After a kill during `command` (v2 champion after v1, promoting v3 or rolling back): consistent, and
    the next commands complete with the chain rolling back in order."""
    v1, v2, v3 = versions
    reg = _check_registry(root, {v2, v3 if command == "promote" else v1})
    if command == "promote":
        assert reg.promote(v3)["version"] == v3
        assert reg.rollback()["version"] == v2 and reg.rollback()["version"] == v1
    else:
        assert reg.rollback()["version"] == v1 if reg.champion() == v2 else reg.champion() == v1
        assert reg.promote(v3)["version"] == v3 and reg.rollback()["version"] == v1
    _check_registry(root, {v1})


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_registry_killed_at_every_write_stays_consistent_and_recovers(registry_start, tmp_path, command):
    start, (v1, v2, v3) = registry_start
    spec = lambda root: ("local", str(root))  # noqa: E731
    run = (lambda root, env: rw.run_alone(rw.context(), rw.promote, (spec(root), v3), env)) if command == "promote" \
        else (lambda root, env: rw.run_alone(rw.context(), rw.rollback, (spec(root),), env))
    counting = tmp_path / "count"
    shutil.copytree(start, counting)
    writes = _writes(tmp_path, lambda env: run(counting, env))
    assert any("champion.json" in w for w in writes) and any("model_metadata.json" in w for w in writes)
    for n in range(1, len(writes) + 1):
        for when in ("before", "after"):
            root = tmp_path / f"{command}-{n}-{when}"
            shutil.copytree(start, root)
            assert run(root, {faults.CRASH_AT: f"{n}:{when}"}) == faults.CRASH_EXIT
            check_registry_recovers(root, command, (v1, v2, v3))


# ---- a lake written by the previous version ---------------------------------------------------------

def _plain_parquet(df: pd.DataFrame) -> bytes:
    """Parquet as the previous version wrote it: no footer metadata, no checksums."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf, compression="zstd")
    return buf.getvalue()


def _as_previous_version(store) -> None:
    """Rewrite a lake in the layout of the version before immutable parts: month files read, modified
    and written in place, the cursor and checkpoints in sync.json, rejects per window, merge state beside
    the current table, feature input snapshots beside the features."""
    import json

    from issue_assets.ingest import layout

    def legacy_json(key, doc):
        store.put_bytes(key, json.dumps(doc, indent=1, sort_keys=True).encode())

    cursors = {}
    for kind in ("issues", "comments"):
        log = RawLog(store, kind, REPO)
        doc = log.manifest()
        for month, entry in doc["months"].items():
            frame = log.part(entry)
            store.delete(entry["key"])
            store.put_bytes(layout.raw_month_key(kind, REPO, month), _plain_parquet(frame))
        if doc["rejects"]:
            rejects = log.rejects()
            for entry in doc["rejects"]:
                store.delete(entry["key"])
            store.put_bytes(f"{layout.legacy_rejects_prefix(REPO, kind)}beginning_now.parquet", _plain_parquet(rejects))
        legacy_json(layout.raw_manifest_key(kind, REPO),
                    {"seq": doc["seq"], "months": {m: {"rows": e["rows"], "seq": e["seq"]} for m, e in doc["months"].items()}})
        cursors[kind] = doc["cursor"]
        table = load_current(store, kind, REPO)
        store.put_bytes(layout.current_key(kind, REPO), _plain_parquet(table))
        legacy_json(layout.legacy_merge_state_key(kind, REPO), {"merged_through_seq": doc["seq"]})
    legacy_json(layout.sync_state_key(REPO), {"checkpoints": {}, "cursors": cursors, "windows_done": {}})
    from issue_assets.features.table import read_stored

    table, meta, _, snaps = read_stored(store, REPO)
    store.put_bytes(keys.features_key(REPO), _plain_parquet(table))
    for kind, snap in zip(("issues", "comments"), snaps, strict=True):
        store.delete(meta["inputs"][kind]["key"])
        store.put_bytes(keys.features_inputs_key(REPO, kind), _plain_parquet(snap))


def test_a_lake_written_by_the_previous_version_is_converted_and_loses_nothing(servers, reference, tmp_path):
    want, after_first = reference
    home = tmp_path / "previous"
    shutil.copytree(after_first, home)
    store = LocalStore(home / "lake")
    _as_previous_version(store)
    assert store.exists(f"raw/issues/{REPO.replace('/', '__')}/2025-01.parquet")
    _ingest(home, servers[1], 1)  # the next ingest of the new version, on the old files
    _assert_same(_state(store), want)
    assert not store.list("rejects/")  # folded into the manifest
    assert not store.exists("current/issues/demo-org__reliability.state.json")  # now in the table's footer
    for kind in ("issues", "comments"):
        assert RawLog(store, kind, REPO).stored_format() == 2
