"""The replay server speaks GitHub's REST protocol: real HTTP on loopback, checked with requests."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from issue_assets.github.clock import FakeClock
from issue_assets.github.export import repo_of
from issue_assets.github.replay import ReplayServer
from issue_assets.github.simulate import simulate_repository, write_export

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO = "demo-org/demo-project"
ISSUES_PATH = f"/repos/{REPO}/issues"


@pytest.fixture(scope="module")
def demo():
    return simulate_repository(REPO, n_issues=260, seed=11, days=200)


@pytest.fixture
def server(demo):
    issues, comments = demo
    with ReplayServer(issues, comments) as srv:
        yield srv


def sweep(session: requests.Session, url: str, **kwargs) -> tuple[list[dict], list[requests.Response]]:
    items, responses = [], []
    while url:
        resp = session.get(url, **kwargs)
        assert resp.status_code == 200, resp.text
        responses.append(resp)
        items.extend(resp.json())
        url = resp.links.get("next", {}).get("url")
    return items, responses


def ordered(items: list[dict], key: str, direction: str) -> list[int]:
    rows = sorted(items, key=lambda i: (i[key], i["id"]))
    if direction == "desc":
        rows.reverse()
    return [i["id"] for i in rows]


@pytest.mark.parametrize("sort", ["created", "updated", "comments"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_paging_follows_next_to_the_end_in_sort_order(server, demo, sort, direction):
    issues, _ = demo
    items, responses = sweep(requests.Session(),
                             f"{server.url}{ISSUES_PATH}?state=all&sort={sort}&direction={direction}&per_page=40")
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids)) == len(issues)
    assert ids == ordered(issues, f"{sort}_at" if sort != "comments" else "comments", direction)
    assert len(responses) == 7  # ceil(260 / 40)


def test_link_header_is_like_githubs(server):
    s = requests.Session()
    base = f"{server.url}{ISSUES_PATH}"
    first = s.get(f"{base}?state=all&sort=updated&per_page=100")
    assert first.headers["Link"] == (
        f'<{base}?state=all&sort=updated&per_page=100&page=2>; rel="next", '
        f'<{base}?state=all&sort=updated&per_page=100&page=3>; rel="last"')
    middle = s.get(f"{base}?state=all&page=2&sort=updated&per_page=100")
    assert middle.headers["Link"] == (
        f'<{base}?state=all&page=1&sort=updated&per_page=100>; rel="prev", '
        f'<{base}?state=all&page=3&sort=updated&per_page=100>; rel="next", '
        f'<{base}?state=all&page=3&sort=updated&per_page=100>; rel="last", '
        f'<{base}?state=all&page=1&sort=updated&per_page=100>; rel="first"')
    last = s.get(f"{base}?state=all&sort=updated&per_page=100&page=3")
    assert set(last.links) == {"prev", "first"}
    assert len(last.json()) == 60
    beyond = s.get(f"{base}?state=all&per_page=100&page=9")
    assert beyond.status_code == 200 and beyond.json() == []
    single = s.get(f"{base}?state=all&per_page=100&since=2099-01-01T00:00:00Z")
    assert single.json() == [] and "Link" not in single.headers


def test_default_state_is_open_and_state_filters(server, demo):
    issues, _ = demo
    s = requests.Session()
    by_state = {st: {i["id"] for i in issues if i["state"] == st} for st in ("open", "closed")}
    assert by_state["open"] and by_state["closed"]
    default, _ = sweep(s, f"{server.url}{ISSUES_PATH}?per_page=100")
    assert {i["id"] for i in default} == by_state["open"]
    closed, _ = sweep(s, f"{server.url}{ISSUES_PATH}?state=closed&per_page=100")
    assert {i["id"] for i in closed} == by_state["closed"]
    assert all(i["state"] == "closed" for i in closed)
    default_page = s.get(f"{server.url}{ISSUES_PATH}").json()
    assert len(default_page) == 30
    assert [i["id"] for i in default_page] == ordered([i for i in issues if i["state"] == "open"],
                                                      "created_at", "desc")[:30]


def test_since_keeps_items_updated_at_or_after(server, demo):
    issues, _ = demo
    pivot = sorted(i["updated_at"] for i in issues)[len(issues) // 3]
    expected = [i for i in issues if i["updated_at"] >= pivot]
    s = requests.Session()
    for sort in ("updated", "created"):
        for direction in ("asc", "desc"):
            got, _ = sweep(s, f"{server.url}{ISSUES_PATH}?state=all&sort={sort}&direction={direction}"
                              f"&since={pivot}&per_page=30")
            assert [i["id"] for i in got] == ordered(expected, f"{sort}_at", direction)
    assert any(i["updated_at"] == pivot for i in got)
    offset = s.get(f"{server.url}{ISSUES_PATH}",
                   params={"state": "all", "per_page": 100, "since": pivot.replace("Z", "+00:00")}).json()
    assert {i["id"] for i in offset} <= {i["id"] for i in expected} and offset


def test_per_page_is_capped_at_100_and_pull_requests_are_included(server, demo):
    issues, _ = demo
    resp = requests.get(f"{server.url}{ISSUES_PATH}?state=all&per_page=500")
    page = resp.json()
    assert len(page) == 100
    assert "per_page=500" in resp.links["next"]["url"]
    all_items, _ = sweep(requests.Session(), f"{server.url}{ISSUES_PATH}?state=all&per_page=100")
    prs = [i for i in all_items if "pull_request" in i]
    assert len(prs) == sum(1 for i in issues if "pull_request" in i) > 0
    assert all(i["pull_request"]["url"].endswith(f"/pulls/{i['number']}") for i in prs)


def test_items_are_served_exactly_as_stored(server, demo):
    issues, comments = demo
    served, _ = sweep(requests.Session(), f"{server.url}{ISSUES_PATH}?state=all&per_page=100")
    assert sorted(served, key=lambda i: i["id"]) == sorted(issues, key=lambda i: i["id"])
    one = requests.get(f"{server.url}{ISSUES_PATH}/{issues[5]['number']}")
    assert one.status_code == 200 and one.json() == issues[5]
    assert one.headers["Last-Modified"]


def test_repository_comments_endpoint(server, demo):
    _, comments = demo
    s = requests.Session()
    url = f"{server.url}{ISSUES_PATH}/comments"
    got, responses = sweep(s, f"{url}?per_page=100")
    assert [c["id"] for c in got] == ordered(comments, "created_at", "asc")
    assert len(responses) == -(-len(comments) // 100)
    desc, _ = sweep(s, f"{url}?sort=updated&direction=desc&per_page=100")
    assert [c["id"] for c in desc] == ordered(comments, "updated_at", "desc")
    ignored, _ = sweep(s, f"{url}?direction=desc&per_page=100")
    assert [c["id"] for c in ignored] == [c["id"] for c in got]  # GitHub ignores direction without sort
    pivot = sorted(c["updated_at"] for c in comments)[len(comments) // 2]
    since, _ = sweep(s, f"{url}?sort=updated&since={pivot}&per_page=100")
    assert {c["id"] for c in since} == {c["id"] for c in comments if c["updated_at"] >= pivot}
    assert len(s.get(f"{url}").json()) == 30


def test_single_issue_issue_comments_repo_and_not_found(server, demo):
    issues, comments = demo
    s = requests.Session()
    number = max({int(c["issue_url"].rsplit("/", 1)[1]) for c in comments},
                 key=lambda n: sum(c["issue_url"].endswith(f"/{n}") for c in comments))
    mine = [c for c in comments if c["issue_url"].endswith(f"/issues/{number}")]
    got = s.get(f"{server.url}{ISSUES_PATH}/{number}/comments?per_page=100").json()
    assert [c["id"] for c in got] == ordered(mine, "created_at", "asc")
    no_comments = next(i for i in issues if i["comments"] == 0)
    assert s.get(f"{server.url}{ISSUES_PATH}/{no_comments['number']}/comments").json() == []
    assert s.get(f"{server.url}{ISSUES_PATH}/99999/comments").status_code == 404

    missing = s.get(f"{server.url}{ISSUES_PATH}/99999")
    assert missing.status_code == 404 and missing.json()["message"] == "Not Found"
    repo = s.get(f"{server.url}/repos/{REPO}").json()
    assert repo["full_name"] == REPO and repo["owner"]["login"] == "demo-org"
    assert repo["private"] is False and repo["has_issues"] is True and repo["name"] == "demo-project"
    assert s.get(f"{server.url}/repos/DEMO-ORG/Demo-Project/issues").status_code == 200

    for path in ("/repos/nobody/nothing/issues", "/repos/nobody/nothing", "/repos/nobody/nothing/issues/1",
                 "/repos/nobody/nothing/issues/comments", "/no/such/path"):
        resp = s.get(server.url + path)
        assert resp.status_code == 404, path
        assert resp.json()["message"] == "Not Found" and "documentation_url" in resp.json()
    assert server.repos == [REPO]


def test_duplicate_numbers_serve_the_latest_item(demo):
    issues, _ = demo
    older = copy.deepcopy(issues[0])
    newer = copy.deepcopy(issues[0])
    newer["id"] += 10_000_000
    newer["updated_at"] = "2030-01-01T00:00:00Z"
    with ReplayServer([newer, older]) as srv:
        assert requests.get(f"{srv.url}{ISSUES_PATH}/{older['number']}").json()["id"] == newer["id"]
        assert len(requests.get(f"{srv.url}{ISSUES_PATH}?state=all").json()) == 2


def test_token_is_required_when_set(demo):
    issues, _ = demo
    with ReplayServer(issues, token="s3cret") as srv:
        url = f"{srv.url}{ISSUES_PATH}"
        bad = [requests.get(url), requests.get(url, headers={"Authorization": "Bearer wrong"})]
        for resp in bad:
            assert resp.status_code == 401 and resp.json()["message"] == "Bad credentials"
        assert requests.get(url, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert requests.get(url, headers={"Authorization": "token s3cret"}).status_code == 200


@pytest.mark.parametrize("query, field", [("per_page=abc", "per_page"), ("since=garbage", "since"),
                                          ("state=weird", "state"), ("sort=popularity", "sort"),
                                          ("direction=up", "direction"), ("page=0", "page")])
def test_bad_parameters_are_422(server, query, field):
    resp = requests.get(f"{server.url}{ISSUES_PATH}?{query}")
    assert resp.status_code == 422
    body = resp.json()
    assert body["message"] == "Validation Failed" and body["errors"][0]["field"] == field
    assert requests.get(f"{server.url}{ISSUES_PATH}/comments?{query}").status_code in (
        (200,) if field == "state" else (422,))


def test_etag_304_does_not_consume_budget(server):
    s = requests.Session()
    url = f"{server.url}{ISSUES_PATH}?state=all&per_page=50"
    first = s.get(url)
    etag = first.headers["ETag"]
    assert etag.startswith('W/"')
    remaining = int(first.headers["x-ratelimit-remaining"])
    for tag in (etag, etag.removeprefix("W/"), f'"other", {etag}'):
        again = s.get(url, headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["ETag"] == etag
        assert int(again.headers["x-ratelimit-remaining"]) == remaining
    changed = s.get(url, headers={"If-None-Match": 'W/"stale"'})
    assert changed.status_code == 200 and int(changed.headers["x-ratelimit-remaining"]) == remaining - 1
    other_page = s.get(url + "&page=2", headers={"If-None-Match": etag})
    assert other_page.status_code == 200 and other_page.headers["ETag"] != etag

    last_modified = first.headers["Last-Modified"]
    assert s.get(url, headers={"If-Modified-Since": last_modified}).status_code == 304
    assert s.get(url, headers={"If-Modified-Since": formatdate(0, usegmt=True)}).status_code == 200
    stats = server.stats()
    assert stats["by_endpoint_status"]["issues"] == {"200": 4, "304": 4}


def test_every_response_has_rate_limit_headers(server):
    s = requests.Session()
    for path in (ISSUES_PATH, "/repos/nobody/nothing", f"{ISSUES_PATH}?per_page=x", "/rate_limit"):
        headers = s.get(server.url + path).headers
        assert headers["x-ratelimit-limit"] == "5000"
        assert headers["x-ratelimit-resource"] == "core"
        assert int(headers["x-ratelimit-used"]) + int(headers["x-ratelimit-remaining"]) == 5000
        assert int(headers["x-ratelimit-reset"]) > 0
    core = s.get(server.url + "/rate_limit").json()["resources"]["core"]
    assert core["used"] == 3  # /rate_limit itself is free


def test_rate_limit_exhaustion_and_refill_on_a_shared_fake_clock(demo):
    issues, _ = demo
    clock = FakeClock(start=1_800_000_000.0)
    with ReplayServer(issues, rate_limit=3, rate_limit_window=60, clock=clock) as srv:
        s = requests.Session()
        url = f"{srv.url}{ISSUES_PATH}"
        remaining = [s.get(url).headers["x-ratelimit-remaining"] for _ in range(3)]
        assert remaining == ["2", "1", "0"]
        limited = s.get(url)
        assert limited.status_code == 403
        assert limited.headers["x-ratelimit-remaining"] == "0"
        assert limited.json()["message"].startswith("API rate limit exceeded")
        reset = int(limited.headers["x-ratelimit-reset"])
        assert reset == 1_800_000_060
        clock.sleep(reset - clock.time() - 1)
        assert s.get(url).status_code == 403
        clock.sleep(reset - clock.time())
        refilled = s.get(url)
        assert refilled.status_code == 200
        assert refilled.headers["x-ratelimit-remaining"] == "2"
        assert int(refilled.headers["x-ratelimit-reset"]) == reset + 60
        assert srv.stats()["rate_limited"] == 2
        assert s.get(f"{srv.url}/rate_limit").json()["resources"]["core"]["remaining"] == 2


def test_secondary_rate_limit_alternates_403_and_429_with_retry_after(demo):
    issues, _ = demo
    with ReplayServer(issues, secondary_limit_rate=1.0, secondary_retry_after=7) as srv:
        s = requests.Session()
        responses = [s.get(f"{srv.url}{ISSUES_PATH}") for _ in range(4)]
        assert [r.status_code for r in responses] == [403, 429, 403, 429]
        for r in responses:
            assert r.headers["retry-after"] == "7"
            assert r.json()["message"].startswith("You have exceeded a secondary rate limit")
            assert int(r.headers["x-ratelimit-remaining"]) == 5000
        assert srv.stats()["secondary_limited"] == 4
    outcomes = []
    for _ in range(2):
        with ReplayServer(issues, secondary_limit_rate=0.3, seed=5) as srv:
            s = requests.Session()
            outcomes.append([s.get(f"{srv.url}{ISSUES_PATH}").status_code for _ in range(40)])
    assert outcomes[0] == outcomes[1]
    assert {200, 403, 429} == set(outcomes[0])


def run_faulty(issues, seed: int, n: int = 45) -> tuple[list[str], dict]:
    with ReplayServer(issues, fault_rate=0.45, seed=seed) as srv:
        s = requests.Session()
        outcomes = []
        for _ in range(n):
            try:
                resp = s.get(f"{srv.url}{ISSUES_PATH}?state=all&per_page=100")
                if resp.status_code == 200:
                    assert len(resp.json()) == 100
                outcomes.append(str(resp.status_code))
            except requests.exceptions.ChunkedEncodingError:
                outcomes.append("truncated")
            except requests.exceptions.ConnectionError:
                outcomes.append("reset")
        # /_replay/* is never faulted
        assert all(s.get(f"{srv.url}/_replay/stats").status_code == 200 for _ in range(10))
        return outcomes, srv.stats()


def test_faults_are_seeded_reproducible_and_of_every_kind(demo):
    issues, _ = demo
    first, stats = run_faulty(issues, seed=3)
    assert {"200", "502", "reset", "truncated"} == set(first)
    assert run_faulty(issues, seed=3)[0] == first
    assert run_faulty(issues, seed=4)[0] != first
    assert stats["faults"] == sum(o != "200" for o in first)
    assert stats["faults_by_kind"] == {"502": first.count("502"), "reset": first.count("reset"),
                                       "truncated": first.count("truncated")}
    assert stats["requests"] == len(first)
    assert stats["by_status"] == {"200": first.count("200"), "502": first.count("502")}


def test_stats_count_by_endpoint_and_status_and_reset(server, demo):
    issues, _ = demo
    s = requests.Session()
    s.get(f"{server.url}{ISSUES_PATH}")
    s.get(f"{server.url}{ISSUES_PATH}?per_page=zz")
    s.get(f"{server.url}{ISSUES_PATH}/comments")
    s.get(f"{server.url}{ISSUES_PATH}/{issues[0]['number']}")
    s.get(f"{server.url}{ISSUES_PATH}/{issues[0]['number']}/comments")
    s.get(f"{server.url}/repos/nobody/nothing/issues")
    s.get(f"{server.url}/rate_limit")
    stats = s.get(f"{server.url}/_replay/stats").json()
    assert stats == server.stats()
    assert stats["requests"] == 7
    assert stats["by_endpoint"] == {"issues": 3, "comments": 1, "issue": 1, "issue_comments": 1, "rate_limit": 1}
    assert stats["by_status"] == {"200": 5, "422": 1, "404": 1}
    assert stats["by_endpoint_status"]["issues"] == {"200": 1, "422": 1, "404": 1}
    assert stats["faults"] == stats["rate_limited"] == stats["secondary_limited"] == 0
    assert s.post(f"{server.url}/_replay/reset").status_code == 200
    assert server.stats()["requests"] == 0 and server.stats()["by_endpoint"] == {}
    server.reset_stats()
    assert s.get(f"{server.url}/_replay/stats").json()["requests"] == 0


def test_add_issues_replaces_and_moves_item_in_updated_order(server, demo):
    issues, _ = demo
    s = requests.Session()
    url = f"{server.url}{ISSUES_PATH}?state=all&sort=updated&direction=desc&per_page=100"
    before, _ = sweep(s, url)
    oldest = before[-1]
    etag = s.get(url).headers["ETag"]
    changed = copy.deepcopy(oldest)
    changed.update(state="closed", closed_at="2031-01-01T00:00:00Z", updated_at="2031-01-01T00:00:00Z",
                   title="edited")
    server.add_issues([changed])
    after, _ = sweep(s, url)
    assert after[0] == changed
    assert len(after) == len(before) == len(issues)
    assert [i["id"] for i in after[1:]] == [i["id"] for i in before[:-1]]
    assert s.get(url, headers={"If-None-Match": etag}).status_code == 200
    since, _ = sweep(s, f"{server.url}{ISSUES_PATH}?state=closed&since=2030-12-31T00:00:00Z")
    assert since == [changed]
    assert s.get(f"{server.url}{ISSUES_PATH}/{changed['number']}").json()["title"] == "edited"

    new_comment = {"url": f"https://api.github.com/repos/{REPO}/issues/comments/1", "id": 1,
                   "issue_url": f"https://api.github.com/repos/{REPO}/issues/{changed['number']}",
                   "created_at": "2031-01-02T00:00:00Z", "updated_at": "2031-01-02T00:00:00Z", "body": "late"}
    server.add_comments([new_comment])
    latest = s.get(f"{server.url}{ISSUES_PATH}/comments?sort=created&direction=desc&per_page=1").json()
    assert latest == [new_comment]
    assert new_comment in s.get(f"{server.url}{ISSUES_PATH}/{changed['number']}/comments?per_page=100").json()


def test_session_reuses_one_keep_alive_connection(server):
    s = requests.Session()
    for page in range(1, 6):
        assert s.get(f"{server.url}{ISSUES_PATH}?state=all&page={page}").status_code == 200
    s.get(f"{server.url}/repos/nobody/nothing")
    s.get(f"{server.url}{ISSUES_PATH}?per_page=bad")
    assert s.get(f"{server.url}{ISSUES_PATH}?state=all").status_code == 200
    assert server.stats()["connections"] == 1
    assert server.stats()["requests"] == 8


def test_stop_closes_keep_alive_connections(demo):
    issues, _ = demo
    srv = ReplayServer(issues).start()
    s = requests.Session()
    url = f"{srv.url}{ISSUES_PATH}"
    assert s.get(url).status_code == 200
    srv.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        s.get(url, timeout=5)


def test_serve_prints_listening_line_and_stops_on_sigterm(tmp_path, demo):
    issues, comments = demo
    data = write_export(issues, tmp_path / "issues.jsonl.gz")
    notes = write_export(comments, tmp_path / "comments.jsonl")
    code = ("import sys; from issue_assets.github.replay import serve; "
            "serve([sys.argv[1]], [sys.argv[2]], '127.0.0.1', 0)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(data), str(notes)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("replay server listening on http://127.0.0.1:")
        assert line.endswith(f"(1 repos, {len(issues)} issues, {len(comments)} comments)")
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert len(requests.get(f"{url}{ISSUES_PATH}?state=all&per_page=7").json()) == 7
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not (SHARED_DATA / "matomo-org_matomo_issues.jsonl.gz").exists(),
                    reason="shared export ../shared/data/matomo-org_matomo_issues.jsonl.gz is not available")
def test_from_files_serves_every_matomo_item_once():
    path = SHARED_DATA / "matomo-org_matomo_issues.jsonl.gz"
    with ReplayServer.from_files([path]) as srv:
        assert srv.repos == ["matomo-org/matomo"]
        s = requests.Session()
        items, responses = sweep(s, f"{srv.url}/repos/matomo-org/matomo/issues?state=all&per_page=100"
                                    "&sort=updated&direction=asc")
        ids = [i["id"] for i in items]
        assert len(ids) == len(set(ids)) == 19_085
        assert len(responses) == 191
        assert [i["updated_at"] for i in items] == sorted(i["updated_at"] for i in items)
        assert all(repo_of(i) == "matomo-org/matomo" for i in items)
        assert sum("pull_request" in i for i in items) > 6000
        last = parse_qs(urlsplit(responses[0].links["last"]["url"]).query)
        assert last["page"] == ["191"] and last["state"] == ["all"]
        assert srv.stats()["by_endpoint_status"] == {"issues": {"200": 191}}
        open_items, _ = sweep(s, f"{srv.url}/repos/matomo-org/matomo/issues?per_page=100")
        assert {i["state"] for i in open_items} == {"open"}
        sample = json.loads(s.get(f"{srv.url}/repos/matomo-org/matomo/issues/{items[0]['number']}").content)
        assert sample["id"] == items[0]["id"]


def test_live_mode_keeps_adding_activity_until_stopped(demo):
    issues, comments = demo
    repo = repo_of(issues[0])
    server = ReplayServer(issues, comments).start()
    try:
        live = server.start_live(repo, interval=0.05, seed=2)
        since = max(i["updated_at"] for i in issues)
        deadline = time.monotonic() + 20
        while len(live.events) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(live.events) >= 20
        page = requests.get(f"{server.url}/repos/{repo}/issues", timeout=10,
                            params={"state": "all", "since": since, "sort": "updated", "direction": "asc",
                                    "per_page": 100}).json()
        served = {i["number"] for i in page}
        assert {n for _, kind, n in live.events if kind == "open"} <= served
        with pytest.raises(ValueError, match="does not serve nobody/nothing"):
            server.start_live("nobody/nothing")
    finally:
        server.stop()
    count = len(live.events)
    time.sleep(0.3)
    assert len(live.events) == count  # stopped with the server
