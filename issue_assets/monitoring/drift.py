"""Feature drift between the champion's training window and what was served lately.

Two views per feature: the population stability index over the reference's deciles (missing values are
a bin of their own, so a feature that starts missing more often drifts too) and the two-sample
Kolmogorov–Smirnov test on the present values (scipy). PSI reads as usual: < 0.1 stable, 0.1–0.25
moderate, > 0.25 a shift worth acting on.

Public API:
    PSI_WARN = 0.25; MIN_RECENT_ROWS = 100; NOT_COMPARABLE (features left out, and why)
    psi(reference, recent, bins=10) -> float | None
    drift_table(reference: DataFrame, recent: DataFrame, features) -> DataFrame
        feature, psi, ks_statistic, ks_pvalue, n_reference, n_recent, missing_reference, missing_recent;
        sorted by psi, largest first
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

PSI_WARN = 0.25
#: fewer served rows than this and a PSI over 11 bins is mostly sampling noise: drift is not judged
MIN_RECENT_ROWS = 100
#: features that differ between a training window and recent serving by construction, not by drift: a
#: repository only grows older, and training rows sit at the fixed ages 0/6/24/72 h while served predictions
#: are at any age inside the window (the other activity features are compared age bucket to training age)
NOT_COMPARABLE = frozenset({"repo_age_days", "hours_observed"})
_EPS = 1e-4


def psi(reference, recent, bins: int = 10) -> float | None:
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(recent, dtype=float)
    if not len(ref) or not len(cur):
        return None
    present = ref[~np.isnan(ref)]
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if len(present) else np.zeros(0)

    def shares(x: np.ndarray) -> np.ndarray:
        missing = np.isnan(x)
        counts = np.bincount(np.searchsorted(edges, x[~missing], side="right"), minlength=len(edges) + 1)
        out = np.append(counts, missing.sum()).astype(float) / len(x)
        return np.clip(out, _EPS, None)

    expected, actual = shares(ref), shares(cur)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def drift_table(reference: pd.DataFrame, recent: pd.DataFrame, features) -> pd.DataFrame:
    rows = []
    for name in features:
        ref = reference[name].to_numpy(dtype=float) if name in reference else np.zeros(0)
        cur = recent[name].to_numpy(dtype=float) if name in recent else np.zeros(0)
        a, b = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
        ks = ks_2samp(a, b) if len(a) and len(b) else None
        rows.append({
            "feature": name, "psi": psi(ref, cur),
            "ks_statistic": float(ks.statistic) if ks is not None else None,
            "ks_pvalue": float(ks.pvalue) if ks is not None else None,
            "n_reference": int(len(ref)), "n_recent": int(len(cur)),
            "missing_reference": float(np.isnan(ref).mean()) if len(ref) else None,
            "missing_recent": float(np.isnan(cur).mean()) if len(cur) else None,
        })
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values("psi", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    return table
