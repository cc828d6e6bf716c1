"""Fault injection for crash tests: kill the process at the n-th store write, not by timing luck.

`ISSUE_ASSETS_CRASH_AT=<n>` (or `<n>:before`) ends the process with `os._exit(CRASH_EXIT)` just before
the n-th write this process makes through an ObjectStore (put, compare-and-put, delete); `<n>:after`
just after it. `ISSUE_ASSETS_CRASH_LOG=<file>` appends one line per write (`<n> <op> <key>`), so a test
learns how many writes a command makes and can then kill it at every one. With neither variable set
the hook costs one environment lookup per write.
"""

from __future__ import annotations

import contextlib
import os
import sys

from issue_assets import config

CRASH_AT = "ISSUE_ASSETS_CRASH_AT"
CRASH_LOG = "ISSUE_ASSETS_CRASH_LOG"
CRASH_EXIT = 86

_writes = 0


def _spec() -> tuple[int, str] | None:
    raw = config.env(CRASH_AT)
    if not raw:
        return None
    number, _, when = raw.partition(":")
    when = when or "before"
    if not number.isdigit() or int(number) < 1 or when not in ("before", "after"):
        raise ValueError(f"{CRASH_AT} must be N, N:before or N:after with N >= 1, got {raw!r}")
    return int(number), when


def reset() -> None:
    """Start counting writes from zero (a forked test worker inherits its parent's count)."""
    global _writes
    _writes = 0


def writes() -> int:
    return _writes


@contextlib.contextmanager
def write_point(op: str, key: str):
    """Wrap one store write: counts it, logs it, and kills the process there when asked to."""
    global _writes
    log = config.env(CRASH_LOG)
    spec = _spec()
    if spec is None and not log:
        yield
        return
    _writes += 1
    n = _writes
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{n} {op} {key}\n")
    if spec is not None and spec == (n, "before"):
        _die(n, "before", op, key)
    yield
    if spec is not None and spec == (n, "after"):
        _die(n, "after", op, key)


def _die(n: int, when: str, op: str, key: str) -> None:
    sys.stderr.write(f"crash injected {when} write {n} ({op} {key})\n")
    sys.stderr.flush()
    os._exit(CRASH_EXIT)
