"""Model registry on a local folder and on S3 (moto in-process and moto's HTTP server), and promotion."""

from __future__ import annotations

import json
import socket
import threading
from datetime import UTC, datetime, timedelta

import boto3
import numpy as np
import pytest
import xgboost as xgb
from moto import mock_aws
from moto.server import ThreadedMotoServer

from issue_assets.lake.store import LocalStore, S3Store
from issue_assets.modeling.synthetic import FEATURES, make_training_set
from issue_assets.modeling.training import Calibrator, TrainedModel
from issue_assets.registry import (
    HISTORY,
    LATEST,
    POINTER,
    ModelRegistry,
    PromotionConflict,
    RegistryError,
    decide,
    default_registry,
    repair_registry,
    score_on_window,
)

PNG = b"\x89PNG\r\n\x1a\nfake"


@pytest.fixture(scope="module")
def data():
    return make_training_set(1200, seed=5)


@pytest.fixture(scope="module")
def models(data):
    """Four distinct small models (different depths/rounds), one calibrated."""
    train = data[data["split"] == "train"]
    dtrain = xgb.DMatrix(train[FEATURES].to_numpy(np.float32), label=train["closed_within_7d"],
                         feature_names=FEATURES)
    out = []
    for i in range(4):
        booster = xgb.train({"objective": "binary:logistic", "max_depth": 2 + i, "nthread": 1, "seed": 0},
                            dtrain, num_boost_round=5 + 3 * i)
        cal = Calibrator("platt", {"a": 0.9, "b": 0.1}) if i == 1 else None
        out.append(TrainedModel(booster, FEATURES, cal))
    return out


class Clock:
    def __init__(self):
        self.t = datetime(2025, 12, 20, 10, 11, 12, tzinfo=UTC)
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.t += timedelta(seconds=1)
            return self.t


def _registry(store) -> ModelRegistry:
    return ModelRegistry(store, now=Clock(), retry_delay=0.001)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        yield LocalStore(tmp_path / "registry")
    else:
        with mock_aws():
            client = boto3.client("s3", region_name="us-east-1")
            client.create_bucket(Bucket="models")
            yield S3Store(client, "models", "prod/registry")


def _meta(i: int) -> dict:
    return {"as_of": f"2025-12-{10 + i:02d}", "metrics": {"roc_auc": 0.7 + i / 100, "n": 100},
            "params": {"max_depth": 2 + i}, "extra": np.float64(1.5), "nan": float("nan")}


# ---- registry behaviour on both backends ------------------------------------------------------

def test_register_writes_every_file_and_metadata(store, models, data):
    reg = _registry(store)
    v1 = reg.register(models[0], _meta(0), artifacts={"roc.png": PNG})
    v2 = reg.register(models[1], _meta(1))
    assert v1 == "v0001-20251220T101113Z" and v2.startswith("v0002-")
    assert reg.list_versions() == [v1, v2]
    keys = set(store.list("models/"))
    assert {f"models/{v1}/model.json", f"models/{v1}/metadata.json", f"models/{v1}/calibration.json",
            f"models/{v1}/roc.png", HISTORY} <= keys
    assert POINTER not in keys and LATEST not in keys  # nothing points at a version before promotion
    assert store.get_bytes(f"models/{v1}/model.json") == models[0].save().model_json
    json.loads(store.get_bytes(f"models/{v1}/model.json"))  # XGBoost's own JSON

    meta = reg.get_metadata(v1)
    assert meta["version"] == v1 and meta["as_of"] == "2025-12-10" and meta["feature_names"] == FEATURES
    assert meta["code_version"]["issue_assets"] and "git_sha" in meta["code_version"]
    assert meta["extra"] == 1.5 and meta["nan"] is None  # strict JSON
    assert "roc.png" in meta["files"]

    test = data[data["split"] == "test"]
    for version, model in ((v1, models[0]), (v2, models[1])):
        loaded = reg.load_model(version)
        assert loaded.version == version
        np.testing.assert_array_equal(loaded.predict_proba(test), model.predict_proba(test))
    assert [e["event"] for e in reg.history()] == ["registered", "registered"]
    assert reg.champion() is None and reg.load_champion() is None


def test_promote_rollback_and_history(store, models):
    reg = _registry(store)
    v = [reg.register(m, _meta(i)) for i, m in enumerate(models[:3])]
    reg.promote(v[0], decide({"roc_auc": 0.7}, None, True).to_dict())
    assert reg.champion() == v[0]
    assert store.get_bytes(LATEST) == store.get_bytes(f"models/{v[0]}/model.json")
    reg.record_decision(v[1], {"promote": False, "reason": "worse"})
    pointer = reg.promote(v[2], {"promote": True, "reason": "better", "champion_version": v[0]})
    assert pointer["previous"] == v[0] and pointer["sequence"] == 2
    assert reg.champion() == v[2] and reg.load_champion().version == v[2]
    assert store.get_bytes(LATEST) == store.get_bytes(f"models/{v[2]}/model.json")

    back = reg.rollback(reason="bad predictions")
    assert back["version"] == v[0] and reg.champion() == v[0]
    assert store.get_bytes(LATEST) == store.get_bytes(f"models/{v[0]}/model.json")
    with pytest.raises(RegistryError, match="no champion before"):
        reg.rollback()
    events = [(e["event"], e["version"]) for e in reg.history()]
    assert events == [("registered", v[0]), ("registered", v[1]), ("registered", v[2]), ("promoted", v[0]),
                      ("decision", v[1]), ("promoted", v[2]), ("rolled_back", v[0])]
    assert reg.history()[-1]["from"] == v[2] and reg.history()[-1]["reason"] == "bad predictions"


def test_promotion_against_a_stale_champion_is_refused(store, models):
    reg = _registry(store)
    a, b, c = (reg.register(m, _meta(i)) for i, m in enumerate(models[:3]))
    reg.promote(a, {"champion_version": None})
    reg.promote(b, {"champion_version": a})
    with pytest.raises(PromotionConflict, match="decision for .* was made against"):
        reg.promote(c, {"champion_version": a})
    assert reg.champion() == b
    with pytest.raises(RegistryError, match="not a registered version"):
        reg.promote("v0099-20250101T000000Z")


def test_corrupt_or_missing_champion_files_raise_naming_the_key(store, models):
    reg = _registry(store)
    a, b = (reg.register(m, _meta(i)) for i, m in enumerate(models[:2]))
    reg.promote(a)

    store.put_bytes(LATEST, store.get_bytes(f"models/{b}/model.json"))  # someone copied the wrong model
    with pytest.raises(RegistryError, match=r"registry file .*latest_model.json is corrupt \(differs .*"
                                            r"run `issue-assets model repair`"):
        reg.champion()
    assert store.get_bytes(LATEST) == store.get_bytes(f"models/{b}/model.json")  # never silently replaced
    assert reg.repair_latest() == a and reg.champion() == a

    store.delete(LATEST)  # a promotion killed before its copy: the next reader completes it
    assert reg.champion() == a and store.get_bytes(LATEST) == store.get_bytes(f"models/{a}/model.json")

    good = store.get_bytes(f"models/{a}/model.json")
    store.put_bytes(f"models/{a}/model.json", good[:-20])
    with pytest.raises(RegistryError, match=f"models/{a}/model.json .* sha256"):
        reg.champion()
    with pytest.raises(RegistryError, match=f"models/{a}/model.json"):
        reg.load_champion()
    store.delete(f"models/{a}/model.json")
    with pytest.raises(RegistryError, match=f"models/{a}/model.json is missing"):
        reg.champion()
    store.put_bytes(f"models/{a}/model.json", good)
    assert reg.champion() == a

    store.put_bytes(POINTER, b"{not json")
    with pytest.raises(RegistryError, match=r"champion.json is corrupt \(not valid JSON\); run `issue-assets model"):
        reg.champion()
    store.delete(POINTER)
    with pytest.raises(RegistryError, match=f"champion.json is missing .* records champion {a}; run `issue-assets"):
        reg.champion()
    assert repair_registry(reg).champion == a and reg.champion() == a


def test_interleaved_promotion_is_retried_not_lost(store, models):
    """Another process promotes between our read of the pointer and our conditional write."""
    reg = _registry(store)
    a, b, c = (reg.register(m, _meta(i)) for i, m in enumerate(models[:3]))
    reg.promote(a)
    other = _registry(store)
    original = store.compare_and_put
    fired = []

    def racing_compare_and_put(key, data, expected):
        if key == POINTER and not fired:
            fired.append(True)
            other.promote(b)  # lands first; our expected version is now stale
        return original(key, data, expected)

    store.compare_and_put = racing_compare_and_put
    try:
        pointer = reg.promote(c)
    finally:
        store.compare_and_put = original
    assert fired and pointer["version"] == c and pointer["previous"] == b and pointer["sequence"] == 3
    assert reg.champion() == c
    promoted = [(e["version"], e["sequence"]) for e in reg.history() if e["event"] == "promoted"]
    assert sorted(promoted, key=lambda p: p[1]) == [(a, 1), (b, 2), (c, 3)]
    assert reg.rollback()["version"] == b


def test_registry_files_point_to_registered_versions_only(store, models):
    reg = _registry(store)
    v = reg.register(models[0], _meta(0))
    store.put_bytes("models/claims/000002", b"v0002-20251220T000000Z")  # a crashed registration
    v3 = reg.register(models[1], _meta(1))
    assert v3.startswith("v0003-") and reg.list_versions() == [v, v3]


# ---- concurrency on the local store (true atomic compare-and-put) ----------------------------

def _race(fn, n):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # collected and asserted on below
            errors[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_racing_registrations_get_distinct_versions(tmp_path, models):
    reg = _registry(LocalStore(tmp_path))
    results, errors = _race(lambda i: reg.register(models[i % 4], _meta(i)), 6)
    assert errors == [None] * 6
    numbers = sorted(int(v[1:5]) for v in results)
    assert numbers == [1, 2, 3, 4, 5, 6] and sorted(reg.list_versions()) == sorted(results)


def test_racing_promotions_leave_a_consistent_pointer_history_and_latest(tmp_path, models):
    store = LocalStore(tmp_path)
    setup = _registry(store)
    versions = [setup.register(models[i % 4], _meta(i)) for i in range(6)]

    results, errors = _race(lambda i: _registry(store).promote(versions[i]), 6)
    assert errors == [None] * 6
    pointer = json.loads(store.get_bytes(POINTER))
    promoted = sorted((e for e in setup.history() if e["event"] == "promoted"), key=lambda e: e["sequence"])
    assert [e["sequence"] for e in promoted] == [1, 2, 3, 4, 5, 6]
    assert sorted(e["version"] for e in promoted) == sorted(versions)
    assert pointer["sequence"] == 6 and pointer["version"] == promoted[-1]["version"]
    assert [e["previous"] for e in promoted[1:]] == [e["version"] for e in promoted[:-1]]
    assert store.get_bytes(LATEST) == store.get_bytes(f"models/{pointer['version']}/model.json")
    assert setup.champion() == pointer["version"]


def test_racing_first_promotions_against_the_same_decision_have_one_winner(tmp_path, models):
    store = LocalStore(tmp_path)
    setup = _registry(store)
    versions = [setup.register(models[i], _meta(i)) for i in range(4)]
    results, errors = _race(lambda i: _registry(store).promote(versions[i], {"champion_version": None}), 4)
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and all(isinstance(e, PromotionConflict) for e in errors if e is not None)
    assert setup.champion() == winners[0]["version"]
    assert store.get_bytes(LATEST) == store.get_bytes(f"models/{winners[0]['version']}/model.json")


# ---- S3 over real HTTP (moto server) ----------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_end_to_end_against_moto_server_over_http(models, data, monkeypatch):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(name, value)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="issue-models")
        monkeypatch.setenv("MODEL_STORE", "s3://issue-models/registry")
        reg = default_registry()
        assert reg.store.uri == "s3://issue-models/registry"
        reg._now = Clock()
        v1 = reg.register(models[0], _meta(0), artifacts={"pr.png": PNG})
        v2 = reg.register(models[1], _meta(1))
        window = data[data["split"] == "test"]
        first = decide(score_on_window(reg.load_model(v1), window, FEATURES), None, True)
        reg.promote(v1, first.to_dict())
        champion = reg.load_champion()
        candidate = reg.load_model(v2)
        d = decide(score_on_window(candidate, window, FEATURES), score_on_window(champion, window, FEATURES),
                   True, margin=0.0, champion_version=champion.version)
        if d.promote:
            reg.promote(v2, d.to_dict())
        else:
            reg.record_decision(v2, d.to_dict())
        expected = v2 if d.promote else v1
        assert reg.champion() == expected
        latest = client.get_object(Bucket="issue-models", Key="registry/models/latest_model.json")["Body"].read()
        assert latest == client.get_object(Bucket="issue-models",
                                           Key=f"registry/models/{expected}/model.json")["Body"].read()
        booster = xgb.Booster()
        booster.load_model(bytearray(latest))  # drop-in for consumers of latest_model.json
        assert booster.feature_names == FEATURES
        assert [e["event"] for e in reg.history()][-1] == ("promoted" if d.promote else "decision")
        assert reg.history()[-1]["decision"]["metric"] == "roc_auc"
    finally:
        server.stop()


def test_default_registry_is_local_without_model_store(tmp_path):
    reg = default_registry({"ISSUE_ASSETS_HOME": str(tmp_path)})
    assert isinstance(reg.store, LocalStore) and reg.store.uri == str((tmp_path / "registry").resolve())


# ---- promotion decision -----------------------------------------------------------------------

def test_decide_rules():
    first = decide({"roc_auc": 0.65}, None, check_passed=True)
    assert first.promote and "first model" in first.reason
    assert not decide({"roc_auc": 0.65}, None, check_passed=False).promote
    worse = decide({"roc_auc": 0.70}, {"roc_auc": 0.72}, True)
    assert not worse.promote and worse.improvement == pytest.approx(-0.02)
    tie = decide({"roc_auc": 0.72}, {"roc_auc": 0.72}, True)
    assert not tie.promote and "champion kept" in tie.reason
    assert decide({"roc_auc": 0.73}, {"roc_auc": 0.72}, True).promote
    assert not decide({"roc_auc": 0.725}, {"roc_auc": 0.72}, True, margin=0.01).promote
    assert decide({"roc_auc": 0.74}, {"roc_auc": 0.72}, True, margin=0.01).promote
    failed = decide({"roc_auc": 0.99}, {"roc_auc": 0.6}, check_passed=False)
    assert not failed.promote and "blocking" in failed.reason
    assert not decide({"roc_auc": None}, {"roc_auc": 0.6}, True).promote
    d = decide({"log_loss": 0.5}, {"log_loss": 0.6}, True, metric="log_loss", champion_version="v0001-x")
    assert d.promote and d.to_dict()["champion_version"] == "v0001-x"


def test_score_on_window_refuses_features_outside_the_list(models, data):
    window = data[data["split"] == "test"]
    metrics = score_on_window(models[0], window, FEATURES)
    assert metrics["n"] == len(window) and 0.5 < metrics["roc_auc"] <= 1.0
    with pytest.raises(ValueError, match="outside the given list"):
        score_on_window(models[0], window, FEATURES[:-1])
