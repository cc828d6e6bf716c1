"""The label "closed within the horizon", the time it becomes known, and what that makes of a prediction.

One rule, used by the feature table, the training sets, the retraining sensor and the prediction service:
an issue is positive when it closed at most `horizon` after it was created; its label is known (settled)
at min(closed_at, created_at + horizon). At a time T, closings after T are not known yet.

A prediction at time t in [created_at, created_at + horizon) is P(closed within the horizon | still open at
t). Once the label is known (closed by T, or open at created_at + horizon) there is nothing to predict:
the issue is *decided* and its outcome is the label.

Public API:
    DEFAULT_HORIZON_DAYS = 7;  HOUR_US, DAY_US: microseconds
    outcome(created_us, closed_us, horizon_us) -> (positive: bool[n], known_at_us: float64[n])
        on float64 microseconds (NaN = not closed); the rule itself
    known_by(created_us, closed_us, at_us, horizon_us) -> (decided: bool[n], positive: bool[n], known_at_us)
        the rule as of `at_us` (closings after it unknown): is the outcome known then, what it is, and since
        when (positive False and known_at NaN where undecided)
    label_times(created_at: Series, closed_at: Series, *, horizon_days=7) -> (Series[bool], Series[datetime])
    snapshot_time(issues) -> Timestamp       the as-of time a table speaks for (its latest fetched_at)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from issue_assets.features.frames import TS

DEFAULT_HORIZON_DAYS = 7
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US


def horizon_us(horizon_days: float = DEFAULT_HORIZON_DAYS) -> float:
    return float(round(horizon_days * DAY_US))


def outcome(created_us: np.ndarray, closed_us: np.ndarray, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """(positive, known_at) from creation and closing times in float64 microseconds (NaN: not closed)."""
    duration = closed_us - created_us
    positive = ~np.isnan(duration) & (duration <= horizon)
    return positive, np.where(positive, closed_us, created_us + horizon)


def known_by(created_us: np.ndarray, closed_us: np.ndarray, at_us, horizon: float):
    """(decided, positive, known_at) as of `at_us`: closings after it are not known yet."""
    closed = np.where(closed_us <= at_us, closed_us, np.nan)
    positive, known_at = outcome(created_us, closed, horizon)
    decided = known_at <= at_us
    return decided, positive & decided, np.where(decided, known_at, np.nan)


def us(series: pd.Series) -> np.ndarray:
    """UTC timestamps as float64 microseconds (NaN for NaT): the rule's time scale."""
    values = series.astype(TS).array.asi8
    out = values.astype("float64")
    out[values == np.iinfo("int64").min] = np.nan
    return out


def label_times(created_at: pd.Series, closed_at: pd.Series, *, horizon_days: float = DEFAULT_HORIZON_DAYS):
    positive, known_at = outcome(us(created_at), us(closed_at), horizon_us(horizon_days))
    known = pd.Series(pd.to_datetime(known_at, unit="us", utc=True), index=created_at.index).astype(TS)
    return pd.Series(positive, index=created_at.index), known


def snapshot_time(issues: pd.DataFrame) -> pd.Timestamp:
    """The as-of time a table speaks for: its latest fetch (or latest event if never fetched)."""
    if "fetched_at" in issues and issues["fetched_at"].notna().any():
        return issues["fetched_at"].max()
    events = pd.concat([issues["created_at"], issues["closed_at"]]).dropna()
    return events.max() if len(events) else pd.Timestamp.max.tz_localize("UTC")


def utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
