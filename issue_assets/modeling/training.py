"""Train the candidate model, calibrate it, evaluate it once on the test window next to two references.

Training sets hold rows at several ages (`age_hours`, the prediction time minus created_at), weighted so
that each issue counts once (`sample_weight`); the test metrics are reported over all rows and per age
(`metrics_by_age`). Age 0 (the moment an issue is opened)
is the setting earlier models were trained and judged in, so the blocking check and promotion use it.

The booster trains on the `train` split and early-stops on `validation`; it is then cut to its best
round so the saved model is exactly the one evaluated. Calibration (Platt or isotonic) is fitted on
validation only if it lowers validation log loss when judged honestly: out-of-fold over 5
time-ordered blocks of the validation window, by more than `min_calibration_gain`. The test window
is scored once, for the model and for the references: the base rate (a constant) and XGBoost on the
leaky "older public projects" feature set (ref_* columns), trained the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from issue_assets.modeling.evaluation import EPS, age_key, evaluate, evaluate_by_age
from issue_assets.modeling.params import booster_params
from issue_assets.modeling.plots import calibration_png, importance_png, pr_png, roc_png

LABEL = "closed_within_7d"
REFERENCE_FEATURES = [
    "ref_title_length",
    "ref_body_length",
    "ref_label_count",
    "ref_has_bug_label",
    "ref_hour",
    "ref_comment_count",
]
CALIBRATION_FORMAT = 1


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


class Calibrator:
    """A monotone map from raw booster probability to calibrated probability, serialisable as JSON.

    Platt: sigmoid(a * logit(p) + b). Isotonic: piecewise-linear interpolation through fitted
    thresholds, clipped at the ends (what sklearn's IsotonicRegression(out_of_bounds="clip") does).
    """

    def __init__(self, method: str, params: dict[str, Any]):
        if method not in ("platt", "isotonic"):
            raise ValueError(f"unknown calibration method {method!r}")
        self.method = method
        self.params = params

    @classmethod
    def fit(cls, method: str, proba: np.ndarray, y: np.ndarray) -> Calibrator:
        if method == "platt":
            lr = LogisticRegression(C=1e6, max_iter=1000)
            lr.fit(_logit(proba).reshape(-1, 1), y)
            return cls("platt", {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])})
        iso = IsotonicRegression(out_of_bounds="clip", y_min=EPS, y_max=1 - EPS)
        iso.fit(np.asarray(proba, dtype=float), y)
        return cls("isotonic", {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})

    def apply(self, proba) -> np.ndarray:
        p = np.asarray(proba, dtype=float)
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.params["a"] * _logit(p) + self.params["b"])))
        return np.interp(p, np.asarray(self.params["x"]), np.asarray(self.params["y"]))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **self.params}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        data = dict(data)
        return cls(data.pop("method"), data)


def _mean_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def choose_calibration(
    y_valid, proba_valid, method: str = "auto", min_gain: float = 1e-4, blocks: int = 5
) -> tuple[Calibrator | None, dict[str, Any]]:
    """Pick none / Platt / isotonic by out-of-fold log loss on the (time-ordered) validation rows.

    `method` "auto" tries both; "platt"/"isotonic" tries only that one; "none" never calibrates.
    A calibrator is used only when its out-of-fold log loss beats the raw one by more than `min_gain`;
    it is then refitted on all validation rows.
    """
    y = np.asarray(y_valid, dtype=float)
    p = np.asarray(proba_valid, dtype=float)
    raw = _mean_log_loss(y, p)
    info: dict[str, Any] = {"requested": method, "validation_log_loss_raw": raw, "candidates": {}}
    methods = {"auto": ["platt", "isotonic"], "none": []}.get(method, [method])
    parts = [c for c in np.array_split(np.arange(len(y)), blocks) if len(c)]
    best_name, best_loss = None, raw - min_gain
    for name in methods:
        oof = np.empty_like(p)
        usable = True
        for part in parts:
            mask = np.ones(len(y), dtype=bool)
            mask[part] = False
            if len(np.unique(y[mask])) < 2:
                usable = False
                break
            oof[part] = Calibrator.fit(name, p[mask], y[mask]).apply(p[part])
        if not usable:
            continue
        loss = _mean_log_loss(y, oof)
        info["candidates"][name] = loss
        if loss < best_loss:
            best_name, best_loss = name, loss
    info["method"] = best_name or "none"
    info["applied"] = best_name is not None
    info["validation_log_loss_calibrated"] = best_loss if best_name else raw
    calibrator = Calibrator.fit(best_name, p, y) if best_name else None
    return calibrator, info


class SavedModel(NamedTuple):
    model_json: bytes  # XGBoost's own JSON (booster.save_raw("json")); carries feature names
    calibration_json: bytes  # {"format", "feature_names", "calibrator", "threshold", ...}


class TrainedModel:
    """A booster cut at its best round, its optional calibrator and the feature names it expects."""

    def __init__(
        self,
        booster: xgb.Booster,
        feature_names: list[str],
        calibrator: Calibrator | None = None,
        threshold: float = 0.5,
        version: str | None = None,
    ):
        self.booster = booster
        self.feature_names = list(feature_names)
        self.calibrator = calibrator
        self.threshold = float(threshold)
        self.version = version  # set by the registry when loaded from it

    def __repr__(self) -> str:
        cal = self.calibrator.method if self.calibrator else "none"
        return f"TrainedModel(version={self.version!r}, features={len(self.feature_names)}, calibration={cal})"

    def _matrix(self, df: pd.DataFrame) -> xgb.DMatrix:
        missing = [c for c in self.feature_names if c not in df.columns]
        if missing:
            raise ValueError(f"input lacks model features {missing}")
        return xgb.DMatrix(df[self.feature_names].to_numpy(dtype=np.float32), feature_names=self.feature_names)

    def predict_raw(self, df: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(self._matrix(df)).astype(float)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Calibrated probability that each issue is closed within 7 days."""
        raw = self.predict_raw(df)
        return self.calibrator.apply(raw) if self.calibrator else raw

    def contributions(self, df: pd.DataFrame, top_k: int = 5) -> list[list[dict[str, Any]]]:
        """Per row, the `top_k` features by |SHAP contribution| (log-odds of the uncalibrated booster).

        SHAP values are XGBoost's `pred_contribs` (exact path-dependent TreeSHAP), computed by
        `issue_assets.modeling.treeshap`; ties in |contribution| go to the earlier feature.
        """
        from issue_assets.modeling.treeshap import pred_contribs, top_k_contributions

        if top_k < 0:
            raise ValueError("top_k must be >= 0")
        missing = [c for c in self.feature_names if c not in df.columns]
        if missing:
            raise ValueError(f"input lacks model features {missing}")
        values = df[self.feature_names].to_numpy(dtype=float)
        contribs = pred_contribs(self.booster, values.astype(np.float32), self.feature_names)
        order, picked = top_k_contributions(contribs[:, :-1], top_k)
        out = []
        for cols, vals, row in zip(order, values, picked, strict=True):
            out.append([
                {
                    "feature": self.feature_names[j],
                    "value": None if np.isnan(vals[j]) else float(vals[j]),
                    "contribution": float(c),
                }
                for j, c in zip(cols, row, strict=True)
            ])
        return out

    def save(self) -> SavedModel:
        model_json = bytes(self.booster.save_raw("json"))
        meta = {
            "format": CALIBRATION_FORMAT,
            "feature_names": self.feature_names,
            "calibrator": self.calibrator.to_dict() if self.calibrator else None,
            "threshold": self.threshold,
            "model_sha256": hashlib.sha256(model_json).hexdigest(),
        }
        return SavedModel(model_json, json.dumps(meta, indent=2, sort_keys=True).encode())

    @classmethod
    def load(cls, model_json: bytes, calibration_json: bytes | None = None, version: str | None = None) -> TrainedModel:
        """From XGBoost JSON (+ the calibration JSON; without it: uncalibrated, names from the booster)."""
        booster = xgb.Booster()
        booster.load_model(bytearray(model_json))
        if calibration_json is None:
            if not booster.feature_names:
                raise ValueError("model JSON carries no feature names and no calibration JSON was given")
            return cls(booster, list(booster.feature_names), None, version=version)
        meta = json.loads(calibration_json)
        if meta.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"unsupported calibration format {meta.get('format')!r}")
        expected = meta.get("model_sha256")
        if expected and expected != hashlib.sha256(model_json).hexdigest():
            raise ValueError("calibration JSON belongs to a different model JSON (sha256 mismatch)")
        calibrator = Calibrator.from_dict(meta["calibrator"]) if meta.get("calibrator") else None
        return cls(booster, meta["feature_names"], calibrator, meta.get("threshold", 0.5), version=version)


@dataclass(frozen=True)
class TrainingConfig:
    nthread: int | None = None
    max_boost_round: int = 2000
    early_stopping_rounds: int = 50
    threshold: float = 0.5
    top_k_fraction: float = 0.10
    calibration: str = "auto"  # auto | platt | isotonic | none
    min_calibration_gain: float = 1e-4
    seed: int = 0


@dataclass
class TrainingResult:
    model: TrainedModel
    metrics: dict[str, Any]  # test window (all ages), calibrated model
    metrics_by_age: dict[str, dict[str, Any]]  # the same per age ("0", "6", ...); {} without age_hours
    validation_metrics: dict[str, Any]
    reference_metrics: dict[str, dict[str, Any]]  # "base_rate", "older_projects"
    calibration: dict[str, Any]
    feature_importance: pd.DataFrame
    plots: dict[str, bytes] = field(repr=False)
    windows: dict[str, dict[str, Any]]
    params: dict[str, Any]
    best_iteration: int
    fingerprint: str

    @property
    def age0_metrics(self) -> dict[str, Any]:
        """Test metrics of the rows at age 0 (all rows when the set has no ages): the blocking check's."""
        return self.metrics_by_age.get(age_key(0), self.metrics)

    def metadata(self, as_of: str | None = None, feature_registry_version: str | None = None) -> dict[str, Any]:
        """The JSON-ready description the registry stores next to the model."""
        return {
            "as_of": as_of,
            "feature_names": self.model.feature_names,
            "feature_registry_version": feature_registry_version,
            "params": self.params,
            "best_iteration": self.best_iteration,
            "metrics": self.metrics,
            "metrics_by_age": self.metrics_by_age,
            "validation_metrics": self.validation_metrics,
            "reference_metrics": self.reference_metrics,
            "calibration": self.calibration,
            "windows": self.windows,
            "row_counts": {name: w["rows"] for name, w in self.windows.items()},
            "training_set_fingerprint": self.fingerprint,
            "feature_importance": self.feature_importance.to_dict(orient="records"),
        }


def training_set_fingerprint(df: pd.DataFrame, feature_names: list[str]) -> str:
    """sha256 over the identifying, label, split and feature columns (row order independent)."""
    cols = [c for c in ["repo", "id", "age_hours", "created_at", LABEL, "split", "sample_weight", *sorted(feature_names)]
            if c in df.columns]
    frame = df[cols].sort_values([c for c in ["repo", "id", "age_hours", "created_at"] if c in cols], kind="stable")
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(json.dumps(cols).encode())
    return digest.hexdigest()


def _window(part: pd.DataFrame) -> dict[str, Any]:
    created = pd.to_datetime(part["created_at"], utc=True)
    return {
        "rows": int(len(part)),
        "positives": int(part[LABEL].sum()),
        "base_rate": float(part[LABEL].mean()) if len(part) else None,
        "created_from": created.min().isoformat() if len(part) else None,
        "created_to": created.max().isoformat() if len(part) else None,
    }


def _weights(part: pd.DataFrame) -> np.ndarray | None:
    """The training set's row weights (each issue counts once over its ages), if it has them."""
    return part["sample_weight"].to_numpy(dtype=np.float32) if "sample_weight" in part else None


def fit_booster(
    train: pd.DataFrame, valid: pd.DataFrame, feature_names: list[str], params: dict[str, Any] | None,
    config: TrainingConfig,
) -> tuple[xgb.Booster, int]:
    """Train with early stopping on `valid`; return the booster cut to its best round and that round."""
    full = booster_params(params, nthread=config.nthread, seed=config.seed)
    dtrain = xgb.DMatrix(train[feature_names].to_numpy(dtype=np.float32), label=train[LABEL].to_numpy(),
                         weight=_weights(train), feature_names=feature_names)
    dvalid = xgb.DMatrix(valid[feature_names].to_numpy(dtype=np.float32), label=valid[LABEL].to_numpy(),
                         weight=_weights(valid), feature_names=feature_names)
    booster = xgb.train(
        full, dtrain, num_boost_round=config.max_boost_round, evals=[(dvalid, "validation")],
        early_stopping_rounds=config.early_stopping_rounds, verbose_eval=False,
    )
    best = int(booster.best_iteration)
    cut = booster[: best + 1]
    cut.feature_names = list(feature_names)
    return cut, best


def _fit_calibrated(train, valid, feature_names, params, config) -> tuple[TrainedModel, dict[str, Any], int]:
    booster, best = fit_booster(train, valid, feature_names, params, config)
    model = TrainedModel(booster, feature_names, None, config.threshold)
    y_valid = valid[LABEL].to_numpy()
    calibrator, info = choose_calibration(
        y_valid, model.predict_raw(valid), config.calibration, config.min_calibration_gain
    )
    model.calibrator = calibrator
    return model, info, best


def train_and_evaluate(
    df: pd.DataFrame,
    feature_names: list[str],
    params: dict[str, Any] | None = None,
    config: TrainingConfig | None = None,
) -> TrainingResult:
    """Train on train, early-stop and calibrate on validation, evaluate once on test (+ references)."""
    config = config or TrainingConfig()
    missing = [c for c in [*feature_names, LABEL, "split", "created_at"] if c not in df.columns]
    if missing:
        raise ValueError(f"training set lacks columns {missing}")
    order = pd.to_datetime(df["created_at"], utc=True).argsort(kind="stable")
    data = df.iloc[order]
    parts = {name: data[data["split"] == name] for name in ("train", "validation", "test")}
    for name, part in parts.items():
        if part.empty or part[LABEL].nunique() < 2:
            raise ValueError(f"split {name!r} has {len(part)} rows and needs both label values")

    model, calibration, best = _fit_calibrated(parts["train"], parts["validation"], feature_names, params, config)
    test, valid = parts["test"], parts["validation"]
    y_test = test[LABEL].to_numpy()
    proba = model.predict_proba(test)
    raw_test = model.predict_raw(test)
    metrics = evaluate(y_test, proba, config.threshold, config.top_k_fraction)
    by_age = evaluate_by_age(y_test, proba, test["age_hours"], config.threshold, config.top_k_fraction) \
        if "age_hours" in test else {}
    calibration["test_log_loss_raw"] = evaluate(y_test, raw_test, config.threshold)["log_loss"]
    validation_metrics = evaluate(valid[LABEL].to_numpy(), model.predict_proba(valid), config.threshold,
                                  config.top_k_fraction)

    fit_rate = float(pd.concat([parts["train"], valid])[LABEL].mean())
    constant = np.full(len(test), fit_rate)
    references: dict[str, dict[str, Any]] = {
        "base_rate": {**evaluate(y_test, constant, config.threshold, config.top_k_fraction), "constant": fit_rate},
    }
    curves = {"model": proba}
    missing_ref = [c for c in REFERENCE_FEATURES if c not in df.columns]
    if missing_ref:
        references["older_projects"] = {"skipped": f"training set lacks {missing_ref}"}
    else:
        ref_model, ref_cal, ref_best = _fit_calibrated(parts["train"], valid, REFERENCE_FEATURES, params, config)
        ref_proba = ref_model.predict_proba(test)
        references["older_projects"] = {
            **evaluate(y_test, ref_proba, config.threshold, config.top_k_fraction),
            "features": REFERENCE_FEATURES,
            "best_iteration": ref_best,
            "calibration": ref_cal["method"],
        }
        curves["older projects (LEAKY reference)"] = ref_proba
    curves["base rate"] = constant

    importance = feature_importance(model.booster, feature_names)
    plots = {
        "roc.png": roc_png(y_test, curves),
        "pr.png": pr_png(y_test, curves),
        "calibration.png": calibration_png(y_test, proba, raw_test,
                                           calibration["method"] if calibration["applied"] else None),
        "feature_importance.png": importance_png(importance["feature"].tolist(), importance["gain"].tolist()),
    }
    used_params = {k: v for k, v in booster_params(params, nthread=config.nthread, seed=config.seed).items()}
    used_params["num_boost_round"] = best + 1
    return TrainingResult(
        model=model,
        metrics=metrics,
        metrics_by_age=by_age,
        validation_metrics=validation_metrics,
        reference_metrics=references,
        calibration=calibration,
        feature_importance=importance,
        plots=plots,
        windows={name: _window(part) for name, part in parts.items()},
        params=used_params,
        best_iteration=best,
        fingerprint=training_set_fingerprint(df, feature_names),
    )


def feature_importance(booster: xgb.Booster, feature_names: list[str]) -> pd.DataFrame:
    """Gain (mean per split), total gain and split count per feature; unused features get zeros."""
    gain = booster.get_score(importance_type="gain")
    total = booster.get_score(importance_type="total_gain")
    weight = booster.get_score(importance_type="weight")
    frame = pd.DataFrame(
        {
            "feature": feature_names,
            "gain": [float(gain.get(f, 0.0)) for f in feature_names],
            "total_gain": [float(total.get(f, 0.0)) for f in feature_names],
            "splits": [int(weight.get(f, 0)) for f in feature_names],
        }
    )
    return frame.sort_values(["gain", "feature"], ascending=[False, True], kind="stable").reset_index(drop=True)
