"""Every failure explained in one line: broken exports, arguments checked before any work, S3 used
outside a Dagster run with static keys (no key in any message), a step failure's real cause."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import date

import boto3
import dagster as dg
import pytest
import reliability_workers as rw

from issue_assets.github.export import ExportError, iter_export
from issue_assets.github.replay import ReplayServer
from issue_assets.ingest.layout import check_repo
from issue_assets.lake.store import DamagedFile, StoreError
from issue_assets.resources import ModelStoreResource
from issue_assets.validate import ArgumentError, as_of, one_line, repositories, trials, writable_folder

ITEM = {"id": 1, "number": 1, "repository_url": "https://api.github.com/repos/o/r", "title": "x" * 300,
        "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"}


def _lines(n: int) -> list[str]:
    return [json.dumps({**ITEM, "id": i, "number": i}) for i in range(1, n + 1)]


@pytest.mark.parametrize("compressed", [False, True])
def test_a_malformed_export_line_is_one_error_naming_file_and_line(tmp_path, compressed):
    lines = _lines(30)
    lines[16] = '{"id": 17, "title": broken'
    path = tmp_path / ("issues.jsonl.gz" if compressed else "issues.jsonl")
    body = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(body) if compressed else body)
    for load in (lambda: ReplayServer.from_files([path]), lambda: list(iter_export(path))):
        with pytest.raises(ExportError) as info:
            load()
        assert str(info.value).startswith(f"{path}:17: not valid JSON (") and "\n" not in str(info.value)


def test_a_truncated_gzip_export_is_one_error_naming_the_file(tmp_path):
    data = gzip.compress(("\n".join(_lines(3000)) + "\n").encode())
    path = tmp_path / "issues.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    for load in (lambda: ReplayServer.from_files([path]), lambda: list(iter_export(path))):
        with pytest.raises(ExportError) as info:
            load()
        message = str(info.value)
        assert message.startswith(f"{path}: truncated: the compressed stream ends early, after line ")
        assert "\n" not in message
    (tmp_path / "garbage.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    with pytest.raises(ExportError, match="garbage.gz: damaged compressed data"):
        list(iter_export(tmp_path / "garbage.gz"))


# ---- arguments, checked before any work -------------------------------------------------------

@pytest.mark.parametrize("value", [0, -3, True, "5", 2.5])
def test_trials_must_be_a_positive_whole_number(value):
    with pytest.raises(ArgumentError, match=f"--trials must be a whole number of at least 1, got {value!r}"):
        trials(value)
    assert trials(1) == 1


@pytest.mark.parametrize("value, reason", [
    ("2026-02-30", "is not a real day (day is out of range for month)"),
    ("2026-13-01", "is not a real day (month must be in 1..12)"),
    ("2031-01-01", "lies in the future (today is 2026-12-01 UTC)"),
    ("yesterday", None), ("2026-1-5", None), ("20260105", None),
])
def test_as_of_must_be_a_real_day_not_in_the_future(value, reason):
    with pytest.raises(ArgumentError) as info:
        as_of(value, today=date(2026, 12, 1))
    expected = f"--as-of {value} {reason}" if reason else f"--as-of must be a day as YYYY-MM-DD, got {value!r}"
    assert str(info.value) == expected
    assert as_of("2026-12-01", today=date(2026, 12, 1)) == "2026-12-01" and as_of(None) is None


@pytest.mark.parametrize("name", ["../etc", "../..", "./x", "owner/..", "a/b/c", "no-slash", "a b/c", ""])
def test_repository_names_are_refused_by_one_rule_everywhere(name):
    with pytest.raises(ValueError):
        check_repo(name)  # what ingest, repos add and the partitions all go through
    with pytest.raises(ArgumentError, match="must look like OWNER/NAME"):
        repositories([name])
    assert repositories(["rust-lang/rust", "o.k/a_b-c"]) == ["rust-lang/rust", "o.k/a_b-c"]


def test_an_unwritable_home_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ArgumentError) as info:
        writable_folder(blocker / "home")
    assert str(info.value) == f"ISSUE_ASSETS_HOME {blocker / 'home'} is not writable (Not a directory)"
    assert writable_folder(tmp_path / "fresh" / "home").is_dir()


def test_a_step_failure_reads_as_its_cause():
    """`run` said only 'Execution of step "issues" failed'; the cause names the file and the way out."""
    damaged = DamagedFile("/h/lake/current/issues/o__r.parquet", "unreadable parquet: bad", "issue-assets repair --repo o/r")

    @dg.asset
    def issues():
        raise damaged

    with dg.DagsterInstance.ephemeral() as instance:  # held: the result reads events through it
        result = dg.materialize([issues], raise_on_error=False, instance=instance)
        (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert one_line(failure.step_failure_data.error) == f"DamagedFile: {damaged}"
    assert one_line(damaged) == f"DamagedFile: {damaged}"


# ---- S3 outside a Dagster run, with static keys ------------------------------------------------

KEY_ID, SECRET = "AKIASTATICKEY0000001", "static/Secret+Key0123456789abcdefABCDEF"


def _outside_a_run(endpoint: str, bucket: str, out: str) -> None:
    """In a fresh process with only environment variables, what `model list`, `serve` and `ingest` open."""
    import os

    os.environ.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint, MODEL_STORE=f"s3://{bucket}/registry", LAKE_STORE=f"s3://{bucket}/lake")
    from issue_assets.registry import default_registry
    from issue_assets.resources import LakeResource, ModelStoreResource

    lines = []
    for reg in (ModelStoreResource().registry(), default_registry()):
        lines.append(f"{reg.store.uri} {reg.list_versions()} {reg.champion()}")
    lake = LakeResource().store()
    lake.put_bytes("probe.txt", b"ok")
    lines.append(f"{lake.uri} {lake.get_bytes('probe.txt').decode()}")
    os.environ["MODEL_STORE"] = "s3://no-such-bucket-here/registry"
    for open_ in (lambda: ModelStoreResource().registry(), default_registry):
        try:
            open_().list_versions()
        except Exception as exc:  # the message a user reads
            lines.append(f"error: {type(exc).__name__}: {exc}")
    with open(out, "w") as fh:
        fh.write("\n".join(lines))


def test_s3_registry_and_lake_work_outside_a_run_with_static_keys(moto_server, tmp_path):
    """Regression: `model list` failed with `StoreError: S3 RuntimeError` and `serve` answered 503,
    because the keys were an EnvVar that only resolves inside a run."""
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    from issue_assets.lake.store import S3Store
    from issue_assets.registry import ModelRegistry

    reg = ModelRegistry(S3Store(client, bucket, "registry"))
    version = reg.register(rw.small_model(1), {"as_of": "2026-01-01"})
    reg.promote(version)
    out = tmp_path / "out.txt"
    assert rw.run_alone(rw.context(), _outside_a_run, (moto_server, bucket, str(out))) == 0
    lines = out.read_text().splitlines()
    assert lines[:3] == [f"s3://{bucket}/registry ['{version}'] {version}"] * 2 + [f"s3://{bucket}/lake ok"]
    assert len(lines) == 5 and all(line.startswith("error: RegistryError: cannot read models/") for line in lines[3:])
    assert all("NoSuchBucket" in line and "s3://no-such-bucket-here/registry" in line for line in lines[3:])
    text = out.read_text()
    assert KEY_ID not in text and SECRET not in text and "RuntimeError" not in text


def test_s3_resources_inside_a_run_still_resolve_the_keys_from_envvar(moto_server, monkeypatch):
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    for name, value in {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_ENDPOINT_URL": moto_server}.items():
        monkeypatch.setenv(name, value)
    resource = ModelStoreResource(uri=f"s3://{bucket}/registry")
    assert isinstance(resource.s3.aws_access_key_id, dg.EnvVar)  # what the run config holds: a name, no value

    @dg.asset
    def probe(model_store: ModelStoreResource):
        reg = model_store.registry()
        reg.store.put_bytes("probe", b"in a run")
        return reg.store.get_bytes("probe").decode()

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([probe], resources={"model_store": resource}, instance=instance)
        assert result.output_for_node("probe") == "in a run"
        assert SECRET not in json.dumps(result.dagster_run.run_config, default=str)


def test_store_errors_name_the_key_never_a_credential(moto_server, monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_ENDPOINT_URL": moto_server}.items():
        monkeypatch.setenv(name, value)
    from issue_assets.lake.store import open_store

    store = open_store("s3://absent-bucket-xyz/lake")
    with pytest.raises(StoreError) as info:
        store.put_bytes("raw/x.parquet", b"1")
    assert str(info.value) == "S3 NoSuchBucket for s3://absent-bucket-xyz/lake/raw/x.parquet"
