"""Small JSON documents in a store, updated with optimistic concurrency.

Every object document is sealed: `_sha256` holds the hash of its canonical form (sorted keys, no
spaces), so a flipped byte that still leaves valid JSON is caught on read like a truncation is. A
document written before seals existed is read as it is.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable

from issue_assets.lake.store import DamagedFile, KeyNotFound, ObjectStore, StoreError

SEAL = "_sha256"


def _canonical_sha(doc: dict) -> str:
    body = json.dumps({k: v for k, v in doc.items() if k != SEAL}, sort_keys=True, separators=(",", ":"),
                      default=str, ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


def seal(doc):
    """`doc` with its `_sha256` (objects only; anything else is returned as it is)."""
    if not isinstance(doc, dict):
        return doc
    return {**{k: v for k, v in doc.items() if k != SEAL}, SEAL: _canonical_sha(doc)}


def unseal(doc, location: str, remedy: str | None = None):
    """`doc` without its seal, after checking it; DamagedFile when the content no longer matches."""
    if not isinstance(doc, dict) or SEAL not in doc:
        return doc
    if doc[SEAL] != _canonical_sha(doc):
        raise DamagedFile(location, "content differs from its recorded sha256", remedy)
    return {k: v for k, v in doc.items() if k != SEAL}


def parse_json(raw: bytes, location: str, remedy: str | None = None):
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = f"{exc.msg} at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise DamagedFile(location, f"not valid JSON: {detail}", remedy) from None
    return unseal(doc, location, remedy)


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
    # default=str first, so the seal is computed over exactly what a reader will parse
    plain = json.loads(json.dumps(doc, default=str))
    return json.dumps(seal(plain), indent=1, sort_keys=True).encode()


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
