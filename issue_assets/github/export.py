"""Reading GitHub issue/comment exports: JSON lines or a JSON array, gzip or not."""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path


class ExportError(ValueError):
    """An export file that cannot be read; the message names the file and line."""


# What a truncated or damaged gzip stream raises while it is read (EOFError: cut off before its end).
BROKEN_STREAM = (EOFError, gzip.BadGzipFile, zlib.error)


@contextlib.contextmanager
def reading(path: Path, where: Callable[[], str]):
    """Turn a damaged compressed stream into ExportError naming the file and how far it was read."""
    try:
        yield
    except BROKEN_STREAM as exc:
        reason = "truncated: the compressed stream ends early" if isinstance(exc, EOFError) else \
            f"damaged compressed data ({' '.join(str(exc).split())})"
        raise ExportError(f"{path}: {reason}, {where()}") from None


def _open_text(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape")
    return open(path, encoding="utf-8", errors="surrogateescape")


def iter_export(path: str | Path) -> Iterator[dict]:
    """Yield the objects of an export: one JSON object per line, or one JSON array (of objects or pages)."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"export file not found: {path}")
    lineno = 0
    with _open_text(path) as fh, reading(path, lambda: f"after line {lineno}"):
        first = fh.read(1)
        while first and first.isspace():
            first = fh.read(1)
        if first == "[":
            try:
                data = json.loads(first + fh.read())
            except json.JSONDecodeError as exc:
                raise ExportError(f"{path}: not valid JSON ({exc})") from None
            for obj in data:
                if isinstance(obj, list):
                    yield from obj
                else:
                    yield obj
            return
        pending = first
        for line in fh:
            lineno += 1
            line = pending + line
            pending = ""
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ExportError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if isinstance(obj, list):
                yield from obj
            else:
                yield obj


def repo_of(item: dict) -> str | None:
    """'owner/name' of an issue or comment, read from repository_url, issue_url or url."""
    for key in ("repository_url", "issue_url", "url"):
        url = item.get(key)
        if isinstance(url, str) and "/repos/" in url:
            parts = url.split("/repos/", 1)[1].split("/")
            if len(parts) >= 2 and parts[0] and parts[1]:
                return f"{parts[0]}/{parts[1]}"
    return None
