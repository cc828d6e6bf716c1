"""Ingestion benchmark: the real rust-lang/rust exports through a replay server in another process.

    .venv/bin/python bench/bench_ingest.py [--latency-ms 50] [--repeats 3] [--skip-comments]

Measures, into fresh temporary lakes (nothing is written into the project but the results file):
- full sync of the issues (and, separately, the comments): requests per endpoint, wall time of the
  sweep, and its ratio to the latency-bound ideal (requests x latency; one request in flight);
- a no-change poll right after: requests, and rate-limit points used (GET /rate_limit before/after);
- an incremental sync of one day of new and updated items on top of the full history (a second
  server started with an extra data file).
Timed parts are repeated and medians quoted; the results go to bench/INGEST_RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model, load_average  # noqa: E402

from issue_assets.github.client import GitHubClient  # noqa: E402
from issue_assets.github.conditional_cache import ConditionalCache  # noqa: E402
from issue_assets.ingest.current import merge_current  # noqa: E402
from issue_assets.ingest.sync import sync_incremental  # noqa: E402
from issue_assets.lake.store import LocalStore  # noqa: E402

REPO = "rust-lang/rust"
DAY = "2026-01-05"


class ServerProcess:
    """`issue-assets replay-server` in its own process (its own GIL); the URL is its first stdout line."""

    def __init__(self, data: list[Path], comments: list[Path], latency_ms: float):
        exe = Path(sys.executable).with_name("issue-assets")
        # A budget the 3 x (307 + 1468) requests cannot exhaust: this measures throughput, not waits.
        cmd = [str(exe), "replay-server", "--port", "0", "--latency-ms", str(latency_ms), "--rate-limit", "1000000"]
        for path in data:
            cmd += ["--data", str(path)]
        for path in comments:
            cmd += ["--comments", str(path)]
        self.command = " ".join(cmd)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline().strip()
        if " on " not in line:
            self.stop()
            raise RuntimeError(f"replay server did not start: {line!r}")
        self.url = line.split(" on ", 1)[1].split(" ", 1)[0]
        self.banner = line

    def stats(self) -> dict:
        return requests.get(f"{self.url}/_replay/stats", timeout=30).json()

    def reset(self) -> None:
        requests.post(f"{self.url}/_replay/reset", timeout=30)

    def remaining(self) -> int:
        return int(requests.get(f"{self.url}/rate_limit", timeout=30).headers["x-ratelimit-remaining"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def full_sync(server: ServerProcess, lake: Path, kind: str, latency_s: float) -> dict:
    store = LocalStore(lake)
    server.reset()
    with GitHubClient(server.url, cache=ConditionalCache(lake.parent / "http_cache.json")) as client:
        began = time.perf_counter()
        result = sync_incremental(client, store, REPO, kind)
        sweep = time.perf_counter() - began
        began = time.perf_counter()
        merged = merge_current(store, REPO, kind)
        merge = time.perf_counter() - began
    stats = server.stats()
    return {"items": result.items_fetched, "requests": result.requests,
            "server_by_endpoint": stats["by_endpoint"], "seconds": sweep, "merge_seconds": merge,
            "ideal_seconds": result.requests * latency_s, "ratio": sweep / (result.requests * latency_s),
            "rows": merged.rows}


def no_change_poll(server: ServerProcess, lake: Path, kind: str) -> dict:
    store = LocalStore(lake)
    server.reset()
    before = server.remaining()
    with GitHubClient(server.url, cache=ConditionalCache(lake.parent / "http_cache.json")) as client:
        began = time.perf_counter()
        result = sync_incremental(client, store, REPO, kind)
        seconds = time.perf_counter() - began
    after = server.remaining()
    return {"requests": result.requests, "not_modified": result.not_modified, "points": before - after,
            "seconds": seconds, "server": server.stats()["by_endpoint_status"]}


def day_file(issues_path: Path, out: Path, updated: int = 200, new: int = 50) -> Path:
    """One day of activity after the snapshot: `updated` existing items edited, `new` items opened."""
    picked = []
    with gzip.open(issues_path, "rt") as fh:
        for n, line in enumerate(fh):
            if n % 150 == 0:
                item = json.loads(line)
                if "/repos/rust-lang/rust/" in item.get("url", ""):
                    picked.append(item)
            if len(picked) >= updated:
                break
    rows = []
    for n, item in enumerate(picked):
        item = copy.deepcopy(item)
        item["updated_at"] = f"{DAY}T{n * 86399 // updated // 3600:02d}:{n * 86399 // updated // 60 % 60:02d}:" \
                             f"{n * 86399 // updated % 60:02d}Z"
        item["title"] = f"{item['title']} (edited)"
        rows.append(item)
    for n in range(new):
        item = copy.deepcopy(picked[n])
        stamp = f"{DAY}T12:{n:02d}:00Z"
        item.update(id=8_000_000_000 + n, number=200_000 + n, created_at=stamp, updated_at=stamp, closed_at=None,
                    state="open", title=f"new issue {n}",
                    url=f"https://api.github.com/repos/{REPO}/issues/{200_000 + n}")
        item.pop("pull_request", None)
        rows.append(item)
    with gzip.open(out, "wt") as fh:
        for item in rows:
            fh.write(json.dumps(item) + "\n")
    return out


def machine() -> dict:
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "load_at_start": load_average()}


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--skip-comments", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "INGEST_RESULTS.md")
    args = parser.parse_args()
    issues_path = args.data_dir / "rust-lang_rust_issues.jsonl.gz"
    comments_path = args.data_dir / "rust-lang_rust_comments.jsonl.gz"
    for path in (issues_path, comments_path):
        if not path.exists():
            sys.exit(f"missing shared export {path}")
    latency_s = args.latency_ms / 1000.0
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    report: dict = {"machine": info, "latency_ms": args.latency_ms, "repeats": args.repeats,
                    "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                    "command": " ".join([".venv/bin/python", "bench/bench_ingest.py", *sys.argv[1:]])}
    server = ServerProcess([issues_path], [] if args.skip_comments else [comments_path], args.latency_ms)
    report["server_command"] = server.command
    print(server.banner, flush=True)
    try:
        kinds = ["issues"] if args.skip_comments else ["issues", "comments"]
        for kind in kinds:
            runs, polls = [], []
            for r in range(args.repeats):
                lake = work / f"{kind}-{r}" / "lake"
                run = full_sync(server, lake, kind, latency_s)
                poll = no_change_poll(server, lake, kind)
                print(f"{kind} run {r + 1}: {json.dumps(run)}\n  poll: {json.dumps(poll)}", flush=True)
                runs.append(run)
                polls.append(poll)
            report[kind] = {"runs": runs, "polls": polls}
        base_lake = work / "issues-0" / "lake"
    finally:
        server.stop()

    extra = day_file(issues_path, work / "day.jsonl.gz")
    day_server = ServerProcess([issues_path, extra], [], args.latency_ms)
    try:
        days = []
        for r in range(args.repeats):
            lake = work / f"day-{r}" / "lake"
            shutil.copytree(base_lake, lake)
            store = LocalStore(lake)
            day_server.reset()
            with GitHubClient(day_server.url, cache=ConditionalCache()) as client:
                began = time.perf_counter()
                result = sync_incremental(client, store, REPO, "issues")
                sweep = time.perf_counter() - began
                began = time.perf_counter()
                merged = merge_current(store, REPO, "issues")
                merge = time.perf_counter() - began
            days.append({"requests": result.requests, "items": result.items_fetched,
                         "new_versions": result.new_versions, "seconds": sweep, "merge_seconds": merge,
                         "inserted": merged.inserted, "updated": merged.updated})
            print(f"day run {r + 1}: {json.dumps(days[-1])}", flush=True)
        report["day"] = days
    finally:
        day_server.stop()
        shutil.rmtree(work, ignore_errors=True)
    write_report(report, args.out)
    print(f"wrote {args.out}")


def write_report(report: dict, out: Path) -> None:
    m = report["machine"]
    lines = [
        "# Ingestion benchmark",
        "",
        f"- date: {report['date']}",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, load average at start "
        f"{m['load_at_start']} (a shared machine: other jobs were running)",
        f"- command: `{report['command']}`",
        f"- replay server (separate process): `{report['server_command']}`",
        f"- simulated latency {report['latency_ms']:.0f} ms per response; medians of {report['repeats']} runs",
        "",
        "## Full sync into an empty lake, then a no-change poll",
        "",
        "| kind | items | requests (target ≤ ceil(N/100)+3) | sweep s | ideal s (requests × latency) | ratio (target ≤ 1.15) "
        "| merge s | poll requests (target 1) | poll 304s | poll rate-limit points (target 0) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("issues", "comments"):
        if kind not in report:
            continue
        runs, polls = report[kind]["runs"], report[kind]["polls"]
        items = runs[0]["items"]
        lines.append(
            f"| {kind} | {items} | {runs[0]['requests']} (target {math.ceil(items / 100) + 3}) | "
            f"{med(runs, 'seconds'):.2f} | {runs[0]['ideal_seconds']:.2f} | {med(runs, 'ratio'):.3f} | "
            f"{med(runs, 'merge_seconds'):.2f} | {med(polls, 'requests'):.0f} | {med(polls, 'not_modified'):.0f} | "
            f"{med(polls, 'points'):.0f} |")
    lines += ["", "Per run (sweep seconds): " + "; ".join(
        f"{kind}: " + ", ".join(f"{r['seconds']:.2f}" for r in report[kind]["runs"])
        for kind in ("issues", "comments") if kind in report), ""]
    day = report["day"]
    lines += [
        "## One day of activity on top of the full issue history",
        "",
        f"200 existing issues edited and 50 opened on {DAY} (a second server started with an extra data file).",
        "",
        "| requests | items fetched | new versions | sweep s | merge s | inserted | updated |",
        "|---|---|---|---|---|---|---|",
        f"| {day[0]['requests']} | {day[0]['items']} | {day[0]['new_versions']} | {med(day, 'seconds'):.2f} | "
        f"{med(day, 'merge_seconds'):.2f} | {day[0]['inserted']} | {day[0]['updated']} |",
        "",
    ]
    # A hand-written "## Notes" section (analysis, profiles) survives re-runs.
    previous = out.read_text() if out.exists() else ""
    if "\n## Notes" in previous:
        lines += ["## Notes" + previous.split("\n## Notes", 1)[1].rstrip(), ""]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
