"""Shared fixtures: the real exports under ../shared/data (skipped when absent), loaded once per session,
and replay servers that are always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_moto_behave_like_s3(monkeypatch) -> None:
    """Two moto artifacts that real S3 does not have, removed so that what is tested is our
    compare-and-put and not moto's own thread safety (moto's server answers from threads of this
    process, so the patches apply to it too, whichever process sends the requests):
    - moto checks If-Match / If-None-Match and then writes, unlocked, so two racing conditional
      PUTs can both succeed (S3 makes the check and the write one atomic step): serialize PutObject;
    - moto closes an overwritten object's buffer at once, so a GET of the old object still being
      read in another thread fails with "I/O operation on closed file" (S3 serves the old or the
      new object): keep old buffers open for the test."""
    import threading

    import moto.s3.models
    import moto.s3.responses

    lock = threading.Lock()
    put_object = moto.s3.responses.S3Response.put_object

    def atomic_put_object(self, *args, **kwargs):
        with lock:
            return put_object(self, *args, **kwargs)

    monkeypatch.setattr(moto.s3.responses.S3Response, "put_object", atomic_put_object)
    monkeypatch.setattr(moto.s3.models.FakeKey, "dispose", lambda self, garbage=False: None)


@contextmanager
def moto_s3_server():
    """moto's S3 over HTTP on loopback (separate processes share it), behaving like S3 under races.
    Yields the endpoint URL; buckets are the caller's to create."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        make_moto_behave_like_s3(mp)
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            mp.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="module")
def moto_server():
    with moto_s3_server() as endpoint:
        yield endpoint
