"""issue_assets.modeling.treeshap: the compiled TreeSHAP equals XGBoost's pred_contribs."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from issue_assets.modeling import treeshap
from issue_assets.modeling.training import TrainedModel
from issue_assets.serving.scoring import score_features, top_contributions

N_FEATURES = 10
UNUSED = [7, 8, 9]  # constant in training: no tree ever splits on them


def make_data(n: int, seed: int, missing: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[:, 3] = rng.integers(0, 4, n)  # few distinct values: thresholds repeat on paths
    X[:, UNUSED] = 1.0
    logit = 1.5 * X[:, 0] - X[:, 1] * X[:, 2] + np.sin(3 * X[:, 4]) + 0.5 * (X[:, 3] == 2) - 0.3 * X[:, 5] ** 2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    used = [i for i in range(N_FEATURES) if i not in UNUSED]
    X[:, used] = np.where(rng.random((n, len(used))) < missing, np.nan, X[:, used])
    return X.astype(np.float32), y


def scoring_rows(seed: int = 11) -> np.ndarray:
    """Rows to explain: held-out rows with missing values, all-missing rows, extremes, unused features moved."""
    X, _ = make_data(400, seed, missing=0.3)
    X[0, :] = np.nan
    X[1, :7] = 1e30
    X[2, :7] = -1e30
    X[3:40, UNUSED] = np.random.default_rng(seed).normal(size=(37, len(UNUSED)))
    return X


def train(params: dict, rounds: int, seed: int = 0, n: int = 3000) -> xgb.Booster:
    X, y = make_data(n, seed)
    full = {"objective": "binary:logistic", "tree_method": "hist", "eta": 0.3, "nthread": 1, "seed": seed,
            **params}
    return xgb.train(full, xgb.DMatrix(X, label=y), rounds)


def reference(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    return booster.predict(xgb.DMatrix(X), pred_contribs=True)


def assert_close_to_xgboost(ours: np.ndarray, ref: np.ndarray) -> None:
    """XGBoost computes in float32, this in float64: equal to float32 rounding, relative to each row's
    largest contribution; the bias column is XGBoost's own."""
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_array_equal(ours[:, -1], ref[:, -1])
    scale = np.maximum(np.abs(ref[:, :-1]).max(axis=1, keepdims=True), 1e-6)
    err = np.abs(ours[:, :-1].astype(float) - ref[:, :-1]) / scale
    assert err.max() <= 1e-5, err.max()


MODELS = {
    "stumps": ({"max_depth": 1}, 5),
    "depth3": ({"max_depth": 3}, 20),
    "depth6": ({"max_depth": 6}, 40),
    "depth8_repeats": ({"max_depth": 8, "colsample_bytree": 0.5}, 15),
    "lossguide_deep": ({"grow_policy": "lossguide", "max_depth": 0, "max_leaves": 60, "min_child_weight": 0.1}, 8),
    "single_leaf_trees": ({"max_depth": 4, "gamma": 40.0}, 12),
    "regression": ({"objective": "reg:squarederror", "max_depth": 5, "base_score": 0.2}, 10),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_equals_xgboost_pred_contribs(name):
    params, rounds = MODELS[name]
    booster = train(params, rounds)
    X = scoring_rows()
    # values exactly on split thresholds (x < threshold is false there)
    trees = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"]
    splits = [(f, c) for t in trees for f, c, left in zip(t["split_indices"], t["split_conditions"],
                                                          t["left_children"], strict=True) if left != -1]
    for r, (f, c) in zip(range(40, 120), splits, strict=False):
        X[r, f] = np.float32(c)
    model = treeshap.explainer(booster)
    assert model is not None and model.n_trees == booster.num_boosted_rounds()
    ref = reference(booster, X)
    ours = treeshap.pred_contribs(booster, X)
    assert_close_to_xgboost(ours, ref)
    assert (ours[:, UNUSED] == 0).all() and (ref[:, UNUSED] == 0).all()
    margin = booster.predict(xgb.DMatrix(X), output_margin=True)
    np.testing.assert_allclose(ours.astype(float).sum(axis=1), margin, rtol=1e-5, atol=1e-5)
    if name == "single_leaf_trees":
        trees = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"]
        assert any(len(t["left_children"]) == 1 for t in trees)


def _brute_force(tree: dict, x: np.ndarray, n_features: int) -> np.ndarray:
    """Path-dependent TreeSHAP by its definition: every coalition, float64."""
    left, right = tree["left_children"], tree["right_children"]
    feature, cond = tree["split_indices"], tree["split_conditions"]
    default_left, cover = tree["default_left"], tree["sum_hessian"]

    def expect(node: int, S: frozenset) -> float:
        if left[node] == -1:
            return cond[node]
        f = feature[node]
        if f in S:
            v = x[f]
            go_left = bool(default_left[node]) if math.isnan(v) else np.float32(v) < np.float32(cond[node])
            return expect(left[node] if go_left else right[node], S)
        return (cover[left[node]] * expect(left[node], S) + cover[right[node]] * expect(right[node], S)) / cover[node]

    phi = np.zeros(n_features)
    players = range(n_features)
    for i in players:
        others = [j for j in players if j != i]
        for size in range(n_features):
            w = math.factorial(size) * math.factorial(n_features - size - 1) / math.factorial(n_features)
            for S in itertools.combinations(others, size):
                S = frozenset(S)
                phi[i] += w * (expect(0, S | {i}) - expect(0, S))
    return phi


def test_equals_shapley_values_by_definition():
    """Independent of XGBoost's float32 arithmetic: the Shapley values of the path-dependent game."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 4)).astype(np.float32)
    X[:, 3] = rng.integers(0, 3, 2000)
    y = ((X[:, 0] > 0) ^ (X[:, 1] * X[:, 3] > 0.5)).astype(int)
    X[rng.random(X.shape) < 0.15] = np.nan
    booster = xgb.train({"max_depth": 5, "eta": 0.5, "nthread": 1, "objective": "binary:logistic"},
                        xgb.DMatrix(X, label=y), 4)
    trees = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"]
    rows = X[:25]
    ours = treeshap.pred_contribs(booster, rows)
    for r, x in enumerate(rows):
        want = sum(_brute_force(t, x.astype(float), 4) for t in trees)
        np.testing.assert_allclose(ours[r, :-1], want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("group_bits,budget", [(0, 64 << 20), (4, 64 << 20), (8, 64 << 20), (12, 64 << 20),
                                               (8, 0), (8, 40_000)])
def test_table_layouts_agree(monkeypatch, group_bits, budget):
    """Leaf tables only, subtree groups of several sizes, leaves computed on the fly (no table budget)."""
    booster = train({"max_depth": 7}, 10)
    monkeypatch.setattr(treeshap, "GROUP_BITS", group_bits)
    monkeypatch.setattr(treeshap, "TABLE_BUDGET_BYTES", budget)
    model = treeshap.build(booster)
    offsets = model.field("group_offset")
    if budget == 0:
        assert (offsets == -1).all() and model.group_bits == 0
    elif budget == 40_000:
        assert (offsets == -1).any() and (offsets >= 0).any()
    else:
        assert (offsets >= 0).all() and model.group_bits == group_bits
    if group_bits == 0 or budget == 0:
        assert len(model.field("dec_feature")) == 0  # one group per leaf
    X = scoring_rows()
    assert_close_to_xgboost(model.contributions(X), reference(booster, X))


def test_same_numbers_whatever_the_batch_or_threads():
    booster = train({"max_depth": 6}, 30)
    X, _ = make_data(3000, 5)
    model = treeshap.explainer(booster)
    whole = model.contributions(X, nthread=1)
    for nthread in (2, 3, None):
        np.testing.assert_array_equal(model.contributions(X, nthread=nthread), whole)
    for i in (0, 1, 777, 2999):
        np.testing.assert_array_equal(model.contributions(X[i:i + 1]), whole[i:i + 1])
    np.testing.assert_array_equal(model.contributions(X[1000:1300], nthread=2), whole[1000:1300])
    frozen = X[:50].copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(model.contributions(frozen.astype(np.float64)), whole[:50])
    np.testing.assert_array_equal(model.contributions(frozen), whole[:50])
    assert model.contributions(X[:0]).shape == (0, N_FEATURES + 1)


def _categorical_booster():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": pd.Categorical(rng.integers(0, 5, 500)), "b": rng.normal(size=500)})
    y = (df["a"].cat.codes.isin([1, 3]) ^ (df["b"] > 0)).astype(int)
    booster = xgb.train({"max_depth": 3, "tree_method": "hist", "nthread": 1},
                        xgb.DMatrix(df, label=y, enable_categorical=True), 4)
    X = np.column_stack([df["a"].cat.codes, df["b"]]).astype(np.float32)
    return booster, X


def _others(kind: str):
    X, y = make_data(500, 1)
    if kind == "deep_paths":  # more distinct features on a path than the masks hold (patched down to 3)
        return xgb.train({"max_depth": 6, "nthread": 1}, xgb.DMatrix(X, label=y), 3), X
    if kind == "dart":
        return xgb.train({"booster": "dart", "max_depth": 3, "rate_drop": 0.2, "nthread": 1}, xgb.DMatrix(X, label=y),
                         5), X
    if kind == "multiclass":
        return xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1},
                         xgb.DMatrix(X, label=np.arange(len(y)) % 3), 3), X
    if kind == "gblinear":
        return xgb.train({"booster": "gblinear", "nthread": 1}, xgb.DMatrix(np.nan_to_num(X), label=y), 3), \
            np.nan_to_num(X)
    return _categorical_booster()


@pytest.mark.parametrize("kind", ["dart", "multiclass", "gblinear", "categorical", "deep_paths"])
def test_unsupported_boosters_fall_back_to_xgboost(monkeypatch, kind):
    monkeypatch.setattr(treeshap, "MAX_PATH_FEATURES", 3 if kind == "deep_paths" else treeshap.MAX_PATH_FEATURES)
    booster, X = _others(kind)
    assert treeshap.explainer(booster) is None
    want = booster.predict(xgb.DMatrix(X, feature_names=booster.feature_names), pred_contribs=True)
    calls = []
    original = xgb.Booster.predict

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("pred_contribs"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(xgb.Booster, "predict", spy)
    got = treeshap.pred_contribs(booster, X)
    assert calls == [True]
    np.testing.assert_array_equal(got, want)


def test_supported_booster_does_not_call_xgboost_and_inf_goes_to_xgboost(monkeypatch):
    booster = train({"max_depth": 3}, 5)
    X = scoring_rows()
    treeshap.explainer(booster)
    calls = []
    original = xgb.Booster.predict
    monkeypatch.setattr(xgb.Booster, "predict", lambda self, *a, **k: calls.append(k) or original(self, *a, **k))
    treeshap.pred_contribs(booster, X)
    assert calls == []
    X[5, 2] = np.inf  # XGBoost refuses it: the same error as before
    with pytest.raises(xgb.core.XGBoostError, match="inf"):
        treeshap.pred_contribs(booster, X)


def test_explainer_is_built_once_per_booster():
    booster = train({"max_depth": 3}, 6)
    first = treeshap.explainer(booster)
    assert treeshap.explainer(booster) is first
    part = booster[:3]
    assert treeshap.explainer(part).n_trees == 3
    X = scoring_rows()
    assert_close_to_xgboost(treeshap.pred_contribs(part, X), reference(part, X))


@pytest.mark.parametrize("k", [0, 1, 3, 5, 12, 40])
def test_top_k_is_the_stable_argsort_order(k):
    rng = np.random.default_rng(k)
    c = np.round(rng.normal(size=(2000, 12)), 1).astype(np.float32)  # many ties, some zeros
    c[::7] = 0.0
    c[1::7, :6] = -c[1::7, 6:]  # equal magnitudes, opposite signs
    c[2::7, 3] = -0.0
    order, picked = treeshap.top_k_contributions(c, k)
    want = np.argsort(-np.abs(c), axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(order, want)
    np.testing.assert_array_equal(picked, np.take_along_axis(c, want, axis=1))
    c[3, 4] = np.nan  # the reference's own order for NaN
    order, _ = treeshap.top_k_contributions(c, k)
    np.testing.assert_array_equal(order, np.argsort(-np.abs(c), axis=1, kind="stable")[:, :k])


def _old_contributions(model: TrainedModel, df: pd.DataFrame, top_k: int) -> list[list[dict]]:
    """TrainedModel.contributions before treeshap: XGBoost's pred_contribs, stable argsort per row."""
    contribs = model.booster.predict(xgb.DMatrix(df[model.feature_names].to_numpy(np.float32),
                                                 feature_names=model.feature_names), pred_contribs=True)[:, :-1]
    values = df[model.feature_names].to_numpy(dtype=float)
    out = []
    for row, vals in zip(contribs, values, strict=True):
        order = np.argsort(-np.abs(row), kind="stable")[:top_k]
        out.append([{"feature": model.feature_names[j], "value": None if np.isnan(vals[j]) else float(vals[j]),
                     "contribution": float(row[j])} for j in order])
    return out, contribs


def test_trained_model_contributions_and_score_features_agree_with_xgboost():
    names = [f"f{i}" for i in range(N_FEATURES)]
    X, y = make_data(3000, 0)
    booster = xgb.train({"max_depth": 6, "eta": 0.3, "nthread": 1, "objective": "binary:logistic"},
                        xgb.DMatrix(X, label=y, feature_names=names), 25)
    model = TrainedModel(booster, names)
    rows = scoring_rows()
    df = pd.DataFrame(rows.astype(float), columns=names)
    got = model.contributions(df, top_k=5)
    old, contribs = _old_contributions(model, df, 5)
    mags = np.sort(np.abs(contribs), axis=1)[:, ::-1]
    clear = (mags[:, :5] - mags[:, 1:6]).min(axis=1) > 1e-5 * np.maximum(mags[:, 0], 1e-6)  # no near-ties
    assert clear.mean() > 0.5
    for r in np.flatnonzero(clear):
        assert [c["feature"] for c in got[r]] == [c["feature"] for c in old[r]]
        assert [c["value"] for c in got[r]] == [c["value"] for c in old[r]]
        for g, o in zip(got[r], old[r], strict=True):
            assert abs(g["contribution"] - o["contribution"]) <= 1e-5 * max(mags[r, 0], 1e-6)
    # the batch columns are the same numbers as TrainedModel.contributions
    flat = top_contributions(model, df[model.feature_names].to_numpy(dtype=float), 5)
    for r, row in enumerate(got):
        for k, c in enumerate(row, start=1):
            assert flat[f"contrib_{k}_feature"][r] == c["feature"]
            assert flat[f"contrib_{k}_contribution"][r] == c["contribution"]
            v = flat[f"contrib_{k}_value"][r]
            assert (c["value"] is None and np.isnan(v)) or v == c["value"]
    with pytest.raises(ValueError, match="top_k"):
        model.contributions(df, top_k=-1)

    # score_features: probabilities unchanged (inplace_predict = DMatrix predict), ±inf refused as before
    frame = df.assign(repo="o/r", id=np.arange(len(df)), number=np.arange(len(df)) + 1,
                      created_at=pd.Timestamp("2024-01-01", tz="UTC"), prediction_time=pd.Timestamp("2024-01-02", tz="UTC"))
    scored = score_features(model, "v1", frame, pd.Timestamp("2024-01-03", tz="UTC"), top_k=7)
    np.testing.assert_array_equal(scored["probability"].to_numpy(), model.predict_proba(df))
    for k in range(1, 6):
        assert scored[f"contrib_{k}_feature"].tolist() == list(flat[f"contrib_{k}_feature"])
    bad = frame.copy()
    bad.loc[4, "f2"] = -np.inf
    with pytest.raises(ValueError, match="inf"):
        score_features(model, "v1", bad, pd.Timestamp("2024-01-03", tz="UTC"))
