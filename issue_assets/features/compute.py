"""The features, each defined once as a function over columns, and the feature table at several ages.

A feature of issue X at prediction time t uses X's title, body, author and created_at; other issues'
created_at <= t and closed_at <= t; label outcomes settled (min(closed_at, created_at + horizon)) at or
before t, never X's own; comments with created_at <= t; author associations seen on comments written by t
or on items first seen by t. Never X's labels, counts, assignees, milestone, reactions, state, state_reason,
locked or updated_at. The functions read an event store (or a view of it with a request's rows overlaid):
the same code computes one request row and a million training rows, each at its own t.

Public API:
    AGES_HOURS = (0, 6, 24, 72)          the ages of the rows of the feature table and the training sets
    feature_columns(view, rows, t_us) -> {name: float64 ndarray} for catalog.FEATURE_NAMES
    compute_features(issues, comments=None, *, ages_hours=AGES_HOURS, as_of=None, text_score=True,
                     include_pull_requests=False) -> DataFrame
    update_features(previous, issues, comments=None, *, changed_since, ...same options) -> (DataFrame, recomputed)
        rows of `previous` whose prediction time is before `changed_since` (the earliest event a change moved)
        are carried, the rest computed: equal to compute_features on the same tables
    feature_table(store, targets, t_us) -> DataFrame      rows of stored issues (positions) at times t
    OUTPUT_KEY_COLUMNS, LABEL_COLUMNS

The feature table holds, for every issue (pull requests only if include_pull_requests) and every age a:
the row at t = created_at + a if the issue is still open at t (age 0: always) and t is not after the as-of
time. Rows are keyed by (repo, id, age_hours), sorted by (created_at, repo, id, age_hours); the label and
label_known_at are the issue's (NA / NaT while unknown at as_of); `hours_observed` is the age.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from issue_assets.features.catalog import AGES_HOURS, FEATURE_NAMES, REFERENCE_NAMES
from issue_assets.features.events import Queries, factorize, time_order
from issue_assets.features.labels import DAY_US, DEFAULT_HORIZON_DAYS, HOUR_US, known_by
from issue_assets.features.store import EventStore, Rows
from issue_assets.features.text import reference_columns, text_columns
from issue_assets.features.text_score import hash_texts

OUTPUT_KEY_COLUMNS = ["repo", "id", "number", "age_hours", "created_at", "prediction_time"]
LABEL_COLUMNS = ["closed_within_7d", "label_known_at"]
_NAT = np.iinfo("int64").min


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(len(num), np.nan), where=den > 0)


def repo_code(names: np.ndarray) -> np.ndarray:
    """A stable number per repository name (crc32), for cross-repository training."""
    codes, uniques = factorize(np.asarray(names, dtype=object))
    crc = np.array([zlib.crc32(str(u).encode("utf-8")) & 0x7FFFFFFF for u in uniques] + [0], dtype="float64")
    return crc[codes]


def history(view, rows: Rows, t: np.ndarray) -> dict[str, np.ndarray]:
    """Author, repository and calendar features: sums of the event logs at t, minus the row's own events."""
    logs = view.logs
    rk, ak = rows["rk"], rows["ak"]
    ti = t.astype("int64")
    c, cl, known, pos, capped = rows["c"], rows["cl"], rows["known"], rows["pos"], rows["capped"]
    pr = rows["pr"]
    issue = ~pr
    has_author = ak >= 0
    n = len(t)
    # Each log is searched once per set of shifts, with the queries in (key, time) order (one time sort).
    by_time = time_order(ti)
    qa, qr = Queries(ak, ti, by_time=by_time), Queries(rk, ti, by_time=by_time)

    def sums(name, *shifts):
        return logs[name].sums_at(qr if name.startswith("r_") else qa, shifts or (0,))

    def within(own_time, width_us):
        return (own_time <= t) & (own_time > t - width_us)

    f: dict[str, np.ndarray] = {}
    own_issue_a = issue & has_author
    f["author_unknown"] = (~has_author).astype("float64")
    f["author_is_bot"] = rows["bot"].astype("float64")
    created, created_24h = sums("a_created", 0, -DAY_US)
    f["author_prior_issues"] = created[:, 0] - own_issue_a
    f["author_prior_prs"] = created[:, 1] - (pr & has_author)
    lab = sums("a_label")[0]
    own_lab = own_issue_a & (known <= t)
    f["author_prior_labelled"] = lab[:, 0] - own_lab
    f["author_prior_closed_7d"] = lab[:, 1] - (own_lab & pos)
    f["author_prior_closed_7d_rate"] = _ratio(f["author_prior_closed_7d"], f["author_prior_labelled"])
    closed = sums("a_issue_closed")[0][:, 0] - (own_issue_a & (cl <= t))
    f["author_open_issues"] = f["author_prior_issues"] - closed
    first = logs["a_created"].first_time(ak)
    f["author_days_since_first"] = np.where(first < c, (t - first) / DAY_US, np.nan)
    last = logs["a_created"].last_time_at(qa.with_times(c.astype("int64")), False)
    f["author_days_since_last"] = (t - last) / DAY_US
    f["author_issues_24h"] = created[:, 0] - created_24h[:, 0] - (own_issue_a & within(c, DAY_US))
    comments = sums("a_comments")[0]
    f["author_prior_comments"] = comments[:, 0]
    seen = sums("a_seen")[0][:, 0]
    f["author_maintainer_known"] = ((comments[:, 1] + seen) > 0).astype("float64")
    for name in [k for k in f if k.startswith("author_") and k not in ("author_unknown", "author_is_bot")]:
        missing = np.nan if name.startswith("author_days") or name.endswith("_rate") else 0.0
        f[name] = np.where(has_author, f[name], missing)

    f["repo_code"] = repo_code(rows["repo"])
    opened, opened_1d, opened_7d, opened_30d = sums("r_created", 0, -DAY_US, -7 * DAY_US, -30 * DAY_US)
    shut, shut_7d, shut_30d = sums("r_closed", 0, -7 * DAY_US, -30 * DAY_US)
    own_closed = cl <= t
    f["repo_open_issues"] = (opened[:, 0] - issue) - (shut[:, 0] - (issue & own_closed))
    f["repo_open_prs"] = (opened[:, 1] - pr) - (shut[:, 1] - (pr & own_closed))
    f["repo_issues_opened_24h"] = (opened - opened_1d)[:, 0] - (issue & within(c, DAY_US))
    f["repo_issues_opened_7d"] = (opened - opened_7d)[:, 0] - (issue & within(c, 7 * DAY_US))
    f["repo_issues_opened_30d"] = (opened - opened_30d)[:, 0] - (issue & within(c, 30 * DAY_US))
    f["repo_issues_closed_7d"] = (shut - shut_7d)[:, 0] - (issue & within(cl, 7 * DAY_US))
    f["repo_issues_closed_30d"] = (shut - shut_30d)[:, 0] - (issue & within(cl, 30 * DAY_US))
    f["repo_prs_opened_7d"] = (opened - opened_7d)[:, 1] - (pr & within(c, 7 * DAY_US))
    f["repo_burst_ratio"] = f["repo_issues_opened_24h"] * 30.0 / (f["repo_issues_opened_30d"] + 1.0)
    own_w = np.column_stack([np.ones(n), pos, capped])
    label_now, label_90d = sums("r_label", 0, -90 * DAY_US)
    lab_all = label_now - (issue & (known <= t))[:, None] * own_w
    lab90 = lab_all - (label_90d - (issue & (known <= t - 90 * DAY_US))[:, None] * own_w)
    f["repo_labelled_issues"] = lab_all[:, 0]
    f["repo_closed_7d_rate"] = _ratio(lab_all[:, 1], lab_all[:, 0])
    f["repo_closed_7d_rate_90d"] = _ratio(lab90[:, 1], lab90[:, 0])
    f["repo_capped_close_days_90d"] = _ratio(lab90[:, 2], lab90[:, 0])
    repo_comments, repo_comments_7d = sums("r_comments", 0, -7 * DAY_US)
    f["repo_comments_7d"] = (repo_comments - repo_comments_7d)[:, 0]
    f["repo_age_days"] = (t - logs["r_created"].first_time(rk)) / DAY_US

    created_us = c.astype("int64")
    f["created_hour"] = ((created_us // HOUR_US) % 24).astype("float64")
    f["created_dow"] = ((created_us // DAY_US + 3) % 7).astype("float64")
    return f


def activity(view, rows: Rows, t: np.ndarray) -> dict[str, np.ndarray]:
    """The issue's own comments up to t (the stored ones: a request brings none of its own)."""
    n = len(t)
    c, ak = rows["c"], rows["ak"]
    row, ct, cak, maint = view.comments_of(rows)
    ok = ct <= t[row]
    row, ct, cak, maint = row[ok], ct[ok], cak[ok], maint[ok]
    own_ak = ak[row]
    by_author = (cak == own_ak) & (own_ak >= 0)
    other = ~by_author
    orow, oct, ocak = row[other], ct[other], cak[other]
    width = int(ocak.max()) + 2 if len(ocak) else 1
    first = np.full(n, np.inf)
    np.minimum.at(first, orow, oct)
    first_m = np.full(n, np.inf)
    np.minimum.at(first_m, orow[maint[other]], oct[maint[other]])
    first[np.isinf(first)] = np.nan
    first_m[np.isinf(first_m)] = np.nan
    return {
        "hours_observed": (t - c) / HOUR_US,
        "comments_so_far": np.bincount(row, minlength=n).astype("float64"),
        "participants_so_far": np.bincount(np.unique(orow * width + (ocak + 1)) // width, minlength=n).astype("float64"),
        "author_comments_so_far": np.bincount(row[by_author], minlength=n).astype("float64"),
        "hours_to_first_response": (first - c) / HOUR_US,
        "hours_to_first_maintainer_response": (first_m - c) / HOUR_US,
    }


def feature_columns(view, rows: Rows, t: np.ndarray, text: dict | None = None) -> dict[str, np.ndarray]:
    """Every feature of the catalog for `rows` at times `t` (float64 microseconds). `text`: the rows' own
    text features when already computed (they do not depend on t)."""
    t = np.asarray(t, dtype="float64")
    f = history(view, rows, t)
    f.update(activity(view, rows, t))
    f.update(text if text is not None else text_columns(rows["title"], rows["body"]))
    if view.scorer is not None:
        if rows.X is None:
            rows.X = hash_texts(rows["title"], rows["body"], view.scorer.config)
        f["text_score"] = view.scorer.scores(rows.X, t)
    else:
        f["text_score"] = np.full(len(t), np.nan)
    return {name: f[name] for name in FEATURE_NAMES}


def _ts(us: np.ndarray) -> pd.arrays.DatetimeArray:
    values = np.where(np.isnan(us), _NAT, us).astype("int64") if us.dtype.kind == "f" else us
    return pd.DatetimeIndex(values.view("M8[us]")).tz_localize("UTC").array


def feature_table(store: EventStore, targets: np.ndarray, t: np.ndarray) -> pd.DataFrame:
    """Rows of stored issues (positions `targets`) at times `t`, with their labels at the store's as-of time."""
    rows = store.issues.take(targets)
    issues, inverse = np.unique(targets, return_inverse=True)  # own text once per issue, not per age
    text = {k: v[inverse] for k, v in text_columns(store.issues["title"][issues], store.issues["body"][issues]).items()}
    f = feature_columns(store, rows, t, text)
    decided, positive, known_at = known_by(rows["c"], rows["cl"], store.as_of_us, store.horizon)
    ref = reference_columns(rows["labels"], rows["refc"])
    ref.update(ref_title_length=f["title_length"], ref_body_length=f["body_length"], ref_hour=f["created_hour"])
    cols = {"repo": pd.array(rows["repo"], dtype="string"), "id": rows["id"], "number": rows["number"],
            "age_hours": np.round((t - rows["c"]) / HOUR_US, 6), "created_at": _ts(rows["c"]),
            "prediction_time": _ts(t)}
    cols.update(f)
    cols.update({name: ref[name] for name in REFERENCE_NAMES})
    cols["closed_within_7d"] = pd.arrays.BooleanArray(positive, ~decided)
    cols["label_known_at"] = _ts(known_at)
    return pd.DataFrame(cols, copy=False)


def target_rows(store: EventStore, ages_hours=AGES_HOURS, include_pull_requests: bool = False):
    """(issue positions, prediction times) of the feature table's rows, in (created_at, repo, id, age) order."""
    iss = store.issues
    parts, times = [], []
    base = np.ones(iss.n, bool) if include_pull_requests else iss["issue"].copy()
    for age in sorted(ages_hours):
        t = iss["c"] + age * HOUR_US
        keep = base.copy()
        if age > 0:
            keep &= (np.isnan(iss["cl"]) | (iss["cl"] > t)) & (t <= store.as_of_us)
        idx = np.flatnonzero(keep)
        parts.append(idx)
        times.append(t[idx])
    idx, t = np.concatenate(parts), np.concatenate(times)
    order = np.lexsort((t, idx))  # stored issues are in (created_at, repo, id) order already
    return idx[order], t[order]


def compute_features(issues: pd.DataFrame, comments: pd.DataFrame | None = None, *, ages_hours=AGES_HOURS,
                     as_of=None, text_score: bool = True, include_pull_requests: bool = False,
                     horizon_days: float = DEFAULT_HORIZON_DAYS) -> pd.DataFrame:
    store = EventStore.build(issues, comments, as_of=as_of, text_score=text_score, horizon_days=horizon_days)
    return feature_table(store, *target_rows(store, ages_hours, include_pull_requests))


def update_features(previous: pd.DataFrame, issues: pd.DataFrame, comments: pd.DataFrame | None = None, *,
                    changed_since, ages_hours=AGES_HOURS, as_of=None, text_score: bool = True,
                    include_pull_requests: bool = False, store: EventStore | None = None) -> tuple[pd.DataFrame, int]:
    """compute_features on the current tables, computing only the rows at or after `changed_since` and the
    rows `previous` lacks. Returns (table, rows computed)."""
    store = store or EventStore.build(issues, comments, as_of=as_of, text_score=text_score)
    idx, t = target_rows(store, ages_hours, include_pull_requests)
    iss = store.issues
    key = pd.MultiIndex.from_arrays([iss["repo"][idx], iss["id"][idx], np.round((t - iss["c"][idx]) / HOUR_US, 6)])
    old_keys = pd.MultiIndex.from_arrays([previous["repo"].astype(object), previous["id"], previous["age_hours"]])
    since = pd.Timestamp(changed_since).value / 1000 if changed_since is not None else np.inf
    fresh = (t >= since) | ~key.isin(old_keys)
    table = feature_table(store, idx[fresh], t[fresh])
    if not fresh.all():
        carried = previous.iloc[old_keys.get_indexer(key[~fresh])].reset_index(drop=True)
        decided, positive, known_at = known_by(iss["c"][idx[~fresh]], iss["cl"][idx[~fresh]], store.as_of_us,
                                               store.horizon)
        carried["closed_within_7d"] = pd.arrays.BooleanArray(positive, ~decided)
        carried["label_known_at"] = _ts(known_at)
        table = pd.concat([carried[list(table.columns)], table], ignore_index=True)
        # back to the target order: carried rows at their places, computed rows at theirs
        order = np.argsort(np.concatenate([np.flatnonzero(~fresh), np.flatnonzero(fresh)]), kind="stable")
        table = table.iloc[order].reset_index(drop=True)
    return table, int(fresh.sum())

