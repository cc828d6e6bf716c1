"""Small JSON documents in a store, updated with optimistic concurrency."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

from issue_assets.lake.store import DamagedFile, KeyNotFound, ObjectStore, StoreError


def parse_json(raw: bytes, location: str, remedy: str | None = None):
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = f"{exc.msg} at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise DamagedFile(location, f"not valid JSON: {detail}", remedy) from None


def read_json(store: ObjectStore, key: str, default=None, *, remedy: str | None = None):
    try:
        raw = store.get_bytes(key)
    except KeyNotFound:
        return default
    return parse_json(raw, f"{store.uri}/{key}", remedy)


def read_json_versioned(store: ObjectStore, key: str, *, remedy: str | None = None):
    """(document, version) from one read; (None, None) when the key does not exist."""
    try:
        raw, version = store.get_versioned(key)
    except KeyNotFound:
        return None, None
    return parse_json(raw, f"{store.uri}/{key}", remedy), version


def dumps(doc) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True, default=str).encode()


def write_json(store: ObjectStore, key: str, doc) -> None:
    store.put_bytes(key, dumps(doc))


def backoff(attempt: int, base: float = 0.01) -> None:
    """Jittered pause after a lost compare-and-put, growing with the attempt (at most ~0.3 s)."""
    time.sleep(base * random.uniform(0.5, 1.5) * min(2 ** attempt, 32))


def update_json(store: ObjectStore, key: str, change: Callable[[dict], dict], *, default=None,
                attempts: int = 50, remedy: str | None = None) -> dict:
    """Read-modify-write with compare_and_put, retried on conflict; returns the document written."""
    for attempt in range(attempts):
        current, version = read_json_versioned(store, key, remedy=remedy)
        doc = change(current if current is not None else (default() if callable(default) else default or {}))
        if store.compare_and_put(key, dumps(doc), version):
            return doc
        backoff(attempt)
    raise StoreError(f"{store.uri}/{key}: gave up after {attempts} conflicting concurrent updates")
