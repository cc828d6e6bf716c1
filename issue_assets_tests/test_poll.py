"""The conditional poll behind the polling sensor: one request per repository and endpoint, 304s free,
changes fingerprinted, the rate-limit budget respected, failures named per repository."""

from __future__ import annotations

import pytest

from issue_assets.github.replay import ReplayServer
from issue_assets.github.simulate import simulate_repository
from issue_assets.ingest import poll, sources
from issue_assets.ingest.sync import sync_incremental
from issue_assets.lake.store import LocalStore

TOKEN = "ghp_PollTestToken_0123456789abcdef"


def _items(repos: list[str]) -> tuple[list[dict], list[dict]]:
    issues, comments = [], []
    for n, repo in enumerate(repos):
        i, c = simulate_repository(repo, n_issues=12, seed=n, start="2026-01-01T00:00:00Z", days=40)
        issues += i
        comments += c
    return issues, comments


def _ingest(store, repos, server, cache_dir):
    for repo in repos:
        sources.add(repo, server.url, store=store)
        with sources.client_for(repo, store, cache_dir=cache_dir) as client:
            for kind in ("issues", "comments"):
                sync_incremental(client, store, repo, kind)


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name in ("GITHUB_TOKEN", "GITHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    return {"store": LocalStore(tmp_path / "lake"), "cache": tmp_path / "http_cache", "mp": monkeypatch}


def _new_issue(issues: list[dict], repo: str, number: int) -> dict:
    template = next(i for i in issues if i["repository_url"].endswith(repo) and "pull_request" not in i)
    return dict(template, id=77_000_000 + number, number=number, state="open", closed_at=None,
                created_at="2026-03-01T10:00:00Z", updated_at="2026-03-01T10:00:00Z")


def test_nothing_new_is_one_free_304_per_endpoint_and_a_change_is_fingerprinted(env):
    repos = ["a/one", "a/two"]
    issues, comments = _items(repos)
    with ReplayServer(issues, comments, token=TOKEN) as server:
        env["mp"].setenv("GITHUB_API_URL", server.url)  # the token belongs to this server
        env["mp"].setenv("GITHUB_TOKEN", TOKEN)
        _ingest(env["store"], repos, server, env["cache"])
        before = {p: p.read_bytes() for p in env["cache"].iterdir()}
        used = server.rate_limit_status()["used"]
        server.reset_stats()
        report = poll.poll(repos, env["store"], cache_dir=env["cache"])
        assert report.counts() == {"unchanged": 4} and report.changed() == {}
        assert report.requests == 4 and report.points == 0
        assert server.stats()["by_endpoint_status"] == {"issues": {"304": 2}, "comments": {"304": 2}}
        assert server.rate_limit_status()["used"] == used  # authorized 304s cost nothing
        assert report.budgets[server.url]["limit"] == 5000 and report.budgets[server.url]["spent"] == 0

        server.add_issues([_new_issue(issues, "a/two", 500)])
        changed = poll.poll(repos, env["store"], cache_dir=env["cache"])
        assert list(changed.changed()) == ["a/two"]
        fingerprint = changed.changed()["a/two"]
        assert fingerprint.startswith("2026-03-01T10:00:00Z|")
        assert changed.points == 1  # the 200 costs one point, the three 304s none
        # Asked again before any ingest: the same fingerprint (an idempotent run key), and the poll never
        # wrote validators (the ingest's own request must still get the page).
        assert poll.poll(repos, env["store"], cache_dir=env["cache"]).changed() == {"a/two": fingerprint}
        assert {p: p.read_bytes() for p in env["cache"].iterdir()} == before


def test_repositories_without_history_are_not_polled(env):
    issues, comments = _items(["a/one"])
    with ReplayServer(issues, comments) as server:
        sources.add("a/one", server.url, store=env["store"])
        report = poll.poll(["a/one"], env["store"], cache_dir=env["cache"])
        assert report.counts() == {"no history": 2} and server.stats()["requests"] == 0


def test_unreachable_source_and_5xx_storm_are_named_per_repository(env):
    issues, comments = _items(["a/one", "b/two"])
    with ReplayServer(issues, comments) as good, ReplayServer(issues, comments) as bad:
        _ingest(env["store"], ["a/one"], good, env["cache"])
        _ingest(env["store"], ["b/two"], bad, env["cache"])
        url = bad.url
        bad.stop()
        report = poll.poll(["a/one", "b/two"], env["store"], cache_dir=env["cache"])
        by_repo = report.by_repo()
        assert {p.state for p in by_repo["a/one"].values()} == {"unchanged"}
        assert {p.state for p in by_repo["b/two"].values()} == {"unreachable"}
        problems = report.problems()
        assert len(problems) == 2 and all(p.startswith("b/two ") and "ConnectionError" in p for p in problems)
        assert report.budgets.keys() == {good.url, url}
    with ReplayServer(issues, comments, fault_rate=1.0) as storm:
        sources.add("a/one", storm.url, store=env["store"])
        report = poll.poll(["a/one"], env["store"], cache_dir=env["cache"])
        assert [p.state for p in report.probes] == ["unreachable", "unreachable"]
        assert all("a/one" in line for line in report.problems())


def test_exhausted_rate_limit_waits_for_its_reset_without_sending(env):
    issues, comments = _items(["a/one"])
    with ReplayServer(issues, comments) as server:
        _ingest(env["store"], ["a/one"], server, env["cache"])
    with ReplayServer(issues, comments, rate_limit=0) as limited:
        sources.add("a/one", limited.url, store=env["store"])
        report = poll.poll(["a/one"], env["store"], cache_dir=env["cache"])
        states = sorted(p.state for p in report.probes)
        assert "rate limited" in states and "unchanged" not in states
        assert all("a/one" in line for line in report.problems())
        sent = limited.stats()["requests"]
        assert sent == 1  # the first refusal stops the API for the rest of the tick
        budget = report.budgets[limited.url]
        assert budget["remaining"] == 0 and budget["reset"] is not None
        # The next tick knows the budget is exhausted until the reset: nothing is sent.
        again = poll.poll(["a/one"], env["store"], cache_dir=env["cache"], budgets=report.budgets)
        assert limited.stats()["requests"] == sent
        assert {p.state for p in again.probes} == {"deferred"}
        assert "rate limit exhausted until" in again.problems()[0]


def test_the_poll_spends_at_most_its_share_of_the_budget(env):
    repos = [f"a/r{i}" for i in range(10)]
    issues, comments = _items(repos)
    with ReplayServer(issues, comments) as server:
        _ingest(env["store"], repos, server, env["cache"])
    # Another server (no validators for its URLs): every poll answer is a 200 and costs a point.
    with ReplayServer(issues, comments, rate_limit=10) as limited:
        for repo in repos:
            sources.add(repo, limited.url, store=env["store"])
        report = poll.poll(repos, env["store"], cache_dir=env["cache"], share=0.5, concurrency=4)
        assert limited.stats()["requests"] == 5 and report.points == 5
        assert report.counts() == {"unchanged": 5, "deferred": 15}
        assert "the poll's share of the rate limit is spent (5 of 5 points this window)" in report.problems()[0]
        # Same window, next tick: nothing left for the poll; the other half stays for the ingest.
        again = poll.poll(repos, env["store"], cache_dir=env["cache"], share=0.5, budgets=report.budgets)
        assert limited.stats()["requests"] == 5 and again.counts() == {"deferred": 20}
        assert limited.rate_limit_status()["remaining"] == 5


def test_an_item_updated_in_the_cursors_second_after_the_sweep_is_a_change(env):
    """The sweep stored the newest item of second T (the cursor); another item updated in that same second
    arrives later. The page since T holds nothing newer than the cursor, yet something is new."""
    issues, comments = _items(["a/one"])
    last = max(issues, key=lambda i: i["updated_at"])
    with ReplayServer(issues, comments) as server:
        _ingest(env["store"], ["a/one"], server, env["cache"])
        assert poll.poll(["a/one"], env["store"], cache_dir=env["cache"]).changed() == {}
        twin = dict(last, id=66_000_001, number=6001)  # same updated_at as the cursor
        server.add_issues([twin])
        # The ingest primed If-Modified-Since = the cursor, and the page's newest item is still the cursor: a
        # 304. Drop the validators (as when the sweep ended within the cursor's second and could not prime).
        for path in env["cache"].iterdir():
            path.unlink()
        report = poll.poll(["a/one"], env["store"], cache_dir=env["cache"])
        assert list(report.changed()) == ["a/one"]
        with sources.client_for("a/one", env["store"], cache_dir=env["cache"]) as client:
            sync_incremental(client, env["store"], "a/one", "issues")
        assert poll.poll(["a/one"], env["store"], cache_dir=env["cache"]).by_repo()["a/one"]["issues"].state == "unchanged"


def test_a_repository_without_comments_is_polled_for_its_first_comment(env):
    issues, comments = _items(["a/one"])
    with ReplayServer(issues, []) as server:
        _ingest(env["store"], ["a/one"], server, env["cache"])
        report = poll.poll(["a/one"], env["store"], cache_dir=env["cache"])
        assert {k: p.state for k, p in report.by_repo()["a/one"].items()} == {"issues": "unchanged",
                                                                               "comments": "unchanged"}
        assert server.stats()["by_endpoint_status"]["comments"] == {"200": 1, "304": 1}
        server.add_comments(comments[:1])
        assert poll.poll(["a/one"], env["store"], cache_dir=env["cache"]).by_repo()["a/one"]["comments"].state == \
            "changed"
