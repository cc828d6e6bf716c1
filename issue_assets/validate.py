"""Command arguments checked before any work starts: one-line `ArgumentError`s naming the argument.

The CLI calls these first, so `issue-assets run --trials 0` or `--as-of 2026-02-30` fails in a
second instead of after an ingest, and `repos add ../etc` is refused like `ingest` refuses it.
`one_line` turns any exception (or Dagster's serialised error chain) into the one line a user reads.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

from issue_assets.ingest.layout import check_repo


class ArgumentError(ValueError):
    """An argument that cannot be used; the message names it, its value and what is allowed."""


def trials(value: int, name: str = "--trials") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


def as_of(value: str | None, *, today: date | None = None, name: str = "--as-of") -> str | None:
    """A real calendar day (YYYY-MM-DD), not after today (UTC); None stays None (= today)."""
    if value is None:
        return None
    today = today or datetime.now(UTC).date()
    text = str(value).strip()
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise ArgumentError(f"{name} must be a day as YYYY-MM-DD, got {value!r}")
    try:
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise ArgumentError(f"{name} {text} is not a real day ({exc})") from None
    if day > today:
        raise ArgumentError(f"{name} {text} lies in the future (today is {today.isoformat()} UTC)")
    return day.isoformat()


def repositories(names: Iterable[str], name: str = "repository") -> list[str]:
    out = []
    for repo in names:
        try:
            out.append(check_repo(repo))
        except ValueError:
            raise ArgumentError(f"{name} must look like OWNER/NAME, got {repo!r}") from None
    if not out:
        raise ArgumentError(f"name at least one {name} as OWNER/NAME")
    return out


def writable_folder(path: str | Path, name: str = "ISSUE_ASSETS_HOME") -> Path:
    """`path` created if needed and proven writable by writing (and removing) a file in it."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ArgumentError(f"{name} {folder} is not writable ({reason})") from None
    return folder.resolve()


def one_line(error) -> str:
    """The innermost cause of an exception, or of a Dagster SerializableErrorInfo chain (`.cause`,
    `.message`), as `Type: message` on one line: what a step failure says, not "step failed"."""
    while getattr(error, "cause", None) is not None or getattr(error, "__cause__", None) is not None:
        error = getattr(error, "cause", None) or error.__cause__
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}"
    else:  # SerializableErrorInfo: message is "module.Type: text\n"
        text = str(getattr(error, "message", error)).strip()
        head, sep, rest = text.partition(": ")
        if sep and "." in head and " " not in head:
            text = f"{head.rsplit('.', 1)[-1]}: {rest}"
    return " ".join(text.split())
