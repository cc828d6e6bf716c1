"""Point-in-time features and labels for issues, computed in bulk and updated incrementally.

Public API:
    compute_features(issues: DataFrame, comments: DataFrame | None = None, *, horizon_days: float = 7,
                     hours_after_creation: float = 0.0, include_pull_requests: bool = False,
                     text_score: bool = True, as_of: Timestamp | None = None) -> DataFrame
    update_features(previous: DataFrame, issues: DataFrame, comments: DataFrame | None = None, *,
                    changed_since: Timestamp, horizon_days: float = 7, hours_after_creation: float = 0.0,
                    include_pull_requests: bool = False, text_score: bool = True,
                    as_of: Timestamp | None = None) -> DataFrame
        `issues`/`comments` are the full current tables; rows of `previous` whose prediction_time is before
        `changed_since` (the earliest event time among the changes: new creations, closes, comments, first
        sightings) are carried, the rest recomputed. Equal to compute_features on the same tables.
    FeatureBuilder(*, horizon_days=7, hours_after_creation=0.0, include_pull_requests=False,
                   text_score=True, as_of=None)
        .fit(issues, comments=None) -> DataFrame            full computation; keeps sorted event logs
        .update(changed_issues, new_comments=None, as_of=None) -> DataFrame
            upsert the changed/new issue rows and new comments, find the earliest affected time itself
            (new creations, changed closes, first sightings, new comments; an edited title/body/author
            recomputes that row, and with the text score on, every row after its label settled),
            patch the sorted event logs in O(history) numpy and recompute only the affected rows.
            When the upsert only touches existing rows in place and appends newer issues (a daily sync),
            the tables and the result are patched in place; otherwise they are re-sorted.
        .frame: DataFrame                                   the current result
        .last_recomputed: int                               rows computed by the last fit/update
        .timings: dict[str, float]                          seconds per stage (load, event_logs, history,
                                                            text, text_score, reference, assemble, update)
    OUTPUT_KEY_COLUMNS, LABEL_COLUMNS

Output: one row per issue (pull requests only if include_pull_requests) with columns
    repo, id, number, created_at, prediction_time, <FEATURE_NAMES>, <REFERENCE_NAMES>,
    closed_within_7d (boolean, NA while unknown at as_of), label_known_at (NaT while unknown)
sorted by (created_at, repo, id). prediction_time = created_at + hours_after_creation. With
hours_after_creation > 0, issues already closed at their prediction time (nothing left to predict) and
issues whose prediction time is after as_of (not reached yet) are left out.

The point-in-time rule: a feature of issue X at t uses X's title, body, author and created_at; other
issues' created_at <= t and closed_at <= t; label outcomes settled (min(closed_at, created_at + horizon))
at or before t, never X's own; comments with created_at <= t; author associations seen on comments
written by t or on items first seen by t. Never X's labels, counts, assignees, milestone, reactions,
state, state_reason, locked or updated_at. as_of only decides which labels are known.
Authors are keyed by (repo, user id), falling back to the login; a missing user is an unknown author
with no history. Comments attach to issues by (repo, number).
"""

from __future__ import annotations

import time
import zlib
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from issue_assets.features.events import EventIndex, KeyCoder
from issue_assets.features.frames import TS, normalize_comments, normalize_issues
from issue_assets.features.labels import DEFAULT_HORIZON_DAYS, apply_as_of, snapshot_time
from issue_assets.features.registry import FEATURE_NAMES
from issue_assets.features.text import reference_columns, text_columns
from issue_assets.features.text_score import TextScoreConfig, hash_texts, text_scores

OUTPUT_KEY_COLUMNS = ["repo", "id", "number", "created_at", "prediction_time"]
LABEL_COLUMNS = ["closed_within_7d", "label_known_at"]
MAINTAINER_ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR")
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US


def _us(series: pd.Series) -> np.ndarray:
    """UTC timestamps -> float64 microseconds since the epoch (exact below 2**53), NaN for NaT."""
    values = series.astype(TS).dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    out = values.view("int64").astype("float64")
    out[np.isnat(values)] = np.nan
    return out


USER_BITS = 2**40


def _author_key(repo_codes: np.ndarray, user_id: pd.Series, login: pd.Series, logins: KeyCoder) -> np.ndarray:
    """(repo, user id) as one int64; a login stands in for a missing id; -1 for an unknown author."""
    uid = user_id.astype("Int64")
    has_id = uid.notna().to_numpy()
    who = uid.fillna(0).to_numpy(dtype="int64") % (USER_BITS // 2)
    by_login = ~has_id & login.notna().to_numpy()
    if by_login.any():
        who[by_login] = USER_BITS // 2 + logins.encode(login[by_login].to_numpy(dtype=object))
    key = repo_codes * USER_BITS + who
    key[~(has_id | by_login) | (repo_codes < 0)] = -1
    return key


def repo_code(repo: pd.Series) -> np.ndarray:
    codes = {name: zlib.crc32(str(name).encode("utf-8")) & 0x7FFFFFFF for name in repo.unique()}
    return repo.map(codes).to_numpy(dtype="float64")


class FeatureBuilder:
    def __init__(self, *, horizon_days: float = DEFAULT_HORIZON_DAYS, hours_after_creation: float = 0.0,
                 include_pull_requests: bool = False, text_score: bool = True, as_of=None,
                 text_config: TextScoreConfig | None = None):
        self.horizon_days = horizon_days
        self.hours_after_creation = float(hours_after_creation)
        self.include_pull_requests = include_pull_requests
        self.use_text_score = text_score
        self.text_config = text_config or TextScoreConfig()
        self._as_of_arg = as_of
        self.frame: pd.DataFrame | None = None
        self.timings: dict[str, float] = {}

    @contextmanager
    def _timed(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    # ------------------------------------------------------------------ tables and derived columns
    def _derive_issues(self, df: pd.DataFrame) -> pd.DataFrame:
        h_us = self.horizon_days * DAY_US
        df["_rk"] = self._repos.encode(df["repo"].to_numpy(dtype=object))
        df["_ak"] = self._authors.encode(_author_key(df["_rk"].to_numpy(), df["user_id"], df["user_login"],
                                                     self._logins))
        df["_uid"] = df["_rk"].to_numpy() * USER_BITS + df["id"].to_numpy()
        df["_c"] = _us(df["created_at"])
        df["_cl"] = _us(df["closed_at"])
        df["_fs"] = _us(df["first_seen_at"])
        dur = df["_cl"].to_numpy() - df["_c"].to_numpy()
        df["_pos"] = ~np.isnan(dur) & (dur <= h_us)
        df["_known"] = np.where(df["_pos"], df["_cl"], df["_c"] + h_us)
        df["_capped"] = np.where(df["_pos"], dur, h_us) / DAY_US
        df["_maint"] = df["author_association"].isin(MAINTAINER_ASSOCIATIONS).to_numpy(dtype=bool)
        df["_t"] = df["_c"] + self.hours_after_creation * HOUR_US
        df["_target"] = self.include_pull_requests | ~df["is_pull_request"].to_numpy()
        return df

    def _derive_comments(self, df: pd.DataFrame) -> pd.DataFrame:
        df["_rk"] = self._repos.encode(df["repo"].to_numpy(dtype=object))
        df["_ak"] = self._authors.encode(_author_key(df["_rk"].to_numpy(), df["user_id"], df["user_login"],
                                                     self._logins))
        df["_uid"] = df["_rk"].to_numpy() * USER_BITS + df["id"].to_numpy()
        df["_ct"] = _us(df["created_at"])
        df["_maint"] = df["author_association"].isin(MAINTAINER_ASSOCIATIONS).to_numpy(dtype=bool)
        return df

    def _events(self, since: float | None = None) -> dict[str, tuple]:
        """Every event log as (keys, times, weights), optionally only events at or after `since`."""
        iss, com = self.issues, self.comments
        pr = iss["is_pull_request"].to_numpy()
        rk, ak = iss["_rk"].to_numpy(), iss["_ak"].to_numpy()
        c, cl, fs = iss["_c"].to_numpy(), iss["_cl"].to_numpy(), iss["_fs"].to_numpy()
        known, pos, capped = iss["_known"].to_numpy(), iss["_pos"].to_numpy(), iss["_capped"].to_numpy()
        one = np.ones(len(iss))
        maint_seen = iss["_maint"].to_numpy()
        crk, cak, ct = com["_rk"].to_numpy(), com["_ak"].to_numpy(), com["_ct"].to_numpy()
        cmaint = com["_maint"].to_numpy().astype("float64")
        specs = {
            "r_issue_created": (~pr, rk, c, one),
            "r_issue_closed": (~pr, rk, cl, one),
            "r_pr_created": (pr, rk, c, one),
            "r_pr_closed": (pr, rk, cl, one),
            "r_label": (~pr, rk, known, np.column_stack([one, pos, capped])),
            "a_created": (np.ones(len(iss), bool), ak, c, np.column_stack([~pr, pr]).astype("float64")),
            "a_issue_closed": (~pr, ak, cl, one),
            "a_label": (~pr, ak, known, np.column_stack([one, pos])),
            "a_seen": (maint_seen, ak, fs, one),
            "r_comments": (np.ones(len(com), bool), crk, ct, np.ones(len(com))),
            "a_comments": (np.ones(len(com), bool), cak, ct, np.column_stack([np.ones(len(com)), cmaint])),
        }
        out = {}
        for name, (mask, keys, times, weights) in specs.items():
            sel = mask & ~np.isnan(times)
            if since is not None:
                sel &= times >= since
            w = np.asarray(weights, dtype="float64").reshape(len(times), weights.shape[1] if weights.ndim == 2 else 1)[sel]
            out[name] = (keys[sel], times[sel].astype("int64"), w)
        return out

    def _load(self, issues: pd.DataFrame, comments: pd.DataFrame | None) -> None:
        self._repos, self._authors, self._logins = KeyCoder(), KeyCoder(), KeyCoder()
        with self._timed("load"):
            self.issues = self._derive_issues(normalize_issues(issues))
            self.comments = self._derive_comments(normalize_comments(comments))
            self.as_of = self._resolve_as_of(self._as_of_arg)
        with self._timed("event_logs"):
            self.indexes = {name: EventIndex(*ev) for name, ev in self._events().items()}
        with self._timed("text_score"):
            self._X = hash_texts(self.issues["title"], self.issues["body"], self.text_config) \
                if self.use_text_score else None

    def _resolve_as_of(self, as_of) -> pd.Timestamp:
        if as_of is None:
            return snapshot_time(self.issues)
        ts = pd.Timestamp(as_of)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    # ------------------------------------------------------------------ which rows exist
    def _target_mask(self) -> np.ndarray:
        iss = self.issues
        mask = iss["_target"].to_numpy().copy()
        if self.hours_after_creation > 0:
            t, cl = iss["_t"].to_numpy(), iss["_cl"].to_numpy()
            mask &= np.isnan(cl) | (cl > t)
            mask &= t <= self.as_of.value / 1000
        return mask

    # ------------------------------------------------------------------ features for chosen rows
    def _features(self, rows: np.ndarray) -> pd.DataFrame:
        with self._timed("history"):
            iss = self.issues.iloc[rows]
            t = iss["_t"].to_numpy()
            f = self._history(iss)
            f.update(self._activity(iss, t))
        with self._timed("text"):
            f.update(text_columns(iss["title"], iss["body"]))
        with self._timed("text_score"):
            f["text_score"] = self._text_score(rows, t) if self.use_text_score else np.full(len(rows), np.nan)
        with self._timed("assemble"):
            created_at = iss["created_at"].reset_index(drop=True)
            columns = {
                "repo": iss["repo"].reset_index(drop=True), "id": iss["id"].to_numpy(),
                "number": iss["number"].to_numpy(), "created_at": created_at,
                "prediction_time": (created_at + pd.Timedelta(hours=self.hours_after_creation)).astype(TS),
            }
            columns.update({name: f[name] for name in FEATURE_NAMES})
        with self._timed("reference"):
            columns.update(reference_columns(iss))
        with self._timed("assemble"):
            return pd.DataFrame(columns)

    def _history(self, iss: pd.DataFrame) -> dict[str, np.ndarray]:
        ix = self.indexes
        rk, ak = iss["_rk"].to_numpy(), iss["_ak"].to_numpy()
        t = iss["_t"].to_numpy()
        ti = t.astype("int64")
        c, cl, known = iss["_c"].to_numpy(), iss["_cl"].to_numpy(), iss["_known"].to_numpy()
        pos, capped = iss["_pos"].to_numpy(), iss["_capped"].to_numpy()
        pr = iss["is_pull_request"].to_numpy()
        issue = ~pr
        has_author = ak >= 0

        by_author = np.lexsort((t, ak))
        by_repo = np.lexsort((t, rk))

        def sums(name, times, inclusive=True):
            keys, order = (rk, by_repo) if name.startswith("r_") else (ak, by_author)
            return ix[name].sums(keys, times, inclusive, order)

        def within(own_time, width_us):
            return (own_time <= t) & (own_time > t - width_us) if width_us else own_time <= t

        def window(name, width_us, own_time, own_mask, col=0):
            total = sums(name, ti)[:, col]
            if width_us:
                total = total - sums(name, ti - width_us)[:, col]
            return total - (own_mask & within(own_time, width_us))

        f: dict[str, np.ndarray] = {}
        # author
        own_issue_a = issue & has_author
        f["author_unknown"] = (~has_author).astype("float64")
        login = pa.array(iss["user_login"].to_numpy(dtype=object, na_value=None), type=pa.string())
        bot_login = pc.fill_null(pc.ends_with(pc.utf8_lower(login), "[bot]"), False).to_numpy(zero_copy_only=False)
        f["author_is_bot"] = (bot_login | (iss["user_type"] == "Bot").fillna(False).to_numpy(dtype=bool)) \
            .astype("float64")
        created = sums("a_created", ti)
        f["author_prior_issues"] = created[:, 0] - own_issue_a
        f["author_prior_prs"] = created[:, 1] - (pr & has_author)
        lab = sums("a_label", ti)
        own_lab = own_issue_a & (known <= t)
        f["author_prior_labelled"] = lab[:, 0] - own_lab
        f["author_prior_closed_7d"] = lab[:, 1] - (own_lab & pos)
        f["author_prior_closed_7d_rate"] = _ratio(f["author_prior_closed_7d"], f["author_prior_labelled"])
        closed = sums("a_issue_closed", ti)[:, 0] - (own_issue_a & (cl <= t))
        f["author_open_issues"] = f["author_prior_issues"] - closed
        first = ix["a_created"].first_time(ak)
        f["author_days_since_first"] = np.where(first < c, (t - first) / DAY_US, np.nan)
        last = ix["a_created"].last_time(ak, c.astype("int64"), inclusive=False, order=by_author)
        f["author_days_since_last"] = (t - last) / DAY_US
        f["author_issues_24h"] = window("a_created", DAY_US, c, own_issue_a)
        comments = sums("a_comments", ti)
        f["author_prior_comments"] = comments[:, 0]
        seen = sums("a_seen", ti)[:, 0]
        f["author_maintainer_known"] = ((comments[:, 1] + seen) > 0).astype("float64")
        for name in [n for n in f if n.startswith("author_") and n not in ("author_unknown", "author_is_bot")]:
            if name.startswith("author_days") or name.endswith("_rate"):
                f[name] = np.where(has_author, f[name], np.nan)
            else:
                f[name] = np.where(has_author, f[name], 0.0)
        # repository
        f["repo_code"] = repo_code(iss["repo"])
        opened = sums("r_issue_created", ti)[:, 0] - issue
        closed = sums("r_issue_closed", ti)[:, 0] - (issue & (cl <= t))
        f["repo_open_issues"] = opened - closed
        pr_opened = sums("r_pr_created", ti)[:, 0] - pr
        pr_closed = sums("r_pr_closed", ti)[:, 0] - (pr & (cl <= t))
        f["repo_open_prs"] = pr_opened - pr_closed
        f["repo_issues_opened_24h"] = window("r_issue_created", DAY_US, c, issue)
        f["repo_issues_opened_7d"] = window("r_issue_created", 7 * DAY_US, c, issue)
        f["repo_issues_opened_30d"] = window("r_issue_created", 30 * DAY_US, c, issue)
        f["repo_issues_closed_7d"] = window("r_issue_closed", 7 * DAY_US, cl, issue)
        f["repo_issues_closed_30d"] = window("r_issue_closed", 30 * DAY_US, cl, issue)
        f["repo_prs_opened_7d"] = window("r_pr_created", 7 * DAY_US, c, pr)
        f["repo_burst_ratio"] = f["repo_issues_opened_24h"] * 30.0 / (f["repo_issues_opened_30d"] + 1.0)
        lab_all = sums("r_label", ti)
        own_l = issue & (known <= t)
        lab_all = lab_all - own_l[:, None] * np.column_stack([np.ones(len(t)), pos, capped])
        lab_old = sums("r_label", ti - 90 * DAY_US)
        own_old = issue & (known <= t - 90 * DAY_US)
        lab_old = lab_old - own_old[:, None] * np.column_stack([np.ones(len(t)), pos, capped])
        lab90 = lab_all - lab_old
        f["repo_labelled_issues"] = lab_all[:, 0]
        f["repo_closed_7d_rate"] = _ratio(lab_all[:, 1], lab_all[:, 0])
        f["repo_closed_7d_rate_90d"] = _ratio(lab90[:, 1], lab90[:, 0])
        f["repo_capped_close_days_90d"] = _ratio(lab90[:, 2], lab90[:, 0])
        f["repo_comments_7d"] = window("r_comments", 7 * DAY_US, c, np.zeros(len(t), bool))
        first_item = np.fmin(ix["r_issue_created"].first_time(rk), ix["r_pr_created"].first_time(rk))
        f["repo_age_days"] = (t - first_item) / DAY_US
        # calendar
        f["created_hour"] = iss["created_at"].dt.hour.to_numpy(dtype="float64")
        f["created_dow"] = iss["created_at"].dt.dayofweek.to_numpy(dtype="float64")
        return f

    def _activity(self, iss: pd.DataFrame, t: np.ndarray) -> dict[str, np.ndarray]:
        n = len(iss)
        rows = pd.DataFrame({"_row": np.arange(n), "_rk": iss["_rk"].to_numpy(), "number": iss["number"].to_numpy(),
                             "_t": t, "_c": iss["_c"].to_numpy(), "_ak": iss["_ak"].to_numpy()})
        com = self.comments[["_rk", "issue_number", "_ak", "_ct", "_maint"]].rename(
            columns={"issue_number": "number", "_ak": "_cak"})
        m = rows.merge(com, on=["_rk", "number"], how="inner")
        m = m.loc[m["_ct"].to_numpy() <= m["_t"].to_numpy()]
        by_author = (m["_cak"].to_numpy() == m["_ak"].to_numpy()) & (m["_ak"].to_numpy() >= 0)
        others = m.loc[~by_author]
        counts = np.bincount(m["_row"], minlength=n).astype("float64")
        author_counts = np.bincount(m.loc[by_author, "_row"], minlength=n).astype("float64")
        participants = np.bincount(others.drop_duplicates(["_row", "_cak"])["_row"], minlength=n).astype("float64")
        first = np.full(n, np.nan)
        g = others.groupby("_row")["_ct"].min()
        first[g.index.to_numpy()] = g.to_numpy()
        first_m = np.full(n, np.nan)
        gm = others.loc[others["_maint"]].groupby("_row")["_ct"].min()
        first_m[gm.index.to_numpy()] = gm.to_numpy()
        c = rows["_c"].to_numpy()
        return {
            "hours_observed": np.full(n, self.hours_after_creation),
            "comments_so_far": counts,
            "participants_so_far": participants,
            "author_comments_so_far": author_counts,
            "hours_to_first_response": (first - c) / HOUR_US,
            "hours_to_first_maintainer_response": (first_m - c) / HOUR_US,
        }

    def _text_score(self, rows: np.ndarray, t: np.ndarray) -> np.ndarray:
        iss = self.issues
        docs = iss["_target"].to_numpy()
        known = iss["_known"].to_numpy().copy()
        as_of_us = self.as_of.value / 1000
        known[~docs | (known > as_of_us)] = np.nan
        return text_scores(self._X, iss["_pos"].to_numpy(), known, t.astype("int64"), rows, self.text_config)

    # ------------------------------------------------------------------ labels and assembly
    def _labels(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Labels at as_of. `frame` holds exactly the target rows, in the issues table's order."""
        target = self._target_mask()
        ids = self.issues["id"].to_numpy()[target]
        if len(ids) != len(frame) or not (ids == frame["id"].to_numpy()).all():
            raise AssertionError("feature rows out of step with the issues table")
        created = frame["created_at"]
        closed = pd.Series(self.issues["closed_at"].array[target], index=frame.index).astype(TS)
        closed = closed.where(closed <= self.as_of)
        h = pd.Timedelta(days=self.horizon_days)
        positive = closed.notna() & (closed - created <= h)
        known_at = closed.where(positive, created + h)
        label, known = apply_as_of(positive, known_at, self.as_of)
        frame["closed_within_7d"] = label
        frame["label_known_at"] = known.astype(TS)
        return frame

    def _assemble(self, recompute: np.ndarray, previous: pd.DataFrame | None) -> pd.DataFrame:
        self.last_recomputed = int(recompute.sum())
        fresh = self._features(np.nonzero(recompute)[0])
        with self._timed("assemble"):
            carry = self._target_mask() & ~recompute
            if previous is not None and carry.any():
                target = self.issues.loc[carry, ["repo", "id"]]
                carried = previous.merge(target, on=["repo", "id"], how="inner")[list(fresh.columns)]
                fresh = pd.concat([carried, fresh], ignore_index=True) if len(fresh) else carried
                fresh = fresh.sort_values(["created_at", "repo", "id"], kind="stable").reset_index(drop=True)
            return self._labels(fresh)

    # ------------------------------------------------------------------ public
    def fit(self, issues: pd.DataFrame, comments: pd.DataFrame | None = None) -> pd.DataFrame:
        self._load(issues, comments)
        self.frame = self._assemble(self._target_mask(), None)
        self._in_frame = self._target_mask()
        self._uid_index = None
        return self.frame

    def recompute_since(self, previous: pd.DataFrame, changed_since) -> pd.DataFrame:
        since = pd.Timestamp(changed_since)
        since = since.tz_localize("UTC") if since.tzinfo is None else since.tz_convert("UTC")
        target = self._target_mask()
        known = pd.MultiIndex.from_arrays([previous["repo"], previous["id"]])
        seen = pd.MultiIndex.from_arrays([self.issues["repo"], self.issues["id"]]).isin(known)
        recompute = target & ((self.issues["_t"].to_numpy() >= since.value / 1000) | ~seen)
        self.frame = self._assemble(recompute, previous)
        return self.frame

    def update(self, changed_issues: pd.DataFrame, new_comments: pd.DataFrame | None = None,
               as_of=None) -> pd.DataFrame:
        if self.frame is None:
            raise RuntimeError("call fit() before update()")
        with self._timed("update_tables"):
            changed = self._derive_issues(normalize_issues(changed_issues))
            comments = self._derive_comments(normalize_comments(new_comments))
            pos = self._issue_index().get_indexer(changed["_uid"].to_numpy())
            since, own_uids = self._earliest_change(changed, pos, comments)
            fast = self._upsert_issues(changed, pos)
            if len(comments):
                self._upsert_comments(comments)
            self.as_of = self._resolve_as_of(as_of if as_of is not None else self._as_of_arg)
        with self._timed("event_logs"):
            if np.isfinite(since):
                for name, ev in self._events(since).items():
                    self.indexes[name].replace_from(int(since), *ev)
        target = self._target_mask()
        t = self.issues["_t"].to_numpy()
        uids = self.issues["_uid"].to_numpy()
        own = np.isin(uids, own_uids) if len(own_uids) else np.zeros(len(uids), bool)
        recompute = target & ((t >= since) | ~self._in_frame | own)
        if fast and self.hours_after_creation == 0:
            self.frame = self._patch_frame(recompute, target)
        else:
            self.frame = self._assemble(recompute, self.frame)
        self._in_frame = target
        return self.frame

    def _issue_index(self) -> pd.Index:
        if self._uid_index is None:
            self._uid_index = pd.Index(self.issues["_uid"].to_numpy())
        return self._uid_index

    def _upsert_issues(self, changed: pd.DataFrame, pos: np.ndarray) -> bool:
        """Put the changed rows in the table. True when it could be done in place plus an append."""
        exists = pos >= 0
        old_c = self.issues["_c"].to_numpy()
        new_c = changed["_c"].to_numpy()
        last = old_c[-1] if len(old_c) else -np.inf
        fresh = changed.loc[~exists]
        fast = bool((old_c[pos[exists]] == new_c[exists]).all()) and \
            (len(fresh) == 0 or (fresh["_c"].min() > last and fresh["_c"].is_unique))
        hashed = None
        if self.use_text_score:
            with self._timed("text_score"):
                hashed = hash_texts(changed["title"], changed["body"], self.text_config)
        if fast:
            # Same creation time, same place: overwrite in place; newer issues go at the end.
            where = pos[exists]
            if len(where):
                for j, col in enumerate(self.issues.columns):
                    self.issues.iloc[where, j] = changed[col].to_numpy()[exists]
            if len(fresh):
                self.issues = pd.concat([self.issues, fresh], ignore_index=True)
                self._uid_index = self._issue_index().append(pd.Index(fresh["_uid"].to_numpy()))
                self._in_frame = np.concatenate([self._in_frame, np.zeros(len(fresh), bool)])
            if hashed is not None:
                n_old = self._X.shape[0]
                take = np.arange(n_old + len(fresh))
                take[where] = n_old + np.nonzero(exists)[0]
                take[n_old:] = n_old + np.nonzero(~exists)[0]
                self._X = sp.vstack([self._X, hashed], format="csr")[take]
            return True
        replaced = np.zeros(len(self.issues), bool)
        replaced[pos[exists]] = True
        merged = pd.concat([self.issues.loc[~replaced], changed], ignore_index=True)
        # (created_at, repo name, id): the order normalize_issues gives a full table.
        names = np.asarray(self._repos._index.astype(str))
        rank = np.empty(len(names), dtype="int64")
        rank[np.argsort(names, kind="stable")] = np.arange(len(names))
        order = np.lexsort((merged["id"].to_numpy(), rank[merged["_rk"].to_numpy()], merged["_c"].to_numpy()))
        in_frame = np.concatenate([self._in_frame[~replaced], np.zeros(len(changed), bool)])
        self._in_frame = in_frame[order]
        self.issues = merged.iloc[order].reset_index(drop=True)
        self._uid_index = None
        if hashed is not None:
            self._X = sp.vstack([self._X[np.nonzero(~replaced)[0]], hashed], format="csr")[order]
        return False

    def _upsert_comments(self, comments: pd.DataFrame) -> None:
        hit = pd.Index(self.comments["_uid"].to_numpy()).get_indexer(comments["_uid"].to_numpy())
        kept = self.comments
        if (hit >= 0).any():
            gone = np.zeros(len(self.comments), bool)
            gone[hit[hit >= 0]] = True
            kept = self.comments.loc[~gone]
        self.comments = pd.concat([kept, comments], ignore_index=True)

    def _patch_frame(self, recompute: np.ndarray, target: np.ndarray) -> pd.DataFrame:
        """Frame rows follow the table's target rows: overwrite the recomputed ones, append the new ones."""
        frame = self.frame
        n_old = len(frame)
        slot = np.cumsum(target) - 1
        self.last_recomputed = int(recompute.sum())
        rows = np.nonzero(recompute)[0]
        fresh = self._features(rows)
        with self._timed("assemble"):
            at = slot[rows]
            inside = at < n_old
            if inside.any():
                for col in fresh.columns:
                    frame.iloc[at[inside], frame.columns.get_loc(col)] = fresh[col].to_numpy()[inside]
            if (~inside).any():
                tail = fresh.loc[~inside]
                frame = pd.DataFrame({col: _append(frame[col], tail[col]) for col in fresh.columns})
            return self._labels(frame)

    def _earliest_change(self, changed: pd.DataFrame, pos: np.ndarray,
                         comments: pd.DataFrame) -> tuple[float, np.ndarray]:
        """Earliest event time the upserts can move, and the uids of rows whose own fields changed."""
        exists = pos >= 0
        times = [changed["_c"].to_numpy()[~exists]]
        p = self.issues.iloc[pos[exists]].reset_index(drop=True)
        n = changed.loc[exists].reset_index(drop=True)

        def differs(col):
            a, b = p[col].astype("object").to_numpy(), n[col].astype("object").to_numpy()
            return ~((a == b) | (pd.isna(a) & pd.isna(b)))

        closed_changed = differs("_cl")
        times.append(np.fmin(p["_cl"].to_numpy(), n["_cl"].to_numpy())[closed_changed])
        seen_changed = differs("_fs") | differs("author_association")
        times.append(np.fmin(p["_fs"].to_numpy(), n["_fs"].to_numpy())[seen_changed])
        identity = differs("_c") | differs("_ak") | differs("is_pull_request") | differs("number")
        times.append(np.fmin(p["_c"].to_numpy(), n["_c"].to_numpy())[identity])
        own = differs("title") | differs("body") | differs("user_type") | differs("user_login") | identity
        if self.use_text_score:
            # An edited text changes the training documents of every model fitted after its label settled.
            times.append(np.fmin(p["_known"].to_numpy(), n["_known"].to_numpy())[own])
        if len(comments):
            times.append(comments["_ct"].to_numpy())
            hit = pd.Index(self.comments["_uid"].to_numpy()).get_indexer(comments["_uid"].to_numpy())
            times.append(self.comments["_ct"].to_numpy()[hit[hit >= 0]])
        all_times = np.concatenate([np.asarray(x, dtype="float64") for x in times])
        all_times = all_times[~np.isnan(all_times)]
        since = float(all_times.min()) if len(all_times) else np.inf
        return since, n.loc[own, "_uid"].to_numpy()


def _append(head: pd.Series, tail: pd.Series):
    if isinstance(head.dtype, np.dtype) and head.dtype == tail.dtype:
        return np.concatenate([head.to_numpy(), tail.to_numpy()])
    return head.array._concat_same_type([head.array, tail.array.astype(head.dtype)])


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(len(num), np.nan), where=den > 0)


def compute_features(issues: pd.DataFrame, comments: pd.DataFrame | None = None, *,
                     horizon_days: float = DEFAULT_HORIZON_DAYS, hours_after_creation: float = 0.0,
                     include_pull_requests: bool = False, text_score: bool = True, as_of=None) -> pd.DataFrame:
    builder = FeatureBuilder(horizon_days=horizon_days, hours_after_creation=hours_after_creation,
                             include_pull_requests=include_pull_requests, text_score=text_score, as_of=as_of)
    return builder.fit(issues, comments)


def update_features(previous: pd.DataFrame, issues: pd.DataFrame, comments: pd.DataFrame | None = None, *,
                    changed_since, horizon_days: float = DEFAULT_HORIZON_DAYS, hours_after_creation: float = 0.0,
                    include_pull_requests: bool = False, text_score: bool = True, as_of=None) -> pd.DataFrame:
    builder = FeatureBuilder(horizon_days=horizon_days, hours_after_creation=hours_after_creation,
                             include_pull_requests=include_pull_requests, text_score=text_score, as_of=as_of)
    builder._load(issues, comments)
    return builder.recompute_since(previous, changed_since)
