"""Object stores: a local folder or an S3 prefix, with the same small interface.

Every write is atomic: a local write goes to a temporary name in the same folder, is fsynced and
renamed over the target (and the folder fsynced); an S3 PUT is atomic by itself. `compare_and_put`
gives optimistic concurrency (an flock-guarded compare locally, S3's conditional
`If-Match`/`If-None-Match` writes remotely) so two writers racing on one object cannot both win.
`get_versioned` returns an object's bytes with the version they are, for read-modify-CAS loops.

Parquet files carry CRC32 page checksums and are read with them verified; a file that cannot be read
back whole raises `DamagedFile`, which names the file and the way out. Every write passes through
`faults.write_point`, the crash-test hook.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from issue_assets import config
from issue_assets.lake import faults

META_KEY = b"issue_assets"

class StoreError(RuntimeError):
    """A store operation that failed; the message names the store and key."""


class KeyNotFound(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


class DamagedFile(StoreError):
    """A stored file that cannot be read back as written: one line naming it, why, and the way out."""

    def __init__(self, location: str, reason: str, remedy: str | None = None, *, what: str = "lake file"):
        self.location = location
        self.reason = reason
        self.remedy = remedy or "issue-assets repair"
        # a command is shown as one to run; any other remedy is a sentence of its own
        way_out = f"run `{self.remedy}`" if self.remedy.startswith("issue-assets ") else self.remedy
        super().__init__(f"{what} {location} is damaged ({reason}); {way_out}")


class ObjectStore(Protocol):
    uri: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_versioned(self, key: str) -> tuple[bytes, str]: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def sizes(self, prefix: str = "") -> dict[str, int]: ...
    def delete(self, key: str) -> None: ...
    def version(self, key: str) -> str | None: ...
    def compare_and_put(self, key: str, data: bytes, expected_version: str | None) -> bool: ...


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise StoreError(f"invalid store key {key!r}")
    return key


class LocalStore:
    """A folder on the local disk (the default: ISSUE_ASSETS_HOME)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({self.uri!r})"

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        with faults.write_point("put", key):
            self._write(key, data)

    def _write(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(target.parent)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise KeyNotFound(f"{key} not found in {self.uri}") from None
        except IsADirectoryError:
            raise KeyNotFound(f"{key} not found in {self.uri} (a folder has that name)") from None

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The bytes and their version (content hash), from one read: they always belong together."""
        data = self.get_bytes(key)
        return data, hashlib.sha256(data).hexdigest()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix if prefix else self.root
        folder = base if base.is_dir() else base.parent
        if not folder.exists() or not folder.is_relative_to(self.root):
            return []  # e.g. a store whose root folder was not created yet
        out = []
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Key -> bytes of every object under `prefix` (one listing; a cheap check against truncation)."""
        out = {}
        for key in self.list(prefix):
            with contextlib.suppress(FileNotFoundError):
                out[key] = self.path(key).stat().st_size
        return out

    def delete(self, key: str) -> None:
        with faults.write_point("delete", key), contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def version(self, key: str) -> str | None:
        try:
            return hashlib.sha256(self.path(key).read_bytes()).hexdigest()
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def lock(self, key: str):
        lock_path = self.path(key).with_name(f".{Path(key).name}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def compare_and_put(self, key: str, data: bytes, expected_version: str | None) -> bool:
        """Write only if the key's current version is `expected_version` (None: the key must not exist)."""
        with faults.write_point("compare_and_put", key), self.lock(key):
            if self.version(key) != expected_version:
                return False
            self._write(key, data)
            return True


class S3Store:
    """An S3 prefix (`s3://bucket/prefix`); works with AWS, moto and MinIO through the boto3 client given."""

    def __init__(self, client, bucket: str, prefix: str = ""):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r})"

    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc, key: str) -> StoreError:
        if isinstance(exc, StoreError):  # e.g. an invalid key: keep its own message
            return exc
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        return StoreError(f"S3 {code} for {self.uri}/{key}")

    def put_bytes(self, key: str, data: bytes) -> None:
        with faults.write_point("put", key):
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
            except Exception as exc:  # botocore raises many types; name the key, never credentials
                raise self._error(exc, key) from None

    def get_bytes(self, key: str) -> bytes:
        return self.get_versioned(key)[0]

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The bytes and the ETag of that very object (one GET): a CAS on the ETag fails if it changed."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read(), response["ETag"]
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise KeyNotFound(f"{key} not found in {self.uri}") from None
            raise self._error(exc, key) from None

    def exists(self, key: str) -> bool:
        return self.version(key) is not None

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self.sizes(prefix))

    def sizes(self, prefix: str = "") -> dict[str, int]:
        full = self._key(prefix) if prefix else (self.prefix + "/" if self.prefix else "")
        out = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) + 1:] if self.prefix else obj["Key"]
                    out[key] = int(obj.get("Size", 0))
        except Exception as exc:
            raise self._error(exc, prefix) from None
        return out

    def delete(self, key: str) -> None:
        with faults.write_point("delete", key):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
            except Exception as exc:
                raise self._error(exc, key) from None

    def version(self, key: str) -> str | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ETag"]
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._error(exc, key) from None

    def compare_and_put(self, key: str, data: bytes, expected_version: str | None) -> bool:
        """S3 conditional write: If-None-Match: * to create, If-Match: ETag to replace."""
        kwargs = {"IfNoneMatch": "*"} if expected_version is None else {"IfMatch": expected_version}
        with faults.write_point("compare_and_put", key):
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **kwargs)
                return True
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "NoSuchKey", "404"):
                    return False  # NoSuchKey: If-Match on an object deleted meanwhile
                raise self._error(exc, key) from None


def open_store(uri: str | Path, s3_client=None) -> ObjectStore:
    """`s3://bucket/prefix` -> S3Store (client from the argument or boto3's default chain), else a LocalStore."""
    text = str(uri)
    if text.startswith("s3://"):
        bucket, _, prefix = text[5:].partition("/")
        if not bucket:
            raise StoreError(f"no bucket in store URI {text!r}")
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3", endpoint_url=config.aws_endpoint_url())
        return S3Store(s3_client, bucket, prefix)
    return LocalStore(text)


_SEAL_PLACEHOLDER = b"0" * 64


def parquet_bytes(df: pd.DataFrame, metadata: dict | None = None) -> bytes:
    """A DataFrame as parquet (zstd, CRC32 page checksums). The footer holds, besides `metadata` (JSON),
    the row count and the sha256 of the whole file (computed with the sha's own 64 bytes zeroed; a
    fixed-width value in the footer's key-value map, so it is written in place without moving any
    offset): a reader can tell a whole file from a damaged one by itself, wherever it is stored."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {**(metadata or {}), "rows": table.num_rows, "sha256": _SEAL_PLACEHOLDER.decode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           META_KEY: json.dumps(meta, sort_keys=True, default=str).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_page_checksum=True)
    data = bytearray(buf.getvalue())
    at = data.rfind(_SEAL_PLACEHOLDER)
    data[at:at + 64] = hashlib.sha256(data).hexdigest().encode()
    return bytes(data)


def write_parquet(store: ObjectStore, key: str, df: pd.DataFrame, *, metadata: dict | None = None) -> int:
    """Write a DataFrame as one parquet object, atomically; returns bytes written."""
    data = parquet_bytes(df, metadata)
    store.put_bytes(key, data)
    return len(data)


_SEAL_MARK = b'"sha256": "'


def _check_seal(data: bytes, location: str, remedy: str | None) -> None:
    """Verify the whole-file sha256 from the raw bytes (not through the footer parser, which a damaged
    footer could mislead). A file written before seals (no issue_assets footer entry) has none."""
    footer = max(0, len(data) - 8 - int.from_bytes(data[-8:-4], "little"))
    mark = data.rfind(_SEAL_MARK, footer)
    if mark < 0:
        if data.rfind(META_KEY, footer) >= 0:
            raise DamagedFile(location, "its footer lost the sha256 it was written with", remedy)
        return
    at = mark + len(_SEAL_MARK)
    sealed = data[at:at + 64]
    if hashlib.sha256(data[:at] + _SEAL_PLACEHOLDER + data[at + 64:]).hexdigest().encode() != sealed:
        raise DamagedFile(location, "content differs from the sha256 in its footer", remedy)


def parse_parquet(data: bytes, location: str, columns: list[str] | None = None, *,
                  remedy: str | None = None) -> tuple[pd.DataFrame, dict]:
    """(frame, footer metadata) of parquet bytes: the whole-file sha256 and every page checksum
    verified, the row count checked; DamagedFile otherwise."""
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise DamagedFile(location, f"not a whole parquet file: {len(data)} bytes without both PAR1 marks", remedy)
    _check_seal(data, location, remedy)
    try:
        parquet = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True)
        meta_raw = (parquet.metadata.metadata or {}).get(META_KEY)
        meta = json.loads(meta_raw) if meta_raw else {}
        frame = parquet.read(columns=columns).to_pandas()
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, DamagedFile):
            raise
        reason = " ".join(str(exc).split())[:200]
        raise DamagedFile(location, f"unreadable parquet: {reason}", remedy) from None
    if "rows" in meta and int(meta["rows"]) != len(frame):
        raise DamagedFile(location, f"{len(frame)} rows where its footer records {meta['rows']}", remedy)
    return frame, meta


def read_parquet(store: ObjectStore, key: str, columns: list[str] | None = None, *,
                 remedy: str | None = None) -> pd.DataFrame:
    return parse_parquet(store.get_bytes(key), f"{store.uri}/{key}", columns, remedy=remedy)[0]


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (the folder entry), not only the file's bytes."""
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
