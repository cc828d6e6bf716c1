"""Ingestion end to end: the client against the replay server over loopback HTTP, into a local lake.

Covers the acceptance list of the ingestion issue: full syncs of the real exports, incremental and
no-change polls, faults and rate limits, kill-and-resume, idempotent windows, daily windows, secrets,
bad input and atomic writes.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import math
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import requests
from conftest import MATOMO_ISSUES, RUST_COMMENTS, RUST_ISSUES

from issue_assets.github.client import AuthError, BadResponseError, GitHubClient, NotFoundError
from issue_assets.github.clock import FakeClock
from issue_assets.github.conditional_cache import ConditionalCache
from issue_assets.github.export import repo_of
from issue_assets.github.replay import ReplayServer, _Response
from issue_assets.github.simulate import simulate_repository
from issue_assets.ingest import layout
from issue_assets.ingest.current import load_current, merge_current
from issue_assets.ingest.rawlog import RawLog
from issue_assets.ingest.sync import cursor, sync_incremental, sync_window
from issue_assets.lake import store as store_module
from issue_assets.lake.store import LocalStore, read_parquet

REPO = "demo-org/demo-project"
NOW = datetime(2030, 1, 1, tzinfo=UTC)
TOKEN = "ghp_IngestTestToken_0123456789abcdefXYZ"


def fixed_now() -> datetime:
    return NOW


def utc(value: str) -> pd.Timestamp:
    return pd.Timestamp(value).tz_convert("UTC") if pd.Timestamp(value).tzinfo else pd.Timestamp(value, tz="UTC")


def make_client(server: ReplayServer, **kwargs) -> GitHubClient:
    kwargs.setdefault("cache", ConditionalCache())
    kwargs.setdefault("backoff_base", 0.001)
    return GitHubClient(server.url, **kwargs)


def raw_log(store, kind: str, repo: str) -> pd.DataFrame:
    """Every version the manifest commits (each part verified against its checksum)."""
    log = RawLog(store, kind, repo)
    doc = log.manifest()
    frames = [log.part(e) for e in doc["months"].values()]
    if not frames:
        return pd.DataFrame(columns=["id", "updated_at"])
    return pd.concat(frames, ignore_index=True).sort_values(["id", "updated_at"]).reset_index(drop=True)


def lake_files(store, *prefixes: str) -> dict[str, bytes]:
    return {k: store.get_bytes(k) for p in prefixes for k in store.list(p)}


def sync_all(client, store, repo: str, kinds=("issues", "comments"), **kwargs) -> dict:
    out = {}
    for kind in kinds:
        out[kind] = sync_incremental(client, store, repo, kind, now=fixed_now, **kwargs)
        merge_current(store, repo, kind)
    return out


def assert_no_duplicate_versions(log: pd.DataFrame) -> None:
    dupes = log.duplicated(["id", "updated_at"])
    assert not dupes.any(), f"duplicate (id, updated_at) in the raw log: {log.loc[dupes, ['id', 'updated_at']].head()}"


@pytest.fixture(scope="module")
def demo():
    """600 issues/PRs with comments over 8 months: 6 issue pages, ~20 comment pages, many month files."""
    return simulate_repository(REPO, n_issues=600, seed=7, days=240)


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "lake")


# ---- the real exports ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_issue_lake(exports, tmp_path_factory):
    """Both issue exports served at once, synced from scratch with sync_incremental + merge_current."""
    rust, matomo = exports.path(RUST_ISSUES), exports.path(MATOMO_ISSUES)
    server = ReplayServer.from_files([rust, matomo]).start()
    store = LocalStore(tmp_path_factory.mktemp("real") / "lake")
    client = make_client(server)
    results = {}
    try:
        for repo in ("rust-lang/rust", "matomo-org/matomo", "rust-lang/rfcs"):
            results[repo] = sync_incremental(client, store, repo, "issues", now=fixed_now)
            merge_current(store, repo, "issues")
        yield server, client, store, results
    finally:
        client.close()
        server.stop()


def test_full_sync_of_both_issue_exports_equals_the_export(real_issue_lake, exports):
    server, _, store, results = real_issue_lake
    expected: dict[str, dict[int, dict]] = {}
    for name in (RUST_ISSUES, MATOMO_ISSUES):
        for item in exports.items(name):
            expected.setdefault(repo_of(item), {})[item["id"]] = item
    # The rust export holds two items that belong to rust-lang/rfcs: served, and synced, under that repo.
    assert sorted(expected) == ["matomo-org/matomo", "rust-lang/rfcs", "rust-lang/rust"]
    assert len(expected["rust-lang/rfcs"]) == 2
    assert len(expected["rust-lang/rust"]) == 30_650 and len(expected["matomo-org/matomo"]) == 19_085

    for repo, items in expected.items():
        table = load_current(store, "issues", repo)
        assert table["id"].is_unique, repo
        assert set(table["id"]) == set(items), repo
        by_id = table.set_index("id")
        want_updated = pd.Series({i: utc(it["updated_at"]) for i, it in items.items()})
        assert (by_id["updated_at"].reindex(want_updated.index) == want_updated).all(), repo
        want_pr = pd.Series({i: "pull_request" in it for i, it in items.items()})
        assert (by_id["is_pull_request"].reindex(want_pr.index) == want_pr).all(), repo
        assert (by_id["number"].reindex(want_pr.index) == pd.Series({i: it["number"] for i, it in items.items()})).all()
        log = raw_log(store, "issues", repo)
        assert len(log) == len(items)
        assert_no_duplicate_versions(log)
        result = results[repo]
        assert result.new_versions == len(items) and result.rejected == 0
        pages = math.ceil(len(items) / 100)
        assert result.requests == pages, (repo, result.requests, pages)

    # 2765 and 2769 appear twice in the rust export: the second copies are the rfcs items (moved there).
    rust = load_current(store, "issues", "rust-lang/rust")
    both = pd.concat([rust, load_current(store, "issues", "rust-lang/rfcs")], ignore_index=True)
    for number in (2765, 2769):
        same = both.loc[both["number"] == number]
        assert len(same) == 2 and same["id"].nunique() == 2, f"#{number} must stay two issues keyed by id"
        assert sorted(same["repo"]) == ["rust-lang/rfcs", "rust-lang/rust"]
    assert rust["is_pull_request"].mean() == pytest.approx(0.48, abs=0.02)
    assert server.stats()["by_endpoint_status"]["issues"] == {"200": 307 + 191 + 1}


def test_real_no_change_poll_then_incremental_day(real_issue_lake, exports):
    server, client, store, _ = real_issue_lake
    for repo in ("rust-lang/rust", "matomo-org/matomo"):
        server.reset_stats()
        before = client.stats.requests
        poll = sync_incremental(client, store, repo, "issues", now=fixed_now)
        assert client.stats.requests - before == 1 and poll.not_modified == 1 and poll.new_versions == 0
        assert server.stats()["by_endpoint_status"] == {"issues": {"304": 1}}, repo

    # One day of new and updated items on top of the whole history.
    rust = {i["id"]: i for i in exports.items(RUST_ISSUES) if repo_of(i) == "rust-lang/rust"}
    updated = []
    for n, item in enumerate(list(rust.values())[:150]):
        item = copy.deepcopy(item)
        item["updated_at"] = f"2026-01-02T{n // 60:02d}:{n % 60:02d}:00Z"
        item["title"] = f"edited {n}"
        updated.append(item)
    fresh = copy.deepcopy(updated[0])
    fresh.update(id=9_000_000_001, number=99_999, title="brand new", created_at="2026-01-02T05:00:00Z",
                 updated_at="2026-01-02T05:00:00Z")
    fresh.pop("pull_request", None)
    server.add_issues([*updated, fresh])
    server.reset_stats()
    result = sync_incremental(client, store, "rust-lang/rust", "issues", now=fixed_now)
    merged = merge_current(store, "rust-lang/rust", "issues")
    assert result.new_versions == 151 and result.requests == 2  # 151 items + the cursor item: 2 pages
    assert server.stats()["by_endpoint"] == {"issues": 2}
    assert merged.inserted == 1 and merged.updated == 150 and merged.rows == 30_651
    table = load_current(store, "issues", "rust-lang/rust").set_index("id")
    assert table.loc[updated[7]["id"], "title"] == "edited 7"
    assert table.loc[9_000_000_001, "title"] == "brand new" and not table.loc[9_000_000_001, "is_pull_request"]
    assert_no_duplicate_versions(raw_log(store, "issues", "rust-lang/rust"))
    assert len(raw_log(store, "issues", "rust-lang/rust")) == 30_650 + 151


def comments_updated_outside(path, lo: str, hi: str) -> list[dict]:
    """The export's comments updated before `lo` or from `hi` on, parsing only those lines."""
    stamp = re.compile(rb'"updated_at":\s*"(\d{4}-\d\d-\d\d)')
    out = []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            day = stamp.search(line).group(1).decode()
            if day < lo or day >= hi:
                item = json.loads(line)
                assert item["updated_at"].endswith("Z")
                out.append(item)
    return out


def test_rust_comments_in_two_time_bounded_windows(exports, replay_server, store):
    """The 146,789-comment sweep is the benchmark's job; here the oldest and the newest years."""
    server = replay_server(comments_files=[exports.path(RUST_COMMENTS)])
    early_end = datetime(2013, 1, 1, tzinfo=UTC)
    late_start = datetime(2018, 1, 1, tzinfo=UTC)
    with make_client(server) as client:
        early = sync_window(client, store, "rust-lang/rust", "comments", None, early_end, now=fixed_now)
        late = sync_window(client, store, "rust-lang/rust", "comments", late_start, None, now=fixed_now)
    merge_current(store, "rust-lang/rust", "comments")
    want = {c["id"]: c for c in comments_updated_outside(exports.path(RUST_COMMENTS), "2013-01-01", "2018-01-01")}
    table = load_current(store, "comments", "rust-lang/rust")
    assert table["id"].is_unique and set(table["id"]) == set(want)
    assert early.new_versions + late.new_versions == len(want) == 9_480 + 5_512
    sample = table.set_index("id").loc[list(want)[:500]]
    assert (sample["issue_number"] == [int(want[i]["issue_url"].rsplit("/", 1)[1]) for i in sample.index]).all()
    assert (sample["body"] == [want[i]["body"] or "" for i in sample.index]).all()
    # The early window stopped at the first page past its end instead of sweeping to 2025.
    assert early.pages == math.ceil(9_480 / 100)


# ---- incremental syncs and polls ----------------------------------------------------------------


def test_incremental_sync_fetches_only_new_and_updated_items(demo, replay_server, store):
    issues, comments = demo
    server = replay_server(issues, comments)
    with make_client(server) as client:
        first = sync_all(client, store, REPO)
        assert first["issues"].requests == 6 and first["issues"].new_versions == 600
        assert first["comments"].new_versions == len(comments)

        changed = copy.deepcopy(issues[3])
        changed.update(state="closed", closed_at="2029-06-01T00:00:00Z", updated_at="2029-06-01T00:00:00Z",
                       title="closed later")
        added = copy.deepcopy(issues[4])
        added.update(id=77_000_001, number=10_001, created_at="2029-06-02T00:00:00Z",
                     updated_at="2029-06-02T00:00:00Z", title="new one")
        note = copy.deepcopy(comments[0])
        note.update(id=88_000_001, created_at="2029-06-03T00:00:00Z", updated_at="2029-06-03T00:00:00Z", body="hi")
        server.add_issues([changed, added])
        server.add_comments([note])
        server.reset_stats()
        second = sync_all(client, store, REPO)

    assert server.stats()["by_endpoint_status"] == {"issues": {"200": 1}, "comments": {"200": 1}}
    # `since` is inclusive: the items at the cursor come back once more, and are not stored twice.
    at_cursor = {kind: sum(x["updated_at"] == max(y["updated_at"] for y in items) for x in items)
                 for kind, items in (("issues", issues), ("comments", comments))}
    assert second["issues"].items_fetched == 2 + at_cursor["issues"] and second["issues"].new_versions == 2
    assert second["comments"].items_fetched == 1 + at_cursor["comments"]
    assert second["comments"].new_versions == 1
    table = load_current(store, "issues", REPO).set_index("id")
    assert len(table) == 601
    assert table.loc[changed["id"], "title"] == "closed later" and table.loc[changed["id"], "state"] == "closed"
    assert table.loc[77_000_001, "title"] == "new one"
    # first_seen_at stays the first observation of the id, not the fetch of the newer version.
    assert table.loc[changed["id"], "first_seen_at"] == pd.Timestamp(NOW)
    notes = load_current(store, "comments", REPO).set_index("id")
    assert notes.loc[88_000_001, "body"] == "hi" and len(notes) == len(comments) + 1
    log = raw_log(store, "issues", REPO)
    assert (log["id"] == changed["id"]).sum() == 2
    assert_no_duplicate_versions(log)


def test_no_change_poll_is_one_304_per_endpoint(demo, replay_server, store, tmp_path):
    issues, comments = demo
    server = replay_server(issues, comments)
    cache_path = tmp_path / "http_cache.json"
    with make_client(server, cache=ConditionalCache(cache_path)) as client:
        sync_all(client, store, REPO)
    # A new process: validators come from the cache file.
    for _ in range(2):
        server.reset_stats()
        with make_client(server, cache=ConditionalCache(cache_path)) as client:
            polls = sync_all(client, store, REPO)
        assert server.stats()["by_endpoint_status"] == {"issues": {"304": 1}, "comments": {"304": 1}}
        for result in polls.values():
            assert result.requests == 1 and result.not_modified == 1 and result.new_versions == 0
    remaining = server._rate_snapshot()["remaining"]
    assert remaining == server.rate_limit - (6 + math.ceil(len(comments) / 100))  # the 304s were free


# ---- faults, rate limits, kills -----------------------------------------------------------------


def clean_tables(issues, comments, tmp_path, replay_server):
    server = replay_server(issues, comments)
    store = LocalStore(tmp_path / "clean")
    with make_client(server) as client:
        sync_all(client, store, REPO)
    return store


def test_faults_and_rate_limit_exhaustion_end_with_the_clean_table(demo, replay_server, tmp_path, caplog):
    issues, comments = demo
    clean = clean_tables(issues, comments, tmp_path, replay_server)
    clock = FakeClock(start=1_900_000_000.0)
    server = replay_server(issues, comments, fault_rate=0.1, seed=3, rate_limit=5, rate_limit_window=60,
                           secondary_limit_rate=0.05, clock=clock)
    store = LocalStore(tmp_path / "faulty")
    # Someone else used up the budget of this window: the first request is refused with 403.
    with requests.Session() as other:
        while server._rate_snapshot()["remaining"] > 0:
            try:
                other.get(f"{server.url}/repos/{REPO}", timeout=10)
            except requests.RequestException:
                pass
    with make_client(server, clock=clock, backoff_base=0.5, seed=1, max_retries=8) as client:
        sync_all(client, store, REPO)
        stats = client.stats
    s = server.stats()
    assert s["faults"] >= 2 and set(s["faults_by_kind"]) >= {"502", "reset"}
    # One refused request, then waits before each request once the budget showed remaining 0.
    assert s["rate_limited"] >= 1 and stats.rate_limit_waits >= 3 and stats.retries >= 2
    assert s["secondary_limited"] >= 1 and stats.secondary_waits >= 1
    assert clock.time() > 1_900_000_000.0 + 60  # waited (on the fake clock) for at least one reset
    for kind in ("issues", "comments"):
        got, want = load_current(store, kind, REPO), load_current(clean, kind, REPO)
        pd.testing.assert_frame_equal(got, want)
        pd.testing.assert_frame_equal(raw_log(store, kind, REPO), raw_log(clean, kind, REPO))


class Killed(RuntimeError):
    pass


def kill_after(pages: int):
    seen = {"n": 0}

    def on_progress(_message):
        seen["n"] += 1
        if seen["n"] == pages:
            raise Killed(f"killed after page {pages}")

    return on_progress


@pytest.mark.parametrize("kind, kill_at", [("issues", 4), ("comments", 9)])
def test_killed_backfill_resumes_without_gaps_or_duplicates(demo, replay_server, tmp_path, kind, kill_at):
    issues, comments = demo
    clean = clean_tables(issues, comments, tmp_path, replay_server)
    server = replay_server(issues, comments)
    store = LocalStore(tmp_path / "killed")
    with make_client(server) as client:
        with pytest.raises(Killed):
            sync_window(client, store, REPO, kind, now=fixed_now, on_progress=kill_after(kill_at))
        partial = raw_log(store, kind, REPO)
        assert 0 < len(partial) < len(clean_log := raw_log(clean, kind, REPO))
        assert cursor(store, REPO, kind) is None  # the window did not finish
        server.reset_stats()
        resumed = sync_window(client, store, REPO, kind, now=fixed_now)
    assert resumed.resumed_from is not None
    # Only the pages from the checkpoint on were fetched again.
    total_pages = math.ceil(len(clean_log) / 100)
    assert server.stats()["requests"] < total_pages
    merge_current(store, REPO, kind)
    log = raw_log(store, kind, REPO)
    assert_no_duplicate_versions(log)
    pd.testing.assert_frame_equal(log, clean_log)
    pd.testing.assert_frame_equal(load_current(store, kind, REPO), load_current(clean, kind, REPO))
    assert RawLog(store, kind, REPO).manifest()["checkpoints"] == {}


def test_rejects_seen_before_a_kill_survive_the_resume_once_each(demo, replay_server, tmp_path):
    issues, comments = demo
    ordered = sorted(issues, key=lambda i: (i["updated_at"], i["id"]))
    # Three bad items early in the history (before the checkpoint the kill leaves), one late.
    bad = []
    for n, at in enumerate([ordered[5], ordered[60], ordered[120], ordered[-3]]):
        bad.append({**at, "id": 10_000_000 + n, "number": None, "title": f"bad {n}"})
    server = replay_server(issues + bad, comments)
    store = LocalStore(tmp_path / "killed")
    with make_client(server) as client:
        with pytest.raises(Killed):
            sync_window(client, store, REPO, "issues", now=fixed_now, on_progress=kill_after(4))
        assert _checkpoints(store)  # the kill came after a checkpoint: the resume starts past the early rejects
        resumed = sync_window(client, store, REPO, "issues", now=fixed_now)
        assert resumed.resumed_from is not None and resumed.rejected < 4
        assert _reject_titles(store) == ["bad 0", "bad 1", "bad 2", "bad 3"]
        again = sync_window(client, store, REPO, "issues", now=fixed_now, resume=False)  # the whole window again
    assert again.rejected == 4
    assert _reject_titles(store) == ["bad 0", "bad 1", "bad 2", "bad 3"]


def _reject_titles(store) -> list[str]:
    rejects = RawLog(store, "issues", REPO).rejects()
    assert set(rejects["reason"]) == {"missing number"}
    return sorted(json.loads(p)["title"] for p in rejects["payload"])


def _checkpoints(store) -> dict:
    return RawLog(store, "issues", REPO).manifest()["checkpoints"]


def test_kill_between_part_write_and_manifest_commit_loses_nothing(demo, replay_server, tmp_path, monkeypatch):
    """A part written but never committed is invisible (an orphan for repair to sweep); the checkpoint
    was not committed either, so the resume fetches those versions again."""
    issues, comments = demo
    clean = clean_tables(issues, comments, tmp_path, replay_server)
    server = replay_server(issues, comments)
    store = LocalStore(tmp_path / "killed")
    original = store.compare_and_put
    calls = {"n": 0}

    def commit_then_die(key, data, expected):
        if key.endswith("_manifest.json"):
            calls["n"] += 1
            if calls["n"] == 3:
                raise Killed("killed between the part file and the manifest")
        return original(key, data, expected)

    with make_client(server) as client:
        monkeypatch.setattr(store, "compare_and_put", commit_then_die)
        with pytest.raises(Killed):
            sync_window(client, store, REPO, "issues", now=fixed_now)
        monkeypatch.setattr(store, "compare_and_put", original)
        orphans = set(store.list("raw/")) - {e["key"] for e in RawLog(store, "issues", REPO).manifest()["months"].values()}
        assert any(k.endswith(".parquet") for k in orphans)
        sync_window(client, store, REPO, "issues", now=fixed_now)
    merge_current(store, REPO, "issues")
    pd.testing.assert_frame_equal(load_current(store, "issues", REPO), load_current(clean, "issues", REPO))
    manifest = json.loads(store.get_bytes(layout.raw_manifest_key("issues", REPO)))
    log = raw_log(store, "issues", REPO)
    assert sum(m["rows"] for m in manifest["months"].values()) == len(log) == 600


def test_crash_in_the_last_write_does_not_hide_versions_behind_a_304(demo, replay_server, store, monkeypatch):
    """Regression: the page iterator committed its ETags before the final month was written, so after a
    crash there the re-run got 304 and never stored those versions."""
    issues, comments = demo
    server = replay_server(issues, comments)
    with make_client(server) as client:
        sync_all(client, store, REPO, kinds=("issues",))
        late = [copy.deepcopy(i) for i in issues[:3]]
        for n, item in enumerate(late):
            item["updated_at"] = f"2029-03-0{n + 1}T00:00:00Z"
        server.add_issues(late)

        real_put = store.put_bytes

        def crash(key, data):
            if key.startswith("raw/"):
                raise OSError("disk full")
            return real_put(key, data)

        monkeypatch.setattr(store, "put_bytes", crash)
        with pytest.raises(OSError):
            sync_incremental(client, store, REPO, "issues", now=fixed_now)
        monkeypatch.undo()
        again = sync_incremental(client, store, REPO, "issues", now=fixed_now)
    assert again.new_versions == 3 and again.not_modified == 0
    merge_current(store, REPO, "issues")
    table = load_current(store, "issues", REPO).set_index("id")
    assert (table.loc[[i["id"] for i in late], "updated_at"] > utc("2029-01-01")).all()


def test_rerunning_a_window_is_idempotent(demo, replay_server, store):
    issues, comments = demo
    server = replay_server(issues, comments)
    start, end = datetime(2021, 3, 1, tzinfo=UTC), datetime(2021, 6, 1, tzinfo=UTC)
    with make_client(server) as client:
        first = sync_window(client, store, REPO, "issues", start, end, now=fixed_now)
    merge_current(store, REPO, "issues")
    before = lake_files(store, "raw/", "current/")
    assert first.new_versions > 0
    for _ in range(2):  # a fresh client: every page is downloaded again, nothing is new
        with make_client(server) as client:
            again = sync_window(client, store, REPO, "issues", start, end,
                                now=lambda: NOW + timedelta(days=1))
        merge_current(store, REPO, "issues")
        assert again.items_fetched >= first.new_versions and again.new_versions == 0
        after = lake_files(store, "raw/", "current/")
        assert {k: v for k, v in after.items() if k.endswith(".parquet")} == \
            {k: v for k, v in before.items() if k.endswith(".parquet")}


# ---- daily windows --------------------------------------------------------------------------------


def day_bounds(day: str) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return start, start + timedelta(days=1)


def test_daily_window_stores_exactly_the_versions_updated_that_day(demo, replay_server, store):
    issues, comments = demo
    by_day = Counter(i["updated_at"][:10] for i in issues)
    day = max(sorted(by_day), key=lambda d: by_day[d])
    start, end = day_bounds(day)
    edge = copy.deepcopy(issues[10])  # exactly at midnight: belongs to the day
    edge.update(id=55_000_001, number=20_001, updated_at=f"{day}T00:00:00Z", created_at=f"{day}T00:00:00Z")
    after = copy.deepcopy(issues[11])  # exactly at the next midnight: does not
    after.update(id=55_000_002, number=20_002, updated_at=end.strftime("%Y-%m-%dT00:00:00Z"),
                 created_at=f"{day}T00:00:00Z")
    server = replay_server([*issues, edge, after], comments)
    with make_client(server) as client:
        result = sync_window(client, store, REPO, "issues", start, end, now=fixed_now)
    want = {i["id"] for i in issues if i["updated_at"][:10] == day} | {55_000_001}
    log = raw_log(store, "issues", REPO)
    assert set(log["id"]) == want and len(log) == len(want) == result.new_versions
    assert ((log["updated_at"] >= pd.Timestamp(start)) & (log["updated_at"] < pd.Timestamp(end))).all()
    assert result.pages == 1 and cursor(store, REPO, "issues") is None  # a middle window moves no cursor


# ---- secrets and unknown repositories -------------------------------------------------------------


def test_token_never_leaks(demo, replay_server, tmp_path, caplog):
    issues, comments = demo
    server = replay_server(issues[:150], comments[:50], token=TOKEN)
    store = LocalStore(tmp_path / "lake")
    cache_path = tmp_path / "http_cache.json"
    caplog.set_level(logging.DEBUG)
    events = []
    with make_client(server, token=TOKEN, cache=ConditionalCache(cache_path),
                     on_event=lambda kind, info: events.append((kind, info))) as client:
        results = sync_all(client, store, REPO)
        shown = repr(client)
    assert load_current(store, "issues", REPO)["id"].nunique() == 150
    texts = [caplog.text, shown, repr(events), cache_path.read_text()]
    texts += [json.dumps(r.as_dict()) for r in results.values()]
    assert TOKEN not in "\n".join(texts)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path

    empty = LocalStore(tmp_path / "other")
    with make_client(server, token="ghp_wrong_" + TOKEN[::-1]) as client:
        with pytest.raises(AuthError) as info:
            sync_window(client, empty, REPO, "issues")
    message = str(info.value)
    assert REPO in message and "401" in message
    for secret in (TOKEN, TOKEN[::-1]):
        assert secret not in message and secret not in repr(info.value) and secret not in caplog.text
    assert empty.list() == []


def test_unknown_repository_is_not_found_and_writes_nothing(demo, replay_server, store):
    issues, comments = demo
    server = replay_server(issues, comments)
    with make_client(server) as client:
        for kind in ("issues", "comments"):
            with pytest.raises(NotFoundError) as info:
                sync_incremental(client, store, "nobody/nothing", kind)
            assert "nobody/nothing" in str(info.value)
    assert store.list() == []


# ---- bad input ----------------------------------------------------------------------------------


class BrokenPageServer(ReplayServer):
    """Answers one page of the issue listing with HTML instead of JSON, every time."""

    def __init__(self, *args, broken_page: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.broken_page = broken_page

    def _list_issues(self, repo, params, handler, query, path):
        resp = super()._list_issues(repo, params, handler, query, path)
        if params.get("page") == str(self.broken_page):
            return _Response(200, b"<html>upstream proxy error</html>", resp.headers, "issues")
        return resp


def test_page_that_is_not_json_fails_clearly_and_keeps_files_whole(demo, store):
    issues, comments = demo
    good = ReplayServer(issues, comments).start()
    try:
        with make_client(good) as client:
            sync_window(client, store, REPO, "issues", now=fixed_now)
    finally:
        good.stop()
    before = lake_files(store, "raw/")
    # Every item moves to the second half of 2029: the same month files would be written again.
    moved = []
    for n, item in enumerate(issues):
        item = copy.deepcopy(item)
        item["updated_at"] = f"2029-{7 + n // 100:02d}-{1 + n % 28:02d}T00:00:00Z"
        moved.append(item)
    server = BrokenPageServer(moved, broken_page=4).start()
    try:
        with make_client(server, max_retries=2) as client:
            with pytest.raises(BadResponseError) as info:
                sync_window(client, store, REPO, "issues", now=fixed_now)
    finally:
        server.stop()
    message = str(info.value)
    assert "page 4" in message and "invalid JSON" in message and "/repos/demo-org/demo-project/issues" in message
    assert info.value.page == 4 and "page=4" in info.value.url
    after = lake_files(store, "raw/")
    # What existed is byte-identical; months flushed before the failure are complete (pages 1-3 hold
    # 2029-07 .. 2029-09, so only 2029-07 and 2029-08 were complete); nothing else appeared.
    manifest_key = layout.raw_manifest_key("issues", REPO)
    for key, data in before.items():
        if key != manifest_key:
            assert after[key] == data, key
    old_months = json.loads(before[manifest_key])["months"]
    new_months = json.loads(after[manifest_key])["months"]
    assert {m: e for m, e in new_months.items() if m in old_months} == old_months
    assert sorted(set(new_months) - set(old_months)) == ["2029-07", "2029-08"]
    new_keys = sorted(k for k in after if k not in before and not k.endswith(".json"))
    assert new_keys == sorted(new_months[m]["key"] for m in ("2029-07", "2029-08"))
    for month, n in (("2029-07", 100), ("2029-08", 100)):
        assert len(read_parquet(store, new_months[month]["key"])) == n
    assert not [k for k in store.list() if ".tmp" in k]


def odd_items() -> list[dict]:
    base = {
        "url": f"https://api.github.com/repos/{REPO}/issues/1", "repository_url": f"https://api.github.com/repos/{REPO}",
        "state": "open", "labels": [], "comments": 0, "locked": False, "assignees": [],
    }
    big = "x" * 1_000_000
    items = [
        {**base, "id": 1, "number": 1, "title": "deleted user", "user": None, "body": None,
         "created_at": "2022-01-01T00:00:00Z", "updated_at": "2022-01-02T00:00:00Z"},
        {**base, "id": 2, "number": 2, "title": "big", "user": {"login": "a", "id": 5, "type": "User"},
         "body": big, "created_at": "2022-01-01T01:00:00Z", "updated_at": "2022-01-02T01:00:00Z"},
        {**base, "id": 3, "number": 3, "title": "emoji 🦀 and \u0000\u0007 ctrl \u202e rtl", "user": None,
         "body": "line\r\nnext \u2028 sep \U0001F600", "created_at": "2022-01-01T02:00:00Z",
         "updated_at": "2022-01-02T02:00:00Z", "brand_new_field": {"nested": [1, 2]}, "type": None},
        {**base, "id": 4, "number": 4, "title": "closed before created", "user": None, "state": "closed",
         "created_at": "2022-01-05T00:00:00Z", "closed_at": "2022-01-04T00:00:00Z",
         "updated_at": "2022-01-05T00:00:00Z"},
        {**base, "id": 5, "number": 5, "title": "offsets", "user": None, "state": "closed",
         "created_at": "2022-01-01T05:00:00+02:00", "updated_at": "2022-01-02T03:30:00-05:30",
         "closed_at": "2022-01-01T12:00:00"},
        {**base, "id": 6, "number": 6, "title": "pull", "user": None, "pull_request": {"url": "x"},
         "created_at": "2022-01-01T00:00:00Z", "updated_at": "2022-01-02T04:00:00Z"},
        {**base, "number": 7, "title": "no id", "created_at": "2022-01-01T00:00:00Z",
         "updated_at": "2022-01-02T05:00:00Z"},
        {**base, "id": 8, "title": "no number", "created_at": "2022-01-01T00:00:00Z",
         "updated_at": "2022-01-02T06:00:00Z"},
        {**base, "id": 9, "number": 9, "title": "no created_at", "updated_at": "2022-01-02T07:00:00Z"},
        {**base, "id": 10, "number": 10, "title": "garbage created_at", "created_at": "yesterday",
         "updated_at": "2022-01-02T08:00:00Z"},
    ]
    return items


def test_odd_items_are_handled_and_bad_ones_rejected_with_reasons(replay_server, store):
    server = replay_server(odd_items())
    with make_client(server) as client:
        result = sync_incremental(client, store, REPO, "issues", now=fixed_now)
    merge_current(store, REPO, "issues")
    assert result.rejected == 4 and result.new_versions == 6
    table = load_current(store, "issues", REPO).set_index("id")
    assert sorted(table.index) == [1, 2, 3, 4, 5, 6]
    assert pd.isna(table.loc[1, "user_login"]) and table.loc[1, "body"] == ""
    assert len(table.loc[2, "body"]) == 1_000_000
    assert table.loc[3, "title"] == "emoji 🦀 and \u0000\u0007 ctrl \u202e rtl"
    assert table.loc[3, "body"] == "line\r\nnext \u2028 sep \U0001F600"
    assert table.loc[4, "quality_flags"] == "closed_before_created"
    assert table.loc[4, "closed_at"] == table.loc[4, "created_at"] == utc("2022-01-05T00:00:00Z")
    assert table.loc[5, "created_at"] == utc("2022-01-01T03:00:00Z")
    assert table.loc[5, "updated_at"] == utc("2022-01-02T09:00:00Z")
    assert table.loc[5, "closed_at"] == utc("2022-01-01T12:00:00Z")  # no zone: read as UTC
    assert table.loc[5, "quality_flags"] == ""
    assert table.loc[6, "is_pull_request"] and not table.loc[1, "is_pull_request"]
    assert len(RawLog(store, "issues", REPO).manifest()["rejects"]) == 1
    rejects = RawLog(store, "issues", REPO).rejects()
    reasons = dict(zip(rejects["payload"].map(lambda p: json.loads(p)["title"]), rejects["reason"], strict=True))
    assert reasons == {"no id": "missing id", "no number": "missing number",
                       "no created_at": "missing created_at", "garbage created_at": "unparseable created_at"}
    raw = json.loads(raw_log(store, "issues", REPO).set_index("id").loc[3, "payload"])
    assert raw["brand_new_field"] == {"nested": [1, 2]}  # unknown fields survive in the raw payload


def test_comments_without_usable_ids_are_rejected(replay_server, store):
    base = {"issue_url": f"https://api.github.com/repos/{REPO}/issues/1", "user": None, "body": "b"}
    comments = [
        {**base, "id": 1, "created_at": "2022-01-01T00:00:00Z", "updated_at": "2022-01-01T00:00:00Z"},
        {**base, "id": 2, "created_at": "2022-01-01T00:00:00+03:00", "updated_at": "2022-01-01T01:00:00+03:00"},
        {**base, "id": 3, "updated_at": "2022-01-01T02:00:00Z"},
        {**base, "id": 4, "issue_url": f"https://api.github.com/repos/{REPO}/pulls/x",
         "created_at": "2022-01-01T00:00:00Z", "updated_at": "2022-01-01T03:00:00Z"},
    ]
    server = replay_server((), comments)
    with make_client(server) as client:
        result = sync_incremental(client, store, REPO, "comments", now=fixed_now)
    merge_current(store, REPO, "comments")
    assert result.rejected == 2 and result.new_versions == 2
    table = load_current(store, "comments", REPO).set_index("id")
    assert sorted(table.index) == [1, 2] and pd.isna(table.loc[1, "user_login"])
    assert table.loc[2, "created_at"] == utc("2021-12-31T21:00:00Z")


# ---- atomic writes --------------------------------------------------------------------------------


def test_crash_mid_write_parquet_keeps_the_previous_table(demo, replay_server, store, monkeypatch):
    issues, comments = demo
    server = replay_server(issues, comments)
    with make_client(server) as client:
        sync_all(client, store, REPO, kinds=("issues",))
    key = layout.current_key("issues", REPO)
    before = store.get_bytes(key)
    previous = load_current(store, "issues", REPO)

    def half_written(target, data):
        # The real put_bytes writes a temporary file first; die after half of it is on disk.
        import os
        import tempfile

        path = store.path(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data[: len(data) // 2])
        os.unlink(tmp)
        raise OSError("killed mid-write")

    real_write = store_module.pq.write_table

    def broken_write_table(table, where, **kwargs):
        real_write(table.slice(0, 1), where, **kwargs)
        raise OSError("killed inside write_table")

    for sabotage in ("put_bytes", "write_table"):
        with monkeypatch.context() as m:
            if sabotage == "put_bytes":
                m.setattr(store, "_write", half_written)
            else:
                m.setattr(store_module.pq, "write_table", broken_write_table)
            with pytest.raises(OSError):
                merge_current(store, REPO, "issues", full=True)
        assert store.get_bytes(key) == before
        pd.testing.assert_frame_equal(load_current(store, "issues", REPO), previous)
        assert not [k for k in store.list() if ".tmp" in k or k.rsplit("/", 1)[-1].startswith(".")]
    # And the real put_bytes cleans its temporary file when the rename fails.
    with monkeypatch.context() as m:
        m.setattr(store_module.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
        with pytest.raises(OSError):
            store.put_bytes(key, b"new")
    assert store.get_bytes(key) == before
    assert not [p for p in store.path(key).parent.iterdir() if p.name.endswith(".tmp")]


def test_mixed_offsets_and_naive_timestamps_each_parse_on_their_own():
    """pandas' vectorized ISO-8601 parse lets a naive value inherit a neighbour's offset; ours must not."""
    from issue_assets.github.normalize import to_utc

    parsed = to_utc(["2020-01-01T00:00:00Z", "2020-01-01T02:00:00+02:00", "2020-01-01 00:00:00", None, "garbage",
                     "2020-01-01T00:00:00.5-05:00"]).tolist()
    utc = pd.Timestamp("2020-01-01", tz="UTC")
    assert parsed[:3] == [utc, utc, utc]
    assert pd.isna(parsed[3]) and pd.isna(parsed[4])
    assert parsed[5] == pd.Timestamp("2020-01-01T05:00:00.5", tz="UTC")


def test_full_sync_sends_no_cached_validator(demo, replay_server, store, tmp_path):
    """`ingest --full` re-reads every page whole: a damaged part must not hide behind a 304 from what an
    earlier run stored. The validators it sees are still recorded, so the next poll is one 304."""
    issues, comments = demo
    server = replay_server(issues, comments)
    cache_path = tmp_path / "http_cache.json"
    with make_client(server, cache=ConditionalCache(cache_path)) as client:
        sync_all(client, store, REPO, kinds=("issues",))
    server.reset_stats()
    with make_client(server, cache=ConditionalCache(cache_path)) as client:
        full = sync_window(client, store, REPO, "issues", None, None, now=fixed_now, full=True)
    assert full.not_modified == 0 and full.requests == 6 and full.new_versions == 0 and full.items_fetched == 600
    assert server.stats()["by_endpoint_status"] == {"issues": {"200": 6}}
    server.reset_stats()
    with make_client(server, cache=ConditionalCache(cache_path)) as client:
        poll = sync_incremental(client, store, REPO, "issues", now=fixed_now)
    assert poll.requests == 1 and poll.not_modified == 1


def test_first_seen_is_the_earliest_observation_whatever_order_windows_arrive_in(demo, replay_server, tmp_path):
    """A newer version merged first, an older one (observed earlier) later: first_seen_at is still the
    earliest observation, as when they arrive in time order (two writers, or a backfill of older days)."""
    issues, comments = demo
    old = [copy.deepcopy(i) for i in issues[:40]]
    new = []
    for n, item in enumerate(old):
        item = copy.deepcopy(item)
        item.update(title=f"edited {n}", updated_at=f"2029-09-{1 + n % 20:02d}T00:00:00Z")
        new.append(item)
    servers = {"old": replay_server(old), "new": replay_server(new)}
    times = {"old": datetime(2029, 8, 1, tzinfo=UTC), "new": datetime(2029, 10, 1, tzinfo=UTC)}
    tables = []
    for order in (("old", "new"), ("new", "old")):
        store = LocalStore(tmp_path / "-".join(order))
        for name in order:
            with make_client(servers[name]) as client:
                sync_window(client, store, REPO, "issues", now=lambda name=name: times[name])
            merge_current(store, REPO, "issues")
        tables.append(load_current(store, "issues", REPO))
    pd.testing.assert_frame_equal(tables[1], tables[0])
    assert (tables[0]["first_seen_at"] == pd.Timestamp(times["old"])).all()
    assert tables[0]["title"].str.startswith("edited").all()
