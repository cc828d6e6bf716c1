"""The demo repository generator: deterministic, GitHub-shaped, consistent, and learnable."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest

from issue_assets.github.export import iter_export, repo_of
from issue_assets.github.simulate import simulate_repository, write_export

ISSUE_KEYS = {"url", "repository_url", "html_url", "comments_url", "id", "node_id", "number", "title", "user",
              "labels", "state", "locked", "assignee", "assignees", "milestone", "comments", "created_at",
              "updated_at", "closed_at", "author_association", "body", "reactions", "state_reason", "_meta"}
COMMENT_KEYS = {"url", "html_url", "issue_url", "id", "node_id", "user", "created_at", "updated_at",
                "author_association", "body", "reactions"}
WEEK = 7 * 86400


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def closed_within_week(item: dict) -> bool:
    return item["closed_at"] is not None and ts(item["closed_at"]) - ts(item["created_at"]) <= WEEK


def rate(items: list[dict]) -> float:
    return sum(map(closed_within_week, items)) / len(items)


@pytest.fixture(scope="module")
def demo():
    return simulate_repository(seed=0)


def test_same_seed_same_bytes_other_seed_other_data(demo, tmp_path):
    again = simulate_repository(seed=0)
    assert json.dumps(again) == json.dumps(demo)
    other = simulate_repository(seed=1)
    assert json.dumps(other) != json.dumps(demo)
    a = write_export(demo[0], tmp_path / "a.jsonl.gz")
    b = write_export(again[0], tmp_path / "b.jsonl.gz")
    assert a.read_bytes() == b.read_bytes()


def test_shape_matches_the_github_rest_items(demo):
    issues, comments = demo
    assert len(issues) == 3000
    for item in issues:
        assert ISSUE_KEYS <= set(item), ISSUE_KEYS - set(item)
        assert item["_meta"] == {"simulated": True}
        assert repo_of(item) == "demo-org/demo-project"
        assert item["url"] == f"https://api.github.com/repos/demo-org/demo-project/issues/{item['number']}"
        assert item["comments_url"] == item["url"] + "/comments"
        assert {"login", "id", "type", "site_admin"} <= set(item["user"])
        assert all({"id", "name"} <= set(label) for label in item["labels"])
        assert item["state"] in ("open", "closed")
        assert item["reactions"]["total_count"] >= 0
        assert item["author_association"] in ("OWNER", "MEMBER", "CONTRIBUTOR", "NONE")
        if "pull_request" in item:
            assert item["html_url"].endswith(f"/pull/{item['number']}")
            assert item["pull_request"]["url"].endswith(f"/pulls/{item['number']}")
            assert item["state_reason"] is None
        else:
            assert item["html_url"].endswith(f"/issues/{item['number']}")
    for comment in comments:
        assert COMMENT_KEYS <= set(comment), COMMENT_KEYS - set(comment)
        assert repo_of(comment) == "demo-org/demo-project"
        assert comment["html_url"].endswith(f"#issuecomment-{comment['id']}")
    assert 0.25 <= sum("pull_request" in i for i in issues) / len(issues) <= 0.35


def test_invariants(demo):
    issues, comments = demo
    assert len({i["id"] for i in issues}) == len(issues)
    assert sorted(i["number"] for i in issues) == list(range(1, len(issues) + 1))
    assert len({c["id"] for c in comments}) == len(comments)
    start, end = ts("2021-01-01T00:00:00Z"), ts("2021-01-01T00:00:00Z") + 720 * 86400
    by_number = {i["number"]: i for i in issues}
    for item in issues:
        created, updated = ts(item["created_at"]), ts(item["updated_at"])
        assert start <= created <= updated <= end
        if item["state"] == "closed":
            assert item["closed_at"] is not None
            assert created <= ts(item["closed_at"]) <= updated
        else:
            assert item["closed_at"] is None
    counts: dict[int, int] = {}
    for c in comments:
        number = int(c["issue_url"].rsplit("/", 1)[1])
        counts[number] = counts.get(number, 0) + 1
        issue = by_number[number]
        created = ts(c["created_at"])
        assert ts(issue["created_at"]) <= created <= ts(c["updated_at"])
        limit = ts(issue["closed_at"]) if issue["closed_at"] else end
        assert created <= limit
    assert all(by_number[n]["comments"] == k for n, k in counts.items())
    assert sum(i["comments"] for i in issues) == len(comments)
    assert [c["id"] for c in sorted(comments, key=lambda c: (c["created_at"], c["id"]))] == sorted(
        c["id"] for c in comments)


def test_rates_are_plausible(demo):
    issues, _ = demo
    only_issues = [i for i in issues if "pull_request" not in i]
    assert 0.30 <= rate(only_issues) <= 0.45
    assert 0.30 <= rate(issues) <= 0.52
    still_open = sum(i["state"] == "open" for i in issues) / len(issues)
    assert 0.08 <= still_open <= 0.25
    closed_late = [i for i in issues if i["closed_at"] and not closed_within_week(i)]
    assert len(closed_late) > 300


def test_creation_time_information_carries_signal(demo):
    issues, _ = demo
    only_issues = [i for i in issues if "pull_request" not in i]
    maintainers = [i for i in only_issues if i["author_association"] in ("OWNER", "MEMBER")]
    newcomers = [i for i in only_issues if i["author_association"] == "NONE"]
    bots = [i for i in issues if i["user"]["type"] == "Bot"]
    assert bots and all(i["user"]["login"].endswith("[bot]") for i in bots)
    assert rate(maintainers) > rate(newcomers) + 0.2
    assert rate(bots) > 0.75
    questions = [i for i in only_issues if i["title"].endswith("?")]
    features = [i for i in only_issues if i["title"].startswith("Feature request")]
    traces = [i for i in only_issues if "Traceback (most recent call last)" in i["body"]]
    vague = [i for i in only_issues if "### " not in i["body"] and "Traceback" not in i["body"]
             and not i["title"].endswith("?")]
    assert rate(questions) > 0.55 > 0.25 > rate(features)
    assert rate(traces) > rate(vague) + 0.1
    assert any("### Describe the bug" in i["body"] for i in only_issues)
    logins: dict[str, int] = {}
    for i in issues:
        logins[i["user"]["login"]] = logins.get(i["user"]["login"], 0) + 1
    assert sum(1 for n in logins.values() if n == 1) > 500  # many one-time users
    assert max(logins.values()) > 40  # and a few very active people


def test_releases_make_bursts(demo):
    issues, _ = demo
    per_week: dict[int, int] = {}
    start = ts("2021-01-01T00:00:00Z")
    for i in issues:
        week = int((ts(i["created_at"]) - start) // (7 * 86400))
        per_week[week] = per_week.get(week, 0) + 1
    counts = sorted(per_week.values())
    assert counts[-1] > 1.6 * counts[len(counts) // 2]


def test_parameters_are_respected():
    issues, comments = simulate_repository("acme/widgets", n_issues=120, seed=3,
                                           start="2020-06-01T00:00:00Z", days=90)
    assert len(issues) == 120
    assert {repo_of(i) for i in issues} == {"acme/widgets"} and {repo_of(c) for c in comments} <= {"acme/widgets"}
    assert min(i["created_at"] for i in issues) >= "2020-06-01T00:00:00Z"
    assert max(i["updated_at"] for i in issues) <= "2020-08-30T00:00:00Z"
    assert simulate_repository(n_issues=0) == ([], [])
    with pytest.raises(ValueError):
        simulate_repository(days=0)


def test_write_export_round_trips_plain_and_gzip_atomically(demo, tmp_path):
    issues, comments = demo
    gz = write_export(issues[:50], tmp_path / "sub" / "issues.jsonl.gz")
    plain = write_export(iter(comments[:40]), tmp_path / "comments.jsonl")
    with gzip.open(gz, "rt", encoding="utf-8") as fh:
        assert len(fh.read().splitlines()) == 50
    assert list(iter_export(gz)) == issues[:50]
    assert list(iter_export(plain)) == comments[:40]
    assert plain.read_bytes()[:1] == b"{"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["comments.jsonl", "issues.jsonl.gz", "sub"]

    def broken():
        yield issues[0]
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError):
        write_export(broken(), tmp_path / "comments.jsonl")
    assert list(iter_export(plain)) == comments[:40]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["comments.jsonl", "issues.jsonl.gz", "sub"]


def test_live_activity_opens_comments_and_closes_at_the_time_given():
    from issue_assets.github.simulate import LiveActivity

    issues, comments = simulate_repository("acme/widgets", n_issues=200, seed=4, start="2026-01-01T00:00:00Z",
                                           days=60)
    live = LiveActivity("acme/widgets", issues, comments, seed=1)
    twin = LiveActivity("acme/widgets", issues, comments, seed=1)
    start = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()
    numbers = {i["number"] for i in issues}
    ids = {i["id"] for i in issues} | {c["id"] for c in comments}
    opened, closed, commented = [], [], []
    for k in range(300):
        now = start + 30 * k
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        new_issues, new_comments = live.step(now)
        assert (new_issues, new_comments) == twin.step(now)  # deterministic for a seed
        (item,) = new_issues
        assert item["updated_at"] == stamp and item["_meta"] == {"simulated": True}
        assert repo_of(item) == "acme/widgets"
        kind = live.events[-1][1]
        if kind == "open":
            assert item["number"] not in numbers and item["id"] not in ids
            assert item["created_at"] == stamp and item["state"] == "open" and item["comments"] == 0
            numbers.add(item["number"])
            ids.add(item["id"])
            opened.append(item)
        elif kind == "close":
            assert item["state"] == "closed" and item["closed_at"] == stamp and item["number"] in numbers
            closed.append(item)
        else:
            (comment,) = new_comments
            assert comment["issue_url"] == item["url"] and comment["created_at"] == stamp
            assert comment["id"] not in ids and item["state"] == "open"
            ids.add(comment["id"])
            commented.append(item)
    assert opened and closed and commented
    assert len({i["number"] for i in opened}) == len(opened)
    # Most closes land inside the issue's 7-day window, so new labels keep arriving.
    recent = sum(1 for i in closed if (datetime.fromisoformat(i["closed_at"]) - datetime.fromisoformat(
        i["created_at"])).days < 7)
    assert recent / len(closed) > 0.5
