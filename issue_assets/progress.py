"""Progress of long work in this process, for whoever shows it (the CLI's progress lines). Silent by default.

Work reports counts (`report("pages", repo=..., kind="issues", items=100)`); a listener installed with
`listening(fn)` receives them in the reporting thread. Runs launched by the daemon have no listener, so
reporting costs a list lookup there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, dict], None]

_listeners: list[Listener] = []
_lock = threading.Lock()


def report(event: str, **counts) -> None:
    if not _listeners:
        return
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(event, counts)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)
