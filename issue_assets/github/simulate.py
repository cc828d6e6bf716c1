"""A deterministic demo repository: issues, pull requests and comments in the GitHub REST shape.

The demo and tests need data with the structure of a real tracker and a signal a model can learn
from creation-time information alone: who opens the issue (maintainers and bots are fast, one-time
users slow), what the text says (questions and duplicates close fast, feature requests slowly, bug
reports with a stack trace faster than vague ones, filled-in templates faster than ignored ones),
and how loaded the maintainers are (a backlog slows everything, bursts follow releases). Every item
carries `"_meta": {"simulated": true}`.
"""

from __future__ import annotations

import gzip
import heapq
import json
import math
import os
import random
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

DAY = 86400.0

_COMPONENTS = ["parser", "CLI", "scheduler", "HTTP client", "cache", "config loader", "plugin API",
               "exporter", "auth module", "web UI", "database adapter", "logging", "installer", "REST API"]
_SYMPTOMS = ["crashes", "hangs", "returns wrong results", "leaks memory", "is very slow", "raises an error",
             "ignores the setting", "fails silently", "produces duplicate rows", "breaks on Windows"]
_TRIGGERS = ["after upgrading to", "when the input is empty", "with unicode file names", "on large inputs",
             "behind a proxy", "when run in parallel", "with the default config", "after a restart"]
_EXCEPTIONS = ["KeyError", "ValueError", "TypeError", "AttributeError", "TimeoutError", "IndexError",
               "UnicodeDecodeError", "ConnectionResetError"]
_FEATURES = ["support for", "an option to configure", "a way to export", "dark mode for", "async support in",
             "retry logic in", "a plugin hook for", "i18n of", "batch mode for", "metrics for"]
_QUESTIONS = ["How do I configure", "Is it possible to use", "What is the recommended way to deploy",
              "Why does", "Can someone explain", "How can I migrate", "Where is the documentation for"]
_DOCS = ["Typo in", "Outdated example in", "Missing docs for", "Broken link in", "Clarify the section on"]
_OS = ["Ubuntu 22.04", "macOS 14", "Windows 11", "Debian 12", "Alpine 3.19", "Fedora 39"]
_FIRST = ["alex", "sam", "kim", "jo", "lee", "max", "ana", "li", "noor", "eli", "ren", "ivy", "omar", "zoe",
          "yuki", "tom", "mia", "raj", "eva", "ben"]
_LAST = ["dev", "codes", "hacker", "smith", "io", "builds", "ops", "lab", "42", "x", "py", "rs", "js"]

_LABELS = {
    "bug": ("d73a4a", "Something isn't working"),
    "enhancement": ("a2eeef", "New feature or request"),
    "question": ("d876e3", "Further information is requested"),
    "duplicate": ("cfd3d7", "This issue or pull request already exists"),
    "documentation": ("0075ca", "Improvements or additions to documentation"),
    "dependencies": ("0366d6", "Pull requests that update a dependency file"),
    "needs-info": ("fbca04", "More information is needed"),
    "good first issue": ("7057ff", "Good for newcomers"),
}

# kind -> (median days to close, share never closed)
_ISSUE_KINDS = {
    "bug_trace": (3.5, 0.04),
    "bug": (12.0, 0.10),
    "feature": (45.0, 0.22),
    "question": (0.9, 0.02),
    "duplicate": (0.35, 0.01),
    "docs": (5.0, 0.05),
}
_PR_KINDS = {
    "fix": (2.5, 0.05),
    "feature": (12.0, 0.10),
    "docs": (1.5, 0.04),
    "deps": (0.5, 0.03),
}
# author group -> (time multiplier, extra share never closed)
_AUTHOR_SPEED = {"maintainer": (0.12, 0.0), "contributor": (0.55, 0.02), "one_time": (1.9, 0.05),
                 "bot": (0.6, 0.0)}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> float:
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class _People:
    """Who files and comments: a few maintainers, regular contributors, bots and many one-time users."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self._next_id = 1000
        self._logins: set[str] = set()
        self.maintainers = [self._user(f"{rng.choice(_FIRST)}-maintainer{i}", "User",
                                       "OWNER" if i == 0 else "MEMBER") for i in range(4)]
        self.contributors = [self._user(self._login(), "User", "CONTRIBUTOR") for _ in range(40)]
        self.bots = [self._user(name, "Bot", "CONTRIBUTOR")
                     for name in ("dependabot[bot]", "github-actions[bot]", "renovate[bot]")]

    def _login(self) -> str:
        while True:
            login = f"{self.rng.choice(_FIRST)}{self.rng.choice(['', '-', '_'])}{self.rng.choice(_LAST)}" \
                    f"{self.rng.randrange(10, 9999)}"
            if login not in self._logins:
                return login

    def _user(self, login: str, kind: str, association: str) -> dict:
        self._logins.add(login)
        self._next_id += self.rng.randrange(1, 5000)
        uid = self._next_id
        enc = login.replace("[", "%5B").replace("]", "%5D")
        user = {
            "login": login, "id": uid, "node_id": f"U_sim{uid}",
            "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
            "url": f"https://api.github.com/users/{enc}",
            "html_url": f"https://github.com/{'apps/' + login[:-5] if kind == 'Bot' else login}",
            "type": kind, "site_admin": False,
        }
        return {"user": user, "association": association}

    def one_time(self) -> dict:
        return self._user(self._login(), "User", "NONE")


def _label(repo: str, name: str) -> dict:
    color, description = _LABELS[name]
    lid = 7_000_000 + sum(ord(c) * (i + 1) for i, c in enumerate(name))
    return {"id": lid, "node_id": f"LA_sim{lid}", "url": f"https://api.github.com/repos/{repo}/labels/{name}",
            "name": name, "color": color, "default": name in ("bug", "enhancement", "question"),
            "description": description}


def _stack_trace(rng: random.Random, component: str) -> str:
    module = component.lower().replace(" ", "_")
    frames = [f'  File "/usr/lib/python3/site-packages/demo_project/{module}/{rng.choice(["core", "io", "run", "api"])}.py", '
              f"line {rng.randrange(20, 900)}, in {rng.choice(['load', 'run', 'parse', 'fetch', '__call__'])}"
              for _ in range(rng.randrange(2, 6))]
    exc = rng.choice(_EXCEPTIONS)
    return "```\nTraceback (most recent call last):\n" + "\n".join(frames) + f"\n{exc}: {rng.choice(['None', repr(module), 'timed out', 'invalid value'])}\n```"


def _issue_text(rng: random.Random, kind: str, version: str, follows_template: bool,
                earlier_titles: list[tuple[int, str]]) -> tuple[str, str]:
    component = rng.choice(_COMPONENTS)
    if kind in ("bug", "bug_trace"):
        title = f"{component} {rng.choice(_SYMPTOMS)} {rng.choice(_TRIGGERS)}"
        if "upgrading" in title:
            title += f" {version}"
        if not follows_template:
            body = rng.choice(["doesn't work for me", f"{component} is broken, please fix", "same problem here",
                               f"{title}. Any idea?"])
            if kind == "bug_trace":
                body += "\n\n" + _stack_trace(rng, component)
            return title, body
        steps = "\n".join(f"{i}. {rng.choice(['Install', 'Configure', 'Run', 'Open', 'Call'])} the {component.lower()}"
                          for i in range(1, rng.randrange(2, 5)))
        body = (f"### Describe the bug\n{component} {rng.choice(_SYMPTOMS)}.\n\n### Steps to reproduce\n{steps}\n\n"
                f"### Expected behavior\nIt should work.\n\n### Environment\n- version: {version}\n"
                f"- OS: {rng.choice(_OS)}\n")
        if kind == "bug_trace":
            body += "\n### Logs\n" + _stack_trace(rng, component) + "\n"
        return title, body
    if kind == "feature":
        title = f"Feature request: {rng.choice(_FEATURES)} {component.lower()}"
        body = (f"### Is your feature request related to a problem?\nWorking with the {component.lower()} is tedious.\n\n"
                f"### Describe the solution you'd like\n{rng.choice(_FEATURES).capitalize()} {component.lower()}.\n\n"
                "### Alternatives considered\nNone yet.\n") if follows_template else \
            f"It would be great to have {rng.choice(_FEATURES)} {component.lower()}."
        return title, body
    if kind == "question":
        title = f"{rng.choice(_QUESTIONS)} the {component.lower()}?"
        body = (f"### Question\n{title}\n\nI read the docs but could not find it. Thanks!\n"
                if follows_template else f"{title} thanks")
        return title, body
    if kind == "duplicate" and earlier_titles:
        number, original = rng.choice(earlier_titles[-60:])
        title = original if rng.random() < 0.5 else f"{original} (again)"
        body = rng.choice([f"Looks similar to #{number} but I am not sure.", "I think this was reported before?",
                           f"{original}. Same as the other issue?", "Happens to me too."])
        return title, body
    title = f"{rng.choice(_DOCS)} the {component.lower()} guide"
    body = f"The page about the {component.lower()} {rng.choice(['has a typo', 'uses an old API', 'links to a 404'])}."
    return title, body


def _pr_text(rng: random.Random, kind: str, number_hint: int) -> tuple[str, str]:
    component = rng.choice(_COMPONENTS)
    if kind == "deps":
        pkg = rng.choice(["requests", "urllib3", "pyyaml", "lodash", "serde", "tokio", "black", "pytest"])
        a, b = rng.randrange(1, 9), rng.randrange(0, 30)
        return (f"Bump {pkg} from {a}.{b}.0 to {a}.{b + 1}.0",
                f"Bumps {pkg} from {a}.{b}.0 to {a}.{b + 1}.0.\n\nDependabot will resolve any conflicts with this PR.")
    if kind == "fix":
        return (f"Fix {component.lower()} {rng.choice(_SYMPTOMS)}",
                f"Fixes #{max(1, number_hint - rng.randrange(1, 40))}.\n\n## Changes\n- handle the edge case in the "
                f"{component.lower()}\n- add a regression test\n")
    if kind == "docs":
        return f"docs: update the {component.lower()} guide", "Small documentation fix."
    return (f"Add {rng.choice(_FEATURES)} {component.lower()}",
            f"## Summary\nImplements {rng.choice(_FEATURES)} {component.lower()}.\n\n## Checklist\n- [x] tests\n- [ ] docs\n")


def simulate_repository(repo: str = "demo-org/demo-project", n_issues: int = 3000, seed: int = 0,
                        start: str = "2021-01-01T00:00:00Z", days: int = 720) -> tuple[list[dict], list[dict]]:
    """(issues and pull requests, comments) of a synthetic repository, identical for the same arguments."""
    if n_issues < 0 or days <= 0:
        raise ValueError("n_issues must be >= 0 and days > 0")
    rng = random.Random(f"simulate:{repo}:{seed}")
    t0 = _parse(start)
    end = t0 + days * DAY
    people = _People(rng)
    one_timers: list[dict] = []

    releases = []
    t = t0 + rng.uniform(10, 40) * DAY
    while t < end:
        releases.append(t)
        t += rng.uniform(28, 56) * DAY

    def intensity(ts: float) -> float:
        burst = 0.0
        for r in releases:
            if 0 <= ts - r < 10 * DAY:
                burst = max(burst, 2.2 * math.exp(-(ts - r) / (2.5 * DAY)))
        weekday = datetime.fromtimestamp(ts, UTC).weekday()
        return (0.55 if weekday >= 5 else 1.0) + burst

    created: list[float] = []
    while len(created) < n_issues:
        ts = t0 + rng.random() * (end - t0 - 3600)
        if rng.random() * 3.2 < intensity(ts):
            created.append(ts)
    created.sort()

    def version_at(ts: float) -> str:
        k = sum(1 for r in releases if r <= ts)
        return f"2.{k // 4}.{k % 4}"

    issues: list[dict] = []
    pending_comments: list[tuple[float, int, dict]] = []
    open_heap: list[float] = []
    titles: list[tuple[int, str]] = []
    base_id = 900_000_000 + rng.randrange(0, 1_000_000)
    for idx, ts in enumerate(created):
        number = idx + 1
        while open_heap and open_heap[0] <= ts:
            heapq.heappop(open_heap)
        recent_open = sum(1 for c in open_heap if c != math.inf)
        load = 0.65 + 1.1 * math.tanh(recent_open / 250.0)

        roll = rng.random()
        if roll < 0.12:
            group, who = "maintainer", rng.choice(people.maintainers)
        elif roll < 0.37:
            group, who = "contributor", rng.choice(people.contributors)
        elif roll < 0.45:
            group, who = "bot", rng.choice(people.bots)
        else:
            group = "one_time"
            if one_timers and rng.random() < 0.15:
                who = rng.choice(one_timers)
            else:
                who = people.one_time()
                one_timers.append(who)
        pr_share = {"maintainer": 0.5, "contributor": 0.4, "bot": 1.0, "one_time": 0.1}[group]
        is_pr = rng.random() < pr_share
        after_release = any(0 <= ts - r < 7 * DAY for r in releases)
        follows_template = group != "one_time" or rng.random() < 0.55
        if is_pr:
            kind = "deps" if group == "bot" else rng.choices(["fix", "feature", "docs"], [0.5, 0.35, 0.15])[0]
            title, body = _pr_text(rng, kind, number)
            median, never = _PR_KINDS[kind]
        else:
            weights = {"bug_trace": 0.2, "bug": 0.25, "feature": 0.22, "question": 0.15, "duplicate": 0.08,
                       "docs": 0.1}
            if after_release:
                weights["bug_trace"] *= 2.0
                weights["bug"] *= 2.0
            if group == "maintainer":
                weights["question"] = 0.0
                weights["duplicate"] = 0.0
            kind = rng.choices(list(weights), list(weights.values()))[0]
            title, body = _issue_text(rng, kind, version_at(ts), follows_template, titles)
            titles.append((number, title))
            median, never = _ISSUE_KINDS[kind]
        speed, extra_never = _AUTHOR_SPEED[group]
        if not follows_template:
            median *= 2.5
            extra_never += 0.04
        if rng.random() < never + extra_never:
            first_close = math.inf
        else:
            first_close = ts + max(60.0, median * speed * load * DAY * math.exp(rng.gauss(0, 1.25)))

        closes = [first_close]
        if first_close < end and rng.random() < 0.055:
            reopen = first_close + rng.uniform(0.2, 30) * DAY
            closes = [first_close, reopen + max(600.0, 3 * DAY * math.exp(rng.gauss(0, 1.0)))]
            if reopen >= end:
                closes = [first_close]
        last_close = closes[-1]
        heapq.heappush(open_heap, last_close)
        reopened = len(closes) > 1
        is_closed = last_close < end
        closed_at = last_close if is_closed else None
        activity_end = last_close if is_closed else end

        comment_times: list[float] = []
        span = activity_end - ts
        n_comments = 0 if group == "bot" and rng.random() < 0.6 else min(
            40, int(rng.expovariate(1.0) * (1.5 + math.log1p(span / DAY))))
        if kind == "duplicate" or kind == "question":
            n_comments = max(1, n_comments)
        for _ in range(n_comments):
            comment_times.append(ts + rng.uniform(0.02, 1.0) * span)
        comment_times.sort()
        if is_closed and comment_times and rng.random() < 0.6:
            comment_times[-1] = max(ts, activity_end - rng.uniform(0, 600))
        for k, ct in enumerate(comment_times):
            ct = min(ct, activity_end)
            if k == len(comment_times) - 1 and is_closed:
                ct = max(ts, min(activity_end, ct))
            commenter = who if rng.random() < 0.25 else (
                rng.choice(people.maintainers) if rng.random() < 0.7 else rng.choice(people.contributors))
            if kind == "duplicate" and k == len(comment_times) - 1 and is_closed:
                text = f"Duplicate of #{max(1, number - rng.randrange(1, 60))}"
            elif kind == "question" and k == 0:
                text = "You can set this in the config file, see the docs section on configuration."
            elif is_closed and k == len(comment_times) - 1 and is_pr:
                text = rng.choice(["LGTM, thanks!", "Merged, thank you.", "Thanks for the contribution!"])
            else:
                text = rng.choice(["Thanks for the report.", "Can you share your config?", "I can reproduce this.",
                                   "Any update on this?", "+1", "Working on a fix.", "Could you try the latest release?",
                                   "Here is a minimal example that triggers it."])
            edited = ct + (rng.uniform(60, 3600) if rng.random() < 0.1 else 0.0)
            pending_comments.append((ct, number, {"commenter": commenter, "text": text,
                                                  "updated": min(max(edited, ct), max(end, ct))}))

        last_activity = max([ts, *(c for c in comment_times), closed_at or ts])
        touched = last_activity
        if rng.random() < 0.3:
            touched = min(end, last_activity + rng.uniform(0, 60) * DAY)
        touched = max(touched, last_activity)

        labels = []
        label_of = {"bug": "bug", "bug_trace": "bug", "feature": "enhancement", "question": "question",
                    "duplicate": "duplicate", "docs": "documentation", "deps": "dependencies"}
        if kind in label_of and (is_closed or rng.random() < 0.7) and not (is_pr and kind != "deps"):
            labels.append(label_of[kind])
        if not follows_template and not is_pr and rng.random() < 0.5:
            labels.append("needs-info")
        if kind == "docs" and rng.random() < 0.3:
            labels.append("good first issue")

        if is_pr:
            state_reason = None
        elif is_closed:
            state_reason = "not_planned" if kind == "duplicate" or (kind == "feature" and rng.random() < 0.4) \
                else "completed"
        else:
            state_reason = "reopened" if reopened and first_close < end else None
        assignee = rng.choice(people.maintainers)["user"] if (not is_pr and is_closed and rng.random() < 0.4) else None
        issue_id = base_id + idx * 7 + rng.randrange(0, 7)
        api = f"https://api.github.com/repos/{repo}/issues/{number}"
        html = f"https://github.com/{repo}/{'pull' if is_pr else 'issues'}/{number}"
        reactions_total = rng.choice([0, 0, 0, 0, 1, 2, 5]) + (rng.randrange(0, 12) if kind == "feature" else 0)
        item = {
            "url": api,
            "repository_url": f"https://api.github.com/repos/{repo}",
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "html_url": html,
            "id": issue_id,
            "node_id": f"{'PR' if is_pr else 'I'}_sim{issue_id}",
            "number": number,
            "title": title,
            "user": dict(who["user"]),
            "labels": [_label(repo, name) for name in labels],
            "state": "closed" if is_closed else "open",
            "locked": False,
            "assignee": assignee,
            "assignees": [assignee] if assignee else [],
            "milestone": None,
            "comments": len(comment_times),
            "created_at": _iso(ts),
            "updated_at": _iso(touched),
            "closed_at": _iso(closed_at) if closed_at is not None else None,
            "author_association": who["association"],
            "active_lock_reason": None,
            "body": body,
            "reactions": {"url": f"{api}/reactions", "total_count": reactions_total, "+1": reactions_total,
                          "-1": 0, "laugh": 0, "hooray": 0, "confused": 0, "heart": 0, "rocket": 0, "eyes": 0},
            "timeline_url": f"{api}/timeline",
            "performed_via_github_app": None,
            "state_reason": state_reason,
            "_meta": {"simulated": True},
        }
        if is_pr:
            item["draft"] = False
            item["pull_request"] = {
                "url": f"https://api.github.com/repos/{repo}/pulls/{number}", "html_url": html,
                "diff_url": f"{html}.diff", "patch_url": f"{html}.patch",
                "merged_at": _iso(closed_at) if closed_at is not None and rng.random() < 0.85 else None,
            }
        issues.append(item)

    pending_comments.sort(key=lambda c: (c[0], c[1]))
    comments = []
    comment_base = 40_000_000 + rng.randrange(0, 1_000_000)
    for k, (ct, number, c) in enumerate(pending_comments):
        cid = comment_base + k * 3 + 1
        user = c["commenter"]
        comments.append({
            "url": f"https://api.github.com/repos/{repo}/issues/comments/{cid}",
            "html_url": f"https://github.com/{repo}/issues/{number}#issuecomment-{cid}",
            "issue_url": f"https://api.github.com/repos/{repo}/issues/{number}",
            "id": cid,
            "node_id": f"IC_sim{cid}",
            "user": dict(user["user"]),
            "created_at": _iso(ct),
            "updated_at": _iso(c["updated"]),
            "author_association": user["association"],
            "body": c["text"],
            "reactions": {"url": f"https://api.github.com/repos/{repo}/issues/comments/{cid}/reactions",
                          "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0, "confused": 0, "heart": 0,
                          "rocket": 0, "eyes": 0},
            "performed_via_github_app": None,
            "_meta": {"simulated": True},
        })
    return issues, comments


def write_export(items: Iterable[dict], path: str | Path) -> Path:
    """Write JSON lines (gzip when the name ends with .gz, with a fixed header so bytes are reproducible)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            sink = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) if path.name.endswith(".gz") else raw
            try:
                for item in items:
                    sink.write(json.dumps(item, ensure_ascii=False).encode("utf-8"))
                    sink.write(b"\n")
            finally:
                if sink is not raw:
                    sink.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class LiveActivity:
    """New activity for a simulated repository, stamped with the time it happens: new issues and pull
    requests, comments on open items, and closes (mostly of issues, not pull requests, still inside their
    7-day window, so new labels keep arriving). Items are drawn from another simulated history of the same repository,
    renumbered after the served ones, so they read like the rest. Every item keeps `_meta.simulated`.
    """

    WEIGHTS = {"open": 0.45, "comment": 0.35, "close": 0.20}

    def __init__(self, repo: str, issues: list[dict], comments: list[dict] = (), seed: int = 0):
        self.repo = repo
        self.rng = random.Random(f"live:{repo}:{seed}")
        pool, _ = simulate_repository(repo, n_issues=2000, seed=seed + 1_000_003, start="2020-01-01T00:00:00Z",
                                      days=720)
        self._templates = pool
        self._next_template = 0
        self._next_number = max((int(i["number"]) for i in issues), default=0) + 1
        self._next_id = max((int(i["id"]) for i in issues), default=900_000_000) + 1_000_000
        self._next_comment_id = max((int(c["id"]) for c in comments), default=40_000_000) + 1_000_000
        self._open = {int(i["number"]): dict(i) for i in issues if i.get("state") == "open"}
        self.events: list[tuple[float, str, int]] = []  # (time, "open" | "comment" | "close", number)
        self.pull_requests: set[int] = set()  # numbers of the pull requests it opened

    def step(self, now: float) -> tuple[list[dict], list[dict]]:
        """One event at time `now`: (issues to add or replace, comments to add)."""
        kind = self.rng.choices(list(self.WEIGHTS), list(self.WEIGHTS.values()))[0]
        if kind != "open" and not self._open:
            kind = "open"
        if kind == "open":
            item = self._new_item(now)
            self._open[item["number"]] = item
            if "pull_request" in item:
                self.pull_requests.add(item["number"])
            self.events.append((now, "open", item["number"]))
            return [item], []
        if kind == "close":
            recent = [n for n, i in self._open.items()
                      if now - _parse(i["created_at"]) < 7 * DAY and "pull_request" not in i]
            number = self.rng.choice(recent if recent and self.rng.random() < 0.8 else list(self._open))
            return [self.close(number, now)], []
        number = self.rng.choice(list(self._open))
        item = dict(self._open[number], updated_at=_iso(now), comments=int(self._open[number].get("comments", 0)) + 1)
        self._open[number] = item
        comment = self._new_comment(item, now)
        self.events.append((now, "comment", number))
        return [item], [comment]

    def close(self, number: int, now: float) -> dict:
        """Close the open item `number` at `now` (merge it if a pull request); the closed item."""
        item = dict(self._open.pop(number), state="closed", closed_at=_iso(now), updated_at=_iso(now),
                    state_reason="completed")
        if "pull_request" in item:
            item["state_reason"] = None
            item["pull_request"] = dict(item["pull_request"], merged_at=_iso(now))
        self.events.append((now, "close", number))
        return item

    def open_numbers(self) -> set[int]:
        return set(self._open)

    def _new_item(self, now: float) -> dict:
        template = self._templates[self._next_template % len(self._templates)]
        self._next_template += 1
        number, item_id = self._next_number, self._next_id
        self._next_number += 1
        self._next_id += self.rng.randrange(1, 7)
        api = f"https://api.github.com/repos/{self.repo}/issues/{number}"
        html = f"https://github.com/{self.repo}/{'pull' if 'pull_request' in template else 'issues'}/{number}"
        item = dict(template, id=item_id, number=number, node_id=f"I_simlive{item_id}", url=api, html_url=html,
                    labels_url=f"{api}/labels{{/name}}", comments_url=f"{api}/comments", events_url=f"{api}/events",
                    timeline_url=f"{api}/timeline", created_at=_iso(now), updated_at=_iso(now), closed_at=None,
                    state="open", state_reason=None, comments=0, assignee=None, assignees=[],
                    labels=[lab for lab in template["labels"] if lab["name"] in ("dependencies", "needs-info")],
                    reactions=dict(template["reactions"], url=f"{api}/reactions", total_count=0))
        item["reactions"]["+1"] = 0
        if "pull_request" in template:
            item["pull_request"] = dict(template["pull_request"], url=f"https://api.github.com/repos/{self.repo}/pulls/"
                                        f"{number}", html_url=html, diff_url=f"{html}.diff", patch_url=f"{html}.patch",
                                        merged_at=None)
        return item

    def _new_comment(self, item: dict, now: float) -> dict:
        cid = self._next_comment_id
        self._next_comment_id += self.rng.randrange(1, 4)
        user = self.rng.choice([item["user"], *[t["user"] for t in self._templates[:20]]])
        return {
            "url": f"https://api.github.com/repos/{self.repo}/issues/comments/{cid}",
            "html_url": f"{item['html_url']}#issuecomment-{cid}", "issue_url": item["url"], "id": cid,
            "node_id": f"IC_simlive{cid}", "user": dict(user), "created_at": _iso(now), "updated_at": _iso(now),
            "author_association": "NONE",
            "body": self.rng.choice(["Thanks for the report.", "I can reproduce this.", "Any update on this?",
                                     "Could you try the latest release?", "+1", "Working on a fix."]),
            "reactions": {"url": f"https://api.github.com/repos/{self.repo}/issues/comments/{cid}/reactions",
                          "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0, "confused": 0, "heart": 0,
                          "rocket": 0, "eyes": 0},
            "performed_via_github_app": None, "_meta": {"simulated": True},
        }
