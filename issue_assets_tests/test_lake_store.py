"""LocalStore and S3Store (moto) behave alike: the same tests run against both."""

from __future__ import annotations

import threading

import boto3
import pandas as pd
import pytest
from conftest import make_moto_behave_like_s3
from moto import mock_aws

from issue_assets.lake.documents import read_json, update_json, write_json
from issue_assets.lake.store import (
    DamagedFile,
    KeyNotFound,
    LocalStore,
    S3Store,
    StoreError,
    open_store,
    read_parquet,
    write_parquet,
)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        yield LocalStore(tmp_path / "lake")
        return
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="lake-bucket")
        yield S3Store(client, "lake-bucket", "prefix/under")


def test_put_get_exists_list_delete(store):
    assert store.list() == [] and not store.exists("a/b.bin")
    store.put_bytes("a/b.bin", b"one")
    store.put_bytes("a/c/d.bin", b"two")
    store.put_bytes("z.bin", b"")
    assert store.get_bytes("a/b.bin") == b"one" and store.get_bytes("z.bin") == b""
    assert store.exists("a/b.bin") and not store.exists("a/b")
    assert store.list() == ["a/b.bin", "a/c/d.bin", "z.bin"]
    assert store.list("a/") == ["a/b.bin", "a/c/d.bin"]
    assert store.list("a/c/") == ["a/c/d.bin"]
    assert store.list("nothing/") == []
    store.put_bytes("a/b.bin", b"replaced")
    assert store.get_bytes("a/b.bin") == b"replaced"
    store.delete("a/b.bin")
    store.delete("a/b.bin")  # deleting a missing key is not an error
    assert not store.exists("a/b.bin") and store.list() == ["a/c/d.bin", "z.bin"]


def test_missing_key_message(store):
    with pytest.raises(KeyNotFound) as info:
        store.get_bytes("raw/nope.parquet")
    assert str(info.value) == f"raw/nope.parquet not found in {store.uri}"
    assert isinstance(info.value, KeyError) and isinstance(info.value, StoreError)
    with pytest.raises(KeyNotFound):
        read_parquet(store, "raw/nope.parquet")
    assert read_json(store, "state/none.json", default={"d": 1}) == {"d": 1}
    assert store.version("raw/nope.parquet") is None


@pytest.mark.parametrize("key", ["", "/abs/key", "a/../b", "../up", "a/.."])
def test_invalid_keys_are_rejected(store, key):
    for call in (lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key), lambda: store.exists(key)):
        with pytest.raises(StoreError, match="invalid store key"):
            call()
    assert store.list() == []


def test_compare_and_put(store):
    assert store.compare_and_put("ptr.json", b"v1", None)
    assert not store.compare_and_put("ptr.json", b"again", None)  # must not exist
    v1 = store.version("ptr.json")
    assert v1 is not None
    assert store.compare_and_put("ptr.json", b"v2", v1)
    assert store.get_bytes("ptr.json") == b"v2"
    assert not store.compare_and_put("ptr.json", b"v3", v1)  # stale version
    assert store.get_bytes("ptr.json") == b"v2"
    assert store.version("ptr.json") not in (None, v1)


def test_racing_compare_and_put_has_exactly_one_winner(store):
    store.put_bytes("champion.json", b"start")
    version = store.version("champion.json")
    barrier = threading.Barrier(8)
    wins, errors = [], []

    def race(n):
        try:
            barrier.wait(timeout=10)
            if store.compare_and_put("champion.json", f"writer {n}".encode(), version):
                wins.append(n)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(wins) == 1
    assert store.get_bytes("champion.json") == f"writer {wins[0]}".encode()


def test_update_json_retries_on_conflict(store):
    write_json(store, "state/doc.json", {"n": 0})
    interfered = {"done": False}

    def change(doc):
        if not interfered["done"]:  # another writer slips in between read and conditional write
            interfered["done"] = True
            write_json(store, "state/doc.json", {"n": 100})
        return {**doc, "n": doc["n"] + 1}

    assert update_json(store, "state/doc.json", change) == {"n": 101}
    assert read_json(store, "state/doc.json") == {"n": 101}

    def always_conflict(doc):
        write_json(store, "state/doc.json", {"n": doc["n"] + 1000})
        return doc

    with pytest.raises(StoreError, match="gave up after 3 conflicting"):
        update_json(store, "state/doc.json", always_conflict, attempts=3)
    assert update_json(store, "state/new.json", lambda d: {**d, "x": 1}, default=dict) == {"x": 1}


def test_concurrent_update_json_loses_no_increment(store, monkeypatch):
    if isinstance(store, S3Store):
        make_moto_behave_like_s3(monkeypatch)
    write_json(store, "counter.json", {"n": 0})

    def bump():
        for _ in range(5):
            update_json(store, "counter.json", lambda d: {"n": d["n"] + 1})

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert read_json(store, "counter.json") == {"n": 20}


def test_parquet_round_trip(store):
    df = pd.DataFrame({
        "id": pd.Series([3, 1, 2], dtype="int64"),
        "title": pd.Series(["🦀 crab", None, "x" * 10_000], dtype="string"),
        "created_at": pd.to_datetime(["2020-01-01T00:00:00Z", "2021-06-01T12:30:00+02:00", None],
                                     utc=True, format="ISO8601").astype("datetime64[us, UTC]"),
        "user_id": pd.Series([1, None, 3], dtype="Int64"),
        "flag": [True, False, True],
    })
    size = write_parquet(store, "tables/t.parquet", df)
    assert size == len(store.get_bytes("tables/t.parquet"))
    back = read_parquet(store, "tables/t.parquet")
    pd.testing.assert_frame_equal(back, df)
    assert list(read_parquet(store, "tables/t.parquet", columns=["id"]).columns) == ["id"]


def test_unreadable_parquet_and_json_name_the_key(store):
    store.put_bytes("tables/broken.parquet", b"PAR1 this is not parquet")
    with pytest.raises(StoreError) as info:
        read_parquet(store, "tables/broken.parquet")
    assert str(info.value) == (f"lake file {store.uri}/tables/broken.parquet is damaged (not a whole parquet "
                               "file: 24 bytes without both PAR1 marks); run `issue-assets repair`")
    assert isinstance(info.value, DamagedFile) and not isinstance(info.value, KeyNotFound)
    store.put_bytes("state/broken.json", b"{not json")
    with pytest.raises(DamagedFile, match=r"state/broken.json is damaged \(not valid JSON: .*\); run `issue-assets x`$"):
        read_json(store, "state/broken.json", remedy="issue-assets x")
    # a way out that is not a command is said as it is
    with pytest.raises(DamagedFile, match=r"state/broken.json is damaged \(not valid JSON: .*\); bind it again$"):
        read_json(store, "state/broken.json", remedy="bind it again")


def test_local_store_hides_temporary_files_and_lock_files(tmp_path):
    store = LocalStore(tmp_path / "lake")
    store.put_bytes("a/x.parquet", b"1")
    (tmp_path / "lake" / "a" / ".x.parquet.123.tmp").write_bytes(b"half")
    with store.lock("a/x.parquet"):
        pass
    assert store.list() == ["a/x.parquet"]
    assert LocalStore(tmp_path / "not-created-yet").list() == []


def test_open_store_picks_the_backend(tmp_path):
    local = open_store(tmp_path / "lake")
    assert isinstance(local, LocalStore) and local.uri == str((tmp_path / "lake").resolve())
    with mock_aws():
        s3 = open_store("s3://bucket/some/prefix/", s3_client=boto3.client("s3", region_name="us-east-1"))
    assert isinstance(s3, S3Store) and s3.uri == "s3://bucket/some/prefix"
    with pytest.raises(StoreError, match="no bucket"):
        open_store("s3:///prefix")
