"""A damaged file of each kind (truncated, or bytes flipped): the next operation that meets it names the
file and the way out, and the repair restores it from its source with nothing lost."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import reliability_workers as rw
from test_reliability_concurrency import scenario_data

from issue_assets.features.table import load_features, refresh_features
from issue_assets.github.client import GitHubClient
from issue_assets.github.conditional_cache import ConditionalCache
from issue_assets.ingest import layout
from issue_assets.ingest.current import load_current, merge_current
from issue_assets.ingest.rawlog import RawLog
from issue_assets.ingest.sync import sync_incremental, sync_window
from issue_assets.lake import keys
from issue_assets.lake.store import DamagedFile, LocalStore, read_parquet
from issue_assets.registry import ModelRegistry, RegistryError, repair_registry
from issue_assets.registry.registry import HISTORY, LATEST, POINTER
from issue_assets.repair import repair_repository
from issue_assets.serving.scoring import read_latest_predictions, write_predictions

REPO = rw.REPO
SLUG = layout.repo_slug(REPO)
HOW = f"run `issue-assets repair --repo {REPO}`"


@pytest.fixture(scope="module")
def servers():
    from issue_assets.github.replay import ReplayServer

    base, comments, changed = scenario_data(edit_month="2025-04")
    before = ReplayServer(base, comments).start()
    after = ReplayServer(base, comments)
    after.add_issues(changed)
    after.start()
    yield before, after
    before.stop()
    after.stop()


def _predictions(n: int, stamp: str) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    return pd.DataFrame({
        "repo": [REPO] * n, "id": np.arange(n, dtype="int64") + 1, "number": np.arange(n, dtype="int64") + 10,
        "title": [f"issue {i} ✓" for i in range(n)],
        "created_at": pd.date_range("2025-03-01", periods=n, freq="h", tz="UTC").astype("datetime64[us, UTC]"),
        "scoring_time": pd.Series([pd.Timestamp(stamp)] * n).astype("datetime64[us, UTC]"),
        "model_version": ["v0002-20260101T000000Z"] * n, "probability": rng.random(n),
        "rank": np.arange(n, dtype="int64") + 1, "contrib_1_feature": ["age_hours"] * n,
        "contrib_1_value": rng.random(n), "contrib_1_contribution": rng.normal(size=n),
    })


@pytest.fixture(scope="module")
def built(servers, tmp_path_factory):
    return build(servers, tmp_path_factory.mktemp("built"))


def build(servers, home):
    """Two ingests (the second after 100 edits and 40 new issues), features, two prediction batches, and
    a registry with v2 champion after v1, in `home`."""
    spec = ("local", str(home / "lake"))
    rw.ingest_incremental(spec, servers[0].url, "2025-06-01T00:00:01+00:00", str(home / "cache.json"))
    rw.ingest_incremental(spec, servers[1].url, "2025-06-02T00:00:01+00:00", str(home / "cache.json"))
    store = LocalStore(home / "lake")
    write_predictions(store, REPO, _predictions(30, "2030-01-01T06:00:00Z"), pd.Timestamp("2030-01-01T06:00:00Z"))
    write_predictions(store, REPO, _predictions(40, "2030-01-02T06:00:00Z"), pd.Timestamp("2030-01-02T06:00:00Z"))
    reg = ModelRegistry(LocalStore(home / "registry"), retry_delay=0.001)
    versions = [reg.register(rw.small_model(seed), {"as_of": f"2026-01-0{seed + 1}"}) for seed in range(3)]
    reg.promote(versions[0])
    reg.promote(versions[1])
    return home


def _state(store, *, refetched: bool) -> dict:
    """Everything a repair must bring back; `fetched_at` aside when versions were re-read from GitHub."""
    drop = ["fetched_at"] if refetched else []
    out = {}
    for kind in ("issues", "comments"):
        log = RawLog(store, kind, REPO)
        doc = log.manifest()
        parts = pd.concat([log.part(e) for e in doc["months"].values()], ignore_index=True)
        out[f"raw {kind}"] = parts.drop(columns=drop).sort_values(["id", "updated_at"]).reset_index(drop=True)
        out[f"cursor {kind}"] = doc["cursor"]
        out[f"current {kind}"] = load_current(store, kind, REPO).drop(columns=drop)
    out["rejects"] = RawLog(store, "issues", REPO).rejects()[["id", "reason", "payload"]].sort_values("id").reset_index(
        drop=True)
    out["features"] = load_features(store, REPO)
    for key in store.list("predictions/"):
        out[key] = read_parquet(store, key)
    return out


def _same(got: dict, want: dict) -> None:
    for name, value in want.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(got[name], value, obj=name)
        else:
            assert got[name] == value, name


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _flip(where: float):
    def damage(path) -> None:
        data = bytearray(path.read_bytes())
        at = int(len(data) * where)
        data[at] ^= 0x5A
        path.write_bytes(bytes(data))
    return damage


def _month_key(store, kind: str, month: str) -> str:
    return RawLog(store, kind, REPO).manifest()["months"][month]["key"]


def _ingest(store, server, *, full: bool = False) -> None:
    """`issue-assets ingest [--full]`: every kind synced (a full one re-reads the history without
    validators), then merged."""
    with GitHubClient(server.url, None, cache=ConditionalCache(), backoff_base=0.001) as client:
        for kind in ("issues", "comments"):
            if full:
                sync_window(client, store, REPO, kind, None, None, full=True)
            else:
                sync_incremental(client, store, REPO, kind)
            merge_current(store, REPO, kind)


# Each case: (file kind, the key damaged, how, what the next operation is, versions re-read from GitHub?)
LAKE_CASES = {
    "raw part, truncated (ingest checks sizes)": (
        lambda s: _month_key(s, "issues", "2025-04"), _truncate, "ingest", True),
    "raw part, bytes flipped (read on a full ingest)": (
        lambda s: _month_key(s, "comments", "2025-02"), _flip(0.5), "ingest --full", True),
    "raw manifest": (lambda s: layout.raw_manifest_key("issues", REPO), _flip(0.4), "ingest", False),
    "rejects": (lambda s: RawLog(s, "issues", REPO).manifest()["rejects"][0]["key"], _truncate, "ingest", True),
    "sync state": (lambda s: layout.sync_state_key(REPO), _flip(0.5), "ingest", False),
    "current table": (lambda s: layout.current_key("issues", REPO), _truncate, "ingest", False),
    "merge state (current table footer)": (lambda s: layout.current_key("comments", REPO), _flip(0.985), "ingest", False),
    "feature table": (lambda s: keys.features_key(REPO), _flip(0.5), "features", False),
    "feature input snapshot": (
        lambda s: next(k for k in s.list("features/") if ".inputs.issues." in k), _truncate, "features", False),
    "latest predictions": (lambda s: f"predictions/{SLUG}/latest.parquet", _truncate, "predictions", False),
    "an earlier prediction batch (restored from its CSV)": (
        lambda s: f"predictions/{SLUG}/20300101T060000Z.parquet", _flip(0.5), "read batch", False),
}


@pytest.mark.parametrize("case", list(LAKE_CASES))
def test_damaged_lake_file_is_named_then_restored(built, servers, tmp_path, case):
    check_lake_damage(built, servers, tmp_path, *LAKE_CASES[case])


def check_lake_damage(built, servers, tmp_path, pick, damage, operation: str, refetched: bool) -> None:
    home = tmp_path / "home"
    shutil.copytree(built, home)
    store = LocalStore(home / "lake")
    want = _state(store, refetched=refetched)
    key = pick(store)
    damage(store.path(key))

    with pytest.raises(DamagedFile) as info:
        if operation.startswith("ingest"):
            _ingest(store, servers[1], full=operation.endswith("--full"))
        elif operation == "features":
            refresh_features(store, REPO)
        elif operation == "predictions":
            read_latest_predictions(store, REPO)
        else:
            read_parquet(store, key)
    message = str(info.value)
    assert key in message and "\n" not in message, message
    if not key.startswith("predictions/"):
        assert message.endswith(HOW), message

    with GitHubClient(servers[1].url, None, cache=ConditionalCache(), backoff_base=0.001) as client:
        report = repair_repository(store, REPO, client=client)
    assert any(key in d for d in report.damaged), report.lines()
    assert report.ok and not report.pending, report.lines()
    _same(_state(store, refetched=refetched), want)
    again = repair_repository(store, REPO)
    assert not again.damaged and again.ok, again.lines()  # nothing left to report: the damage is gone
    _ingest(store, servers[1])  # and the next ingest runs clean


def test_damaged_event_store_snapshot_is_named_then_rewritten(built, tmp_path):
    from issue_assets.features.table import load_snapshot

    home = tmp_path / "home"
    shutil.copytree(built, home)
    store = LocalStore(home / "lake")
    key = keys.feature_snapshot_key(REPO)
    whole = store.get_bytes(key)
    _flip(0.5)(store.path(key))
    with pytest.raises(DamagedFile) as info:
        load_snapshot(store, REPO)
    assert key in str(info.value) and str(info.value).endswith(HOW)
    report = repair_repository(store, REPO)
    assert any(key in d for d in report.damaged) and report.ok, report.lines()
    assert store.get_bytes(key) == whole  # the same history gives the same snapshot, byte for byte
    assert not repair_repository(store, REPO).damaged


def test_damaged_served_log_part_is_named_removed_and_reported_lost(built, tmp_path):
    """The served-prediction log is the only record of what was served: a damaged part cannot be restored."""
    from issue_assets.monitoring.served import Served, append_served, log_frame, read_served

    home = tmp_path / "home"
    shutil.copytree(built, home)
    store = LocalStore(home / "lake")
    parts = []
    for k in range(3):
        n = 4
        parts.append(append_served(store, REPO, log_frame([Served(
            REPO, np.arange(n) + 10 * k, np.arange(n), np.zeros(n, "int64"), np.full(n, 3_600_000_000), "v0001-x",
            np.full(n, 0.5), None, (), "http", 0)])))
    _flip(0.5)(store.path(parts[1]))
    with pytest.raises(DamagedFile) as info:
        read_served(store, REPO)
    assert parts[1] in str(info.value) and str(info.value).endswith(HOW)
    report = repair_repository(store, REPO)
    assert not report.ok and any(parts[1] in x for x in report.lost), report.lines()
    assert sorted(read_served(store, REPO)["id"]) == [0, 1, 2, 3, 20, 21, 22, 23]


def test_damaged_outcomes_summary_is_named_and_removed_for_recomputing(built, tmp_path):
    from issue_assets.lake.documents import write_json
    from issue_assets.monitoring.live import read_summary

    home = tmp_path / "home"
    shutil.copytree(built, home)
    store = LocalStore(home / "lake")
    key = keys.outcomes_summary_key(REPO)
    write_json(store, key, {"repo": REPO, "champion": None})
    _flip(0.5)(store.path(key))
    with pytest.raises(DamagedFile) as info:
        read_summary(store, REPO)
    assert key in str(info.value)
    report = repair_repository(store, REPO)
    assert report.ok and any(key in p for p in report.pending), report.lines()
    assert read_summary(store, REPO) is None


def test_a_raw_part_whose_versions_github_no_longer_serves_is_reported_lost(built, servers, tmp_path):
    """A month part holding versions superseded since (edited in April) cannot be re-read whole: the
    repair restores what GitHub still has and says how many versions are gone; current state and
    features are untouched."""
    home = tmp_path / "home"
    shutil.copytree(built, home)
    store = LocalStore(home / "lake")
    want = _state(store, refetched=True)
    months = RawLog(store, "issues", REPO).manifest()["months"]
    key = months["2025-02"]["key"]
    _truncate(store.path(key))
    with GitHubClient(servers[1].url, None, cache=ConditionalCache(), backoff_base=0.001) as client:
        report = repair_repository(store, REPO, client=client)
    assert not report.ok and any("2025-02" in x and "superseded" in x for x in report.lost), report.lines()
    got = _state(store, refetched=True)
    for name in ("current issues", "current comments", "features", "raw comments"):
        pd.testing.assert_frame_equal(got[name], want[name], obj=name)
    assert len(got["raw issues"]) < len(want["raw issues"])


def test_repair_without_github_marks_the_refetch_for_the_next_ingest(built, servers, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(built, home)
    store = LocalStore(home / "lake")
    want = _state(store, refetched=True)
    key = _month_key(store, "issues", "2025-04")
    _truncate(store.path(key))
    report = repair_repository(store, REPO)
    assert report.pending and "re-reads from 2025-04-01" in report.pending[0], report.lines()
    pd.testing.assert_frame_equal(load_current(store, "issues", REPO).drop(columns=["fetched_at"]),
                                  want["current issues"])  # the intact table is kept meanwhile
    with GitHubClient(servers[1].url, None, cache=ConditionalCache(), backoff_base=0.001) as client:
        result = sync_incremental(client, store, REPO, "issues")
    assert result.not_modified == 0 and RawLog(store, "issues", REPO).manifest()["refetch"] is None
    merge_current(store, REPO, "issues")
    _same(_state(store, refetched=True), want)


# ---- registry files ----------------------------------------------------------------------------

def _registry_files(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


REGISTRY_CASES = {
    "champion pointer": (lambda v: POINTER, _flip(0.3), lambda reg, v: reg.champion()),
    "history": (lambda v: HISTORY, _truncate, lambda reg, v: reg.list_versions()),
    "latest_model.json": (lambda v: LATEST, _flip(0.5), lambda reg, v: reg.champion()),
    "version metadata": (lambda v: f"models/{v[0]}/metadata.json", _flip(0.6), lambda reg, v: reg.get_metadata(v[0])),
    "calibration": (lambda v: f"models/{v[1]}/calibration.json", _truncate, lambda reg, v: reg.load_model(v[1])),
    "champion model.json": (lambda v: f"models/{v[1]}/model.json", _truncate, lambda reg, v: reg.champion()),
}


@pytest.mark.parametrize("case", list(REGISTRY_CASES))
def test_damaged_registry_file_is_named_then_restored(built, tmp_path, case):
    check_registry_damage(built, tmp_path, *REGISTRY_CASES[case])


def check_registry_damage(built, tmp_path, pick, damage, operation) -> None:
    root = tmp_path / "registry"
    shutil.copytree(built / "registry", root)
    reg = ModelRegistry(LocalStore(root), retry_delay=0.001)
    versions = reg.list_versions()
    want_files, want_history = _registry_files(root), reg.history()
    key = pick(versions)
    damage(root / key)
    with pytest.raises(RegistryError) as info:
        operation(reg, versions)
    assert key in str(info.value) and "issue-assets model repair" in str(info.value), str(info.value)
    report = repair_registry(reg)
    assert report.ok and any(key in a for a in report.actions), report.lines()
    assert _registry_files(root) == want_files and reg.history() == want_history
    assert reg.champion() == versions[1] and reg.rollback()["version"] == versions[0]


def test_history_rebuilt_from_event_objects_keeps_every_event(built, tmp_path):
    root = tmp_path / "registry"
    shutil.copytree(built / "registry", root)
    reg = ModelRegistry(LocalStore(root), retry_delay=0.001)
    want = reg.history()
    (root / HISTORY).write_bytes(b'{"format": 1, "ev')
    report = repair_registry(reg)
    assert report.ok and any("rebuilt from" in a for a in report.actions), report.lines()
    assert reg.history() == want
    assert json.loads((root / HISTORY).read_bytes())["events"] == want


def test_repair_of_the_whole_lake_finds_every_repository_and_nothing_to_do(built, tmp_path):
    from issue_assets.repair import repair_lake

    home = tmp_path / "home"
    shutil.copytree(built, home)
    before = {p: p.read_bytes() for p in (home / "lake").rglob("*") if p.is_file()}
    (report,) = repair_lake(LocalStore(home / "lake"))
    assert report.repo == REPO and report.ok and not report.damaged and not report.actions, report.lines()
    assert report.checked >= 12
    assert {p: p.read_bytes() for p in (home / "lake").rglob("*") if p.is_file()} == before
