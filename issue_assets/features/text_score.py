"""A point-in-time text score: hashed words and bigrams, logistic regression, fitted per 60-day period.

A row whose prediction time t falls in the period [p0, p0 + period) gets its score from a model fitted only
on issues whose label was known at p0 (label_known_at <= p0 <= t). Periods are anchored at the Unix epoch,
not at the data, so the model of a period is the same whatever later data exists: that is what makes the
score pass the time-travel test. Hashing is scikit-learn's HashingVectorizer analyzer and FeatureHasher (no
vocabulary to fit), rows l2-normalised; the SGD
model has a fixed seed and sees its documents in a canonical order (created_at, repo, id). Each period's
model is fitted once (`TextScorer.model`) and serves every row of that period, one or a million;
periods whose known documents are the same share it.

Public API:
    TextScoreConfig(period_days=60, n_features=2**18, max_train_rows=50_000, min_train_rows=50,
                    body_chars=1000, alpha=1e-4, epochs=3)
    hash_texts(titles, bodies, config) -> scipy.sparse.csr_matrix (float32, l2-normalised rows)
    period_start(times_us: ndarray[int64], config) -> ndarray[int64]
    TextScorer(docs: csr_matrix, positive: bool[n], known_at_us: float64[n] (NaN: not a document), config)
        .docs, .positive, .known_at_us, .config       what it was made from
        .model(p0) -> SGDClassifier | None     the period's model (None: < min_train_rows or one class)
        .scores(X, t_us) -> float64[m]         decision function of each row's period model (NaN without one):
                                               X @ coef + intercept, SGDClassifier.decision_function's sum
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDClassifier

from issue_assets.features.labels import DAY_US
from issue_assets.features.text import clean


@dataclass(frozen=True)
class TextScoreConfig:
    period_days: int = 60
    n_features: int = 2**18
    max_train_rows: int = 50_000
    min_train_rows: int = 50
    body_chars: int = 1000
    alpha: float = 1e-4
    epochs: int = 3


_TOKENS = HashingVectorizer(ngram_range=(1, 2), lowercase=True, token_pattern=r"(?u)\b\w\w+\b").build_analyzer()
_HASHERS: dict[int, FeatureHasher] = {}


def hash_texts(titles, bodies, config: TextScoreConfig | None = None):
    """The title twice and the body's first `body_chars` characters: lower-cased words and word bigrams,
    hashed into n_features counts, each row scaled to unit length. What HashingVectorizer(norm="l2",
    alternate_sign=False).transform does, from its analyzer and FeatureHasher; the l2 scaling is done here
    because sklearn.preprocessing.normalize's input checks cost three times the hashing of a request's row."""
    config = config or TextScoreConfig()
    if config.n_features not in _HASHERS:
        _HASHERS[config.n_features] = FeatureHasher(n_features=config.n_features, input_type="string",
                                                     alternate_sign=False, dtype=np.float32)
    docs = (f"{t} {t}\n{b[:config.body_chars]}" for t, b in zip(map(clean, titles), map(clean, bodies), strict=True))
    X = _HASHERS[config.n_features].transform(_TOKENS(doc) for doc in docs).tocsr()
    row = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    lengths = np.sqrt(np.bincount(row, weights=np.square(X.data, dtype=np.float64), minlength=X.shape[0]))
    X.data /= lengths[row].astype(np.float32)
    return X


def period_start(times_us, config: TextScoreConfig | None = None) -> np.ndarray:
    period = (config or TextScoreConfig()).period_days * DAY_US
    return np.floor_divide(np.asarray(times_us, dtype="int64"), period) * period


class TextScorer:
    """The period models over a fixed set of training documents (thread-safe; each model fitted once)."""

    def __init__(self, docs, positive: np.ndarray, known_at_us: np.ndarray, config: TextScoreConfig | None = None):
        self.config = config or TextScoreConfig()
        self.docs = docs
        self.positive = np.asarray(positive, dtype="int8")
        self.known_at_us = known = np.asarray(known_at_us, dtype="float64")
        idx = np.flatnonzero(~np.isnan(known))
        # Documents ordered by when their label became known (then canonical order): a prefix per period.
        self._order = idx[np.argsort(known[idx], kind="stable")]
        self._known_sorted = known[self._order]
        # keyed by the number of documents known at the period's start, which alone decides its training rows:
        # periods with the same documents share one model, so the cache is bounded by the documents' history
        # (not by the scoring times requests ask for: every period after the last label shares one model)
        self._models: dict[int, SGDClassifier | None] = {}
        self._lock = threading.Lock()

    def model(self, p0: int) -> SGDClassifier | None:
        n = int(np.searchsorted(self._known_sorted, p0, side="right"))
        with self._lock:
            if n not in self._models:
                c = self.config
                rows = np.sort(self._order[max(0, n - c.max_train_rows):n])
                y = self.positive[rows]
                model = None
                if len(rows) >= c.min_train_rows and y.min() != y.max():
                    model = SGDClassifier(loss="log_loss", alpha=c.alpha, max_iter=c.epochs, tol=None,
                                          random_state=0, shuffle=True)
                    model.fit(self.docs[rows], y)
                self._models[n] = model
            return self._models[n]

    def scores(self, X, t_us) -> np.ndarray:
        starts = period_start(t_us, self.config)
        out = np.full(len(starts), np.nan)
        for p0 in np.unique(starts).tolist():
            model = self.model(p0)
            if model is not None:
                sel = np.flatnonzero(starts == p0)
                # decision_function is this product (safe_sparse_dot + intercept) after input checks that cost
                # more than the product for a request's one row
                out[sel] = (X[sel] if len(sel) < len(starts) else X) @ model.coef_[0] + model.intercept_[0]
        return out
