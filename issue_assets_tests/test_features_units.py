"""Labels, the registry, hand-checked point-in-time values and defined behaviour on bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from issue_assets.features import FEATURE_NAMES, REFERENCE_NAMES, compute_features, feature_registry_version
from issue_assets.features.catalog import (
    ALLOWED_AVAILABILITY,
    FEATURES,
    REFERENCE_FEATURES,
    features_markdown,
)
from issue_assets.features.text import TEXT_SCAN_CHARS, text_columns, text_features
from issue_assets.github.normalize import COMMENT_COLUMNS, ISSUE_COLUMNS, TS

T0 = pd.Timestamp("2020-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)


def issues(*rows: dict) -> pd.DataFrame:
    out = []
    for n, row in enumerate(rows, start=1):
        base = {
            "repo": "o/r", "id": 1000 + n, "number": n, "title": f"issue {n}", "body": "text",
            "user_login": "alice", "user_id": 1, "user_type": "User", "author_association": "NONE",
            "created_at": T0, "updated_at": T0, "closed_at": pd.NaT, "state": "open", "state_reason": None,
            "is_pull_request": False, "labels": "[]", "comments": 0, "locked": False, "assignees_count": 0,
            "milestone": None, "reactions_total": 0, "first_seen_at": T0 + 400 * DAY,
            "fetched_at": T0 + 400 * DAY, "quality_flags": "",
        }
        base.update(row)
        out.append(base)
    df = pd.DataFrame(out, columns=ISSUE_COLUMNS)
    for col in ("created_at", "updated_at", "closed_at", "first_seen_at", "fetched_at"):
        df[col] = pd.to_datetime(df[col], utc=True).astype(TS)
    return df.astype({"user_id": "Int64", "is_pull_request": bool})


def comments(*rows: dict) -> pd.DataFrame:
    out = []
    for n, row in enumerate(rows, start=1):
        base = {"repo": "o/r", "id": 50 + n, "issue_number": 1, "user_login": "bob", "user_id": 2,
                "user_type": "User", "author_association": "NONE", "created_at": T0, "updated_at": T0,
                "body": "hi", "fetched_at": T0 + 400 * DAY}
        base.update(row)
        out.append(base)
    df = pd.DataFrame(out, columns=COMMENT_COLUMNS)
    for col in ("created_at", "updated_at", "fetched_at"):
        df[col] = pd.to_datetime(df[col], utc=True).astype(TS)
    return df.astype({"user_id": "Int64"})


# ---------------------------------------------------------------- labels

def test_label_semantics():
    as_of = T0 + 20 * DAY
    df = issues(
        {"closed_at": T0 + 6 * DAY},                                 # positive, known at close
        {"closed_at": T0 + 7 * DAY},                                 # exactly the horizon: positive
        {"closed_at": T0 + 8 * DAY},                                 # negative, known at created + 7 d
        {},                                                          # still open after the horizon: negative
        {"created_at": T0 + 18 * DAY},                               # open, horizon not reached: unknown
        {"created_at": T0 + 18 * DAY, "closed_at": T0 + 19 * DAY},   # closed fast: known already
        {"closed_at": T0 + 25 * DAY},                                # closed after as_of: negative at as_of
        {"is_pull_request": True, "closed_at": T0 + DAY},            # pull request: excluded by default
    )

    def labels(**options):
        return compute_features(df, ages_hours=(0,), as_of=as_of, text_score=False, **options) \
            .sort_values("number").reset_index(drop=True)

    out = labels()
    assert len(out) == 7
    assert out["closed_within_7d"].tolist()[:4] == [True, True, False, False]
    assert pd.isna(out["closed_within_7d"].iloc[4]) and pd.isna(out["label_known_at"].iloc[4])
    assert out["closed_within_7d"].iloc[5] and out["label_known_at"].iloc[5] == T0 + 19 * DAY
    assert not out["closed_within_7d"].iloc[6]
    assert out["label_known_at"].tolist()[:4] == [T0 + 6 * DAY, T0 + 7 * DAY, T0 + 7 * DAY, T0 + 7 * DAY]
    assert len(labels(include_pull_requests=True)) == 8
    assert str(out["closed_within_7d"].dtype) == "boolean"
    # A configurable horizon.
    short = labels(horizon_days=3)
    assert short["closed_within_7d"].tolist()[:4] == [False, False, False, False]
    assert short["label_known_at"].iloc[0] == T0 + 3 * DAY


def test_rows_exist_at_each_age_only_while_the_issue_is_open():
    df = issues({"closed_at": T0 + pd.Timedelta(hours=3)},                   # closed at 3 h: rows at 0 only
                {"closed_at": T0 + pd.Timedelta(hours=30)},                  # rows at 0, 6, 24
                {},                                                          # open: every age
                {"created_at": T0 + 399 * DAY, "fetched_at": T0 + 400 * DAY, "first_seen_at": T0 + 400 * DAY},
                {"created_at": T0 + DAY, "closed_at": T0 + DAY})             # closed at once: age 0 only
    f = compute_features(df, text_score=False, as_of=T0 + 399 * DAY + pd.Timedelta(hours=30))
    ages = f.groupby("number")["age_hours"].apply(list).to_dict()
    assert ages == {1: [0.0], 2: [0.0, 6.0, 24.0], 3: [0.0, 6.0, 24.0, 72.0], 4: [0.0, 6.0, 24.0], 5: [0.0]}
    assert (f["hours_observed"] == f["age_hours"]).all()
    assert (f["prediction_time"] == f["created_at"] + pd.to_timedelta(f["age_hours"], unit="h")).all()
    # one label per issue, the same at every age
    assert f.groupby("number")["closed_within_7d"].nunique(dropna=False).max() == 1
    assert f.set_index(["number", "age_hours"]).loc[(2, 24.0), "closed_within_7d"]  # closed at 30 h: positive
    assert pd.isna(f.set_index(["number", "age_hours"]).loc[(4, 0.0), "closed_within_7d"])


def test_decided_is_the_label_known_at_the_time():
    from issue_assets.features.labels import DAY_US, known_by

    c = np.array([0.0, 0.0, 0.0, 0.0, 0.0])
    cl = np.array([np.nan, 2.0, 9.0, 9.0, np.nan]) * DAY_US
    at = np.array([3.0, 3.0, 3.0, 10.0, 7.0]) * DAY_US
    decided, positive, known_at = known_by(c, cl, at, 7 * DAY_US)
    assert decided.tolist() == [False, True, False, True, True]   # open in window; closed; closed later; past
    assert positive.tolist() == [False, True, False, False, False]
    assert np.isnan(known_at[0]) and known_at[1] == 2 * DAY_US and known_at[3] == 7 * DAY_US


# ---------------------------------------------------------------- registry

def test_registry_covers_exactly_the_computed_columns():
    df = issues({}, {"created_at": T0 + DAY})
    frame = compute_features(df, ages_hours=(0,), text_score=False)
    keys = ["repo", "id", "number", "age_hours", "created_at", "prediction_time"]
    assert list(frame.columns) == keys + FEATURE_NAMES + REFERENCE_NAMES + ["closed_within_7d", "label_known_at"]
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert all(f.availability in ALLOWED_AVAILABILITY for f in FEATURES)
    assert all(f.name.startswith("ref_") and f.availability not in ALLOWED_AVAILABILITY for f in REFERENCE_FEATURES)
    assert not any(name.startswith("ref_") for name in FEATURE_NAMES)
    version = feature_registry_version()
    assert len(version) == 12 and version == feature_registry_version()
    table = features_markdown()
    assert all(f"`{name}`" in table for name in FEATURE_NAMES + REFERENCE_NAMES)
    assert "`ref_label_count`" not in features_markdown(include_reference=False)


# ---------------------------------------------------------------- hand-checked point-in-time values

def test_author_and_repo_history_respect_the_prediction_time():
    df = issues(
        {"created_at": T0, "closed_at": T0 + DAY},                                  # 1: positive, known day 1
        {"created_at": T0 + 0.5 * DAY, "closed_at": T0 + 20 * DAY},                 # 2: label known day 7.5
        {"created_at": T0 + 2 * DAY},                                               # 3
        {"created_at": T0 + 9 * DAY, "user_id": 9, "user_login": "carol"},          # 4: someone else
        {"created_at": T0 + 10 * DAY, "is_pull_request": True},                     # 5: a PR by alice
        {"created_at": T0 + 11 * DAY},                                              # 6
    )
    f = compute_features(df, ages_hours=(0,), text_score=False).set_index("number")
    assert f.loc[2, "author_prior_issues"] == 1 and f.loc[2, "author_prior_labelled"] == 0
    assert f.loc[3, "author_prior_labelled"] == 1 and f.loc[3, "author_prior_closed_7d"] == 1
    assert f.loc[3, "author_open_issues"] == 1                     # issue 2 open at day 2, issue 1 closed
    assert f.loc[4, "author_prior_issues"] == 0 and np.isnan(f.loc[4, "author_days_since_first"])
    assert f.loc[4, "repo_open_issues"] == 2                       # issues 2 and 3
    assert f.loc[4, "repo_labelled_issues"] == 3 and f.loc[4, "repo_closed_7d_rate"] == pytest.approx(1 / 3)  # 3 settles at day 9
    assert f.loc[6, "author_prior_issues"] == 3 and f.loc[6, "author_prior_prs"] == 1
    assert f.loc[6, "author_prior_labelled"] == 3 and f.loc[6, "author_prior_closed_7d"] == 1
    assert f.loc[6, "author_days_since_last"] == pytest.approx(1.0)
    assert f.loc[6, "repo_issues_opened_7d"] == 1                  # issue 4 (issue 6 itself excluded)
    assert f.loc[6, "repo_issues_closed_7d"] == 0
    assert f.loc[6, "created_hour"] == 0 and f.loc[6, "created_dow"] == (T0 + 11 * DAY).dayofweek
    assert f.loc[1, "repo_age_days"] == 0 and f.loc[6, "repo_age_days"] == pytest.approx(11.0)


def test_an_issue_closed_at_once_does_not_see_its_own_label():
    df = issues({"created_at": T0, "closed_at": T0}, {"created_at": T0 + 3 * DAY})
    f = compute_features(df, ages_hours=(0,), text_score=False).set_index("number")
    assert f.loc[1, "author_prior_labelled"] == 0 and f.loc[1, "repo_labelled_issues"] == 0
    assert f.loc[1, "repo_open_issues"] == 0
    assert f.loc[2, "author_prior_closed_7d"] == 1


def test_maintainer_status_and_activity_only_from_comments_up_to_t():
    df = issues({"created_at": T0 + 10 * DAY, "number": 1},
                {"created_at": T0 + 20 * DAY, "user_id": 2, "user_login": "bob", "number": 2},
                {"created_at": T0 + 30 * DAY, "user_id": 3, "user_login": "dave", "number": 3,
                 "author_association": "MEMBER", "first_seen_at": T0 + 31 * DAY})
    com = comments(
        {"issue_number": 1, "created_at": T0 + 10 * DAY + pd.Timedelta(hours=2), "author_association": "MEMBER"},
        {"id": 60, "issue_number": 1, "created_at": T0 + 10 * DAY + pd.Timedelta(hours=5), "user_id": 1,
         "user_login": "alice"},
        {"id": 61, "issue_number": 1, "created_at": T0 + 10 * DAY + pd.Timedelta(hours=30)},
    )
    at0 = compute_features(df, com, ages_hours=(0,), text_score=False).set_index("number")
    assert at0.loc[2, "author_maintainer_known"] == 1               # bob's MEMBER comment at day 10
    assert at0.loc[2, "author_prior_comments"] == 2
    assert at0.loc[3, "author_maintainer_known"] == 0               # own MEMBER version first seen later
    assert at0.loc[1, "comments_so_far"] == 0 and np.isnan(at0.loc[1, "hours_to_first_response"])
    at24 = compute_features(df, com, ages_hours=(24,), text_score=False).set_index("number")
    assert at24.loc[1, "comments_so_far"] == 2 and at24.loc[1, "author_comments_so_far"] == 1
    assert at24.loc[1, "participants_so_far"] == 1
    assert at24.loc[1, "hours_to_first_response"] == pytest.approx(2.0)
    assert at24.loc[1, "hours_to_first_maintainer_response"] == pytest.approx(2.0)
    assert at24.loc[1, "hours_observed"] == 24
    seen = issues({"created_at": T0, "author_association": "MEMBER", "first_seen_at": T0 + pd.Timedelta(hours=1)})
    assert compute_features(seen, ages_hours=(2,), text_score=False)["author_maintainer_known"].iloc[0] == 1


def test_text_features_read_the_issue_text():
    body = ("### Steps to reproduce\n- [ ] one\n- [x] two\n```rust\nfn main() {}\n```\n"
            "thread 'main' panicked at 'boom', src/main.rs:1\nstack backtrace:\n   0: 0x1234 - foo\n"
            "See https://example.com and #123, cc @someone. It doesn't work, error! `x`\n> quoted")
    f = text_features(pd.Series(["How do I fix this?"]), pd.Series([body])).iloc[0]
    assert f["code_blocks"] == 1 and f["checklist_items"] == 2 and f["headings"] == 1
    assert f["stack_trace_lines"] >= 3 and f["error_markers"] >= 2 and f["links"] == 1
    assert f["issue_refs"] == 1 and f["mentions"] == 1 and f["inline_code"] == 1 and f["quote_lines"] == 1
    assert f["title_question"] == 1 and f["bug_words"] >= 1 and f["template_phrases"] >= 1
    assert f["body_is_empty"] == 0 and f["title_words"] == 5


def test_pattern_counts_are_leftmost_matches_in_the_whole_text():
    """RE2 counts each match with the context of the whole text (not of the rest after the previous match)."""
    got = text_columns(["a@b @c"], ["@x@y\n>> quoted twice\n> once\n#1#2 #3"])
    assert got["mentions"][0] == 1          # "@x" at a line start; "@y" follows a word character
    assert got["quote_lines"][0] == 2       # lines starting with '>', not each '>'
    assert got["issue_refs"][0] == 2        # "#1" and "#3" ("#2" follows a digit)
    empty = text_columns([""], [""])
    assert empty["body_is_empty"][0] == 1 and empty["body_lines"][0] == 0


# ---------------------------------------------------------------- bad input

def test_timestamps_in_other_offsets_or_naive_equal_utc():
    base = issues({"closed_at": T0 + DAY}, {"created_at": T0 + 2 * DAY}, {"created_at": T0 + 3 * DAY})
    offset = base.copy()
    for col in ("created_at", "closed_at", "updated_at", "first_seen_at", "fetched_at"):
        offset[col] = offset[col].dt.tz_convert("Asia/Kolkata")
    naive = base.copy()
    for col in ("created_at", "closed_at"):
        naive[col] = naive[col].dt.tz_localize(None)
    strings = base.copy()
    strings["created_at"] = strings["created_at"].dt.tz_convert("America/New_York").map(lambda t: t.isoformat())
    ref = compute_features(base, text_score=False)
    for other in (offset, naive, strings):
        got = compute_features(other, text_score=False)
        pd.testing.assert_frame_equal(got, ref)


def test_closed_before_created_counts_as_closed_at_once():
    f = compute_features(issues({"created_at": T0 + DAY, "closed_at": T0}, {"created_at": T0 + 2 * DAY}),
                         ages_hours=(0,), text_score=False)
    assert f["closed_within_7d"].iloc[0] and f["label_known_at"].iloc[0] == T0 + DAY
    assert f["repo_open_issues"].iloc[1] == 0


def test_missing_huge_and_non_utf8_text():
    huge = "x" * 3_000_000 + " error " * 10
    df = issues({"body": None, "title": None}, {"body": huge, "created_at": T0 + DAY},
                {"body": "bad \udcff bytes error", "title": "caf\udce9", "created_at": T0 + 2 * DAY})
    f = compute_features(df, ages_hours=(0,), text_score=True)
    assert f["body_is_empty"].iloc[0] == 1 and f["body_length"].iloc[0] == 0 and f["title_length"].iloc[0] == 0
    assert f["body_length"].iloc[1] == len(huge)
    assert f["error_markers"].iloc[1] == 0                          # beyond the scanned prefix
    assert len(huge) > TEXT_SCAN_CHARS
    assert f["error_markers"].iloc[2] == 1 and f["title_length"].iloc[2] == 4
    assert f[FEATURE_NAMES].drop(columns=["text_score", "author_prior_closed_7d_rate",
                                          "author_days_since_first", "author_days_since_last",
                                          "repo_closed_7d_rate", "repo_closed_7d_rate_90d",
                                          "repo_capped_close_days_90d", "hours_to_first_response",
                                          "hours_to_first_maintainer_response"]).notna().all().all()


def test_deleted_and_renamed_authors():
    df = issues({"user_id": None, "user_login": None},
                {"user_id": None, "user_login": None, "created_at": T0 + DAY},
                {"user_login": "alice-old", "created_at": T0 + 2 * DAY},
                {"user_login": "alice-new", "created_at": T0 + 3 * DAY})
    f = compute_features(df, ages_hours=(0,), text_score=False).set_index("number")
    assert f.loc[2, "author_unknown"] == 1 and f.loc[2, "author_prior_issues"] == 0
    assert np.isnan(f.loc[2, "author_days_since_first"]) and f.loc[2, "author_prior_comments"] == 0
    assert f.loc[4, "author_unknown"] == 0 and f.loc[4, "author_prior_issues"] == 1   # same user id
    assert f.loc[2, "repo_open_issues"] == 1                         # unknown authors still count for the repo


def test_bots_and_duplicate_rows():
    df = issues({"user_login": "dependabot[bot]", "user_id": 5}, {"user_type": "Bot", "user_id": 6,
                                                                   "created_at": T0 + DAY})
    dup = pd.concat([df, df.iloc[[0]].assign(fetched_at=T0 + 500 * DAY, title="newer")], ignore_index=True)
    f = compute_features(dup, ages_hours=(0,), text_score=False)
    assert len(f) == 2 and f["author_is_bot"].tolist() == [1.0, 1.0]
    assert f["title_length"].iloc[0] == len("newer")


def test_empty_and_missing_comments_are_the_same():
    df = issues({}, {"created_at": T0 + DAY})
    empty = comments().iloc[0:0]
    pd.testing.assert_frame_equal(compute_features(df, None, text_score=False),
                                  compute_features(df, empty, text_score=False))
