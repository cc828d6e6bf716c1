"""The XGBoost parameters: what is fixed, what Optuna searches, and how a trial turns into booster params.

The search space uses XGBoost's native names (``eta``, ``reg_lambda``, ...) so tuned parameters pass
straight to ``xgboost.train``; ``num_boost_round`` is not searched but found by early stopping.
"""

from __future__ import annotations

import os
from typing import Any

FIXED_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "tree_method": "hist",
    "eval_metric": "auc",
    "max_bin": 256,
    "verbosity": 0,
}

# name -> (kind, low, high, log)
SEARCH_SPACE: dict[str, tuple[str, float, float, bool]] = {
    "max_depth": ("int", 2, 10, False),
    "eta": ("float", 0.01, 0.3, True),
    "min_child_weight": ("float", 0.5, 64.0, True),
    "subsample": ("float", 0.5, 1.0, False),
    "colsample_bytree": ("float", 0.4, 1.0, False),
    "reg_lambda": ("float", 1e-3, 30.0, True),
    "reg_alpha": ("float", 1e-3, 10.0, True),
    "gamma": ("float", 1e-4, 5.0, True),
}

DEFAULT_PARAMS: dict[str, Any] = {
    "max_depth": 6,
    "eta": 0.1,
    "min_child_weight": 1.0,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "reg_lambda": 1.0,
    "reg_alpha": 1e-3,
    "gamma": 1e-4,
}


def suggest_params(trial) -> dict[str, Any]:
    """Sample one point of SEARCH_SPACE from an Optuna trial."""
    out: dict[str, Any] = {}
    for name, (kind, low, high, log) in SEARCH_SPACE.items():
        if kind == "int":
            out[name] = trial.suggest_int(name, int(low), int(high), log=log)
        else:
            out[name] = trial.suggest_float(name, float(low), float(high), log=log)
    return out


def default_nthread(parallel: int = 1) -> int:
    """XGBoost threads per model when `parallel` models train at once on this machine."""
    return max(1, (os.cpu_count() or 1) // max(1, parallel))


def booster_params(params: dict[str, Any] | None, *, nthread: int | None = None, seed: int = 0) -> dict[str, Any]:
    """FIXED_PARAMS + tuned params (unknown keys such as num_boost_round dropped) + threads and seed."""
    tuned = {k: v for k, v in (params or DEFAULT_PARAMS).items() if k in SEARCH_SPACE}
    return {**FIXED_PARAMS, **tuned, "nthread": nthread or default_nthread(), "seed": int(seed)}
