"""Features of an issue's own title and body (knowable at creation), and the leaky reference columns.

Public API:
    TEXT_SCAN_CHARS = 65536
    text_features(title: Series[str], body: Series[str]) -> DataFrame    the "text" group of the registry
    text_columns(title, body) -> dict[str, ndarray]                       the same, as arrays
    reference_features(issues: DataFrame) -> DataFrame                   the ref_* columns (snapshot fields)
    reference_columns(issues) -> dict[str, ndarray]

Lengths, lines and emptiness use the whole body; pattern counts scan its first TEXT_SCAN_CHARS characters,
so a body of several MB costs no more than a long one. Patterns run in pyarrow (RE2), vectorized;
text with lone surrogates is scanned with them replaced by U+FFFD.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TEXT_SCAN_CHARS = 65536

# RE2 syntax (pyarrow.compute): no look-behind; a consumed leading character is fine for counting.
BODY_PATTERNS: dict[str, str] = {
    "inline_code": r"`[^`\n]+`",
    "stack_trace_lines": r"(?mi)^\s*(?:at \S+|\d+:\s+0x[0-9a-f]+|#\d+\s+0x[0-9a-f]+|File \"[^\"]+\", line \d+)"
                         r"|panicked at|stack backtrace|Traceback \(most recent|Stack trace:|PHP Fatal"
                         r"|^\s*#\d+ \S+\(",
    "links": r"(?i)https?://",
    "images": r"(?i)!\[[^\]]*\]\(|<img\s",
    "checklist_items": r"(?m)^\s*[-*+] \[[ xX]\]",
    "headings": r"(?m)^[ ]{0,3}#{1,6}\s+\S",
    "template_phrases": r"(?i)steps to reproduce|expected (?:behaviou?r|result|output)"
                        r"|actual (?:behaviou?r|result|output)|versions? (?:info|used)|environment"
                        r"|to reproduce|\bmeta\b",
    "quote_lines": r"(?m)^\s*>",
    "mentions": r"(?:^|[^\w`/])@[A-Za-z0-9]",
}
BOTH_PATTERNS: dict[str, str] = {
    "error_markers": r"(?i)\b(?:error|errors|panic|panicked|exception|fatal|segfault|segmentation fault|crash"
                     r"|crashes|crashed|ICE|abort|aborted)\b",
    "issue_refs": r"(?:^|[^\w&])#\d+\b",
    "version_strings": r"\b\d+\.\d+(?:\.\d+)?\b",
    "question_words": r"(?i)\b(?:how|why|what|is it possible|question|help)\b|\?",
    "feature_words": r"(?i)\b(?:feature|support|allow|implement|proposal|rfc|enhancement|request|add"
                     r"|would be nice|should)\b",
    "bug_words": r"(?i)\b(?:bug|fail|fails|failed|failure|broken|wrong|incorrect|regression|unexpected"
                 r"|doesn'?t work|does not work|not working)\b",
}
_TITLE_QUESTION = r"(?i)\?\s*$|^\s*(?:how|why|what|when|where|is|are|can|could|should|does|do)\b"
_TITLE_PREFIX = r"^\s*(?:\[[^\]]+\]|[\w./-]+:\s)"


def _arrow(values: pd.Series) -> pa.Array:
    try:
        return pc.fill_null(pa.array(values.to_numpy(dtype=object, na_value=None), type=pa.large_string(),
                                     from_pandas=True), "")
    except (UnicodeEncodeError, pa.ArrowException, TypeError):
        strings = values.astype("object").fillna("").astype(str)
        # Lone surrogates (non-UTF-8 input read with surrogateescape) become U+FFFD.
        clean = strings.str.encode("utf-8", "replace").str.decode("utf-8")
        return pa.array(clean.tolist(), type=pa.large_string())


def _num(values) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype="float64")


def text_features(title: pd.Series, body: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(text_columns(title, body), index=title.index)


def text_columns(title: pd.Series, body: pd.Series) -> dict[str, np.ndarray]:
    t, b = _arrow(title), _arrow(body)
    scan = pc.utf8_slice_codeunits(b, 0, TEXT_SCAN_CHARS)
    both = pc.binary_join_element_wise(t, scan, pa.scalar("\n", type=pa.large_string()))
    letters = _num(pc.count_substring_regex(t, r"\pL"))
    upper = _num(pc.count_substring_regex(t, r"\p{Lu}"))
    body_len = _num(pc.utf8_length(b))
    out = {
        "title_length": _num(pc.utf8_length(t)),
        "title_words": _num(pc.count_substring_regex(t, r"\S+")),
        "title_upper_ratio": np.divide(upper, letters, out=np.zeros(len(letters)), where=letters > 0),
        "title_question": _num(pc.match_substring_regex(t, _TITLE_QUESTION)),
        "title_has_prefix": _num(pc.match_substring_regex(t, _TITLE_PREFIX)),
        "body_length": body_len,
        "body_lines": _num(pc.count_substring(b, "\n")) + (body_len > 0),
        "body_is_empty": _num(pc.match_substring_regex(b, r"^\s*$")),
        "code_blocks": np.ceil(_num(pc.count_substring(scan, "```")) / 2),
    }
    for name, pattern in BODY_PATTERNS.items():
        out[name] = _num(pc.count_substring_regex(scan, pattern))
    for name, pattern in BOTH_PATTERNS.items():
        out[name] = _num(pc.count_substring_regex(both, pattern))
    return out


def reference_features(issues: pd.DataFrame) -> pd.DataFrame:
    """The columns older public projects used. They read labels and counts from the snapshot: leaky."""
    return pd.DataFrame(reference_columns(issues), index=issues.index)


def reference_columns(issues: pd.DataFrame) -> dict[str, np.ndarray]:
    labels = label_columns(issues["labels"] if "labels" in issues else pd.Series("[]", index=issues.index))
    comments = issues["comments"] if "comments" in issues else pd.Series(0, index=issues.index)
    return {
        "ref_title_length": _num(pc.utf8_length(_arrow(issues["title"]))),
        "ref_body_length": _num(pc.utf8_length(_arrow(issues["body"]))),
        **labels,
        "ref_hour": issues["created_at"].dt.hour.to_numpy(dtype="float64"),
        "ref_comment_count": comments.fillna(0).to_numpy(dtype="float64"),
    }


def label_columns(labels: pd.Series) -> dict[str, np.ndarray]:
    """ref_label_count and ref_has_bug_label from the snapshot's JSON label lists."""
    arr = _arrow(labels)
    return {
        "ref_label_count": _num(pc.count_substring_regex(arr, r'"(?:[^"\\]|\\.)*"')),
        "ref_has_bug_label": _num(pc.match_substring_regex(arr, r'(?i)"(?:[^"\\]|\\.)*bug(?:[^"\\]|\\.)*"')),
    }
