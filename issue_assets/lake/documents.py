"""Small JSON documents in a store, updated with optimistic concurrency."""

from __future__ import annotations

import json
from collections.abc import Callable

from issue_assets.lake.store import KeyNotFound, ObjectStore, StoreError


def read_json(store: ObjectStore, key: str, default=None):
    try:
        raw = store.get_bytes(key)
    except KeyNotFound:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StoreError(f"{store.uri}/{key} is not valid JSON ({exc.msg} at char {exc.pos})") from None


def dumps(doc) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True, default=str).encode()


def write_json(store: ObjectStore, key: str, doc) -> None:
    store.put_bytes(key, dumps(doc))


def update_json(store: ObjectStore, key: str, change: Callable[[dict], dict], *, default=None,
                attempts: int = 50) -> dict:
    """Read-modify-write with compare_and_put, retried on conflict; returns the document written."""
    for _ in range(attempts):
        version = store.version(key)
        current = read_json(store, key, default=None) if version is not None else None
        doc = change(current if current is not None else (default() if callable(default) else default or {}))
        if store.compare_and_put(key, dumps(doc), version):
            return doc
    raise StoreError(f"{store.uri}/{key}: gave up after {attempts} conflicting concurrent updates")
