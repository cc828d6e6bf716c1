"""The text features of a few rows in plain Python, equal to `issue_assets.features.text.text_columns`.

`text_columns` runs its patterns in pyarrow (RE2), vectorized: for a batch that is fast, for the one
issue of a prediction request the ~27 pyarrow calls cost milliseconds of per-call overhead. Here the
same patterns run in Python's `re`, translated from the RE2 source of the features module (so a changed
pattern is picked up) with RE2's semantics made explicit:

* `\\s \\d \\w` are ASCII in RE2 ([\\t\\n\\f\\r ], [0-9], [0-9A-Za-z_]; vertical tab is not a space) and
  become those classes; `\\b` is RE2's ASCII word boundary (Python's under re.ASCII);
* `(?i)` is RE2's simple case folding: an ASCII letter matches its other case, `s` also U+017F and `k`
  also U+212A (Kelvin), in literals, classes and `\\w` alike; non-ASCII letters under `(?i)` are refused;
* `^`/`$` without `(?m)` are the ends of the text, with `(?m)` also line ends; `.` is not a newline;
* counting is pyarrow's: RE2::FindAndConsume on the rest of the text after each match, so `^`, `\\A`
  and `\\b` see the rest as a new text. For a pattern whose match start reads the left context, the
  next match is the one at the previous end with those assertions evaluated as at a text start (a
  `start` form of the pattern), else the leftmost one after it (contexts agree there);
* case-insensitive patterns also get a version for lower-cased ASCII text (plain literals, much
  faster in `re`), and every pattern a set of literals one of which any match contains: a text with
  none of them is not searched at all;
* `\\pL` / `\\p{Lu}` (title letters and capitals) are `str.isalpha()` / category Lu; RE2's Unicode
  tables are newer than Python's, so a title with a code point Python has unassigned goes to pyarrow.

Anything the translation cannot reproduce exactly makes that pattern (or that row) use pyarrow: a
construct the translator does not know, a pattern matching the empty string, text that is not str,
or text longer than `MAX_PYTHON_CHARS` (Python's backtracking is not linear like RE2: a long
adversarial body is left to RE2). `ready()` additionally compares this module with `text_columns` on a
corpus of tricky texts once per process and turns the Python path off if they ever disagree.

Public API:
    text_rows(titles: Sequence, bodies: Sequence) -> dict[str, ndarray]   == text_columns(Series(titles), ...)
    ready() -> bool             the one-time self-check passed (the Python path is in use)
    hashed_row(title, body, config) -> (indices, values)        one row of text_score.hash_texts
    decision(model, row) -> float                               model.decision_function of that row
    translate(pattern: str) -> str                                        RE2 pattern -> Python pattern
    Unsupported                                                           raised by translate
"""

from __future__ import annotations

import logging
import math
import re
import threading
import unicodedata
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.feature_extraction._hashing_fast import transform as _hashing_transform

from issue_assets.features import text as _features_text
from issue_assets.features.text_score import TextScoreConfig, _vectorizer

log = logging.getLogger(__name__)

#: Longer titles + scanned bodies go to pyarrow (RE2 is linear; Python's backtracking may not be).
MAX_PYTHON_CHARS = 16_384

_SPACE = "\\t\\n\\f\\r "
_WORD = "0-9A-Za-z_"
_FOLDS = {"s": "\u017f", "k": "\u212a"}  # RE2 simple case folding beyond ASCII, for ASCII letters


class Unsupported(ValueError):
    """An RE2 construct this translator does not reproduce exactly."""


class _Inexact(Exception):
    """This text cannot be answered exactly here (the caller asks pyarrow)."""


def _fold_letter(ch: str) -> str:
    low = ch.lower()
    return ch.lower() + ch.upper() + _FOLDS.get(low, "")


def _class_chars(ch: str, fold: bool) -> str:
    """One literal character as class content (escaped), folded under (?i)."""
    if fold and ch.isascii() and ch.isalpha():
        return "".join(re.escape(c) for c in _fold_letter(ch))
    if fold and not ch.isascii() and ch.lower() != ch.upper():
        raise Unsupported(f"case folding of {ch!r}")
    return "\\" + ch if ch in "\\]^-[" else ch


def _range_chars(lo: str, hi: str, fold: bool) -> str:
    if lo > hi:
        raise Unsupported(f"bad range {lo}-{hi}")
    if not fold:
        return f"{_class_chars(lo, False)}-{_class_chars(hi, False)}"
    if not hi.isascii():
        raise Unsupported("case-folded range beyond ASCII")
    return "".join(_class_chars(chr(c), True) for c in range(ord(lo), ord(hi) + 1))


_PERL = {"s": _SPACE, "d": "0-9", "w": _WORD}


def _perl_class(letter: str, fold: bool) -> str:
    """\\s \\d \\w (and \\S \\D \\W) as RE2 reads them: ASCII classes, \\w case-folded under (?i)."""
    body = _PERL[letter.lower()]
    if fold and letter.lower() == "w":
        body += "".join(_FOLDS.values())
    return ("[^" if letter.isupper() else "[") + body + "]"


def _parse_class(pattern: str, i: int, fold: bool) -> tuple[str, int]:
    """pattern[i] == '['; returns (python class, index after ']')."""
    i += 1
    negated = pattern.startswith("^", i)
    if negated:
        i += 1
    items: list[str] = []
    first = True
    while True:
        if i >= len(pattern):
            raise Unsupported("unterminated class")
        ch = pattern[i]
        if ch == "]" and not first:
            i += 1
            break
        first = False
        if ch == "[" and pattern.startswith("[:", i):
            raise Unsupported("POSIX class")
        if ch == "\\":
            if i + 1 >= len(pattern):
                raise Unsupported("trailing backslash")
            esc = pattern[i + 1]
            i += 2
            if esc in "sdw":
                items.append(_PERL[esc] + ("".join(_FOLDS.values()) if fold and esc == "w" else ""))
                continue
            lit = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}.get(esc)
            if lit is None:
                if esc.isalnum():
                    raise Unsupported(f"escape \\{esc} inside a class")
                lit = esc
        else:
            lit = ch
            i += 1
        if pattern.startswith("-", i) and i + 1 < len(pattern) and pattern[i + 1] != "]":
            hi = pattern[i + 1]
            if hi == "\\":
                raise Unsupported("escaped range end")
            i += 2
            items.append(_range_chars(lit, hi, fold))
        else:
            items.append(_class_chars(lit, fold))
    return ("[^" if negated else "[") + "".join(items) + "]", i


def _flags(pattern: str) -> tuple[bool, bool, int]:
    m = re.match(r"\(\?([a-zA-Z]+)\)", pattern)
    if not m:
        return False, False, 0
    flags = set(m.group(1))
    if not flags <= {"i", "m"}:
        raise Unsupported(f"flags {m.group(1)}")
    return "i" in flags, "m" in flags, m.end()


class _Node:
    r"""A parsed piece of pattern.

    py: the Python pattern; start: the same as evaluated at a match start that RE2 sees as the start of
    its text (the rest after the previous match), None when it cannot be written; req: literal strings
    one of which every match contains (None: unknown); lit: the character of a single literal; nullable:
    may match ""; zero: zero-width only; lead: a left-context assertion (^, \A, \b, \B) may be evaluated at
    the node's own start position."""

    __slots__ = ("py", "start", "req", "lit", "nullable", "zero", "lead")

    def __init__(self, py, start=None, req=None, lit=None, nullable=False, zero=False, lead=False):
        self.py, self.start, self.req, self.lit = py, py if start is None else start, req, lit
        self.nullable, self.zero, self.lead = nullable, zero, lead


def _assertion(py: str, start: str | None, lead: bool) -> _Node:
    node = _Node(py, nullable=True, zero=True, lead=lead)
    node.start = start
    return node


def _best(sets: list[set[str]]) -> set[str] | None:
    """The most selective candidate: the longest shortest literal, then the fewest literals."""
    if not sets:
        return None
    return max(sets, key=lambda s: (min(map(len, s)), -len(s)))


class _Parser:
    """Recursive descent over the RE2 subset the feature patterns use."""

    _START, _MAYBE, _AFTER = range(3)

    def __init__(self, pattern: str, lowered: bool):
        self.src = pattern
        self.fold, self.multi, self.i = _flags(pattern)
        self.lowered = lowered and self.fold

    def parse(self) -> _Node:
        node = self._alt()
        if self.i != len(self.src):
            raise Unsupported(f"unexpected {self.src[self.i]!r}")
        return node

    def _peek(self) -> str | None:
        return self.src[self.i] if self.i < len(self.src) else None

    def _alt(self) -> _Node:
        branches = [self._seq()]
        while self._peek() == "|":
            self.i += 1
            branches.append(self._seq())
        if len(branches) == 1:
            return branches[0]
        starts = [b.start for b in branches]
        reqs = [b.req for b in branches]
        node = _Node("|".join(b.py for b in branches), nullable=any(b.nullable for b in branches),
                     zero=all(b.zero for b in branches), lead=any(b.lead for b in branches),
                     req=set().union(*reqs) if all(r is not None for r in reqs) else None)
        node.start = "|".join(starts) if all(s is not None for s in starts) else None
        return node

    def _seq(self) -> _Node:
        items: list[_Node] = []
        while self._peek() is not None and self._peek() not in "|)":
            atom = self._atom()
            items.append(self._quantified(atom))
        state, lead, start_ok = self._START, False, True
        starts = []
        for node in items:
            if state == self._START:
                part = node.start
                lead |= node.lead
            else:
                part = node.py
                if state == self._MAYBE and node.lead:  # maybe at the match start, maybe not
                    lead, start_ok = True, False
            start_ok &= part is not None
            starts.append(part)
            if not node.zero:
                state = self._AFTER if not node.nullable or state == self._AFTER else self._MAYBE
        candidates, run = [], ""
        for node in items + [None]:
            if node is not None and node.lit is not None:
                run += node.lit
                continue
            if run:
                candidates.append({run})
                run = ""
            if node is not None and node.req is not None:
                candidates.append(node.req)
        out = _Node("".join(n.py for n in items), req=_best(candidates),
                    nullable=all(n.nullable for n in items), zero=all(n.zero for n in items), lead=lead)
        out.start = "".join(starts) if start_ok else None
        return out

    def _quantified(self, atom: _Node) -> _Node:
        m = re.match(r"(?:([*+?])|\{(\d+)(?:(,)(\d*))?\})(\??)", self.src[self.i:])
        if not m:
            return atom
        if atom.zero:
            raise Unsupported("quantified assertion")
        self.i += m.end()
        low = {"*": 0, "+": 1, "?": 0}[m.group(1)] if m.group(1) else int(m.group(2))
        if m.group(4) and int(m.group(4)) < low:
            raise Unsupported("bad repetition")
        q = m.group(0)
        node = _Node(atom.py + q, req=atom.req if low >= 1 else None, nullable=atom.nullable or low == 0,
                     lead=atom.lead)
        node.start = atom.start + q if not atom.lead and atom.start is not None else None
        return node

    def _literal(self, ch: str) -> _Node:
        if self.fold and ch.isascii() and ch.isalpha():
            return _Node(re.escape(ch.lower()) if self.lowered else "[" + _fold_letter(ch) + "]",
                         req={ch.lower()}, lit=ch.lower())
        if self.fold and ch.lower() != ch.upper():
            raise Unsupported(f"case folding of {ch!r}")
        return _Node(re.escape(ch), req={ch}, lit=ch)

    def _atom(self) -> _Node:
        ch = self.src[self.i]
        if ch == "(":
            if self.src.startswith("(?:", self.i):
                self.i += 3
            elif self.src.startswith("(?", self.i):
                raise Unsupported("group flags, look-around or named group")
            else:
                self.i += 1  # a capturing group matches like a plain one
            inner = self._alt()
            if self._peek() != ")":
                raise Unsupported("unbalanced (")
            self.i += 1
            node = _Node(f"(?:{inner.py})", req=inner.req, nullable=inner.nullable, zero=inner.zero,
                         lead=inner.lead)
            node.start = f"(?:{inner.start})" if inner.start is not None else None
            return node
        if ch == "[":
            cls, self.i = _parse_class(self.src, self.i, self.fold)
            return _Node(cls)
        self.i += 1
        if ch == "\\":
            if self.i >= len(self.src):
                raise Unsupported("trailing backslash")
            esc = self.src[self.i]
            self.i += 1
            if esc in "sSdDwW":
                return _Node(_perl_class(esc, self.fold))
            if esc == "b":
                return _assertion("\\b", f"(?=[{_WORD}])", True)  # re.ASCII: RE2's ASCII boundary
            if esc == "B":
                return _assertion("\\B", f"(?![{_WORD}])", True)
            if esc == "A":
                return _assertion("\\A", "", True)
            if esc == "z":
                return _assertion("\\Z", "\\Z", False)
            if esc in "nrtfv":
                return self._literal({"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v"}[esc])
            if esc.isalnum():
                raise Unsupported(f"escape \\{esc}")
            return self._literal(esc)
        if ch == "^":
            return _assertion("(?m:^)" if self.multi else "\\A", "", True)
        if ch == "$":
            py = "(?=\\n|\\Z)" if self.multi else "\\Z"
            return _assertion(py, py, False)
        if ch == ".":
            return _Node("[^\\n]")
        if ch in "*+?{)":
            raise Unsupported(f"unexpected {ch!r}")
        return self._literal(ch)


def translate(pattern: str, lowered: bool = False) -> str:
    """An RE2 pattern (the subset the feature patterns use) as a Python pattern for re.ASCII matching
    with the same matches. Raises Unsupported for anything else. `lowered`: for a case-insensitive
    pattern, the version for ASCII text already lower-cased (its literal letters are lower case)."""
    return _Parser(pattern, lowered).parse().py


class _Pattern:
    """One RE2 pattern in Python, for any text and (case-insensitive patterns) for lower-cased ASCII text.

    Counting follows RE2::FindAndConsume: after a match the rest of the text is searched as a new text.
    Only a pattern whose match start reads the left context (`lead`) can tell the difference; for those
    the next match is the match at the previous end under start-of-text semantics (`start` forms) or
    else the leftmost one after it, or, when no start form can be written, a search on the rest itself.
    `req`: literals one of which any match contains; a text with none of them has no match."""

    def __init__(self, source: str):
        self.source = source
        self.rx = self.rx_low = None
        try:
            self.fold = _flags(source)[0]
            variants = []
            for lowered in (False, True) if self.fold else (False,):
                node = _Parser(source, lowered).parse()
                start = re.compile(node.start, re.ASCII) if node.lead and node.start is not None else None
                variants.append((re.compile(node.py, re.ASCII), start))
        except (Unsupported, re.error) as exc:
            log.info("text pattern %r stays in pyarrow: %s", source, exc)
            return
        self.python = node.py
        self.lead = node.lead
        self.req = tuple(sorted(node.req)) if node.req else None
        (self.rx, self.rx_start), (self.rx_low, self.rx_low_start) = variants[0], variants[-1]
        if not self.fold:
            self.rx_low = None

    def _pick(self, text: str, low: str | None):
        """(regex, start regex, text, literals usable) for this text."""
        if self.rx_low is not None and low is not None:
            return self.rx_low, self.rx_low_start, low, True
        return self.rx, self.rx_start, text, not self.fold

    def count(self, text: str, low: str | None) -> int:
        """pyarrow's count_substring_regex. `low`: text.lower() when text is ASCII, else None."""
        rx, start, s, literal = self._pick(text, low)
        if literal and self.req is not None and not any(lit in s for lit in self.req):
            return 0
        if not self.lead:
            found = rx.findall(s)
            if "" in found:
                raise _Inexact
            return len(found)
        n = 0
        m = rx.search(s)
        while m is not None:
            end = m.end()
            if end == m.start():
                raise _Inexact
            n += 1
            if start is not None:
                m = start.match(s, end) or rx.search(s, end + 1)
            else:
                s = s[end:]
                m = rx.search(s)
        return n

    def found(self, text: str, low: str | None) -> bool:
        """pyarrow's match_substring_regex (RE2 partial match on the whole text)."""
        rx, _, s, literal = self._pick(text, low)
        if literal and self.req is not None and not any(lit in s for lit in self.req):
            return False
        return rx.search(s) is not None


class _Compiled:
    def __init__(self):
        t = _features_text
        self.title_question = _Pattern(t._TITLE_QUESTION)
        self.title_prefix = _Pattern(t._TITLE_PREFIX)
        self.body_empty = _Pattern(r"^\s*$")
        self.words = _Pattern(r"\S+")
        self.body = {name: _Pattern(p) for name, p in t.BODY_PATTERNS.items()}
        self.both = {name: _Pattern(p) for name, p in t.BOTH_PATTERNS.items()}
        self.scan_chars = t.TEXT_SCAN_CHARS
        self.names = ["title_length", "title_words", "title_upper_ratio", "title_question", "title_has_prefix",
                      "body_length", "body_lines", "body_is_empty", "code_blocks", *self.body, *self.both]
        self.arrow_only = [name for name, pat in (("title_words", self.words),
                                                  ("title_question", self.title_question),
                                                  ("title_has_prefix", self.title_prefix),
                                                  ("body_is_empty", self.body_empty),
                                                  *self.body.items(), *self.both.items()) if pat.rx is None]


_compiled: _Compiled | None = None
_state = {"checked": False, "ok": False}
_lock = threading.Lock()


def _patterns() -> _Compiled:
    global _compiled
    if _compiled is None:
        _compiled = _Compiled()
    return _compiled


def _clean(value) -> str:
    """text_columns' reading of one value: None/NaN/NA -> "", lone surrogates -> '?' (its fallback)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if not isinstance(value, str):
        raise _Inexact
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _title_letters(title: str) -> tuple[int, int]:
    if title.isascii():
        letters = upper = 0
        for ch in title:
            if ch.isalpha():
                letters += 1
                upper += ch.isupper()
        return letters, upper
    letters = upper = 0
    for ch in title:
        cat = unicodedata.category(ch)
        if cat == "Cn":  # unassigned in Python's tables, maybe a letter in RE2's newer ones
            raise _Inexact
        if cat[0] == "L":
            letters += 1
            upper += cat == "Lu"
    return letters, upper


def _one(p: _Compiled, title, body) -> dict[str, float]:
    """One row's values; a feature whose pattern stays in pyarrow is NaN here. Raises _Inexact when the
    row must go to pyarrow as a whole."""
    t, b = _clean(title), _clean(body)
    scan = b[: p.scan_chars]
    if len(t) + len(scan) > MAX_PYTHON_CHARS:
        raise _Inexact
    letters, upper = _title_letters(t)
    both = t + "\n" + scan
    body_len = len(b)
    lows: dict[int, str | None] = {}

    def low(text: str) -> str | None:
        key = id(text)
        if key not in lows:
            lows[key] = text.lower() if text.isascii() else None
        return lows[key]

    def count(pat: _Pattern, text: str) -> float:
        return float(pat.count(text, low(text) if pat.rx_low is not None else None)) if pat.rx is not None \
            else math.nan

    def found(pat: _Pattern, text: str) -> float:
        return float(pat.found(text, low(text) if pat.rx_low is not None else None)) if pat.rx is not None \
            else math.nan

    row = {
        "title_length": float(len(t)),
        "title_words": count(p.words, t),
        "title_upper_ratio": upper / letters if letters > 0 else 0.0,
        "title_question": found(p.title_question, t),
        "title_has_prefix": found(p.title_prefix, t),
        "body_length": float(body_len),
        "body_lines": float(b.count("\n") + (body_len > 0)),
        "body_is_empty": found(p.body_empty, b),
        "code_blocks": float(math.ceil(scan.count("```") / 2)),
    }
    for name, pat in p.body.items():
        row[name] = count(pat, scan)
    for name, pat in p.both.items():
        row[name] = count(pat, both)
    return row


def _python_rows(titles: Sequence, bodies: Sequence) -> tuple[dict[str, np.ndarray], list[int]]:
    """Per-row Python values; rows that must go to pyarrow as a whole are listed (NaN here)."""
    p = _patterns()
    rows: list[dict[str, float] | None] = []
    to_arrow: list[int] = []
    for i, (title, body) in enumerate(zip(titles, bodies, strict=True)):
        try:
            rows.append(_one(p, title, body))
        except _Inexact:
            rows.append(None)
            to_arrow.append(i)
    names = p.names
    out = {name: np.array([r[name] if r is not None else math.nan for r in rows], dtype="float64")
           for name in names}
    return out, to_arrow


def _arrow(titles: Sequence, bodies: Sequence) -> dict[str, np.ndarray]:
    return _features_text.text_columns(pd.Series(list(titles), dtype=object), pd.Series(list(bodies), dtype=object))


def text_rows(titles: Sequence, bodies: Sequence) -> dict[str, np.ndarray]:
    """text_columns(Series(titles), Series(bodies)), computed in Python where that is exact."""
    if not ready():
        return _arrow(titles, bodies)
    return _combined(titles, bodies)


def _combined(titles: Sequence, bodies: Sequence) -> dict[str, np.ndarray]:
    out, rows = _python_rows(titles, bodies)
    if rows:
        arrow = _arrow([titles[i] for i in rows], [bodies[i] for i in rows])
        for name, values in arrow.items():
            out[name][rows] = values
    if _patterns().arrow_only:
        arrow = _arrow(titles, bodies)
        for name in _patterns().arrow_only:
            out[name] = arrow[name]
    return out


#: Texts the one-time self-check compares with text_columns (the tests use many more).
_CORPUS = [
    ("", ""), ("", None), (None, "x"), ("How do I fix this?", "Steps to reproduce\n```\ncode\n```\n"),
    ("[bug] crash: panic at 1.2.3", "@a@b #1#2 - [ ]- [x] > quote\n# Heading\n  at foo.bar(Baz.java:1)\n"),
    ("\u017fteps K\u212a \u0130\u0131", "Traceback (most recent call last):\n  File \"x.py\", line 3\nhttps://a.b ![i](u)"),
    ("ÉCOLE ǅ Ⓐ 日本語?", "\u000b \u00a0\t\r\n\f expected behaviour error_x doesn't work #12a 1.2a.3"),
    ("a\x00b", "x" * 70_000), ("x", "\ud800 lone"), ("q", "```` ````` ```"),
]


def ready() -> bool:
    """True once the Python path has been checked against text_columns on _CORPUS (once per process)."""
    if _state["checked"]:
        return _state["ok"]
    with _lock:
        if not _state["checked"]:
            try:
                titles = [t for t, _ in _CORPUS]
                bodies = [b for _, b in _CORPUS]
                want = _arrow(titles, bodies)
                got = _combined(titles, bodies)
                ok = list(got) == list(want) and all(np.array_equal(got[k], want[k], equal_nan=True) for k in want)
            except Exception:  # never let the check itself break serving: pyarrow answers
                log.exception("text_rows self-check failed")
                ok = False
            if not ok:
                log.warning("text_rows differs from text_columns on its check corpus; using pyarrow")
            _state["ok"] = ok
            _state["checked"] = True
    return _state["ok"]


# ---------------------------------------------------------------------------------------------- text score
_analyzers: dict = {}


def _analyzer(config):
    fn = _analyzers.get(config)
    if fn is None:
        fn = _analyzers[config] = _vectorizer(config).build_analyzer()
    return fn


def hashed_row(title, body, config: TextScoreConfig) -> tuple[np.ndarray, np.ndarray]:
    """One row of hash_texts(Series([title]), Series([body]), config) as (sorted column indices, float32
    values): the vectorizer's own analyzer and murmur hashing, duplicates summed, l2 row norm computed
    as sklearn's inplace_csr_row_normalize_l2 does (sum of squares in double, value / sqrt in double)."""
    title = "" if title is None or title is pd.NA or (isinstance(title, float) and math.isnan(title)) else str(title)
    body = "" if body is None or body is pd.NA or (isinstance(body, float) and math.isnan(body)) else str(body)
    doc = title + " " + title + "\n" + body[: config.body_chars]
    tokens = _analyzer(config)(doc)
    if not tokens:
        return np.zeros(0, dtype="int32"), np.zeros(0, dtype="float32")
    indices, _, values = _hashing_transform([((tok, 1) for tok in tokens)], config.n_features, np.float32, False, 0)
    cols, counts = np.unique(indices, return_counts=True)
    data = counts.astype("float32")  # each token adds 1 (alternate_sign off); sums of ones are exact
    sq = 0.0
    for v in (data * data).tolist():  # float32 squares added in double, in column order
        sq += v
    if sq != 0.0:
        data = (data.astype("float64") / math.sqrt(sq)).astype("float32")
    return cols.astype("int32"), data


def decision(model, row: tuple[np.ndarray, np.ndarray]) -> float:
    """model.decision_function(X) for one hashed row: scipy's CSR product sums the row's terms one after
    the other in column order, in the common type of X (float32) and coef_ (SGD keeps float32), then the
    intercept is added with numpy's promotion. Here: the same products, summed by a sequential cumsum."""
    cols, data = row
    coef = model.coef_[0]
    kind = np.result_type(data.dtype, coef.dtype)
    if not len(cols):
        acc = np.zeros(1, dtype=kind)
    else:
        terms = data.astype(kind) * coef[cols].astype(kind)
        acc = np.cumsum(terms, dtype=kind)[-1:]  # add.accumulate: strictly left to right
    return float((acc + model.intercept_)[0])
