"""Bounded load test of the prediction service on loopback, and batch scoring throughput.

    .venv/bin/python bench/bench_serving.py [--requests 1000] [--rate 100] [--concurrency 4]
                                            [--batches 10] [--batch-size 1000] [--rows 100000]

Builds a simulated repository (1,500 issues) into a temporary lake, trains and promotes a model,
starts the service with uvicorn in a separate process, then:
  1. single-issue POST /predict at a fixed rate (open loop: request i is due at start + i / rate and is
     sent then by one of `concurrency` threads, whatever the latency of the others), a fixed number of
     requests; twice: with a light client (http.client, one keep-alive connection per thread, bodies
     encoded beforehand) and with `requests` sessions (encoding each body when sending it), as before;
  2. the same requests one at a time on one connection (no queueing: the service's own latency);
  3. POST /predict with `batch-size` new issues, `batches` times in a row;
  4. in process, no I/O: score_features on `rows` prepared feature rows (probability, rank, top-5
     contributions), and the end-to-end batch of every open issue (features included).
Latency is measured from the moment a request is sent; a request sent more than 5 ms after its due time
(all client threads busy) is counted as late. Server and client CPU per request come from
/proc/<pid>/stat and time.process_time over each phase (the client shares the machine's 2 cores).
Writes bench/SERVING_RESULTS.md. Stops by itself.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import multiprocessing
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from issue_assets.features import FEATURE_NAMES, compute_features  # noqa: E402
from issue_assets.features.training import build_training_set  # noqa: E402
from issue_assets.github.normalize import comment_versions, issue_versions, issues_from_versions  # noqa: E402
from issue_assets.github.simulate import simulate_repository  # noqa: E402
from issue_assets.ingest.layout import current_key  # noqa: E402
from issue_assets.lake.store import LocalStore, write_parquet  # noqa: E402
from issue_assets.modeling.training import TrainingConfig, train_and_evaluate  # noqa: E402
from issue_assets.registry import ModelRegistry  # noqa: E402
from issue_assets.serving import batch_open_issue_predictions, target_features  # noqa: E402
from issue_assets.serving.scoring import score_features  # noqa: E402

REPO = "bench/widgets"
SNAPSHOT = pd.Timestamp("2023-12-27", tz="UTC")


def build(root: Path):
    items, comments = simulate_repository(REPO, n_issues=1500, seed=7, start="2023-01-01T00:00:00Z", days=360)
    versions, _ = issue_versions(items, REPO, SNAPSHOT)
    issues = issues_from_versions(versions)
    comments_t, _ = comment_versions(comments, REPO, SNAPSHOT)
    lake = LocalStore(root / "lake")
    write_parquet(lake, current_key("issues", REPO), issues)
    write_parquet(lake, current_key("comments", REPO), comments_t)
    features = compute_features(issues, comments_t)
    training, _ = build_training_set(features, SNAPSHOT)
    result = train_and_evaluate(training, FEATURE_NAMES, None, TrainingConfig(nthread=2, max_boost_round=400))
    registry = ModelRegistry(LocalStore(root / "registry"))
    version = registry.register(result.model, result.metadata(as_of=SNAPSHOT.isoformat()))
    registry.promote(version)
    template = next(i for i in reversed(items) if "pull_request" not in i)
    return items, issues, comments_t, result.model, version, template


def serve(root: str, port: int, max_body_bytes: int) -> None:
    from issue_assets.lake.store import LocalStore
    from issue_assets.registry import ModelRegistry
    from issue_assets.serving.service import run_server

    run_server("127.0.0.1", port, registry=ModelRegistry(LocalStore(Path(root) / "registry")),
               lake_store=LocalStore(Path(root) / "lake"), log_level="warning",
               max_body_bytes=max_body_bytes)


def new_issue(template: dict, k: int) -> dict:
    item = copy.deepcopy(template)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # just opened: the service's fast path
    item.update({"id": 5_000_000_000 + k, "number": 100_000 + k, "state": "open", "closed_at": None,
                 "created_at": now, "updated_at": now,
                 "comments": 0, "labels": [], "title": f"{template['title']} (variant {k})"})
    return item


def percentile(values, q):
    return float(np.percentile(np.asarray(values) * 1000, q))


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Load:
    """One load phase: latencies, failures, lateness, wall time and CPU of the server and the client."""

    def __init__(self, latencies, failures, late, max_late, elapsed, server_cpu, client_cpu):
        self.latencies, self.failures, self.late, self.max_late = latencies, failures, late, max_late
        self.elapsed, self.server_cpu, self.client_cpu = elapsed, server_cpu, client_cpu
        self.rps = len(latencies) / elapsed

    def per_request_ms(self, cpu: float) -> float:
        return 1000 * cpu / len(self.latencies)


def _post_light(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request("POST", "/predict", body=body, headers={"content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def single_load(url: str, template: dict, n: int, rate: float, concurrency: int, server_pid: int,
                client: str = "light", offset: int = 0) -> Load:
    """`n` single-issue requests, request i due at start + i / rate (rate 0: back to back, one thread)."""
    host, port = url.split("//", 1)[1].split(":")
    issues = [new_issue(template, offset + i) for i in range(n)]
    bodies = [json.dumps({"repository": REPO, "issue": item}).encode() for item in issues]
    latencies: list[float] = []
    lateness: list[float] = []
    failures = 0
    lock = threading.Lock()
    threads_n = concurrency if rate else 1
    start = time.perf_counter() + 0.2
    interval = 1.0 / rate if rate else 0.0

    def worker(w: int):
        nonlocal failures
        conn = http.client.HTTPConnection(host, int(port), timeout=30) if client == "light" else None
        session = requests.Session() if client == "requests" else None
        try:
            for i in range(w, n, threads_n):
                due = start + i * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                t0 = time.perf_counter()
                if conn is not None:
                    status = _post_light(conn, bodies[i])
                else:
                    status = session.post(f"{url}/predict", json={"repository": REPO, "issue": issues[i]},
                                          timeout=30).status_code
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    lateness.append(t0 - due if rate else 0.0)
                    failures += status != 200
        finally:
            if conn is not None:
                conn.close()
            if session is not None:
                session.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(threads_n)]
    cpu0, client0 = process_cpu(server_pid), time.process_time()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    late = [x for x in lateness if x > 0.005]
    return Load(latencies, failures, len(late), max(lateness), elapsed, process_cpu(server_pid) - cpu0,
                time.process_time() - client0)


def batch_load(url: str, template: dict, batches: int, size: int):
    latencies, failures = [], 0
    with requests.Session() as session:
        for b in range(batches):
            body = {"repository": REPO, "issues": [new_issue(template, 1_000_000 + b * size + k) for k in range(size)]}
            t0 = time.perf_counter()
            r = session.post(f"{url}/predict", json=body, timeout=120)
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                failures += 1
                print("batch request failed:", r.status_code, r.text[:200])
    return latencies, failures


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--output", default=str(ROOT / "bench" / "SERVING_RESULTS.md"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        items, issues, comments, model, version, template = build(root)
        setup_s = time.perf_counter() - t0

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        process = multiprocessing.get_context("spawn").Process(target=serve, args=(tmp, port, 50_000_000),
                                                                 daemon=True)
        process.start()
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                time.sleep(0.1)
            warm = [requests.post(f"{url}/predict", json={"repository": REPO, "issue": new_issue(template, -k)},
                                  timeout=30).status_code for k in range(1, 21)]
            assert set(warm) == {200}, warm
            pid = process.pid
            light = single_load(url, template, args.requests, args.rate, args.concurrency, pid, "light")
            heavy = single_load(url, template, args.requests, args.rate, args.concurrency, pid, "requests",
                                offset=args.requests)
            alone = single_load(url, template, args.requests, 0, 1, pid, "light", offset=2 * args.requests)
            metrics = requests.get(f"{url}/metrics", timeout=10).text
            batch, batch_failures = batch_load(url, template, args.batches, args.batch_size)
        finally:
            process.terminate()
            process.join(timeout=10)

        open_now = issues.loc[issues["closed_at"].isna() & ~issues["is_pull_request"]]
        features = target_features(issues, comments, open_now, SNAPSHOT)
        reps = int(np.ceil(args.rows / len(features)))
        big = pd.concat([features] * reps, ignore_index=True).iloc[: args.rows]
        t0 = time.perf_counter()  # the first call compiles (or loads from numba's cache) the TreeSHAP kernels
        score_features(model, version, big.iloc[:1000], SNAPSHOT)
        first_call_s = time.perf_counter() - t0
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            score_features(model, version, big, SNAPSHOT)
            runs.append(time.perf_counter() - t0)
        scoring_s = min(runs)
        proba_runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            score_features(model, version, big, SNAPSHOT, top_k=0)
            proba_runs.append(time.perf_counter() - t0)
        proba_s = min(proba_runs)
        t0 = time.perf_counter()
        batch_frame = batch_open_issue_predictions(model, version, issues, comments, SNAPSHOT)
        end_to_end_s = time.perf_counter() - t0

    nproc = os.cpu_count()
    load = os.getloadavg()
    command = "cd /work/main && .venv/bin/python bench/bench_serving.py " + " ".join(sys.argv[1:])
    single_p99 = percentile(light.latencies, 99)
    paths = {line.split('"')[1]: int(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
             if line.startswith("issue_assets_predict_requests_total{")}

    def load_row(name: str, load: Load) -> str:
        lat = load.latencies
        return (f"| {name} | {len(lat)} | {load.failures} | {percentile(lat, 50):.1f} | {percentile(lat, 99):.1f} | "
                f"{max(lat) * 1000:.1f} | {load.rps:.0f} req/s | {load.per_request_ms(load.server_cpu):.2f} | "
                f"{load.per_request_ms(load.client_cpu):.2f} | {load.late} |")

    lines = [
        "# Serving benchmark",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {nproc} CPUs (nproc), {cpu_model()}, Python {platform.python_version()}; "
        f"load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (other jobs share the host)",
        f"- command: `{command.strip()}`",
        f"- data: simulated repository, {len(issues)} issues/PRs and {len(comments)} comments in the lake; "
        f"model {version} ({len(FEATURE_NAMES)} features, {model.booster.num_boosted_rounds()} trees); "
        f"setup {setup_s:.1f} s",
        "- server: `run_server` (uvicorn, one worker) in a separate process on 127.0.0.1; the client runs in "
        "this process, on the same 2 cores",
        f"- POST /predict answered by the array-only fast path: {paths.get('fast', 0)}, by the general "
        f"(DataFrame) path: {paths.get('general', 0)} (server counters after the single-issue phases)",
        "",
        "| measurement | requests | failures | p50 ms | p99 ms | max ms | throughput | server CPU ms/req | "
        "client CPU ms/req | sent > 5 ms late |",
        "|---|---|---|---|---|---|---|---|---|---|",
        load_row(f"single-issue POST /predict, open loop at {args.rate:.0f} req/s, {args.concurrency} client threads "
                 "(http.client keep-alive, bodies encoded beforehand)", light),
        load_row(f"the same with `requests` sessions (bodies encoded when sent), {args.concurrency} client threads",
                 heavy),
        load_row("single-issue POST /predict one at a time, one connection (no queueing)", alone),
        f"| POST /predict with {args.batch_size} new issues, sequential | {len(batch)} | {batch_failures} | "
        f"{percentile(batch, 50):.0f} | {percentile(batch, 99):.0f} | {max(batch) * 1000:.0f} | "
        f"{args.batch_size * len(batch) / sum(batch):,.0f} issues/s | | | |",
        "",
        "| batch scoring, in process, no I/O | rows | seconds | issues/s |",
        "|---|---|---|---|",
        f"| first score_features call in this process (1,000 rows; includes compiling or loading the cached "
        f"TreeSHAP kernels) | 1,000 | {first_call_s:.3f} | |",
        f"| score_features: probability + rank + top-5 exact SHAP contributions (XGBoost's pred_contribs "
        f"values, computed by issue_assets.modeling.treeshap) on prepared features (best of 3) | "
        f"{len(big):,} | {scoring_s:.3f} | {len(big) / scoring_s:,.0f} |",
        f"| score_features with top_k=0: probability + rank only (best of 3) | {len(big):,} | {proba_s:.3f} | "
        f"{len(big) / proba_s:,.0f} |",
        f"| batch_open_issue_predictions end to end (features of every open issue with the whole history) | "
        f"{len(batch_frame):,} | {end_to_end_s:.3f} | {len(batch_frame) / end_to_end_s:,.0f} |",
        "",
        f"Targets: single-request p99 < 25 ms ({'met' if single_p99 < 25 else 'missed'}: {single_p99:.1f} ms); "
        f"batch scoring >= 100,000 issues/s: probability + rank {len(big) / proba_s:,.0f}/s "
        f"({'met' if len(big) / proba_s >= 100_000 else 'missed'}), with exact top-5 SHAP contributions "
        f"{len(big) / scoring_s:,.0f}/s ({'met' if len(big) / scoring_s >= 100_000 else 'missed'}).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    notes_path = Path(args.output)
    existing = notes_path.read_text() if notes_path.exists() else ""
    marker = "\n## Notes\n"
    notes = existing[existing.index(marker):] if marker in existing else ""
    notes_path.write_text(text + notes)


if __name__ == "__main__":
    main()
