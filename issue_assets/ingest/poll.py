"""Has anything changed since the last ingest? One conditional request per repository and endpoint.

The first page of `GET /repos/{repo}/issues?since=<cursor>` (and of `/issues/comments`) goes out with the
validators the last ingest left for exactly that URL (`If-Modified-Since` = the cursor). Nothing new: 304,
which costs no rate-limit point on an authorized request. Something new: 200 with items updated after the
cursor; the newest of them is the change's fingerprint (an ingest run key built from it is idempotent).
The poll never writes validators: a page it fetched was not stored, so the ingest must still get it.

Requests go out concurrently, at most `concurrency` at a time per API. Each API's `x-ratelimit-*` headers
are watched: the poll spends at most `share` of an API's rate-limit window (points it did not need are
given back: a 304 with a token costs nothing), never touches an exhausted budget before its reset, and
stops asking an API for the rest of a tick after a secondary rate limit. Whatever it could not do is
reported per repository, never raised: one unreachable API does not hide the others.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import pandas as pd

from issue_assets.github.client import GitHubError, RateLimitedError
from issue_assets.ingest import sources as sources_mod
from issue_assets.ingest.rawlog import RawLog
from issue_assets.ingest.sync import cursor, iso, parse_time
from issue_assets.lake.store import ObjectStore

KINDS = ("issues", "comments")
UNCHANGED, CHANGED, NO_HISTORY, UNBOUND, DEFERRED, RATE_LIMITED, UNREACHABLE = (
    "unchanged", "changed", "no history", "not bound", "deferred", "rate limited", "unreachable")


@dataclass
class Probe:
    """What one conditional request found for one endpoint of one repository."""

    repo: str
    kind: str
    state: str
    newest: str | None = None
    detail: str = ""
    cost: int = 0
    api_url: str = ""


@dataclass
class ApiBudget:
    """The rate-limit window of one API as its last answer described it, and the poll's spending in it."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    spent: int = 0

    def roll(self, now: float) -> None:
        """A window whose reset has passed is a new window: nothing spent, everything remaining."""
        if self.reset is not None and now >= self.reset:
            self.spent = 0
            self.remaining = self.limit
            self.reset = None

    def allowance(self, share: float) -> int | None:
        """Points the poll may still spend in this window (None: the limit is not known yet)."""
        if self.limit is None:
            return None
        return max(0, math.floor(share * self.limit) - self.spent)


class _ApiGate:
    """One API during one tick: a concurrency cap, the budget, and a stop after a secondary limit."""

    def __init__(self, budget: ApiBudget, share: float, concurrency: int, now: float):
        self.budget = budget
        self.share = share
        self.slots = threading.Semaphore(concurrency)
        self.lock = threading.Condition()
        self.reserved = 0
        self.stopped: str | None = None
        budget.roll(now)

    def reserve(self) -> str | None:
        """None if a request may go out (one point reserved), else why not. While the API's limit is not
        known yet, one request goes out alone and its answer tells the rest."""
        with self.lock:
            b = self.budget
            while b.limit is None and self.reserved > 0 and not self.stopped:
                self.lock.wait()
            if self.stopped:
                return self.stopped
            if b.remaining is not None and b.remaining - self.reserved <= 0 and b.reset is not None:
                return f"rate limit exhausted until {time.strftime('%H:%M:%S', time.gmtime(b.reset))} UTC"
            allowance = b.allowance(self.share)
            if allowance is not None and allowance - self.reserved <= 0:
                return (f"the poll's share of the rate limit is spent ({b.spent + self.reserved} of "
                        f"{math.floor(self.share * b.limit)} points this window)")
            self.reserved += 1
            return None

    def settle(self, cost: int, rate: dict | None) -> None:
        with self.lock:
            self.lock.notify_all()
            self.reserved -= 1
            self.budget.spent += cost
            if rate:
                self.budget.limit = int(rate["limit"])
                self.budget.remaining = int(rate["remaining"])
                if rate.get("reset") is not None:
                    self.budget.reset = float(rate["reset"])

    def stop(self, reason: str) -> None:
        with self.lock:
            self.stopped = self.stopped or reason
            self.lock.notify_all()


@dataclass
class PollReport:
    probes: list[Probe] = field(default_factory=list)
    budgets: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    def by_repo(self) -> dict[str, dict[str, Probe]]:
        out: dict[str, dict[str, Probe]] = {}
        for probe in self.probes:
            out.setdefault(probe.repo, {})[probe.kind] = probe
        return out

    def changed(self) -> dict[str, str]:
        """Repositories with something new -> a fingerprint of what the poll saw (newest issue | comment)."""
        out = {}
        for repo, kinds in self.by_repo().items():
            if any(p.state == CHANGED for p in kinds.values()):
                out[repo] = "|".join(kinds[k].newest or "-" if k in kinds else "-" for k in KINDS)
        return out

    def problems(self) -> list[str]:
        """One line per endpoint the poll could not check, naming the repository."""
        return [f"{p.repo} {p.kind}: {p.state}: {p.detail}" for p in self.probes
                if p.state in (UNBOUND, DEFERRED, RATE_LIMITED, UNREACHABLE)]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.probes:
            out[p.state] = out.get(p.state, 0) + 1
        return out

    @property
    def requests(self) -> int:
        return sum(1 for p in self.probes if p.state in (UNCHANGED, CHANGED, RATE_LIMITED, UNREACHABLE))

    @property
    def points(self) -> int:
        return sum(p.cost for p in self.probes)

    def summary(self) -> str:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(self.counts().items()))
        return (f"{len(self.by_repo())} repositories polled in {self.seconds:.1f}s: {counts or 'nothing'}; "
                f"{self.requests} requests, {self.points} rate-limit points")

    def as_dict(self) -> dict:
        return {"probes": [asdict(p) for p in self.probes], "budgets": self.budgets, "seconds": self.seconds}


def has_history(store: ObjectStore, repo: str, kind: str) -> bool:
    """The repository's first sweep of `kind` finished: a cursor, or a complete sweep that found nothing
    (a repository without comments has no comment cursor)."""
    doc = RawLog(store, kind, repo).manifest()
    return doc.get("cursor") is not None or doc.get("swept_at") is not None


def _stored_at(store: ObjectStore, repo: str, kind: str, ts) -> set:
    """Ids of the raw log's versions updated in the second `ts`."""
    rawlog = RawLog(store, kind, repo)
    log = rawlog.read_month(rawlog.manifest(), ts.strftime("%Y-%m"))
    if log is None:
        return set()
    second = pd.Timestamp(ts).floor("s")
    return set(log.loc[log["updated_at"].dt.floor("s") == second, "id"].tolist())


def _probe(repo: str, kind: str, since, source: sources_mod.Source, gate: _ApiGate, client_factory,
           store: ObjectStore) -> Probe:
    probe = Probe(repo, kind, DEFERRED, iso(since), api_url=source.api_url)
    why_not = gate.reserve()
    if why_not is not None:
        probe.detail = why_not
        return probe
    cost, rate = 1, None
    with gate.slots:
        client = client_factory(repo, source)
        try:
            pages = (client.iter_issue_pages(repo, since=iso(since)) if kind == "issues"
                     else client.iter_comment_pages(repo, since=iso(since)))
            try:
                page = next(pages)
            finally:
                pages.close()
            if page.not_modified:
                probe.state = UNCHANGED
                cost = 0 if client.authenticated else 1
            else:
                times = [parse_time(i.get("updated_at")) for i in page.items if isinstance(i, dict)]
                newest = max((t for t in times if t is not None), default=None)
                changed = page.has_next or (newest is not None and (since is None or newest > since))
                if not changed and newest is not None and since is not None:
                    # Only items of the cursor's own second: one updated in that second after the sweep read
                    # it would hide behind the cursor. Compare with what the log stores for that second.
                    at_cursor = {i.get("id") for i, t in zip(page.items, times, strict=True) if t == since}
                    changed = not at_cursor <= _stored_at(store, repo, kind, since)
                probe.state = CHANGED if changed else UNCHANGED
                if changed and newest is not None:
                    probe.newest = iso(newest)
        except RateLimitedError as exc:
            probe.state, probe.detail = RATE_LIMITED, f"{exc} (at {source.api_url})"
            gate.stop(f"{source.api_url} rate limited this tick")
        except GitHubError as exc:
            probe.state, probe.detail = UNREACHABLE, str(exc)
            cost = 0 if exc.status is None else 1  # a request that never got an answer cost nothing
        finally:
            rate = client.rate_limit
            client.close()
    probe.cost = cost
    gate.settle(cost, rate)
    return probe


def poll(repos: list[str], store: ObjectStore, *, budgets: dict[str, dict] | None = None,
         sources: dict[str, sources_mod.Source] | None = None, share: float = 0.5, concurrency: int = 4,
         token: str | None = None, cache_dir=None, now: Callable[[], float] = time.time,
         client_options: dict | None = None) -> PollReport:
    """Probe both endpoints of every repository; `budgets` (per API URL, from the previous tick) is the
    spending state the report hands back updated."""
    began = time.perf_counter()
    sources = sources if sources is not None else sources_mod.all_sources(store)
    options = {"prefetch": False, "max_retries": 1, "backoff_base": 0.2, "backoff_max": 1.0, "timeout": 10.0,
               "max_wait": 0.0} | (client_options or {})

    def client_factory(repo: str, source: sources_mod.Source):
        return sources_mod.client_for(repo, source=source, token=token, cache_dir=cache_dir,
                                      save_validators=False, **options)

    report = PollReport()
    gates: dict[str, _ApiGate] = {}
    tasks = []
    for repo in repos:
        source = sources.get(repo)
        if source is None:
            report.probes.extend(Probe(repo, kind, UNBOUND, None, "no API bound to it yet (`issue-assets repos add`; "
                                       "the repositories sensor binds it)") for kind in KINDS)
            continue
        if source.api_url not in gates:
            previous = (budgets or {}).get(source.api_url) or {}
            gates[source.api_url] = _ApiGate(ApiBudget(**previous), share, concurrency, now())
        for kind in KINDS:
            since = cursor(store, repo, kind)
            if since is None and not has_history(store, repo, kind):
                report.probes.append(Probe(repo, kind, NO_HISTORY, None, "no ingest yet: the repositories sensor "
                                           "backfills its history", api_url=source.api_url))
            else:
                tasks.append((repo, kind, since, source, gates[source.api_url]))
    if tasks:
        workers = min(len(tasks), max(1, concurrency) * len(gates), 32)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poll") as pool:
            report.probes.extend(pool.map(lambda t: _probe(*t, client_factory, store), tasks))
    report.budgets = {url: asdict(gate.budget) for url, gate in gates.items()}
    report.seconds = time.perf_counter() - began
    return report
