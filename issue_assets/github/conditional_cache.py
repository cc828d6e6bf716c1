"""ETag / Last-Modified validators per page URL, persisted between runs.

GitHub answers a conditional GET whose validators still match with 304 Not Modified, and an
authorized 304 does not count against the primary rate limit. Only validators are kept, never
bodies: a page that comes back 304 was already ingested by an earlier run. `next_url` lets a chain
of unchanged pages be walked without the bodies that held their `Link` headers.

The file is JSON, written atomically (temporary file in the same folder, fsync, os.replace), so a
crash mid-write leaves the previous version. A missing file starts empty; a corrupt one starts empty
with a warning, which costs one full download and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

logger = logging.getLogger("issue_assets.github")

_FORMAT_VERSION = 1


class ConditionalCache:
    """URL -> {"etag", "last_modified", "item_count", "next_url"}; least recently used entries go first."""

    def __init__(self, path: str | Path | None = None, max_entries: int = 20_000, *, read_only: bool = False):
        """`read_only` loads the file but never writes it: for pollers that do not store what they fetch."""
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.path = Path(path) if path is not None else None
        self.max_entries = max_entries
        self._entries: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self._dirty = False
        self.read_only = read_only
        if self.path is not None:
            self._load()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "memory"
        return f"ConditionalCache({where!r}, entries={len(self)})"

    def get(self, url: str) -> dict | None:
        with self._lock:
            entry = self._entries.get(url)
            if entry is None:
                return None
            self._entries.move_to_end(url)
            return dict(entry)

    def put(self, url: str, *, etag, last_modified, item_count: int, next_url: str | None) -> None:
        entry = {
            "etag": etag or None,
            "last_modified": last_modified or None,
            "item_count": int(item_count),
            "next_url": next_url or None,
        }
        with self._lock:
            if entry["etag"] is None and entry["last_modified"] is None:
                # Nothing to validate with: a stale entry would only mislead the next poll.
                if self._entries.pop(url, None) is not None:
                    self._dirty = True
                return
            if self._entries.get(url) != entry:
                self._dirty = True
            self._entries[url] = entry
            self._entries.move_to_end(url)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self._dirty = True

    def flush(self) -> None:
        """Write the entries if anything changed since the last flush (no-op for an in-memory cache)."""
        if self.path is None or self.read_only:
            return
        with self._lock:
            if not self._dirty:
                return
            payload = {"version": _FORMAT_VERSION, "entries": dict(self._entries)}
            self._dirty = False
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with self._lock:
                self._dirty = True
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(self.path.parent)

    def _load(self) -> None:
        assert self.path is not None
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.warning("conditional cache %s unreadable (%s): starting empty", self.path, exc)
            return
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("version") != _FORMAT_VERSION:
                raise ValueError("unknown format")
            entries = data["entries"]
            if not isinstance(entries, dict):
                raise ValueError("entries is not an object")
            loaded: OrderedDict[str, dict] = OrderedDict()
            for url, entry in entries.items():
                if not isinstance(url, str) or not isinstance(entry, dict):
                    raise ValueError("malformed entry")
                loaded[url] = {
                    "etag": entry.get("etag"),
                    "last_modified": entry.get("last_modified"),
                    "item_count": int(entry.get("item_count") or 0),
                    "next_url": entry.get("next_url"),
                }
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("conditional cache %s is corrupt (%s): starting empty", self.path, exc)
            self._dirty = True
            return
        while len(loaded) > self.max_entries:
            loaded.popitem(last=False)
        self._entries = loaded


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
