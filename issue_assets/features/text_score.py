"""A point-in-time text score: hashed words and bigrams, logistic regression, fitted per 60-day period.

The row whose prediction time t falls in the period [p0, p0 + period) gets its score from a model fitted
only on issues whose label was known at p0 (label_known_at <= p0 <= t). Periods are anchored at the Unix
epoch, not at the data, so the model for a period is the same whatever later data exists: that is what
makes the score pass the time-travel test. The hashing vectorizer has no vocabulary to fit; the SGD
model has a fixed seed and sees its rows in a canonical order (created_at, repo, id).

Public API:
    TextScoreConfig(period_days=60, n_features=2**18, max_train_rows=50_000, min_train_rows=50,
                    body_chars=1000, alpha=1e-4, epochs=3)
    hash_texts(title: Series, body: Series, config: TextScoreConfig) -> scipy.sparse.csr_matrix
    period_start(times_us: ndarray[int64], config) -> ndarray[int64]
    text_scores(X: csr_matrix, positive: ndarray[bool], known_at_us: ndarray[float], target_times_us:
                ndarray[int64], target_rows: ndarray[int64], config) -> ndarray[float]
        X, positive, known_at_us describe all candidate training documents (rows in canonical order;
        known_at_us is NaN where the label is unknown at the as-of time); the result is the score of
        X[target_rows] at target_times_us (NaN where the period has too few labelled rows or one class).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDClassifier

DAY_US = 86_400_000_000


@dataclass(frozen=True)
class TextScoreConfig:
    period_days: int = 60
    n_features: int = 2**18
    max_train_rows: int = 50_000
    min_train_rows: int = 50
    body_chars: int = 1000
    alpha: float = 1e-4
    epochs: int = 3


def _vectorizer(config: TextScoreConfig) -> HashingVectorizer:
    return HashingVectorizer(n_features=config.n_features, ngram_range=(1, 2), alternate_sign=False,
                             norm="l2", lowercase=True, token_pattern=r"(?u)\b\w\w+\b", dtype=np.float32)


def hash_texts(title: pd.Series, body: pd.Series, config: TextScoreConfig | None = None):
    config = config or TextScoreConfig()
    title = title.astype("object").fillna("").astype(str)
    body = body.astype("object").fillna("").astype(str).str.slice(0, config.body_chars)
    docs = (title + " " + title + "\n" + body).tolist()
    return _vectorizer(config).transform(docs).tocsr()


def period_start(times_us: np.ndarray, config: TextScoreConfig | None = None) -> np.ndarray:
    config = config or TextScoreConfig()
    period = config.period_days * DAY_US
    return np.floor_divide(np.asarray(times_us, dtype="int64"), period) * period


def text_scores(X, positive: np.ndarray, known_at_us: np.ndarray, target_times_us: np.ndarray,
                target_rows: np.ndarray, config: TextScoreConfig | None = None) -> np.ndarray:
    config = config or TextScoreConfig()
    target_rows = np.asarray(target_rows, dtype="int64")
    out = np.full(len(target_rows), np.nan)
    if len(target_rows) == 0:
        return out
    starts = period_start(target_times_us, config)
    known = ~np.isnan(known_at_us)
    known_idx = np.nonzero(known)[0]
    # Training rows ordered by when their label became known (then canonical order): a prefix per period.
    order = known_idx[np.argsort(known_at_us[known_idx], kind="stable")]
    known_sorted = known_at_us[order]
    y_all = np.asarray(positive, dtype="int8")
    for p0 in np.unique(starts):
        n = int(np.searchsorted(known_sorted, p0, side="right"))
        rows = np.sort(order[max(0, n - config.max_train_rows):n])
        if len(rows) < config.min_train_rows:
            continue
        y = y_all[rows]
        if y.min() == y.max():
            continue
        model = SGDClassifier(loss="log_loss", alpha=config.alpha, max_iter=config.epochs, tol=None,
                              random_state=0, shuffle=True)
        model.fit(X[rows], y)
        sel = np.nonzero(starts == p0)[0]
        out[sel] = model.decision_function(X[target_rows[sel]])
    return out
