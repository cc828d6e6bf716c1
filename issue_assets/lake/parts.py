"""Immutable parquet parts named by a manifest, each with its sha256 and row count.

A structure shared by several writers (the raw log, feature input snapshots) never rewrites a file in
place: a writer puts a new part under a fresh name, then commits it by a compare-and-put of the small
document that lists the parts (the commit point). A crash before the commit leaves an unreferenced
file (swept by repair), never a half-committed state; a conflicting commit is recomputed from the
newer document. A reader checks each part against what the document recorded for it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass

import pandas as pd

from issue_assets.lake.store import DamagedFile, ObjectStore, parquet_bytes, parse_parquet


@dataclass(frozen=True)
class FileRecord:
    """Where a part is and what it must read back as."""

    key: str
    sha256: str | None  # None only for files adopted from a lake written before checksums
    rows: int
    bytes: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: dict) -> FileRecord:
        return cls(str(entry["key"]), entry.get("sha256"), int(entry.get("rows", 0)), entry.get("bytes"))


def unique_suffix() -> str:
    """Time-ordered and unique across processes and hosts: `<ns since epoch, hex>-<random>`."""
    return f"{time.time_ns():016x}-{secrets.token_hex(4)}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_part(store: ObjectStore, key: str, df: pd.DataFrame, metadata: dict | None = None) -> FileRecord:
    data = parquet_bytes(df, metadata)
    store.put_bytes(key, data)
    return FileRecord(key, sha256(data), len(df), len(data))


def read_part(store: ObjectStore, record: FileRecord, columns: list[str] | None = None, *,
              remedy: str | None = None) -> pd.DataFrame:
    """The part's rows, after checking its bytes against the recorded sha256 and row count.

    KeyNotFound propagates: the caller decides whether the list it read is simply out of date.
    """
    data = store.get_bytes(record.key)
    location = f"{store.uri}/{record.key}"
    if record.sha256 is not None and sha256(data) != record.sha256:
        raise DamagedFile(location, f"sha256 {sha256(data)[:12]}… differs from the {record.sha256[:12]}… "
                                    f"recorded when it was written ({len(data)} bytes, {record.bytes} written)",
                          remedy)
    frame, _ = parse_parquet(data, location, columns, remedy=remedy)
    if len(frame) != record.rows:
        raise DamagedFile(location, f"{len(frame)} rows where {record.rows} were recorded", remedy)
    return frame
