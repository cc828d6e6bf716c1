"""The catalog of features: names, meaning, group and when each becomes knowable.

The model, the docs and the tests read this list; a column the feature code computes but this list
does not name (or the reverse) fails the catalog test. Every feature is computed at a prediction time t
in [created_at, created_at + 7 days); the model's probability at t means P(the issue is closed within
7 days of its creation | it is still open at t) (`PREDICTION_MEANING`).

Public API:
    Feature(name: str, description: str, group: str, availability: str)
    FEATURES: tuple[Feature, ...]            features our model may use
    FEATURE_NAMES: list[str]                 their names, in column order
    REFERENCE_FEATURES: tuple[Feature, ...]  the deliberately leaky ref_* columns (reference model only)
    REFERENCE_NAMES: list[str]
    ALLOWED_AVAILABILITY: frozenset[str]     availabilities that are known at the prediction time
    feature_registry_version() -> str        stable 12-hex-digit hash of names + descriptions
    features_markdown(include_reference: bool = True) -> str
    PREDICTION_MEANING: str                  what a probability means (README, docs, the service)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

#: Knowable when the issue is opened (its own title, body, author, created_at).
CREATION = "creation"
#: Knowable at the prediction time t from other issues' created/closed times and comments up to t.
PREDICTION_TIME = "prediction_time"
#: Read at snapshot time, years later: leaks the outcome. Only the reference model uses these.
SNAPSHOT = "snapshot"

ALLOWED_AVAILABILITY = frozenset({CREATION, PREDICTION_TIME})


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    group: str
    availability: str


def _f(group: str, availability: str, rows: list[tuple[str, str]]) -> list[Feature]:
    return [Feature(name, description, group, availability) for name, description in rows]


FEATURES: tuple[Feature, ...] = tuple(
    _f("text", CREATION, [
        ("title_length", "characters in the title"),
        ("title_words", "words in the title"),
        ("title_upper_ratio", "share of title letters that are upper case"),
        ("title_question", "1 if the title ends with '?' or starts with a question word"),
        ("title_has_prefix", "1 if the title starts with a '[tag]' or a 'component:' prefix"),
        ("body_length", "characters in the body (whole body, however long)"),
        ("body_lines", "lines in the body"),
        ("body_is_empty", "1 if the body is missing or only white space"),
        ("code_blocks", "fenced code blocks (```) in the body"),
        ("inline_code", "inline `code` spans in the body"),
        ("stack_trace_lines", "stack-trace-like lines (backtrace frames, 'panicked at', Traceback)"),
        ("error_markers", "error words: error, panic, exception, fatal, segfault, crash, ICE, abort"),
        ("links", "http(s) links in the body"),
        ("images", "embedded images in the body"),
        ("checklist_items", "markdown checklist items '- [ ]' / '- [x]'"),
        ("headings", "markdown headings (issue-template sections)"),
        ("template_phrases", "template phrases: steps to reproduce, expected/actual behaviour, version"),
        ("quote_lines", "quoted lines ('>') in the body"),
        ("mentions", "@user mentions in the body"),
        ("issue_refs", "#123 references in title and body"),
        ("version_strings", "version-like numbers (1.2, 1.2.3) in title and body"),
        ("question_words", "question wording (how, why, what, is it possible, question)"),
        ("feature_words", "feature-request wording (feature, support, allow, implement, proposal, rfc)"),
        ("bug_words", "bug wording (bug, fails, broken, wrong, regression, unexpected, doesn't work)"),
    ])
    + _f("author", CREATION, [
        ("author_unknown", "1 if the author is deleted or unknown (no user id or login)"),
        ("author_is_bot", "1 if the login ends with [bot] or the user type is Bot"),
    ])
    + _f("author", PREDICTION_TIME, [
        ("author_prior_issues", "issues the author opened in this repository before t"),
        ("author_prior_prs", "pull requests the author opened in this repository before t"),
        ("author_prior_labelled", "the author's earlier issues whose 7-day label was known at t"),
        ("author_prior_closed_7d", "of those, how many closed within the horizon"),
        ("author_prior_closed_7d_rate", "their closed-within-horizon rate (NaN if none known)"),
        ("author_open_issues", "the author's earlier issues still open at t"),
        ("author_days_since_first", "days since the author's first issue or PR here (NaN if none)"),
        ("author_days_since_last", "days since the author's previous issue or PR here (NaN if none)"),
        ("author_issues_24h", "issues the author opened here in the 24 hours before t"),
        ("author_prior_comments", "comments the author wrote in this repository up to t"),
        ("author_maintainer_known", "1 if an OWNER/MEMBER/COLLABORATOR association of the author was "
                                    "observed by t (own comments up to t, or versions first seen by t)"),
    ])
    + _f("repository", CREATION, [
        ("repo_code", "stable numeric code of the repository name (crc32), for cross-repo training"),
    ])
    + _f("repository", PREDICTION_TIME, [
        ("repo_open_issues", "issues open in the repository at t (created by t, not closed by t)"),
        ("repo_open_prs", "pull requests open in the repository at t"),
        ("repo_issues_opened_24h", "issues opened in the 24 hours before t"),
        ("repo_issues_opened_7d", "issues opened in the 7 days before t"),
        ("repo_issues_opened_30d", "issues opened in the 30 days before t"),
        ("repo_issues_closed_7d", "issues closed in the 7 days before t"),
        ("repo_issues_closed_30d", "issues closed in the 30 days before t"),
        ("repo_prs_opened_7d", "pull requests opened in the 7 days before t"),
        ("repo_burst_ratio", "issues opened in the last 24 h x 30 / (issues opened in the last 30 days + 1)"),
        ("repo_labelled_issues", "issues whose 7-day label was known at t"),
        ("repo_closed_7d_rate", "closed-within-horizon rate over all labels known at t"),
        ("repo_closed_7d_rate_90d", "closed-within-horizon rate over labels that became known in the "
                                    "90 days before t"),
        ("repo_capped_close_days_90d", "mean of min(days to close, horizon) over labels known in the "
                                       "90 days before t"),
        ("repo_comments_7d", "comments written in the repository in the 7 days before t"),
        ("repo_age_days", "days since the repository's first issue or PR"),
    ])
    + _f("calendar", CREATION, [
        ("created_hour", "hour of creation (UTC)"),
        ("created_dow", "day of week of creation (UTC, Monday=0)"),
    ])
    + _f("activity", PREDICTION_TIME, [
        ("hours_observed", "the row's age: hours between creation and the prediction time t (training rows at "
                           "0, 6, 24 and 72 h; the service at the issue's current age)"),
        ("comments_so_far", "comments on the issue up to t"),
        ("participants_so_far", "distinct commenters other than the author up to t"),
        ("author_comments_so_far", "the author's own comments on the issue up to t"),
        ("hours_to_first_response", "hours to the first comment by someone other than the author "
                                    "(NaN if none by t)"),
        ("hours_to_first_maintainer_response", "hours to the first OWNER/MEMBER/COLLABORATOR comment "
                                               "by someone other than the author (NaN if none by t)"),
    ])
    + _f("text_score", PREDICTION_TIME, [
        ("text_score", "log-odds from a hashed word/bigram logistic model trained only on issues whose "
                       "label was known before the start of the 60-day period containing t"),
    ])
)

REFERENCE_FEATURES: tuple[Feature, ...] = tuple(_f("reference", SNAPSHOT, [
    ("ref_title_length", "title length as read at snapshot time"),
    ("ref_body_length", "body length as read at snapshot time"),
    ("ref_label_count", "labels at snapshot time (leaks: triage happens after creation)"),
    ("ref_has_bug_label", "1 if a snapshot label mentions 'bug' (leaks)"),
    ("ref_hour", "hour of creation (UTC)"),
    ("ref_comment_count", "comment count at snapshot time (leaks: fast closes have few comments)"),
]))

#: the ages (hours since creation) of the feature table's and training sets' rows; training ages 0/6/24/72 were
#: chosen by measurement (BENCHMARKS.md: a denser set gained on one project and lost on the other, for 2.2x rows)
AGES_HOURS = (0, 6, 24, 72)

PREDICTION_MEANING = (
    "A probability is P(the issue is closed within 7 days of its creation | it is still open at the prediction "
    "time t), for t in [created_at, created_at + 7 days); `hours_observed` is the issue's age at t. An issue "
    "closed by t, or still open at created_at + 7 days, is decided: its outcome is known and it gets no "
    "probability."
)

FEATURE_NAMES: list[str] = [f.name for f in FEATURES]
REFERENCE_NAMES: list[str] = [f.name for f in REFERENCE_FEATURES]
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES + REFERENCE_FEATURES}


def feature_registry_version() -> str:
    """Changes whenever a feature is added, removed, renamed or redefined."""
    text = "\n".join(f"{f.name}\t{f.description}\t{f.availability}" for f in FEATURES + REFERENCE_FEATURES)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def features_markdown(include_reference: bool = True) -> str:
    rows = FEATURES + (REFERENCE_FEATURES if include_reference else ())
    lines = ["| feature | group | known at | meaning |", "|---|---|---|---|"]
    lines += [f"| `{f.name}` | {f.group} | {f.availability} | {f.description} |" for f in rows]
    return "\n".join(lines) + "\n"
