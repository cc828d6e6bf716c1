"""A repository history as an event store: what every point-in-time feature reads.

The store holds the issues and comments as numpy columns, the event logs built from them (who opened,
closed, settled a label, commented, was seen as a maintainer, when), the comments of each issue, the key
codes of repositories and authors, and the text score's training documents. Features never read a table:
they ask the logs for sums and first/last times at given instants (`features.compute`).

Issue rows, whatever their source (the lake's tables, a request's JSON), become the same `Rows`: raw
columns in, derived columns (keys, times in float64 microseconds, label outcome, maintainer, bot) out.
`overlay(rows)` gives a view of the store with those rows' own events in the logs: a row the history does
not hold counts the way stored issues do, a row it holds replaces its stored version. The store itself is
never changed, so one store serves concurrent requests.

Public API:
    Rows                                 dict of column arrays with .n, .take(idx) and the hashed texts .X
    raw_columns(issues: DataFrame) -> dict    a normalized issues table as raw columns
    EventStore.build(issues, comments=None, *, as_of=None, text_score=True, horizon_days=7) -> EventStore
    EventStore.from_bytes(data) / .to_bytes() -> bytes     the snapshot the service loads (npz, no pickle)
    store.issues: Rows (stored issues; text columns only when built from tables), store.as_of_us
    store.logs: {name: EventLog}, store.scorer: TextScorer | None, store.repo_names: KeyCoder
    store.rows(raw) -> Rows              raw columns derived with the store's key codes (new keys: new codes)
    store.find(rows) -> int64[n]         position of each row's issue in store.issues (-1: not stored)
    store.overlay(rows) -> StoreView     logs with the rows' own events; .comments_of(rows) as the store's
    store.comments_of(rows) -> (row, comment time, comment author, maintainer) for the rows' issues' comments
    LOGS                                 the event logs: table, key, time, row filter, weight columns
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from issue_assets.features.events import EventLog, KeyCoder, Overlay, factorize, stable_order, time_order
from issue_assets.features.frames import TS, normalize_comments, normalize_issues
from issue_assets.features.labels import DAY_US, DEFAULT_HORIZON_DAYS, horizon_us, outcome, snapshot_time, utc
from issue_assets.features.text_score import TextScoreConfig, TextScorer, hash_texts

MAINTAINER_ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR")
USER_BITS = 2**40  # (repo code, user) packed in one int64: repo * USER_BITS + user id (or 2**39 + login code)
ISSUE_BITS = 2**40  # (repo code, issue id or number) packed the same way
SNAPSHOT_FORMAT = 1

#: name: (table, key column, time column, rows counted (None: all), weight columns); "issue" = not a PR, "one" = 1
LOGS: dict[str, tuple] = {
    "r_created": ("iss", "rk", "c", None, ("issue", "pr")),
    "r_closed": ("iss", "rk", "cl", None, ("issue", "pr")),
    "r_label": ("iss", "rk", "known", "issue", ("one", "pos", "capped")),
    "a_created": ("iss", "ak", "c", None, ("issue", "pr")),
    "a_issue_closed": ("iss", "ak", "cl", "issue", ("one",)),
    "a_label": ("iss", "ak", "known", "issue", ("one", "pos")),
    "a_seen": ("iss", "ak", "fs", "maint", ("one",)),
    "r_comments": ("com", "rk", "ct", None, ("one",)),
    "a_comments": ("com", "ak", "ct", None, ("one", "maint")),
}
#: the stored issue columns the logs and lookups read (what a snapshot keeps)
EVENT_COLUMNS = ("id", "number", "rk", "ak", "c", "cl", "fs", "maint", "pr")
COMMENT_COLUMNS = ("rk", "ak", "number", "ct", "maint")


class Rows(dict):
    """Issue rows as column arrays; `X` holds their hashed texts when known (text score)."""

    def __init__(self, cols: dict, n: int, X=None):
        super().__init__(cols)
        self.n = n
        self.X = X

    def take(self, idx: np.ndarray) -> Rows:
        return Rows({k: v[idx] for k, v in self.items()}, len(idx), None if self.X is None else self.X[idx])


def _us(series: pd.Series) -> np.ndarray:
    values = series.astype(TS).array.asi8
    out = values.astype("float64")
    out[values == np.iinfo("int64").min] = np.nan
    return out


def _objects(series: pd.Series) -> np.ndarray:
    """A string column as an object ndarray (missing values as pd.NA: replacing them costs a scan)."""
    return series.to_numpy(dtype=object)


def raw_columns(issues: pd.DataFrame) -> dict[str, np.ndarray]:
    """A normalized issues table (`frames.normalize_issues`) as the raw columns `EventStore.rows` reads."""
    n = len(issues)
    uid = issues["user_id"]
    return {
        "repo": _objects(issues["repo"]), "id": issues["id"].to_numpy(dtype="int64"),
        "number": issues["number"].to_numpy(dtype="int64"),
        "title": _objects(issues["title"]), "body": _objects(issues["body"]),
        "labels": _objects(issues["labels"]) if "labels" in issues else np.full(n, "[]", dtype=object),
        "refc": issues["comments"].fillna(0).to_numpy(dtype="float64") if "comments" in issues else np.zeros(n),
        "user_login": _objects(issues["user_login"]), "user_type": _objects(issues["user_type"]),
        "user_id": uid.to_numpy(dtype="float64", na_value=np.nan),
        "author_association": _objects(issues["author_association"]),
        "pr": issues["is_pull_request"].to_numpy(dtype=bool),
        "c": _us(issues["created_at"]), "cl": _us(issues["closed_at"]), "fs": _us(issues["first_seen_at"]),
    }


def _flags(values: np.ndarray, test) -> np.ndarray:
    """test(distinct non-missing value) per row, False for missing: one call per distinct value."""
    codes, uniques = factorize(values)
    return np.append(np.array([bool(test(u)) for u in uniques], dtype=bool), False)[codes]


@dataclass
class _Coders:
    repos: KeyCoder
    logins: KeyCoder
    authors: KeyCoder


class EventStore:
    def __init__(self, issues: Rows, comments: dict[str, np.ndarray], coders: _Coders, scorer: TextScorer | None,
                 as_of_us: float, horizon: float):
        self.issues, self.comments, self.coders, self.scorer = issues, comments, coders, scorer
        self.as_of_us, self.horizon = float(as_of_us), float(horizon)
        self.repo_names = coders.repos
        self.logs, by_time = {}, {}
        for name, spec in LOGS.items():
            keys, times, weights = _events(spec, issues if spec[0] == "iss" else comments)
            group = (spec[0], spec[2], spec[3])  # logs over the same rows and times share one time sort
            if group not in by_time:
                by_time[group] = time_order(times)
            self.logs[name] = EventLog(keys, times, weights, by_time=by_time[group])
        self._uid = issues["rk"] * ISSUE_BITS + issues["id"]
        self._uid_order = np.argsort(self._uid, kind="stable")
        self._uid_sorted = self._uid[self._uid_order]
        ckey = comments["rk"] * ISSUE_BITS + comments["number"]
        order = stable_order(ckey)
        self._ckeys, self._corder = ckey[order], order

    # ---------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, issues: pd.DataFrame, comments: pd.DataFrame | None = None, *, as_of=None, text_score: bool = True,
              horizon_days: float = DEFAULT_HORIZON_DAYS, config: TextScoreConfig | None = None) -> EventStore:
        """From the lake's tables (any shape `frames.normalize_*` accepts)."""
        iss = normalize_issues(issues)
        com = normalize_comments(comments, sort=False)
        as_of_us = (utc(as_of) if as_of is not None else snapshot_time(iss)).value / 1000
        coders = _Coders(KeyCoder(), KeyCoder(), KeyCoder())
        h = horizon_us(horizon_days)
        rows = _derive(raw_columns(iss), coders, h, grow=True)
        crk = coders.repos.encode(com["repo"])
        cols = {
            "rk": crk, "number": com["issue_number"].to_numpy(dtype="int64"), "ct": _us(com["created_at"]),
            "ak": _author_codes(crk, com["user_id"].to_numpy(dtype="float64", na_value=np.nan),
                                _objects(com["user_login"]), coders, grow=True),
            "maint": _flags(_objects(com["author_association"]), MAINTAINER_ASSOCIATIONS.__contains__),
        }
        scorer = None
        if text_score:
            rows.X = hash_texts(rows["title"], rows["body"], config)
            # Documents: issues whose label is known at the as-of time (the period models pick theirs).
            doc = rows["issue"] & (rows["known"] <= as_of_us)
            scorer = TextScorer(rows.X, rows["pos"], np.where(doc, rows["known"], np.nan), config)
        return cls(rows, cols, coders, scorer, as_of_us, h)

    def to_bytes(self) -> bytes:
        """The snapshot: stored event columns, comments, key codes and text-score documents (npz)."""
        arrays = {f"iss_{k}": self.issues[k] for k in EVENT_COLUMNS}
        arrays.update({f"com_{k}": self.comments[k] for k in COMMENT_COLUMNS})
        arrays["repos"] = np.array(self.coders.repos.values().tolist(), dtype=str)
        arrays["logins"] = np.array(self.coders.logins.values().tolist(), dtype=str)
        arrays["authors"] = np.asarray(self.coders.authors.values(), dtype="int64")
        meta = {"format": SNAPSHOT_FORMAT, "as_of_us": self.as_of_us, "horizon_us": self.horizon}
        if self.scorer is not None:
            X = self.scorer.docs
            arrays.update(doc_data=X.data, doc_indices=X.indices, doc_indptr=X.indptr,
                          doc_positive=self.scorer.positive, doc_known=self.scorer.known_at_us)
            meta["text_score"] = {**self.scorer.config.__dict__, "shape": list(X.shape)}
        arrays["meta"] = np.array(json.dumps(meta))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EventStore:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"feature snapshot format {meta.get('format')!r} is not {SNAPSHOT_FORMAT}")
        issues = Rows({k: z[f"iss_{k}"] for k in EVENT_COLUMNS}, len(z["iss_id"]))
        _outcome_columns(issues, meta["horizon_us"])
        comments = {k: z[f"com_{k}"] for k in COMMENT_COLUMNS}
        coders = _Coders(KeyCoder.of(z["repos"].astype(object)), KeyCoder.of(z["logins"].astype(object)),
                         KeyCoder.of(z["authors"]))
        scorer = None
        if "text_score" in meta:
            ts = dict(meta["text_score"])
            shape = tuple(ts.pop("shape"))
            X = sp.csr_matrix((z["doc_data"], z["doc_indices"], z["doc_indptr"]), shape=shape)
            scorer = TextScorer(X, z["doc_positive"], z["doc_known"], TextScoreConfig(**ts))
        return cls(issues, comments, coders, scorer, meta["as_of_us"], meta["horizon_us"])

    # ---------------------------------------------------------------------------------- reading
    def rows(self, raw: dict[str, np.ndarray]) -> Rows:
        """Raw issue columns (a table's, a request's) as Rows keyed by this store's codes."""
        return _derive(raw, self.coders, self.horizon, grow=False)

    def find(self, rows: Rows) -> np.ndarray:
        uid = rows["rk"] * ISSUE_BITS + rows["id"]
        at = np.minimum(np.searchsorted(self._uid_sorted, uid), max(len(self._uid_sorted) - 1, 0))
        hit = (self._uid_sorted[at] == uid) if len(self._uid_sorted) else np.zeros(len(uid), bool)
        return np.where(hit, self._uid_order[at] if len(self._uid_sorted) else -1, -1)

    def comments_of(self, rows: Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(row, time, author code, maintainer) of every stored comment on the rows' issues."""
        key = rows["rk"] * ISSUE_BITS + rows["number"]
        lo = np.searchsorted(self._ckeys, key, side="left")
        lens = np.searchsorted(self._ckeys, key, side="right") - lo
        total = int(lens.sum())
        row = np.repeat(np.arange(rows.n), lens)
        pos = self._corder[np.repeat(lo - (np.cumsum(lens) - lens), lens) + np.arange(total)] if total \
            else np.zeros(0, dtype="int64")
        c = self.comments
        return row, c["ct"][pos], c["ak"][pos], c["maint"][pos]

    def overlay(self, rows: Rows) -> StoreView:
        """The store as if `rows` were in it: each row's events added, a stored version's events removed
        (nothing moves for a row equal to its stored version in everything the logs read)."""
        stored = self.find(rows)
        held = stored >= 0
        same = np.zeros(rows.n, bool)
        if held.any():
            old = self.issues.take(stored[held])
            same[held] = np.logical_and.reduce([_equal(old[k], rows[k][held]) for k in EVENT_COLUMNS[2:]])
        new = ~same
        if not new.any():
            return StoreView(self, self.logs)
        added, removed = rows.take(np.flatnonzero(new)), self.issues.take(stored[new & held])
        logs = {}
        for name, spec in LOGS.items():
            if spec[0] == "com":
                logs[name] = self.logs[name]
                continue
            plus, minus = (_events(spec, part) for part in (added, removed))
            if len(plus[0]) or len(minus[0]):  # (an open issue has no closing event, a non-maintainer no sighting)
                logs[name] = Overlay(self.logs[name], EventLog(*plus) if len(plus[0]) else None,
                                     EventLog(*minus) if len(minus[0]) else None)
            else:
                logs[name] = self.logs[name]
        return StoreView(self, logs)


class StoreView:
    """What the feature functions read: event logs (the store's, or overlaid) and the store's comments."""

    def __init__(self, store: EventStore, logs: dict):
        self.store, self.logs, self.scorer, self.repo_names = store, logs, store.scorer, store.repo_names

    def comments_of(self, rows: Rows):
        return self.store.comments_of(rows)


def _equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return (a == b) | (np.isnan(a) & np.isnan(b))
    return a == b


def _events(spec: tuple, t: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys, int64 times, weights) of one log from a table's columns."""
    _, key, time, within, weights = spec
    times = t[time]
    sel = ~np.isnan(times)
    if within is not None:
        sel &= t[within]
    w = np.empty((int(sel.sum()), len(weights)))
    for j, name in enumerate(weights):
        w[:, j] = 1.0 if name == "one" else t[name][sel]
    return t[key][sel], times[sel].astype("int64"), w


def _outcome_columns(rows: Rows, horizon: float) -> None:
    """pos / known / capped from c and cl (the label rule), and issue = not a pull request."""
    pos, known = outcome(rows["c"], rows["cl"], horizon)
    rows["pos"], rows["known"] = pos, known
    rows["capped"] = np.where(pos, rows["cl"] - rows["c"], horizon) / DAY_US
    rows["issue"] = ~rows["pr"]


def _author_codes(rk: np.ndarray, user_id: np.ndarray, login: np.ndarray, coders: _Coders, grow: bool) -> np.ndarray:
    """(repo, user id) as a dense code; a login stands in for a missing id; -1 for an unknown author. Not
    growing (a request against a shared store), keys the store lacks get new codes after its own."""
    has_id = ~np.isnan(user_id)
    who = np.where(has_id, user_id, 0).astype("int64") & (USER_BITS // 2 - 1)
    by_login = ~has_id & ~pd.isna(login)
    if by_login.any():
        names = login[by_login]
        codes = coders.logins.encode(names) if grow else _fresh(coders.logins.lookup(names), names,
                                                                len(coders.logins))
        who[by_login] = USER_BITS // 2 + codes
    packed = rk * USER_BITS + who
    unknown = ~(has_id | by_login) | (rk < 0)
    if grow:
        out = coders.authors.encode(np.where(unknown, -1, packed))
    else:
        out = _fresh(coders.authors.lookup(np.where(unknown, -1, packed)), packed, len(coders.authors))
    out[unknown] = -1
    return out


def _fresh(codes: np.ndarray, values: np.ndarray, start: int) -> np.ndarray:
    """Codes with each unknown (-1) value given a new code from `start` on, equal values alike."""
    missing = codes < 0
    if missing.any():
        new, _ = factorize(np.asarray(values, dtype=object)[missing])
        codes = codes.copy()
        codes[missing] = start + new
    return codes


def _derive(raw: dict[str, np.ndarray], coders: _Coders, horizon: float, grow: bool) -> Rows:
    """Raw columns -> Rows: key codes, label outcome, maintainer and bot flags (the one derivation)."""
    n = len(raw["id"])
    repo = raw["repo"]
    rk = coders.repos.encode(repo) if grow else _fresh(coders.repos.lookup(repo), repo, len(coders.repos))
    c, cl = raw["c"], raw["cl"]
    cl = np.where(cl < c, c, cl)  # closed before created: closed at once
    logins = raw["user_login"]
    rows = Rows({
        "repo": repo, "id": raw["id"], "number": raw["number"], "title": raw["title"], "body": raw["body"],
        "labels": raw["labels"], "refc": raw["refc"], "pr": raw["pr"], "rk": rk,
        "ak": _author_codes(rk, raw["user_id"], logins, coders, grow),
        "c": c, "cl": cl, "fs": raw["fs"],
        "maint": _flags(raw["author_association"], MAINTAINER_ASSOCIATIONS.__contains__),
        "bot": _flags(logins, lambda login: login.lower().endswith("[bot]")) | _flags(raw["user_type"], "Bot".__eq__),
    }, n)
    _outcome_columns(rows, horizon)
    return rows
