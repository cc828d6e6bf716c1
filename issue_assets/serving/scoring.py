"""One scoring path for the batch job and the HTTP service, so both give the same numbers.

At a scoring time T an issue is either *decided* (its label is known at T: closed by T, or still open at
created_at + 7 days) or *scored*: its features are computed at t = T, its current age, against the
repository's event store (a request's issues overlaid, `EventStore.overlay`), and the model gives
P(closed within 7 days of creation | still open at T). Decided issues get their outcome and no probability.

Public API:
    predict(model, version, store, raw, scoring_us, top_k=5, *, observed_us=None, with_features=False,
            nthread=None) -> Predictions
        raw: issue rows as `features.store.raw_columns` gives them (a table's or a request's); created after T
        -> ValueError naming the rows. first_seen_at (when the platform first observed the issue, which
        decides whether an association it shows counts by t): the stored one, else the row's, else
        `observed_us` (a request: the time it arrived; default T).
    Predictions: arrays per row (status, closed_within_7d, probability, rank among the scored, ...)
        .frame() -> DataFrame (PREDICTION_COLUMNS + contrib_<i>_{feature,value,contribution}), .records()
    score_features(model, version, features: DataFrame, scoring_time, top_k=5) -> DataFrame
        the model half alone, for feature rows already computed (probability, rank, contributions)
    batch_targets(issues, scoring_time) -> DataFrame     issues open at T or created in the 7 days before it
    batch_predict(model, version, store, issues, scoring_time, top_k=5) -> Predictions
        every batch target, scored ones by rank first, then the decided ones
    batch_open_issue_predictions(...) -> DataFrame       the same as the published table
    write_predictions(lake, repo, df, scoring_time) -> dict[str, str];  read_latest_predictions(lake, repo)

Contributions are XGBoost's pred_contribs (SHAP values in the booster's log-odds, before calibration), the
top_k largest by absolute value, as flat columns `contrib_<i>_feature|value|contribution` (parquet and CSV
need no nested types).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from issue_assets.features.catalog import FEATURE_NAMES
from issue_assets.features.compute import feature_columns
from issue_assets.features.frames import TS, normalize_issues
from issue_assets.features.labels import DAY_US, DEFAULT_HORIZON_DAYS, HOUR_US, known_by, utc
from issue_assets.features.store import EventStore, raw_columns
from issue_assets.lake.keys import prediction_keys
from issue_assets.lake.store import KeyNotFound, ObjectStore, read_parquet, write_parquet
from issue_assets.modeling.training import TrainedModel
from issue_assets.monitoring.served import Served

SCORED, DECIDED = "scored", "decided"
PREDICTION_COLUMNS = [
    "repo", "id", "number", "title", "created_at", "status", "closed_within_7d", "prediction_time",
    "hours_observed", "scoring_time", "model_version", "probability", "rank",
]
CONTRIBUTION_FIELDS = ("feature", "value", "contribution")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def contribution_columns(top_k: int) -> list[str]:
    return [f"contrib_{i}_{field}" for i in range(1, top_k + 1) for field in CONTRIBUTION_FIELDS]


def as_datetime(us: float) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def probabilities(model: TrainedModel, matrix: np.ndarray) -> np.ndarray:
    """The booster's probabilities for a float32 feature matrix (inplace_predict: no DMatrix), calibrated."""
    raw = model.booster.inplace_predict(matrix).astype(float) if len(matrix) else np.zeros(0)
    return model.calibrator.apply(raw) if model.calibrator else raw


def top_contributions(model: TrainedModel, values: np.ndarray, top_k: int, nthread: int | None = None
                      ) -> dict[str, np.ndarray]:
    """The top_k contributions of each row of `values` (float64, the model's feature order) as flat columns."""
    from issue_assets.modeling.treeshap import pred_contribs, top_k_contributions

    n = len(values)
    names = model.feature_names
    out: dict[str, np.ndarray] = {}
    order = picked = np.zeros((n, 0), dtype="int64")
    if n and top_k:
        contribs = pred_contribs(model.booster, values.astype(np.float32), names, nthread)
        order, picked = top_k_contributions(contribs[:, :-1], top_k)
    k = order.shape[1]
    for i in range(top_k):
        have = i < k
        out[f"contrib_{i + 1}_feature"] = np.asarray(names, dtype=object)[order[:, i]] if have \
            else np.full(n, None, dtype=object)
        out[f"contrib_{i + 1}_value"] = np.take_along_axis(values, order[:, i:i + 1], axis=1)[:, 0] if have \
            else np.full(n, np.nan)
        out[f"contrib_{i + 1}_contribution"] = picked[:, i].astype(float) if have else np.full(n, np.nan)
    return out


def _matrix(model: TrainedModel, values: np.ndarray) -> np.ndarray:
    matrix = values.astype(np.float32)
    if np.isinf(matrix).any():
        bad = [name for name, col in zip(model.feature_names, np.isinf(matrix).any(axis=0), strict=True) if col]
        raise ValueError(f"features {bad} hold ±inf, which XGBoost does not accept (missing values are NaN)")
    return matrix


def _ranks(probability: np.ndarray, created_us: np.ndarray, number: np.ndarray) -> np.ndarray:
    """1 = most likely closed within 7 days; ties go to the older issue, then the lower number."""
    order = np.lexsort((number, created_us, -probability))
    rank = np.empty(len(order), dtype="int64")
    rank[order] = np.arange(1, len(order) + 1)
    return rank


@dataclass
class Predictions:
    """One entry per row: scored rows carry probability, rank, prediction time and contributions; decided
    rows their outcome. Arrays in the rows' order."""

    version: str
    scoring_us: int
    repo: np.ndarray
    id: np.ndarray
    number: np.ndarray
    title: np.ndarray
    created_us: np.ndarray
    decided: np.ndarray
    positive: np.ndarray
    probability: np.ndarray
    rank: np.ndarray
    contributions: dict[str, np.ndarray]
    top_k: int
    features: dict[str, np.ndarray] | None
    #: the model's feature values of every row, in the model's order (NaN rows for decided issues): what the
    #: served-prediction log keeps for drift
    values: np.ndarray | None = None
    feature_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.id)

    def served(self, source: str) -> Served:
        """The scored rows as the served-prediction log keeps them (arrays only: cheap on a request)."""
        live = ~self.decided
        n = int(live.sum())
        return Served(str(self.repo[0]) if len(self) else "", self.id[live].astype("int64"),
                      self.number[live].astype("int64"), self.created_us[live].astype("int64"),
                      np.full(n, self.scoring_us, dtype="int64"), self.version, self.probability[live],
                      None if self.values is None else self.values[live], tuple(self.feature_names or ()), source,
                      int(datetime.now(UTC).timestamp() * 1_000_000))

    def take(self, order: np.ndarray) -> Predictions:
        """The same predictions in another row order."""
        def pick(a):
            return None if a is None else a[order]
        return Predictions(self.version, self.scoring_us, self.repo[order], self.id[order], self.number[order],
                           self.title[order], self.created_us[order], self.decided[order], self.positive[order],
                           self.probability[order], self.rank[order],
                           {c: v[order] for c, v in self.contributions.items()}, self.top_k,
                           None if self.features is None else {k: v[order] for k, v in self.features.items()},
                           pick(self.values), self.feature_names)

    def frame(self) -> pd.DataFrame:
        n = len(self)
        scored = ~self.decided
        ts = pd.DatetimeTZDtype("us", "UTC")
        frame = pd.DataFrame({
            "repo": pd.array(self.repo, dtype="string"), "id": self.id.astype("int64"),
            "number": self.number.astype("int64"), "title": pd.array(self.title, dtype="string"),
            "created_at": pd.Series(self.created_us.astype("int64").view("M8[us]")).dt.tz_localize("UTC"),
            "status": pd.array(np.where(scored, SCORED, DECIDED), dtype="string"),
            "closed_within_7d": pd.arrays.BooleanArray(self.positive, scored),
            "prediction_time": pd.Series(np.where(scored, self.scoring_us, np.iinfo("int64").min)
                                         .astype("int64").view("M8[us]")).dt.tz_localize("UTC"),
            "hours_observed": (self.scoring_us - self.created_us) / HOUR_US,
            "scoring_time": pd.Series(np.full(n, self.scoring_us, dtype="int64").view("M8[us]")).dt.tz_localize("UTC"),
            "model_version": pd.array(np.full(n, self.version, dtype=object), dtype="string"),
            "probability": self.probability,
            "rank": pd.array(np.where(scored, self.rank, 0), dtype="Int64").copy(),
        })
        frame.loc[~scored, "rank"] = pd.NA
        for col in ("created_at", "prediction_time", "scoring_time"):
            frame[col] = frame[col].astype(ts)
        contribs = {col: pd.array(v, dtype="string") if col.endswith("_feature") else v
                    for col, v in self.contributions.items()}
        return pd.concat([frame, pd.DataFrame(contribs, index=frame.index)], axis=1) if contribs else frame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Predictions:
        """The inverse of .frame() for a stored batch."""
        top_k = sum(1 for c in frame.columns if c.startswith("contrib_") and c.endswith("_feature"))
        contributions = {c: frame[c].to_numpy(dtype=object, na_value=None) if c.endswith("_feature")
                         else frame[c].to_numpy(dtype=float, na_value=np.nan) for c in contribution_columns(top_k)}
        return cls(str(frame["model_version"].iloc[0]), int(frame["scoring_time"].array.asi8[0]),
                   frame["repo"].to_numpy(dtype=object), frame["id"].to_numpy(), frame["number"].to_numpy(),
                   frame["title"].to_numpy(dtype=object, na_value=None), frame["created_at"].array.asi8.astype(float),
                   (frame["status"] == DECIDED).to_numpy(), frame["closed_within_7d"].fillna(False).to_numpy(bool),
                   frame["probability"].to_numpy(dtype=float), frame["rank"].fillna(0).to_numpy("int64"),
                   contributions, top_k, None)

    def records(self) -> list[dict]:
        """JSON-ready dicts (the service's IssuePrediction shape)."""
        scoring = as_datetime(self.scoring_us)
        out = []
        for r in range(len(self)):
            scored = not self.decided[r]
            contribs = []
            for i in range(1, self.top_k + 1) if scored else ():
                feature = self.contributions[f"contrib_{i}_feature"][r]
                if feature is None:
                    break
                value = float(self.contributions[f"contrib_{i}_value"][r])
                contribs.append({"feature": str(feature), "value": None if value != value else value,
                                 "contribution": float(self.contributions[f"contrib_{i}_contribution"][r])})
            record = {
                "repository": str(self.repo[r]), "id": int(self.id[r]), "number": int(self.number[r]),
                "title": self.title[r], "created_at": as_datetime(self.created_us[r]),
                "status": SCORED if scored else DECIDED,
                "closed_within_7d": None if scored else bool(self.positive[r]),
                "prediction_time": scoring if scored else None,
                "hours_observed": (self.scoring_us - float(self.created_us[r])) / HOUR_US,
                "probability": float(self.probability[r]) if scored else None,
                "rank": int(self.rank[r]) if scored else None,
                "model_version": self.version, "scoring_time": scoring, "top_contributions": contribs,
            }
            if self.features is not None:
                record["features"] = {name: (None if v != v else float(v))
                                      for name, v in ((k, self.features[k][r]) for k in FEATURE_NAMES)} \
                    if scored else None
            out.append(record)
        return out


def predict(model: TrainedModel, version: str, store: EventStore, raw: dict[str, np.ndarray], scoring_us: int,
            top_k: int = 5, *, observed_us: int | None = None, with_features: bool = False,
            nthread: int | None = None) -> Predictions:
    if top_k < 0:
        raise ValueError("top_k must be >= 0")
    late = np.flatnonzero(raw["c"] > scoring_us)
    if len(late):
        raise ValueError(f"issues {raw['number'][late][:10].tolist()} were created after the scoring time "
                         f"{as_datetime(scoring_us).isoformat()}")
    rows = store.rows(raw)
    stored = store.find(rows)
    observed = float(scoring_us if observed_us is None else observed_us)
    fs = np.where(np.isnan(rows["fs"]), observed, rows["fs"])
    rows["fs"] = np.where(stored >= 0, store.issues["fs"][np.maximum(stored, 0)], fs)
    decided, positive, _ = known_by(rows["c"], rows["cl"], float(scoring_us), store.horizon)
    live = np.flatnonzero(~decided)
    n = rows.n
    probability, rank = np.full(n, np.nan), np.zeros(n, dtype="int64")
    contributions = {c: np.full(n, None, dtype=object) if c.endswith("_feature") else np.full(n, np.nan)
                     for c in contribution_columns(top_k)}
    features = None
    all_values = np.full((n, len(model.feature_names)), np.nan)
    if len(live):
        target = rows.take(live)
        f = feature_columns(store.overlay(rows), target, np.full(len(live), float(scoring_us)))
        values = np.column_stack([f[name] for name in model.feature_names]) if len(live) else np.zeros((0, 0))
        all_values[live] = values
        probability[live] = probabilities(model, _matrix(model, values))
        rank[live] = _ranks(probability[live], target["c"], target["number"])
        for col, v in top_contributions(model, values, top_k, nthread).items():
            contributions[col][live] = v
        if with_features:
            features = {name: np.full(n, np.nan) for name in FEATURE_NAMES}
            for name in FEATURE_NAMES:
                features[name][live] = f[name]
    elif with_features:
        features = {name: np.full(n, np.nan) for name in FEATURE_NAMES}
    return Predictions(version, int(scoring_us), rows["repo"], rows["id"], rows["number"], rows["title"], rows["c"],
                       decided, positive, probability, rank, contributions, top_k, features, all_values,
                       list(model.feature_names))


def score_features(model: TrainedModel, model_version: str, features: pd.DataFrame, scoring_time,
                   top_k: int = 5, nthread: int | None = None) -> pd.DataFrame:
    """The model half of `predict` for feature rows already computed: probability, rank, contributions."""
    if top_k < 0:
        raise ValueError("top_k must be >= 0")
    missing = [c for c in model.feature_names if c not in features.columns]
    if missing:
        raise ValueError(f"input lacks model features {missing}")
    values = features[model.feature_names].to_numpy(dtype=float)
    probability = probabilities(model, _matrix(model, values))
    created = features["created_at"].astype(TS).array.asi8
    frame = pd.DataFrame({"repo": features["repo"].to_numpy(), "id": features["id"].to_numpy(),
                          "number": features["number"].to_numpy(), "probability": probability,
                          "rank": _ranks(probability, created, features["number"].to_numpy()),
                          "model_version": model_version, "scoring_time": utc(scoring_time)})
    contribs = top_contributions(model, values, top_k, nthread)
    return pd.concat([frame, pd.DataFrame(contribs, index=frame.index)], axis=1) if contribs else frame


def batch_targets(issues: pd.DataFrame, scoring_time, horizon_days: float = DEFAULT_HORIZON_DAYS) -> pd.DataFrame:
    """Issues (not pull requests) created by T that are open at T or were created in the horizon before T:
    the open ones to score or report as decided, and the recent ones already decided."""
    T = utc(scoring_time)
    created = pd.to_datetime(issues["created_at"], utc=True)
    closed = pd.to_datetime(issues["closed_at"], utc=True)
    pr = issues["is_pull_request"].fillna(False).astype(bool) if "is_pull_request" in issues else False
    recent = created > T - pd.Timedelta(days=horizon_days)
    mask = (created <= T) & (closed.isna() | (closed > T) | recent) & ~pr
    return issues.loc[mask].reset_index(drop=True)


def batch_predict(model: TrainedModel, version: str, store: EventStore, issues: pd.DataFrame, scoring_time,
                  top_k: int = 5) -> Predictions:
    """The repository's batch at T, in its published order: scored issues by rank, then decided ones (newest
    first)."""
    T = utc(scoring_time)
    targets = normalize_issues(batch_targets(issues, T, store.horizon / DAY_US))
    predictions = predict(model, version, store, raw_columns(targets), T.value // 1000, top_k)
    rank = np.where(predictions.decided, np.iinfo("int64").max, predictions.rank)
    return predictions.take(np.lexsort((-predictions.created_us, rank, predictions.decided)))


def batch_open_issue_predictions(model: TrainedModel, version: str, store: EventStore, issues: pd.DataFrame,
                                 scoring_time, top_k: int = 5) -> pd.DataFrame:
    """`batch_predict` as the published table."""
    return batch_predict(model, version, store, issues, scoring_time, top_k).frame()


def _stamp(scoring_time) -> str:
    return utc(scoring_time).strftime("%Y%m%dT%H%M%SZ")


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    out = df.copy()
    for col in ("created_at", "prediction_time", "scoring_time"):
        if col in out:
            out[col] = out[col].map(lambda ts: ts.isoformat() if pd.notna(ts) else "")
    buf = io.StringIO()
    out.to_csv(buf, index=False, float_format="%.17g")
    return buf.getvalue().encode("utf-8")


def write_predictions(lake: ObjectStore, repo: str, df: pd.DataFrame, scoring_time) -> dict[str, str]:
    """The batch as parquet and CSV, timestamped and as `latest`; each object written atomically, the
    `latest` copies last so a reader never sees a batch whose timestamped files are missing."""
    keys = prediction_keys(repo, _stamp(scoring_time))
    csv = to_csv_bytes(df)
    write_parquet(lake, keys["parquet"], df)
    lake.put_bytes(keys["csv"], csv)
    write_parquet(lake, keys["parquet_latest"], df)
    lake.put_bytes(keys["csv_latest"], csv)
    return keys


def read_latest_predictions(lake: ObjectStore, repo: str) -> pd.DataFrame | None:
    try:
        return read_parquet(lake, prediction_keys(repo, "latest")["parquet_latest"])
    except KeyNotFound:
        return None


def records_of(frame: pd.DataFrame) -> list[dict]:
    """Stored batch rows (one run: one model version, one scoring time) as the service's dicts."""
    return Predictions.from_frame(frame).records() if len(frame) else []


__all__ = ["DECIDED", "SCORED", "Predictions", "batch_open_issue_predictions", "batch_predict", "batch_targets",
           "contribution_columns", "predict", "probabilities", "read_latest_predictions", "records_of",
           "score_features", "top_contributions", "write_predictions"]
