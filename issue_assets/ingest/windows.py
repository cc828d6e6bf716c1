"""From the (repository, day) partitions a run was asked for to the few sweeps that fetch them."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta


def plan_windows(keys: list[tuple[str, str]], first_day: str) -> list[tuple[str, datetime | None, datetime]]:
    """(repo, day) pairs -> one (repo, start, end) window per contiguous run of days.

    A run that starts at the first partition day has no start: the first partition holds all history
    before it, so a backfill from the beginning is one sweep of the whole history.
    """
    by_repo: dict[str, list[date]] = defaultdict(list)
    for repo, day in keys:
        by_repo[repo].append(date.fromisoformat(day))
    first = date.fromisoformat(first_day)
    windows = []
    for repo in sorted(by_repo):
        days = sorted(set(by_repo[repo]))
        run_start = prev = days[0]
        for day in days[1:] + [None]:
            if day is not None and day == prev + timedelta(days=1):
                prev = day
                continue
            start = None if run_start <= first else datetime(run_start.year, run_start.month, run_start.day, tzinfo=UTC)
            end = datetime(prev.year, prev.month, prev.day, tzinfo=UTC) + timedelta(days=1)
            windows.append((repo, start, end))
            if day is not None:
                run_start = prev = day
    return windows
