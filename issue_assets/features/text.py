"""Features of an issue's own title and body (knowable at creation), and the leaky reference columns.

Public API:
    TEXT_SCAN_CHARS = 65536
    text_columns(titles, bodies) -> dict[str, float64 ndarray]   the "text" group of the catalog
    text_features(title: Series, body: Series) -> DataFrame     the same as a frame
    reference_columns(labels, comments) -> dict[str, ndarray]   the ref_* columns read from the snapshot (leaky)

Lengths, lines and emptiness use the whole body; pattern counts scan its first TEXT_SCAN_CHARS characters,
so a body of several MB costs no more than a long one. Patterns run in RE2 (google-re2, compiled once):
linear in the text, the same engine and the same count for one request row as for a million rows. A count
is the number of non-overlapping leftmost matches (`finditer`), with the context of the whole text.
Missing text reads as "", lone surrogates as '?' (what the lake stores).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import re2

TEXT_SCAN_CHARS = 65536

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


def _re2(pattern: str):
    """Compiled once, for UTF-8 bytes: the text is encoded once per row and no match offset is decoded."""
    options = re2.Options()
    options.max_mem = 64 << 20  # room for the DFA of the long alternations on long bodies
    return re2.compile(pattern.encode("utf-8"), options)


_BODY = [_re2(p) for p in BODY_PATTERNS.values()]
_BOTH = [_re2(p) for p in BOTH_PATTERNS.values()]
_WORD = _re2(r"\S+")
_LETTER = _re2(r"\pL")
_UPPER = _re2(r"\p{Lu}")
_QUESTION = _re2(r"(?i)\?\s*$|^\s*(?:how|why|what|when|where|is|are|can|could|should|does|do)\b")
_PREFIX = _re2(r"^\s*(?:\[[^\]]+\]|[\w./-]+:\s)")
NAMES = ["title_length", "title_words", "title_upper_ratio", "title_question", "title_has_prefix", "body_length",
         "body_lines", "body_is_empty", "code_blocks", *BODY_PATTERNS, *BOTH_PATTERNS]


def clean(value) -> str:
    """Text as the lake holds it: missing -> "", lone surrogates -> '?'."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if not isinstance(value, str):
        value = str(value)
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")


def _count(pattern, text: bytes) -> int:
    return sum(1 for _ in pattern.finditer(text))


def _row(title: str, body: str) -> list[float]:
    """One row's text features. Patterns see at most TEXT_SCAN_CHARS characters of title and of body."""
    head = title[:TEXT_SCAN_CHARS].encode("utf-8")
    scan = body[:TEXT_SCAN_CHARS]
    body8 = scan.encode("utf-8")
    both = head + b"\n" + body8
    letters = _count(_LETTER, head)
    out = [
        len(title), _count(_WORD, head), _count(_UPPER, head) / letters if letters else 0.0,
        _QUESTION.search(head) is not None, _PREFIX.search(head) is not None,
        len(body), body.count("\n") + (len(body) > 0), not body.strip(" \t\n\f\r"),
        math.ceil(scan.count("```") / 2),
    ]
    out += [_count(p, body8) for p in _BODY]
    out += [_count(p, both) for p in _BOTH]
    return out


def text_columns(titles, bodies) -> dict[str, np.ndarray]:
    rows = [_row(clean(t), clean(b)) for t, b in zip(titles, bodies, strict=True)]
    matrix = np.array(rows, dtype="float64").reshape(len(rows), len(NAMES))
    return {name: matrix[:, j] for j, name in enumerate(NAMES)}


def text_features(title: pd.Series, body: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(text_columns(title.tolist(), body.tolist()), index=title.index)


_LABEL = _re2(r'"(?:[^"\\]|\\.)*"')
_BUG_LABEL = _re2(r'(?i)"(?:[^"\\]|\\.)*bug(?:[^"\\]|\\.)*"')


def reference_columns(labels, comments) -> dict[str, np.ndarray]:
    """ref_label_count and ref_has_bug_label from the snapshot's JSON label lists, ref_comment_count from its
    comment count (the other ref_* columns equal text and calendar features). They read the outcome."""
    texts = [clean(x).encode("utf-8") for x in labels]
    return {
        "ref_label_count": np.array([_count(_LABEL, x) for x in texts], dtype="float64"),
        "ref_has_bug_label": np.array([_BUG_LABEL.search(x) is not None for x in texts], dtype="float64"),
        "ref_comment_count": np.asarray(comments, dtype="float64"),
    }
