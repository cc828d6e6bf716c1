"""A property-based fuzz of the HTTP prediction service over real HTTP (issue 12, failure 4).

Requests are generated from the app's own OpenAPI schema (`app.openapi()`) and outside it: one field of
a valid body given an odd value (ints past 64 bits, times past pandas' range, huge and odd strings, wrong
types, deep nesting), raw bodies (invalid JSON, empty, duplicate keys, lone surrogates, NaN, nesting
thousands deep, wrong content types, chunked), and odd path and query parameters on every GET route.
Each example is a batch sent over ONE keep-alive connection (http.client) to a uvicorn server of the app
(one worker, a trained champion, a lake history, a stored prediction batch), followed by a valid
POST /predict and a GET /healthz on the same connection. For every response:

- no 5xx;
- a 4xx is JSON `{"detail": "..."}` (strict UTF-8, no NaN), and a 422 caused by one field names it;
- the server keeps the connection (no `Connection: close`) and the next request on it succeeds.

The strategies and `run_batch` are shared with bench/bench_fuzz.py, which runs thousands of examples
against `issue-assets serve`. Hypothesis runs derandomized with a fixed number of examples, so CI sees
the same requests every run.
"""

from __future__ import annotations

import copy
import http.client
import json
import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from test_serving import BATCH_T, REPO, Pipeline, Service, just_opened

from issue_assets.github.client import GitHubClient
from issue_assets.github.replay import ReplayServer
from issue_assets.serving.scoring import batch_open_issue_predictions, write_predictions
from issue_assets.serving.service import create_app

MAX_BODY = 200_000
DOCUMENTED_TIME_RANGE = (datetime(1970, 1, 1), datetime(2199, 12, 31, 23, 59, 59))


# ---- requests and the properties every response must have -------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One HTTP request. `names`: spellings of which at least one a 422 must contain (the field that got
    the odd value), empty when the input was not one field."""

    method: str
    target: str
    route: str
    body: bytes | None = None
    content_type: str | None = None
    chunked: bool = False
    names: tuple[str, ...] = ()

    def describe(self) -> str:
        body = "" if self.body is None else f" body[{len(self.body)}]={self.body[:300]!r}"
        return f"{self.method} {self.target[:300]} ({self.content_type}{', chunked' if self.chunked else ''}){body}"


class Broken(AssertionError):
    """A property failed (kind: '5xx', 'reset', 'closed', 'body', 'unnamed', 'payload')."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def send(conn: http.client.HTTPConnection, call: Call) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": call.content_type} if call.content_type is not None else {}
    if call.chunked:
        data = call.body or b""
        chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)]
        conn.request(call.method, call.target, body=iter(chunks), headers=headers, encode_chunked=True)
    else:
        conn.request(call.method, call.target, body=call.body, headers=headers)
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def _strict_json(data: bytes):
    def no_constant(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(data.decode("utf-8"), parse_constant=no_constant)


def check(call: Call, status: int, headers: dict[str, str], data: bytes) -> None:
    """The properties of one response (raises Broken)."""
    if status >= 500:
        raise Broken("5xx", f"{status} for {call.describe()}: {data[:300]!r}")
    if "close" in headers.get("connection", "").lower():
        raise Broken("closed", f"the server closed the connection after {status} for {call.describe()}")
    if call.method == "HEAD":
        return
    if status >= 400:
        try:
            payload = _strict_json(data)
        except ValueError as exc:
            raise Broken("body", f"{status} body is not strict JSON ({exc}) for {call.describe()}: "
                                 f"{data[:200]!r}") from exc
        if not headers.get("content-type", "").startswith("application/json") or not isinstance(payload, dict) \
                or not isinstance(payload.get("detail"), str) or not payload["detail"]:
            raise Broken("body", f"{status} is not JSON {{'detail': str}} for {call.describe()}: {data[:200]!r}")
        if status == 422 and call.names and not any(name in payload["detail"] for name in call.names):
            raise Broken("unnamed", f"the 422 names none of {call.names} for {call.describe()}: {payload['detail']}")
        return
    if 200 <= status < 300 and call.route in ("/predict", "/repos/{owner}/{repo}/issues/{number}/prediction"):
        try:
            payload = _strict_json(data)
        except ValueError as exc:
            raise Broken("payload", f"{status} body is not strict JSON ({exc}) for {call.describe()}") from exc
        predictions = payload["predictions"] if call.route == "/predict" else [payload]
        for p in predictions:
            if p["status"] == "scored" and not 0 <= p["probability"] <= 1:
                raise Broken("payload", f"probability {p['probability']} for {call.describe()}")


def run_batch(port: int, calls: list[Call], probes: list[Call], stats: Counter, strict: bool = True) -> None:
    """The calls, then the probes, over one keep-alive connection. Counts (route, status) of the calls,
    ("probe", status) of the probes and failures in `stats`; strict: the first failure raises (a test), else it
    is counted and the batch goes on (the bench)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for k, call in enumerate([*calls, *probes]):
            try:
                status, headers, data = send(conn, call)
            except (OSError, http.client.BadStatusLine, http.client.IncompleteRead) as exc:  # not a client-side error
                stats["reset"] += 1
                failure = Broken("reset", f"{type(exc).__name__}: {exc} on {call.describe()}, after "
                                          f"{len(stats)} requests")
                if strict:
                    raise failure from exc
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                continue
            stats[(call.route if k < len(calls) else "probe", status)] += 1
            try:
                check(call, status, headers, data)
            except Broken as failure:
                stats[failure.kind] += 1
                if strict:
                    raise
                if failure.kind == "closed":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    finally:
        conn.close()


# ---- values: in range, at the edges, past them, of the wrong type -------------------------------------------

EDGE_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**39 - 1, 2**39, 2**40 - 1, 2**40, 2**53, 2**53 + 1, 2**63 - 1, 2**63,
             -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 2**70, 10**100, -(10**100)]
ODD_INTS = st.one_of(st.sampled_from(EDGE_INTS), st.integers(), st.integers(min_value=2**60, max_value=2**80))
ODD_FLOATS = st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 1.5, 1e19]))
ODD_CHARS = ["\ud800", "\udfff", "\udc80", "\x00", "\u202e", "e\u0301", "\ufeff", "\U0001f600", "\uffff", "\u2028",
             "\\", '"', "\n", "\x7f", "\u0085", "\U000e0001", "ß", "İ", "\ufdd0"]
ODD_TEXTS = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),  # surrogates included
    st.lists(st.sampled_from(ODD_CHARS), min_size=1, max_size=8).map("".join),
    st.sampled_from(["", " ", "null", "true", "0", "-1", "NaN", "1e309", "2023-01-01T00:00:00Z", "acme/widgets",
                     "../../etc/passwd", "a" * 300, "%00", "'; DROP TABLE issues; --", "{", "[]"]),
)
KEYS = st.one_of(st.text(max_size=12), st.sampled_from(["\ud800", "a\x00b", "id", "__proto__", "a" * 200, ""]))
SCALARS = st.one_of(st.none(), st.booleans(), ODD_INTS, ODD_FLOATS, ODD_TEXTS)


def containers(inner):
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3))


ANY_JSON = st.recursive(SCALARS, containers, max_leaves=10)
OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


def iso(dt: datetime) -> str:
    return dt.isoformat()


ANY_DATETIMES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                             timezones=st.one_of(st.none(), st.just(UTC), OFFSETS))
RANGE_DATETIMES = st.datetimes(min_value=DOCUMENTED_TIME_RANGE[0], max_value=DOCUMENTED_TIME_RANGE[1],
                               timezones=st.one_of(st.none(), st.just(UTC), OFFSETS))
EDGE_TIMES = ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+23:59", "1677-09-21T00:12:43.145224Z",
              "1677-09-21T00:12:43.145225Z", "1969-12-31T23:59:59.999999Z", "1970-01-01T00:00:00Z",
              "1970-01-01T00:30:00+01:00", "2199-12-31T23:59:59.999999Z", "2200-01-01T00:00:00Z",
              "2199-12-31T23:00:00-01:00", "2262-04-11T23:47:16.854775Z", "2262-04-12T00:00:00Z",
              "2263-01-01T00:00:00Z",
              "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59.999999+00:00",
              "2023-06-01", "2023-06-01T00:00:00", "2023-06-01T00:00:00+24:00", "2023-02-30T00:00:00Z",
              "2023-06-01T00:00:00.123456789Z", "2023-06-01 00:00:00Z", "20230601T000000Z", "yesterday", "",
              "2023-06-01T00:00:00Z\n", "+002023-06-01T00:00:00Z", "2023-W22-4"]
EDGE_INSTANTS = [datetime(1, 1, 1), datetime(1677, 9, 21, 0, 12, 43, 145224),
                 datetime(1969, 12, 31, 23, 59, 59, 999999), datetime(1970, 1, 1),
                 datetime(2199, 12, 31, 23, 59, 59, 999999), datetime(2200, 1, 1),
                 datetime(2262, 4, 11, 23, 47, 16, 854775), datetime(2262, 4, 12),
                 datetime(9999, 12, 31, 23, 59, 59, 999999)]
EDGE_ZONES = [None, UTC, timezone(timedelta(hours=23, minutes=59)), timezone(-timedelta(hours=23, minutes=59)),
              timezone(timedelta(hours=1)), timezone(-timedelta(hours=1))]
EDGE_INSTANTS_IN_ZONES = st.builds(lambda at, zone: at.replace(tzinfo=zone).isoformat(),
                                   st.sampled_from(EDGE_INSTANTS), st.sampled_from(EDGE_ZONES))
#: the ends of each range that a layer has, pushed past them by the largest offsets
EXTREME_TIMES = ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999-23:59", "1970-01-01T00:00:00+00:01",
                 "2199-12-31T23:59:59.999999-00:01", "1677-09-21T00:12:43.145224+23:59",
                 "2262-04-11T23:47:16.854775-23:59", "0001-01-01T00:00:00", "9999-12-31T23:59:59.999999"]
ODD_TIMES = st.one_of(st.sampled_from(EXTREME_TIMES), EDGE_INSTANTS_IN_ZONES, st.sampled_from(EDGE_TIMES),
                      ANY_DATETIMES.map(iso), RANGE_DATETIMES.map(iso),
                      st.integers(min_value=-(2**40), max_value=2**40),
                      ODD_FLOATS)


@dataclass(frozen=True)
class Raw:
    """Bytes spliced into a serialized body where this value stands (what json.dumps cannot write:
    nesting thousands deep, invalid UTF-8, duplicate keys)."""

    data: bytes


DEPTHS = st.sampled_from([2, 100, 999, 1000, 1001, 3000, 20_000])
DEEP = st.one_of(DEPTHS.map(lambda d: Raw(b"[" * d + b"]" * d)),
                 DEPTHS.map(lambda d: Raw(b'{"a":' * d + b"1" + b"}" * d)),
                 DEPTHS.map(lambda d: Raw(b'[{"a":' * (d // 2) + b"null" + b"}]" * (d // 2))))
RAW_VALUES = st.one_of(DEEP, st.sampled_from([Raw(b'"\xff\xfe"'), Raw(b'"\xed\xa0\x80"'), Raw(b'"\x00"'),
                                              Raw(b"NaN"), Raw(b"-Infinity"), Raw(b"1e999"), Raw(b"-0"),
                                              Raw(b'"\\ud800"'), Raw(b"01"), Raw(b"[1,]"), Raw(b"{\"a\" 1}")]))


def huge_texts(limit: int):
    """Strings sized so the whole body lands around the body limit (below, at and past it); bytes per char
    vary (escapes, multi-byte UTF-8)."""
    def build(args):
        unit, fraction = args
        width = len(json.dumps(unit, ensure_ascii=False).encode("utf-8", "surrogatepass")) - 2
        return unit * max(1, int(limit * fraction / max(width, 1)))

    return st.tuples(st.sampled_from(["x", "é", "😀", "\x00", "\\", '"', "\u2028", "@a #1 `x` "]),
                     st.sampled_from([0.3, 0.9, 0.98, 0.995, 1.0, 1.05])).map(build)


def encode(value) -> bytes:
    """JSON of `value` with every Raw spliced in (json.dumps escapes lone surrogates; NaN stays NaN)."""
    raws: list[bytes] = []

    def stand_in(v):
        if isinstance(v, Raw):
            raws.append(v.data)
            return f"\x01raw{len(raws) - 1}\x01"
        if isinstance(v, dict):
            return {k: stand_in(x) for k, x in v.items()}
        if isinstance(v, list):
            return [stand_in(x) for x in v]
        return v

    text = json.dumps(stand_in(value)).encode()
    for i, data in enumerate(raws):
        text = text.replace(f'"\\u0001raw{i}\\u0001"'.encode(), data, 1)
    return text


# ---- the OpenAPI schema: paths of every body field and values inside the schema ------------------------------

def resolve(schema: dict, components: dict) -> dict:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def from_schema(schema: dict, components: dict, depth: int = 0):
    """Values valid for a JSON schema of the subset OpenAPI 3.1 uses here (object, array, anyOf, $ref, string
    with a pattern or date-time format, integer and number bounds, boolean, null). Times are any RFC 3339
    date-time (the schema gives no range), half of them within the documented one.
    (hypothesis-jsonschema 0.23.1, its latest release, fails on current hypothesis: 'many' object has no
    attribute 'more'.)"""
    schema = resolve(schema, components)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, components, depth) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if kind == "number":
            return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False,
                             exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema)
        low = None if low is None else math.ceil(low) + ("exclusiveMinimum" in schema and low == math.ceil(low))
        high = None if high is None else math.floor(high) - ("exclusiveMaximum" in schema and high == math.floor(high))
        return st.integers(min_value=low, max_value=high)
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.one_of(ANY_DATETIMES, RANGE_DATETIMES).map(iso)
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(max_size=30)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), components, depth + 1), max_size=3)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        fixed = {k: from_schema(v, components, depth + 1) for k, v in props.items() if k in required}
        optional = {k: from_schema(v, components, depth + 1) for k, v in props.items() if k not in required}
        value = st.fixed_dictionaries(fixed, optional=optional)
        if schema.get("additionalProperties", True) is not False:
            extra = st.dictionaries(KEYS.filter(lambda k: k not in props), ANY_JSON if depth < 3 else SCALARS,
                                    max_size=2)
            value = st.tuples(value, extra).map(lambda t: {**t[1], **t[0]})
        return value
    return ANY_JSON


def field_paths(schema: dict, components: dict, prefix: tuple = ()) -> list[tuple[tuple, dict]]:
    """(path, leaf schema) of every field in a body schema, list items at indexes 0 and 1."""
    schema = resolve(schema, components)
    out = []
    for name, sub in schema.get("properties", {}).items():
        path = (*prefix, name)
        out.append((path, sub))
        variants = [resolve(s, components) for s in sub.get("anyOf", [sub])]
        for variant in variants:
            if variant.get("properties"):
                out += field_paths(variant, components, path)
            elif variant.get("type") == "array":
                for index in (0, 1):
                    item = variant.get("items", {})
                    out.append(((*path, index), item))
                    for part in [resolve(s, components) for s in item.get("anyOf", [item])]:
                        if part.get("properties"):
                            out += field_paths(part, components, (*path, index))
    return out


def spelling(path: tuple) -> str:
    """How a 422 names a field: `issues[1].user.id` (a part over 80 characters cut to 77 and '...', a lone
    surrogate or other non-ASCII character as its backslash escape)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if len(part) <= 80 else part[:77] + "..."
            text = text.encode("utf-8", "backslashreplace").decode()
            out += f".{text}" if out else text
    return out


def kind_of(schema: dict, components: dict) -> str:
    """'time', 'integer', 'string' or 'other': what values a field gets."""
    variants = [resolve(s, components) for s in schema.get("anyOf", [schema])]
    kinds = {v.get("type") for v in variants} | {v.get("format") for v in variants}
    return next((k for k in ("date-time", "integer", "string") if k in kinds), "other").replace("date-", "")


def odd_value(schema: dict, components: dict, limit: int):
    """A value for a field: inside its schema, at the edges of its type (weighted: the edges are where the
    bugs are), past them, or of another type."""
    own = from_schema(schema, components)
    kind = kind_of(schema, components)
    if kind == "time":
        return st.one_of(ODD_TIMES, ODD_TIMES, ODD_TIMES, own, ANY_JSON, RAW_VALUES)
    if kind == "integer":
        return st.one_of(ODD_INTS, ODD_INTS, own, ODD_FLOATS, ANY_JSON, RAW_VALUES)
    if kind == "string":
        return st.one_of(ODD_TEXTS, huge_texts(limit), own, ANY_JSON, RAW_VALUES)
    return st.one_of(own, ANY_JSON, RAW_VALUES)


def put(body: dict, path: tuple, value) -> tuple | None:
    """Set body[path] = value, making the containers on the way (a dict, or a list long enough); the path of
    the first container made (a 422 may name it instead: its required fields are missing)."""
    node, made = body, None
    for depth, (part, following) in enumerate(zip(path[:-1], path[1:], strict=True)):
        fresh = [] if isinstance(following, int) else {}
        if isinstance(part, int):
            while len(node) <= part:
                made = made or path[:depth + 1]
                node.append(copy.deepcopy(node[0]) if node and isinstance(node[0], dict) else fresh)
                fresh = [] if isinstance(following, int) else {}
            if not isinstance(node[part], dict | list):
                made = made or path[:depth + 1]
                node[part] = fresh
        elif not isinstance(node.get(part), dict | list) or isinstance(following, int) != isinstance(node[part], list):
            made = made or path[:depth + 1]
            node[part] = fresh
        node = node[part]
    last = path[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(value)
    node[last] = value
    return made


# ---- the service under test --------------------------------------------------------------------------------

class World:
    """A trained champion, a lake history, a stored prediction batch, a GitHub replay and valid requests."""

    def __init__(self, tmp, limit: int = MAX_BODY):
        self.pipeline = Pipeline(tmp)
        p = self.pipeline
        batch = batch_open_issue_predictions(p.model, p.version, p.store, p.issues, BATCH_T)
        write_predictions(p.lake, REPO, batch, BATCH_T)
        self.limit = limit
        good, when = just_opened(p.new_items[0])
        other, later = just_opened(p.new_items[1], minutes=60)
        both = max(when, later)
        self.bases = [
            {"repository": REPO, "issue": good, "scoring_time": when},
            {"repository": REPO, "issues": [good, other], "scoring_time": both, "include_features": True, "top_k": 3},
            {"repository": REPO, "issue": good},  # scored now: decided
        ]
        self.valid = Call("POST", "/predict", "/predict", json.dumps(self.bases[0]).encode(), "application/json")
        self.health = Call("GET", "/healthz", "/healthz")
        stored = p.issues.loc[~p.issues["is_pull_request"], "number"].tolist()
        pulls = [i["number"] for i in p.items if "pull_request" in i]
        self.numbers = [stored[-1], stored[0], pulls[0], max(i["number"] for i in p.items) + 1]
        self.versions = [p.version, p.second_version]

    def openapi(self, spec: dict) -> None:
        """Read the service's OpenAPI document (`app.openapi()`, or /openapi.json as served)."""
        self.components = spec["components"]["schemas"]
        self.request_schema = self.components["PredictRequest"]
        self.paths = spec["paths"]
        self.fields = field_paths(self.request_schema, self.components)
        self.fields_by_kind: dict[str, list] = {}
        for path, schema in self.fields:
            self.fields_by_kind.setdefault(kind_of(schema, self.components), []).append((path, schema))


def documented_rules(body: dict) -> dict:
    """The body made to follow what the schema's descriptions say and JSON Schema cannot: the repository with a
    history, exactly one of `issue`/`issues`, a scoring time an hour after the latest creation (when the times
    are in range), so that generated bodies reach the scoring path."""
    body = {**body, "repository": REPO}
    if body.get("issue") is not None and body.get("issues"):
        del body["issues"]
    items = [body["issue"]] if body.get("issue") is not None else body.get("issues") or []
    try:
        created = [datetime.fromisoformat(i["created_at"]) for i in items]
        created = [c if c.tzinfo else c.replace(tzinfo=UTC) for c in created]
        latest = max(created) + timedelta(hours=1)
        if created and all(DOCUMENTED_TIME_RANGE[0] <= c.replace(tzinfo=None) - c.utcoffset() for c in created) \
                and latest.astimezone(UTC).year < 2200:
            body["scoring_time"] = latest.isoformat()
    except (ValueError, OverflowError, TypeError, KeyError):
        pass
    return body


def bodies_from_schema(world: World):
    """POST /predict bodies generated from the OpenAPI schema, half of them made to follow the documented rules
    (given an `issue` from the GitHubIssue schema when they have none)."""
    bodies = from_schema(world.request_schema, world.components)
    issues = from_schema(world.components["GitHubIssue"], world.components)

    @st.composite
    def build(draw):
        body = draw(bodies)
        if draw(st.booleans()):
            if body.get("issue") is None and not body.get("issues"):
                body["issue"] = draw(issues)
            body = documented_rules(body)
        return Call("POST", "/predict", "/predict", encode(body), "application/json")

    return build()


def bodies_with_one_odd_field(world: World):
    """A valid body with one field replaced, removed, or one unknown key added; the 422 must name it."""
    @st.composite
    def build(draw):
        body = copy.deepcopy(draw(st.sampled_from(world.bases)))
        how = draw(st.sampled_from(["replace"] * 8 + ["remove", "unknown key"]))
        if how == "unknown key":
            key = draw(KEYS.filter(lambda k: k not in world.request_schema["properties"]))
            body[key] = draw(ANY_JSON)
            path, names = (key,), (spelling((key,)), "Extra inputs")
        else:
            kind = draw(st.sampled_from(sorted(world.fields_by_kind)))  # each kind of field as often
            fields = world.fields_by_kind[kind]
            if draw(st.integers(0, 9)):  # mostly a field of the body's own form (`issue` or `issues`)
                fields = [f for f in fields if f[0][0] in body or f[0][0] not in ("issue", "issues")] or fields
            path, schema = draw(st.sampled_from(fields))
            if how == "remove":
                parent = body
                for part in path[:-1]:
                    parent = parent.get(part) if isinstance(parent, dict) else (
                        parent[part] if isinstance(parent, list) and part < len(parent) else None)
                if isinstance(parent, dict):
                    parent.pop(path[-1], None)
            made = None
            if how == "replace":
                made = put(body, path, draw(odd_value(schema, world.components, world.limit)))
            names = (spelling(path),) + ((spelling(made),) if made else ())
            if path[-1] == "scoring_time" or path[-1] == "created_at":
                names += ("after the scoring time",)  # the conflict of the two is named by created_at
            if path[-1] == "id":
                names += ("more than once",)  # a duplicate is named at its second place
            if path[0] in ("issue", "issues"):
                names += ("exactly one of `issue` (an object) or `issues` (a list)", "`issues` is empty")
        chunked = draw(st.booleans()) and draw(st.booleans())
        return Call("POST", "/predict", "/predict", encode(body), "application/json", chunked, names)

    return build()


CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.api+json",
                 "application/json; charset=latin-1", "text/plain", None, "", "application/x-www-form-urlencoded",
                 "multipart/form-data", "multipart/form-data; boundary=x", "*/*", "application/xml", "application/"]


def raw_bodies(world: World):
    """Bodies that are not a JSON object of the schema: broken JSON, empty, duplicate keys, nesting, odd bytes,
    sizes around the limit, with every kind of content type, with a Content-Length or chunked."""
    good = json.dumps(world.bases[0]).encode()
    repo = json.dumps(REPO).encode()
    item = json.dumps(world.bases[0]["issue"]).encode()
    near = st.sampled_from([0.5, 0.99, 1.0, 1.01, 1.5]).map(lambda f: b'{"repository": "' + b"a" * int(world.limit * f)
                                                          + b'"}')
    body = st.one_of(
        st.integers(min_value=0, max_value=len(good) - 1).map(lambda n: good[:n]),
        st.sampled_from([b"", b" ", b"\n", b"null", b"[]", b"{}", b"1", b'"x"', b"true", b"\xef\xbb\xbf" + good,
                         good + b"garbage", good + b"\x00", b"{" + b"\x00" * 10 + b"}", b"\xff\xfe\xfd",
                         b'{"repository": "acme/widgets", "repository": "nobody/nothing", "issue": ' + item + b"}",
                         b'{"repository": ' + repo + b', "issue": ' + item + b', "issue": ' + item + b"}",
                         b'{"repository": ' + repo + b', "\\ud800": 1}',
                         b'{"repository": ' + repo + b', "issue": {"\\udfff": 1}}',
                         b'{"repository": "\\ud800/x"}', b'{"repository": "acme/widgets\\u0000"}',
                         b'{"repository": ' + repo + b', "top_k": NaN, "issue": ' + item + b"}",
                         b'{"repository": ' + repo + b', "issue": ' + item + b', "scoring_time": Infinity}']),
        DEEP.map(lambda r: r.data),
        DEEP.map(lambda r: b'{"repository": ' + repo + b', "issue": ' + r.data + b"}"),
        DEEP.map(lambda r: b'{"repository": ' + repo + b', "issue": ' + item[:-1] + b', "pull_request": ' + r.data
                 + b"}}"),
        near,
        st.binary(max_size=64),
    )
    return st.builds(lambda data, ctype, chunked: Call("POST", "/predict", "/predict", data, ctype, chunked),
                     body, st.sampled_from(CONTENT_TYPES), st.booleans())


SEGMENT_EDGES = ["acme", "widgets", ".", "..", "a" * 39, "a" * 40, "a" * 100, "a" * 101, "a" * 300, "acme%0A", "%2F",
                 "%00", "%ff", "%ED%A0%80", "%", "%zz", "x%20y",
                 "-", "_", "a.b", "acme%2Fwidgets", "%C0%AE%C0%AE", "~"]


def segments():
    return st.one_of(st.sampled_from(SEGMENT_EDGES),
                     st.text(st.characters(codec=None, exclude_categories=()), min_size=1, max_size=20)
                     .map(lambda s: quote(s, safe="", errors="surrogatepass")))


def query_values():
    return st.one_of(
        st.sampled_from(["", "0", "-1", "1", "3", "3650", "3650.000001", "1e-320", "1e309", "nan", "NaN", "inf",
                         "-inf", "Infinity", "true", "false", "yes", "maybe", "1_0", " 1", "0x10", "١", "%00", "%ff",
                         str(2**63), str(2**70), "9" * 5000]).map(lambda v: quote(v, safe="%")),
        ODD_INTS.map(str), st.floats().map(repr),
        st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
        .map(lambda s: quote(s, safe="", errors="surrogatepass")))


def get_calls(world: World):
    """Every GET route with odd path segments and query parameters (and odd methods)."""
    @st.composite
    def build(draw):
        which = draw(st.sampled_from(["issue", "batch", "csv", "report", "plain"]))
        good_owner, good_repo = REPO.split("/")
        owner = draw(st.one_of(st.just(good_owner), segments()))
        repo = draw(st.one_of(st.just(good_repo), segments()))
        params = []
        names: tuple[str, ...] = ()
        if owner != good_owner or repo != good_repo:
            names = ("repository", "path.owner", "path.repo")
        if which == "issue":
            number = draw(st.one_of(st.sampled_from([str(n) for n in world.numbers]), query_values()))
            route = "/repos/{owner}/{repo}/issues/{number}/prediction"
            path = f"/repos/{owner}/{repo}/issues/{number}/prediction"
            names += ("path.number", "pull request")
            for name in draw(st.lists(st.sampled_from(["top_k", "include_features", "other"]), max_size=3)):
                params.append(f"{name}={draw(query_values())}")
                names += (f"query.{name}",)
        elif which in ("batch", "csv"):
            route = "/repos/{owner}/{repo}/predictions" + (".csv" if which == "csv" else "")
            path = f"/repos/{owner}/{repo}/predictions" + (".csv" if which == "csv" else "")
            for name in draw(st.lists(st.sampled_from(["days", "numbers", "top_k"]), max_size=3)):
                if name == "numbers" and draw(st.booleans()):  # lists of issue numbers, good and odd
                    parts = draw(st.lists(st.one_of(st.sampled_from([str(n) for n in world.numbers]), query_values()),
                                          min_size=0, max_size=120))
                    value = ",".join(parts)
                else:
                    value = draw(query_values())
                params.append(f"{name}={value}")
                names += (f"query.{name}", name)
        elif which == "report":
            version = draw(st.one_of(st.just("champion"), st.sampled_from(world.versions), segments()))
            route, path = "/models/{version}", f"/models/{version}"
            names = ("path.version", "version")
        else:
            route = draw(st.sampled_from(["/model", "/healthz", "/metrics", "/openapi.json", "/nowhere"]))
            path = route
            names = ()
            if draw(st.booleans()):
                params.append(f"{draw(segments())}={draw(query_values())}")
        method = draw(st.sampled_from(["GET"] * 12 + ["HEAD", "POST", "DELETE", "PUT", "OPTIONS"]))
        target = path + ("?" + "&".join(params) if params else "")
        body = encode(world.bases[0]) if method in ("POST", "PUT") and draw(st.booleans()) else None
        return Call(method, target, route, body, "application/json" if body else None, False, names)

    return build()


# ---- the tests -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    world = World(tmp_path_factory.mktemp("fuzz"))
    p = world.pipeline
    replay = ReplayServer(p.items, p.comment_items).start()
    app = create_app(p.registry, p.lake, github_client_factory=lambda repo: GitHubClient(replay.url, max_retries=0),
                     max_body_bytes=MAX_BODY, max_batch=40, reload_interval_s=60)
    world.openapi(app.openapi())
    world.app = app
    service = Service(app)
    world.port = service.port
    yield world
    service.stop()
    replay.stop()


#: what each fuzz generates (the tests run each; bench/bench_fuzz.py runs them longer)
CATEGORIES = {
    "POST /predict, bodies from the OpenAPI schema": bodies_from_schema,
    "POST /predict, a valid body with one odd field": bodies_with_one_odd_field,
    "POST /predict, raw bodies and content types": raw_bodies,
    "GET routes, odd path and query parameters (and methods)": get_calls,
}


def drive(world: World, strategy, examples: int, max_calls: int = 6, strict: bool = True,
          seed: int | None = None) -> Counter:
    """`examples` batches of up to `max_calls` requests: derandomized (CI: the same requests every run), or
    from `seed`; strict: stop at the first failure and shrink it (a test), else count failures (the bench)."""
    stats: Counter = Counter()

    @settings(max_examples=examples, derandomize=seed is None, database=None, deadline=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example, HealthCheck.filter_too_much])
    @given(calls=st.lists(strategy, min_size=1, max_size=max_calls))
    def batch(calls):
        stats["examples"] += 1
        run_batch(world.port, calls, [world.valid, world.health], stats, strict)

    (batch if seed is None else hypothesis_seed(seed)(batch))()
    return stats


def statuses(stats: Counter, route: str) -> set[int]:
    return {key[1] for key in stats if isinstance(key, tuple) and key[0] == route}


def test_the_declared_ranges_are_in_the_openapi_schema(fuzz):
    """/docs shows each range: bounds of ids, numbers and user ids, and the time range in every time field."""
    issue, user = fuzz.components["GitHubIssue"]["properties"], fuzz.components["GitHubUser"]["properties"]
    for prop, limit in ((issue["id"], 2**40), (issue["number"], 2**40)):
        assert prop["minimum"] == 1 and prop["exclusiveMaximum"] == limit, prop
    user_id = next(s for s in user["id"]["anyOf"] if s.get("type") == "integer")
    assert user_id["minimum"] == 1 and user_id["exclusiveMaximum"] == 2**39
    times = [issue["created_at"], issue["closed_at"], issue["updated_at"],
             fuzz.request_schema["properties"]["scoring_time"]]
    for prop in times:
        assert "from 1970-01-01T00:00:00Z to before 2200-01-01T00:00:00Z" in prop["description"], prop
    number = next(p for p in fuzz.paths["/repos/{owner}/{repo}/issues/{number}/prediction"]["get"]["parameters"]
                  if p["name"] == "number")
    assert number["schema"]["minimum"] == 1 and number["schema"]["exclusiveMaximum"] == 2**40


@pytest.mark.parametrize(("field", "value"), [
    (("issue", "id"), 2**70), (("issue", "id"), 2**63), (("issue", "id"), 2**40), (("issue", "id"), 0),
    (("issue", "number"), 2**64), (("issue", "number"), -1), (("issue", "user", "id"), 2**63 - 1),
    (("issue", "user", "id"), -5), (("issue", "created_at"), "2262-04-12T00:00:00Z"),
    (("issue", "created_at"), "0001-01-01T00:00:00+23:59"), (("issue", "closed_at"), "9999-12-31T23:59:59Z"),
    (("issue", "updated_at"), "1969-12-31T23:59:59Z"), (("scoring_time",), "2262-04-12T00:00:00Z"),
    (("scoring_time",), "9999-12-31T23:59:59-23:59"), (("issues", 1, "id"), 2**63),
])
def test_failure_4_out_of_range_fields_are_a_422_naming_them(fuzz, field, value):
    """The cases of failure 4 (and their neighbours): a 422 naming the field, and the connection serves the
    next request (before the fix: 500, the connection reset, or 2**63 wrapped to a negative id)."""
    body = copy.deepcopy(fuzz.bases[1] if field[0] == "issues" else fuzz.bases[0])
    put(body, field, value)
    conn = http.client.HTTPConnection("127.0.0.1", fuzz.port, timeout=60)
    try:
        status, headers, data = send(conn, Call("POST", "/predict", "/predict", encode(body), "application/json"))
        detail = _strict_json(data)["detail"]
        assert status == 422 and spelling(field) in detail, (status, detail)
        assert "connection" not in headers
        again = send(conn, fuzz.valid)
        assert again[0] == 200 and _strict_json(again[2])["count"] == 1
    finally:
        conn.close()


@pytest.mark.parametrize("target", [
    f"/repos/{'a' * 300}/widgets/predictions", f"/repos/acme/{'b' * 101}/predictions.csv",
    f"/repos/{'a' * 40}/widgets/issues/1/prediction", "/repos/acme%0A/widgets/predictions",
])
def test_repository_names_past_githubs_limits_are_a_422(fuzz, target):
    """Owner up to 39 characters, name up to 100 (GitHub's): longer ones made lake keys no file system
    accepts (a 500 'File name too long' found by bench_fuzz), a newline slipped through a `$` pattern."""
    conn = http.client.HTTPConnection("127.0.0.1", fuzz.port, timeout=60)
    try:
        status, _, data = send(conn, Call("GET", target, "repos"))
        assert status == 422 and "repository must look like OWNER/NAME" in _strict_json(data)["detail"], data
        body = {**fuzz.bases[0], "repository": f"{'a' * 40}/widgets"}
        status, _, data = send(conn, Call("POST", "/predict", "/predict", encode(body), "application/json"))
        assert status == 422 and "repository" in _strict_json(data)["detail"], data
        assert send(conn, fuzz.valid)[0] == 200
    finally:
        conn.close()


def test_the_range_edges_are_accepted(fuzz):
    """The last values inside each range are scored (the ranges are not narrower than documented)."""
    first = copy.deepcopy(fuzz.bases[0])
    put(first, ("issue", "id"), 2**40 - 1)
    put(first, ("issue", "number"), 2**40 - 1)
    put(first, ("issue", "user", "id"), 2**39 - 1)
    put(first, ("issue", "created_at"), "1970-01-01T00:00:00Z")
    put(first, ("scoring_time",), "1970-01-01T01:00:00+01:00")  # = the creation time, in UTC
    last = copy.deepcopy(fuzz.bases[0])
    put(last, ("issue", "created_at"), "2199-12-31T23:00:00-00:59")
    put(last, ("scoring_time",), "2199-12-31T23:59:59.999999Z")
    for body in (first, last):
        conn = http.client.HTTPConnection("127.0.0.1", fuzz.port, timeout=60)
        try:
            status, _, data = send(conn, Call("POST", "/predict", "/predict", encode(body), "application/json"))
        finally:
            conn.close()
        assert status == 200, data
        got = _strict_json(data)["predictions"][0]
        assert got["status"] == "scored" and 0 <= got["probability"] <= 1
        assert got["id"] == body["issue"]["id"]  # kept exactly, never wrapped


def test_an_unexpected_error_is_a_json_500_and_the_connection_stays_open(fuzz, monkeypatch):
    """Whatever still escapes is answered by the service's own JSON 500, and the keep-alive connection serves
    the next request (uvicorn closes it when an exception leaves the app, as Starlette's 500 handler re-raises)."""
    import issue_assets.serving.service as service_module

    def broken(*args, **kwargs):
        raise OverflowError("date value out of range")

    conn = http.client.HTTPConnection("127.0.0.1", fuzz.port, timeout=60)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(service_module, "request_columns", broken)
            status, headers, data = send(conn, fuzz.valid)
        assert status == 500 and _strict_json(data) == {
            "detail": "internal error (OverflowError); the service log has the details"}
        assert "close" not in headers.get("connection", "")
        for _ in range(3):
            assert send(conn, fuzz.valid)[0] == 200
            assert send(conn, fuzz.health)[0] == 200
    finally:
        conn.close()


def test_scoring_times_across_the_range_share_the_text_models(fuzz):
    """A client asking for scoring times all over the accepted range does not make the service fit and keep a
    text model per 60-day period (1,400 of them, 2 MB each): periods with the same known documents share one."""
    from issue_assets.features.text_score import period_start

    scorer = fuzz.app.state.snapshots.get(REPO).scorer
    config = scorer.config
    last_label = float(scorer.known_at_us[~np.isnan(scorer.known_at_us)].max())
    after = [int(period_start([int(last_label) + k * 45 * 86_400_000_000], config)[0]) for k in range(2, 60)]
    later = {id(scorer.model(p0)) for p0 in after}
    assert len(later) == 1 and scorer.model(after[0]) is not None
    before = {scorer.model(int(period_start([k * 86_400_000_000 * 61], config)[0])) for k in range(0, 50)}
    assert before == {None}  # 1970-1978: no documents, no model
    conn = http.client.HTTPConnection("127.0.0.1", fuzz.port, timeout=60)
    try:
        for year in (2030, 2077, 2150, 2199):
            body = copy.deepcopy(fuzz.bases[0])
            put(body, ("issue", "created_at"), f"{year}-03-01T00:00:00Z")
            put(body, ("scoring_time",), f"{year}-03-01T06:00:00Z")
            status, _, data = send(conn, Call("POST", "/predict", "/predict", encode(body), "application/json"))
            assert status == 200 and _strict_json(data)["predictions"][0]["status"] == "scored", data
    finally:
        conn.close()
    assert {id(scorer.model(p0)) for p0 in after} == later


def test_fuzz_bodies_from_the_openapi_schema(fuzz):
    stats = drive(fuzz, bodies_from_schema(fuzz), examples=200)
    seen = statuses(stats, "/predict")
    assert {200, 404, 422} <= seen, stats  # the scoring path, an unknown repository and field errors reached


def test_fuzz_one_odd_field_in_a_valid_body(fuzz):
    stats = drive(fuzz, bodies_with_one_odd_field(fuzz), examples=800)
    assert {200, 413, 422} <= statuses(stats, "/predict"), stats


def test_fuzz_raw_bodies_and_content_types(fuzz):
    stats = drive(fuzz, raw_bodies(fuzz), examples=250)
    assert {400, 413, 415, 422} <= statuses(stats, "/predict"), stats


def test_fuzz_get_routes_parameters(fuzz):
    stats = drive(fuzz, get_calls(fuzz), examples=300)
    routes = {key[0] for key in stats if isinstance(key, tuple)}
    assert {"/repos/{owner}/{repo}/issues/{number}/prediction", "/repos/{owner}/{repo}/predictions",
            "/repos/{owner}/{repo}/predictions.csv", "/model", "/healthz", "/metrics"} <= routes, stats
    assert {200, 404, 422} <= statuses(stats, "/repos/{owner}/{repo}/predictions"), stats
    assert 200 in statuses(stats, "/repos/{owner}/{repo}/issues/{number}/prediction"), stats
