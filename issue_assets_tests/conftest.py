"""Shared fixtures: the real exports under ../shared/data (skipped when absent), loaded once per session,
and replay servers that are always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from issue_assets.github.export import iter_export
from issue_assets.github.replay import ReplayServer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RUST_ISSUES = "rust-lang_rust_issues.jsonl.gz"
RUST_COMMENTS = "rust-lang_rust_comments.jsonl.gz"
MATOMO_ISSUES = "matomo-org_matomo_issues.jsonl.gz"


def shared_file(name: str) -> Path:
    """Path of a shared export, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared export {name} not found under {SHARED_DATA} (the real-data tests need ../shared/data)")
    return path


class ExportCache:
    """Each export parsed at most once per session (the rust comments alone are 146,789 objects)."""

    def __init__(self):
        self._items: dict[str, list[dict]] = {}

    def path(self, name: str) -> Path:
        return shared_file(name)

    def items(self, name: str) -> list[dict]:
        if name not in self._items:
            self._items[name] = list(iter_export(self.path(name)))
        return self._items[name]


@pytest.fixture(scope="session")
def exports() -> ExportCache:
    return ExportCache()


@pytest.fixture
def replay_server() -> Iterable[Callable[..., ReplayServer]]:
    """Factory: `replay_server(issues, comments, **options)` or `replay_server(files=[...], comments_files=[...])`;
    the server is started, and stopped when the test ends."""
    started: list[ReplayServer] = []

    def make(issues: Iterable[dict] = (), comments: Iterable[dict] = (), *, files=(), comments_files=(),
             **options) -> ReplayServer:
        if files or comments_files:
            server = ReplayServer.from_files(list(files), list(comments_files), **options)
            server.add_issues(issues)
            server.add_comments(comments)
        else:
            server = ReplayServer(issues, comments, **options)
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()


def postgres_unavailable() -> str | None:
    """Why the PostgreSQL server at 127.0.0.1:5432 (user postgres, db test) cannot be used, or None."""
    try:
        import psycopg2

        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=2).close()
    except Exception as exc:  # any failure means "no server to test against"
        return f"PostgreSQL at 127.0.0.1:5432 (user postgres, db test) unreachable: {exc}".strip()
    return None
