"""Fuzz benchmark: the soak version of issue_assets_tests/test_service_fuzz.py, into bench/FUZZ_RESULTS.md.

    .venv/bin/python bench/bench_fuzz.py [--examples 2000] [--seed 12] [--max-body-bytes 1000000]

Starts the production entry point, `issue-assets serve` (one uvicorn worker, uvloop + httptools), on a home
holding a trained champion, a lake history and a stored prediction batch, with GitHub replayed on
loopback. Each category of the fuzz test runs `--examples` hypothesis examples (batches of up to 6
requests over one keep-alive connection, then a valid POST /predict and a GET /healthz on it), generated
from the schema the server publishes at /openapi.json. Nothing stops at a failure: every response is
checked and counted (5xx, connection resets, connections closed by the server, 4xx bodies that are not
JSON `{"detail": ...}`, 422s that do not name the field). The server's own log is scanned for tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "issue_assets_tests"))

import test_service_fuzz as fuzz  # noqa: E402
from machine import cpu_model, load_average  # noqa: E402

from issue_assets.github.replay import ReplayServer  # noqa: E402

FAILURES = ("5xx", "reset", "closed", "body", "unnamed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, api_url: str, port: int, max_body_bytes: int, log) -> subprocess.Popen:
    env = {**os.environ, "ISSUE_ASSETS_HOME": str(home), "GITHUB_API_URL": api_url,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("MODEL_STORE", None)
    env.pop("LAKE_STORE", None)
    cli = Path(sys.executable).with_name("issue-assets")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "issue_assets.cli"]
    server = subprocess.Popen([*command, "serve", "--host", "127.0.0.1", "--port", str(port),
                               "--max-body-bytes", str(max_body_bytes)], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"issue-assets serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("issue-assets serve did not become healthy within 120 s")


def summarize(stats: Counter) -> dict:
    statuses, routes, probes = Counter(), Counter(), Counter()
    for key, n in stats.items():
        if isinstance(key, tuple):
            (probes if key[0] == "probe" else statuses)[key[1]] += n
            routes[key[0]] += n
    return {"examples": stats["examples"], "requests": sum(statuses.values()),
            "probes": sum(probes.values()), "probes_ok": probes[200],
            "2xx": sum(n for s, n in statuses.items() if 200 <= s < 300),
            "4xx": sum(n for s, n in statuses.items() if 400 <= s < 500),
            **{kind: stats[kind] for kind in FAILURES}, "statuses": dict(sorted(statuses.items())),
            "routes": dict(routes.most_common())}


def write(out: Path, rows: dict[str, dict], args, began: str, load: str, seconds: float, tracebacks: int) -> None:
    lines = ["## Fuzzed HTTP requests", "",
             f"- date: {began}",
             f"- machine: {cpu_model()}, load average at start {load} (a shared machine: other jobs were running)",
             f"- command: `.venv/bin/python bench/bench_fuzz.py --examples {args.examples} --seed {args.seed} "
             f"--max-body-bytes {args.max_body_bytes}` ({seconds / 60:.1f} min)",
             "- server: `issue-assets serve` (one uvicorn worker, uvloop + httptools) with a trained champion, a lake "
             "history and a stored prediction batch; GitHub replayed on loopback. Each example is a batch of up to "
             "6 requests over one keep-alive connection, then a valid POST /predict and a GET /healthz on it "
             "(the probes: their own column).",
             "",
             "| requests generated | examples | requests | 2xx | 4xx | 5xx | resets | closed by the server "
             "| 4xx not JSON {detail} | 422 not naming the field | probes after them (200) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    total = Counter()
    for name, row in rows.items():
        lines.append(f"| {name} | {row['examples']} | {row['requests']} | {row['2xx']} | {row['4xx']} | {row['5xx']} "
                     f"| {row['reset']} | {row['closed']} | {row['body']} | {row['unnamed']} "
                     f"| {row['probes']} ({row['probes_ok']}) |")
        for key in ("examples", "requests", "2xx", "4xx", *FAILURES, "probes", "probes_ok"):
            total[key] += row[key]
    lines.append(f"| **all** | {total['examples']} | {total['requests']} | {total['2xx']} | {total['4xx']} "
                 f"| **{total['5xx']}** | **{total['reset']}** | {total['closed']} | {total['body']} "
                 f"| {total['unnamed']} | {total['probes']} ({total['probes_ok']}) |")
    lines += ["", f"Target: 0 5xx and 0 resets. Tracebacks in the server's log: {tracebacks}. A reset or a 5xx "
              "among the probes counts in its row too.", "", "Status codes of the generated requests:", ""]
    for name, row in rows.items():
        lines.append(f"- {name}: " + ", ".join(f"{s}: {n}" for s, n in row["statuses"].items()))
    notes = out.read_text().split("\n### Notes", 1) if out.exists() else []
    if len(notes) == 2:  # written by hand after a run: kept when the script rewrites the figures
        lines += ["", "### Notes" + notes[1].rstrip()]
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="hypothesis examples per category")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--max-body-bytes", type=int, default=1_000_000,
                        help="the server's body limit (`serve --max-body-bytes`); huge strings are sized around it")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "FUZZ_RESULTS.md")
    args = parser.parse_args()
    began = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = load_average()
    start = time.perf_counter()
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        world = fuzz.World(home, limit=args.max_body_bytes)
        p = world.pipeline
        replay = ReplayServer(p.items, p.comment_items).start()
        log_path = Path(tmp) / "serve.log"
        port = free_port()
        with open(log_path, "wb") as log:
            server = start_server(home, replay.url, port, args.max_body_bytes, log)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=30) as r:
                    world.openapi(json.loads(r.read()))
                world.port = port
                for name, strategy in fuzz.CATEGORIES.items():
                    began_step = time.perf_counter()
                    stats = fuzz.drive(world, strategy(world), args.examples, strict=False, seed=args.seed)
                    rows[name] = summarize(stats)
                    print(f"{name}: {json.dumps({k: v for k, v in rows[name].items() if k != 'routes'})} "
                          f"({time.perf_counter() - began_step:.0f}s)", flush=True)
                alive = server.poll() is None
            finally:
                server.terminate()
                server.wait(timeout=30)
                replay.stop()
        text = log_path.read_text(errors="replace")
        tracebacks = text.count("Traceback (most recent call last)")
        if not alive:
            raise SystemExit("the server died during the fuzz:\n" + text[-3000:])
        if tracebacks:
            print(text[-5000:], file=sys.stderr)
    write(args.out, rows, args, began, load, time.perf_counter() - start, tracebacks)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
