"""The raw log of one repository and kind: immutable monthly parquet parts named by one manifest.

The manifest (`raw/<kind>/<owner>__<name>/_manifest.json`) is the only thing ever replaced, and only
by compare-and-put against the version that was read, so two writers (two CLI ingests, two Dagster
runs, two hosts on one S3 prefix) cannot lose each other's versions: the loser of a race re-reads the
month parts that changed, merges its versions into them and commits again. It holds, in one atomic
record:

    format       2
    seq          commit counter; a month part carries the seq that committed it (merges read the newer)
    epoch        changes when the manifest is rebuilt, so every merge then starts over
    months       {YYYY-MM: {key, sha256, rows, bytes, seq}}: the one part holding that month
    rejects      [{key, sha256, rows, bytes}]: items that could not be normalised, with their reasons
    cursor       newest updated_at an open-ended sync has stored, contiguous from the beginning
    checkpoints  {window: ISO time}: how far an unfinished window sweep has stored
    refetch      set by repair: the next incremental sync re-reads from there without validators
    swept_at     when the last sweep of this kind finished

Data and the cursor or checkpoint that covers it are committed together, so the cursor can never move
past a version the log does not hold. A lake written before this format (format 1: month files read,
modified and written in place, cursor and checkpoints in `state/.../sync.json`) is read as it is and
converted by its first writer, adopting every month file, rejects file and cursor it finds.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from issue_assets.ingest import layout
from issue_assets.lake.documents import backoff, dumps, parse_json, read_json
from issue_assets.lake.parts import FileRecord, read_part, sha256, unique_suffix, write_part
from issue_assets.lake.store import DamagedFile, KeyNotFound, ObjectStore, StoreError, parse_parquet

log = logging.getLogger("issue_assets.ingest")

FORMAT = 2
PART_RE = re.compile(r"^(\d{4}-\d{2})(?:\.([0-9a-f]{16}-[0-9a-f]{8}))?\.parquet$")
REJECTS_RE = re.compile(r"^rejects\.[0-9a-f]{16}-[0-9a-f]{8}\.parquet$")
REJECT_KEYS = ["kind", "id", "number", "reason", "payload"]
MAX_REJECT_PARTS = 8
COMMIT_ATTEMPTS = 60


def empty_manifest() -> dict:
    return {"format": FORMAT, "seq": 0, "epoch": None, "months": {}, "rejects": [], "cursor": None,
            "checkpoints": {}, "refetch": None}


@dataclass
class Commit:
    """What a change to the manifest wrote (deleted if the commit loses) and replaced (deleted if it wins)."""

    written: list[str]
    replaced: list[str]


class RawLog:
    def __init__(self, store: ObjectStore, kind: str, repo: str):
        if kind not in layout.KINDS:
            raise ValueError(f"kind must be one of {list(layout.KINDS)}, got {kind!r}")
        self.store = store
        self.kind = kind
        self.repo = layout.check_repo(repo)
        self.key = layout.raw_manifest_key(kind, repo)
        self.remedy = layout.repair_command(repo)

    def __repr__(self) -> str:
        return f"RawLog({self.store.uri}/{self.key})"

    # ---- reading ---------------------------------------------------------------------------
    def read(self) -> tuple[dict, str | None]:
        """(manifest in the current format, version); an older lake's manifest converted in memory."""
        try:
            raw, version = self.store.get_versioned(self.key)
        except KeyNotFound:
            return self._from_legacy(None), None
        doc = parse_json(raw, f"{self.store.uri}/{self.key}", self.remedy)
        self._check_shape(doc)
        if doc.get("format") != FORMAT:
            doc = self._from_legacy(doc)
        return doc, version

    def manifest(self) -> dict:
        return self.read()[0]

    def stored_format(self) -> int | None:
        """The format of the manifest as stored (None: no manifest, 1: a lake written before parts)."""
        try:
            doc = parse_json(self.store.get_bytes(self.key), f"{self.store.uri}/{self.key}", self.remedy)
        except KeyNotFound:
            return None
        return doc.get("format", 1) if isinstance(doc, dict) else None

    def _check_shape(self, doc) -> None:
        months = doc.get("months") if isinstance(doc, dict) else None
        ok = isinstance(months, dict) and all(isinstance(e, dict) and "rows" in e and "seq" in e
                                              for e in months.values())
        if ok and doc.get("format") == FORMAT:
            ok = all("key" in e for e in months.values()) and isinstance(doc.get("rejects"), list) \
                and isinstance(doc.get("checkpoints"), dict) and isinstance(doc.get("seq"), int)
        if not ok:
            raise DamagedFile(f"{self.store.uri}/{self.key}", "not a raw-log manifest", self.remedy)

    def _from_legacy(self, old: dict | None) -> dict:
        """A format-1 manifest (or none) as format 2, without touching the store."""
        doc = empty_manifest()
        if old is not None:
            doc["seq"] = int(old.get("seq", 0))
            for month, entry in old["months"].items():
                doc["months"][month] = {"key": layout.raw_month_key(self.kind, self.repo, month), "sha256": None,
                                        "rows": int(entry["rows"]), "bytes": None, "seq": int(entry["seq"])}
        state = read_json(self.store, layout.sync_state_key(self.repo), default={},
                          remedy=self.remedy) or {}
        doc["cursor"] = (state.get("cursors") or {}).get(self.kind)
        prefix = f"{self.kind}:"
        doc["checkpoints"] = {name[len(prefix):]: at for name, at in (state.get("checkpoints") or {}).items()
                              if name.startswith(prefix) and at}
        return doc

    def check(self) -> dict:
        """The manifest, after a cheap check of the whole log (one listing): every part it names is there
        with the size it was written with; the rejects parts (small) and the cursor copy read back
        whole. A month part's content is verified (sha256) whenever it is read: by the merge that needs
        it, by `ingest --full`, which reads every month, and by `issue-assets repair`. A part missing
        because a concurrent commit replaced it is not damage: the check starts again on the newer
        manifest."""
        read_json(self.store, layout.sync_state_key(self.repo), default={}, remedy=self.remedy)
        for attempt in range(COMMIT_ATTEMPTS):
            doc, version = self.read()
            problem = self._problem(doc)
            if problem is None:
                return doc
            if self.store.version(self.key) == version:
                raise problem
            backoff(attempt)
        raise problem

    def _problem(self, doc: dict) -> DamagedFile | None:
        sizes = self.store.sizes(layout.raw_prefix(self.kind, self.repo))
        for entry in [*doc["months"].values(), *doc["rejects"]]:
            location = f"{self.store.uri}/{entry['key']}"
            if entry["key"] not in sizes:
                return DamagedFile(location, "missing, though the manifest lists it", self.remedy)
            if entry.get("bytes") is not None and sizes[entry["key"]] != entry["bytes"]:
                return DamagedFile(location, f"{sizes[entry['key']]} bytes where {entry['bytes']} were written",
                                   self.remedy)
        for entry in doc["rejects"]:
            try:
                read_part(self.store, FileRecord.from_dict(entry), remedy=self.remedy)
            except KeyNotFound:
                return DamagedFile(f"{self.store.uri}/{entry['key']}", "missing, though the manifest lists it",
                                   self.remedy)
        return None

    def part(self, entry: dict) -> pd.DataFrame:
        return read_part(self.store, FileRecord.from_dict(entry), remedy=self.remedy)

    def read_month(self, doc: dict, month: str) -> pd.DataFrame | None:
        entry = doc["months"].get(month)
        if entry is None:
            return None
        try:
            return self.part(entry)
        except KeyNotFound:
            raise PartMoved(entry["key"]) from None

    def rejects(self, doc: dict | None = None) -> pd.DataFrame | None:
        """Every rejected item of this kind, once each (None if there were none)."""
        doc = doc or self.manifest()
        frames = [read_part(self.store, FileRecord.from_dict(e), remedy=self.remedy) for e in doc["rejects"]]
        if not frames:
            return None
        return pd.concat(frames, ignore_index=True).drop_duplicates(REJECT_KEYS, keep="first", ignore_index=True)

    def rows(self, doc: dict | None = None) -> int:
        return sum(int(e["rows"]) for e in (doc or self.manifest())["months"].values())

    # ---- writing ---------------------------------------------------------------------------
    def commit(self, change: Callable[[dict, Commit], bool]) -> dict | None:
        """Apply `change(manifest, commit)` (it edits the manifest in place, may write parts listed in
        commit.written, and returns False for "nothing to do") and compare-and-put the result; on a lost
        race, delete what it wrote and apply it again to the newer manifest. Returns the manifest
        committed, or None when nothing changed."""
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                raw, version = self.store.get_versioned(self.key)
                doc = parse_json(raw, f"{self.store.uri}/{self.key}", self.remedy)
                self._check_shape(doc)
            except KeyNotFound:
                doc, version = None, None
            work = Commit([], [])
            converting = doc is None or doc.get("format") != FORMAT
            if converting:
                doc = self._adopt_legacy(doc, work)
            try:
                changed = change(doc, work)
            except PartMoved:  # a part we read was replaced by a newer commit meanwhile
                self._delete(work.written)
                backoff(attempt)
                continue
            except BaseException:
                self._delete(work.written)
                raise
            empty = version is None and not doc["months"] and not doc["rejects"]
            if not changed and not work.written and not work.replaced and (not converting or empty):
                return None  # nothing to record (a conversion is recorded, an empty manifest is not)
            if self.store.compare_and_put(self.key, dumps(doc), version):
                self._delete(work.replaced)
                return doc
            self._delete(work.written)
            backoff(attempt)
        raise StoreError(f"{self.store.uri}/{self.key}: gave up after {COMMIT_ATTEMPTS} conflicting commits")

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.store.delete(key)
            except StoreError as exc:  # an unreferenced file costs space, not correctness; repair sweeps it
                log.warning("could not delete %s: %s", key, exc)

    def _adopt_legacy(self, old: dict | None, work: Commit) -> dict:
        """Convert an older lake in this commit: every month file found (also one a killed run wrote but
        never recorded) is checked and recorded with its sha256; legacy rejects files become parts."""
        doc = self._from_legacy(old)
        listed = {e["key"] for e in doc["months"].values()}
        unrecorded = []
        for key in self.store.list(layout.raw_prefix(self.kind, self.repo)):
            name = key.rsplit("/", 1)[-1]
            match = PART_RE.match(name)
            if match and match.group(2) is None and key not in listed:
                unrecorded.append((match.group(1), key))
        bump = doc["seq"] + 1
        for month, key in unrecorded:
            doc["months"][month] = {"key": key, "sha256": None, "rows": None, "bytes": None, "seq": bump}
        for entry in doc["months"].values():
            location = f"{self.store.uri}/{entry['key']}"
            try:
                data = self.store.get_bytes(entry["key"])
            except KeyNotFound:
                raise DamagedFile(location, "missing, though the manifest lists it", self.remedy) from None
            frame, _ = parse_parquet(data, location, ["id"], remedy=self.remedy)
            if entry["rows"] is not None and entry["rows"] != len(frame):
                entry["seq"] = bump  # a killed run wrote it after its manifest entry: merge it again
            entry.update(sha256=sha256(data), rows=len(frame), bytes=len(data))
        doc["seq"] = max([doc["seq"], *(e["seq"] for e in doc["months"].values())])
        legacy = [k for k in self.store.list(layout.legacy_rejects_prefix(self.repo, self.kind))
                  if k.endswith(".parquet")]
        if legacy:
            frames = [parse_parquet(self.store.get_bytes(k), f"{self.store.uri}/{k}", remedy=self.remedy)[0]
                      for k in legacy]
            merged = pd.concat(frames, ignore_index=True).drop_duplicates(REJECT_KEYS, ignore_index=True)
            record = write_part(self.store, layout.raw_rejects_part_key(self.kind, self.repo, unique_suffix()),
                                merged)
            work.written.append(record.key)
            work.replaced.extend(legacy)
            doc["rejects"].append(record.as_dict())
        log.info("%s: converted to manifest format %d (%d month files)", self.key, FORMAT, len(doc["months"]))
        return doc

    def add_rejects(self, doc: dict, work: Commit, frames: list[pd.DataFrame]) -> None:
        """Record new rejects as one part; many small parts are folded into one (deduplicated)."""
        if not frames:
            return
        entries = list(doc["rejects"])
        new = pd.concat(frames, ignore_index=True)
        if len(entries) + 1 > MAX_REJECT_PARTS:
            old = [read_part(self.store, FileRecord.from_dict(e), remedy=self.remedy) for e in entries]
            new = pd.concat([*old, new], ignore_index=True)
            work.replaced.extend(e["key"] for e in entries)
            entries = []
        new = new.drop_duplicates(REJECT_KEYS, keep="first", ignore_index=True)
        record = write_part(self.store, layout.raw_rejects_part_key(self.kind, self.repo, unique_suffix()), new)
        work.written.append(record.key)
        doc["rejects"] = [*entries, record.as_dict()]

    def put_month(self, doc: dict, work: Commit, month: str, frame: pd.DataFrame) -> None:
        """Make `frame` the month's part in this commit (the old part is deleted once it is committed)."""
        record = write_part(self.store, layout.raw_part_key(self.kind, self.repo, month, unique_suffix()), frame)
        work.written.append(record.key)
        old = doc["months"].get(month)
        if old is not None:
            work.replaced.append(old["key"])
        doc["months"][month] = {**record.as_dict(), "seq": doc["seq"] + 1}

    @staticmethod
    def bump(doc: dict) -> None:
        """Close a commit that put month parts: their seq becomes the manifest's."""
        if any(e["seq"] == doc["seq"] + 1 for e in doc["months"].values()):
            doc["seq"] += 1


def new_epoch() -> str:
    return uuid.uuid4().hex[:12]


class PartMoved(Exception):
    """A part listed by the manifest read is gone: a newer commit replaced it."""
