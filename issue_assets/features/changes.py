"""What changed in a repository's tables since its features were last computed.

The features asset keeps a small snapshot of the inputs it used (per issue: created_at, closed_at,
first_seen_at; per comment: created_at). Comparing it with the current tables gives the earliest event
time a change can affect, which is all `update_features` needs to recompute only the rows after it.
"""

from __future__ import annotations

import pandas as pd

ISSUE_SNAPSHOT = ["repo", "id", "created_at", "closed_at", "first_seen_at", "text_hash"]
COMMENT_SNAPSHOT = ["repo", "id", "created_at"]


def input_snapshot(issues: pd.DataFrame, comments: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    issue_snap = issues[[c for c in ISSUE_SNAPSHOT if c in issues]].copy()
    # An edited title or body changes the issue's own text features: fingerprint the text.
    text = issues[["title", "body"]].fillna("") if len(issues) else pd.DataFrame({"title": [], "body": []})
    issue_snap["text_hash"] = pd.util.hash_pandas_object(text, index=False).to_numpy().astype("int64") \
        if len(issues) else pd.Series(dtype="int64")
    if comments is None or not len(comments):
        comment_snap = pd.DataFrame({"repo": pd.Series(dtype="string"), "id": pd.Series(dtype="int64"),
                                     "created_at": pd.Series(dtype="datetime64[us, UTC]")})
    else:
        comment_snap = comments[COMMENT_SNAPSHOT].copy()
    return issue_snap.reset_index(drop=True), comment_snap.reset_index(drop=True)


def _min_time(*series: pd.Series) -> pd.Timestamp | None:
    mins = [s.min() for s in series if s is not None and s.notna().any()]
    return min(mins) if mins else None


def earliest_change(previous: tuple[pd.DataFrame, pd.DataFrame], current: tuple[pd.DataFrame, pd.DataFrame]
                    ) -> pd.Timestamp | None:
    """The earliest event time among new/changed/removed issues and comments; None if nothing changed."""
    old_i, old_c = previous
    new_i, new_c = current
    key = ["repo", "id"]
    cols = [c for c in ISSUE_SNAPSHOT if c not in key and c in old_i and c in new_i]
    both = new_i.merge(old_i, on=key, how="outer", suffixes=("", "_old"), indicator=True)
    added_or_removed = both["_merge"] != "both"
    issue_times = []
    for col in cols:
        a, b = both[col], both[f"{col}_old"]
        differs = ~((a == b).fillna(False) | (a.isna() & b.isna()))
        if col == "text_hash":
            # A text edit affects the issue's own row (and, through the text score, what follows it).
            issue_times.append(both["created_at"].where(differs | added_or_removed))
            continue
        # A new or removed issue counts from all its times; a changed one from the values that moved.
        pick = added_or_removed | differs
        issue_times += [a[pick], b[pick]]
    comments = new_c.merge(old_c, on=key, how="outer", suffixes=("", "_old"), indicator=True)
    c_diff = (comments["_merge"] != "both") | ~((comments["created_at"] == comments["created_at_old"]).fillna(False))
    c_changed = comments.loc[c_diff]
    return _min_time(*issue_times, c_changed["created_at"], c_changed["created_at_old"])
