"""Object stores: a local folder or an S3 prefix, with the same small interface.

Every write is atomic: a local write goes to a temporary name in the same folder, is fsynced and
renamed over the target; an S3 PUT is atomic by itself. `compare_and_put` gives optimistic
concurrency (an flock-guarded compare locally, S3's conditional `If-Match`/`If-None-Match` writes
remotely) so two writers racing on one pointer cannot both win.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from issue_assets import config


class StoreError(RuntimeError):
    """A store operation that failed; the message names the store and key."""


class KeyNotFound(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


class ObjectStore(Protocol):
    uri: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
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

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise KeyNotFound(f"{key} not found in {self.uri}") from None

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

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
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
        with self.lock(key):
            if self.version(key) != expected_version:
                return False
            self.put_bytes(key, data)
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
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:  # botocore raises many types; name the key, never credentials
            raise self._error(exc, key) from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise KeyNotFound(f"{key} not found in {self.uri}") from None
            raise self._error(exc, key) from None

    def exists(self, key: str) -> bool:
        return self.version(key) is not None

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix else (self.prefix + "/" if self.prefix else "")
        out = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) + 1:] if self.prefix else obj["Key"]
                    out.append(key)
        except Exception as exc:
            raise self._error(exc, prefix) from None
        return sorted(out)

    def delete(self, key: str) -> None:
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
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **kwargs)
            return True
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                return False
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


def write_parquet(store: ObjectStore, key: str, df: pd.DataFrame) -> int:
    """Write a DataFrame as one parquet object, atomically; returns bytes written."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    store.put_bytes(key, data)
    return len(data)


def read_parquet(store: ObjectStore, key: str, columns: list[str] | None = None) -> pd.DataFrame:
    try:
        return pq.read_table(io.BytesIO(store.get_bytes(key)), columns=columns).to_pandas()
    except KeyNotFound:
        raise
    except (pa.ArrowInvalid, OSError) as exc:
        raise StoreError(f"{store.uri}/{key} is not a readable parquet file ({exc})") from None
