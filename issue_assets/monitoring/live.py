"""One repository's served predictions judged against what happened: the summary behind `prediction_outcomes`.

`evaluate_repository` joins every served prediction to its outcome (once known), computes live quality
overall, per week, per model version and per age bucket, the calibration of the champion's served
probabilities, and feature drift between the champion's training window (its training set's rows of this
repository, drawn to the served rows' mix of ages) and what was served in the last `drift_days`. It stores the joined rows and a JSON summary
under `outcomes/<owner>__<name>/`; the retraining sensor and `issue-assets status` read the summary.

`degradation(summary, ...)` says, in one line, why the champion's live quality calls for retraining (or
None): live ROC AUC below the alert threshold, or calibration error above its bound, on enough outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from issue_assets.ingest.layout import repair_command
from issue_assets.lake.documents import read_json, write_json
from issue_assets.lake.keys import outcomes_joined_key, outcomes_summary_key, training_set_key
from issue_assets.lake.store import KeyNotFound, ObjectStore, read_parquet, write_parquet
from issue_assets.modeling.plots import live_calibration_png, live_quality_png
from issue_assets.monitoring.drift import MIN_RECENT_ROWS, NOT_COMPARABLE, PSI_WARN, drift_table
from issue_assets.monitoring.outcomes import AGE_EDGES, calibration_table, join_outcomes, quality, quality_by
from issue_assets.monitoring.served import read_served
from issue_assets.registry.states import test_roc_auc


@dataclass
class LiveQuality:
    summary: dict
    joined: pd.DataFrame
    drift: pd.DataFrame
    plots: dict[str, bytes] = field(default_factory=dict)


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _reference_features(store: ObjectStore, repo: str, as_of: str | None) -> pd.DataFrame | None:
    if not as_of:
        return None
    try:
        frame = read_parquet(store, training_set_key(as_of))
    except KeyNotFound:
        return None
    rows = frame.loc[(frame["repo"] == repo) & (frame["split"] == "train")]
    return rows if len(rows) else None


def _age_matched(reference: pd.DataFrame, recent: pd.DataFrame) -> pd.DataFrame:
    """Training rows drawn to the served rows' mix of ages: for the served rows of each age bucket, as many
    training rows of that bucket's training age (seeded, with replacement). Activity features grow with an
    issue's age, so a served mix of ages against the training grid would show drift that is only age."""
    if "age_hours" not in reference:
        return reference
    rng = np.random.default_rng(0)
    bucket = np.clip(np.searchsorted(AGE_EDGES, recent["hours_observed"].to_numpy(dtype=float), side="right") - 1,
                     0, len(AGE_EDGES) - 2)
    parts = []
    for b, count in zip(*np.unique(bucket, return_counts=True), strict=True):
        pool = reference.loc[reference["age_hours"] == AGE_EDGES[b]]
        if len(pool):
            parts.append(pool.iloc[rng.integers(0, len(pool), count)])
    return pd.concat(parts, ignore_index=True) if parts else reference.iloc[0:0]


def evaluate_repository(store: ObjectStore, repo: str, issues: pd.DataFrame, now, *, champion: str | None,
                        champion_metadata: dict | None, feature_names: list[str], drift_days: float = 14.0) -> LiveQuality:
    now = pd.Timestamp(now)
    served = read_served(store, repo)
    joined = join_outcomes(served, issues, now)
    by_champion = joined.loc[joined["model_version"] == champion] if champion else joined.iloc[0:0]
    meta = champion_metadata or {}
    test_auc = test_roc_auc(meta)
    summary = {
        "repo": repo, "computed_at": now.isoformat(), "served": int(len(served)),
        "served_issues": int(served["id"].nunique()) if len(served) else 0,
        "with_outcome": int(len(joined)), "champion": champion, "champion_test_roc_auc": test_auc,
        "overall": quality(joined), "champion_live": quality(by_champion),
        "by_model_version": _records(quality_by(joined, "model_version")),
        "by_week": _records(quality_by(joined, "week")),
        "by_age": _records(quality_by(joined, "age")),
        "champion_calibration": _records(calibration_table(by_champion)),
    }
    recent = served.loc[served["prediction_time"] >= now - pd.Timedelta(days=drift_days)] if len(served) else served
    if champion:
        recent = recent.loc[recent["model_version"] == champion]
    reference = _reference_features(store, repo, meta.get("as_of"))
    present = [n for n in feature_names if f"f_{n}" in recent.columns and n not in NOT_COMPARABLE]
    if reference is None or len(recent) < MIN_RECENT_ROWS or not present:
        drift = pd.DataFrame(columns=["feature", "psi", "ks_statistic", "ks_pvalue"])
        summary["drift"] = {"computed": False, "reason": (
            "no training set of the champion's as-of day holds this repository" if reference is None
            else f"{len(recent)} predictions served by the champion in the last {drift_days:g} days (drift is "
                 f"judged from {MIN_RECENT_ROWS})")}
    else:
        reference = _age_matched(reference, recent)
        drift = drift_table(reference[present], recent[[f"f_{n}" for n in present]].set_axis(present, axis=1),
                            present)
        summary["drift"] = {"computed": True, "days": drift_days, "reference_rows": int(len(reference)),
                            "recent_rows": int(len(recent)),
                            "drifted": drift.loc[drift["psi"] > PSI_WARN, "feature"].tolist(),
                            "top": _records(drift.head(10))}
    plots = {}
    weeks = quality_by(by_champion if len(by_champion) else joined, "week")
    if len(weeks):
        plots["live_quality.png"] = live_quality_png(weeks["week"].tolist(), weeks["roc_auc"].tolist(),
                                                     weeks["brier"].tolist(), test_auc)
    calibration = calibration_table(by_champion)
    if len(calibration):
        plots["live_calibration.png"] = live_calibration_png(calibration["mean_probability"],
                                                             calibration["observed_rate"])
    write_parquet(store, outcomes_joined_key(repo), joined)
    write_json(store, outcomes_summary_key(repo), summary)
    return LiveQuality(summary, joined, drift, plots)


def read_summary(store: ObjectStore, repo: str) -> dict | None:
    return read_json(store, outcomes_summary_key(repo), default=None, remedy=repair_command(repo))


@dataclass(frozen=True)
class Verdict:
    """The champion's live quality against its bounds: judged only on `min_outcomes` known outcomes."""

    enough: bool
    auc_ok: bool
    calibration_ok: bool

    @property
    def ok(self) -> bool:
        return self.auc_ok and self.calibration_ok


def verdict(live: dict, *, auc_threshold: float, calibration_bound: float, min_outcomes: int) -> Verdict:
    """`live`: `quality()` of the champion's served predictions with known outcomes."""
    enough = int(live.get("n") or 0) >= min_outcomes
    auc, ece = live.get("roc_auc"), live.get("ece")
    return Verdict(enough, not enough or auc is None or auc >= auc_threshold,
                   not enough or ece is None or ece <= calibration_bound)


def degradation(summary: dict | None, *, auc_threshold: float, calibration_bound: float,
                min_outcomes: int) -> str | None:
    """Why the champion's live quality calls for retraining, or None (also when too few outcomes)."""
    if not summary or not summary.get("champion"):
        return None
    live = summary.get("champion_live") or {}
    v = verdict(live, auc_threshold=auc_threshold, calibration_bound=calibration_bound, min_outcomes=min_outcomes)
    where = f"{summary['repo']}: {live.get('n')} served predictions of {summary['champion']} with known outcomes"
    if not v.auc_ok:
        return f"live ROC AUC {live['roc_auc']:.4f} < alert threshold {auc_threshold:.4f} ({where})"
    if not v.calibration_ok:
        return f"live calibration error {live['ece']:.4f} > bound {calibration_bound:.4f} ({where})"
    return None
