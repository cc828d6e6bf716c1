"""Bounded load test of the prediction service on loopback, and batch scoring throughput.

    .venv/bin/python bench/bench_serving.py [--requests 1000] [--rate 100] [--concurrency 4]
                                            [--batches 10] [--batch-size 1000] [--rows 100000]

Builds a simulated repository (1,500 issues) into a temporary lake, computes its features and the
service's snapshot (refresh_features, as the pipeline does), trains and promotes a model, starts the
service with uvicorn in a separate process (start-up = process start to /healthz 200, the snapshots
loaded; memory = the server's resident set), then:
  1. single-issue POST /predict at a fixed rate (open loop: request i is due at start + i / rate and is
     sent then by one of `concurrency` threads, whatever the latency of the others), a fixed number of
     requests; twice: with a light client (http.client, one keep-alive connection per thread, bodies
     encoded beforehand) and with `requests` sessions (encoding each body when sending it), as before;
  2. the same requests one at a time on one connection (no queueing: the service's own latency);
  3. POST /predict with `batch-size` new issues, `batches` times in a row;
  4. in process, no I/O: score_features on `rows` prepared feature rows (probability, rank, top-5
     contributions), and the end-to-end batch (features included);
  5. with the real rust-lang/rust export when ../shared/data has it: the service's start-up with that
     repository's snapshot, its memory, and single-request latency on it.
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

from issue_assets.features.catalog import FEATURE_NAMES  # noqa: E402
from issue_assets.features.compute import feature_columns  # noqa: E402
from issue_assets.features.frames import normalize_issues  # noqa: E402
from issue_assets.features.store import raw_columns  # noqa: E402
from issue_assets.features.table import load_features, load_snapshot, refresh_features  # noqa: E402
from issue_assets.features.training_sets import build_training_set  # noqa: E402
from issue_assets.github.export import iter_export  # noqa: E402
from issue_assets.github.normalize import comment_versions, issue_versions, issues_from_versions  # noqa: E402
from issue_assets.github.simulate import simulate_repository  # noqa: E402
from issue_assets.ingest.layout import current_key  # noqa: E402
from issue_assets.lake.store import LocalStore, write_parquet  # noqa: E402
from issue_assets.modeling.training import TrainingConfig, train_and_evaluate  # noqa: E402
from issue_assets.registry import ModelRegistry  # noqa: E402
from issue_assets.serving.scoring import batch_open_issue_predictions, score_features  # noqa: E402

REPO = "bench/widgets"
SNAPSHOT = pd.Timestamp("2023-12-27", tz="UTC")
DATA = ROOT.parent / "shared" / "data"
RUST = "rust-lang/rust"


def build(root: Path):
    items, comments = simulate_repository(REPO, n_issues=1500, seed=7, start="2023-01-01T00:00:00Z", days=360)
    versions, _ = issue_versions(items, REPO, SNAPSHOT)
    issues = issues_from_versions(versions)
    comments_t, _ = comment_versions(comments, REPO, SNAPSHOT)
    lake = LocalStore(root / "lake")
    write_parquet(lake, current_key("issues", REPO), issues)
    write_parquet(lake, current_key("comments", REPO), comments_t)
    refresh_features(lake, REPO)
    training, _ = build_training_set(load_features(lake, REPO), SNAPSHOT)
    result = train_and_evaluate(training, FEATURE_NAMES, None, TrainingConfig(nthread=2, max_boost_round=400))
    registry = ModelRegistry(LocalStore(root / "registry"))
    version = registry.register(result.model, result.metadata(as_of=SNAPSHOT.isoformat()))
    registry.promote(version)
    template = next(i for i in reversed(items) if "pull_request" not in i)
    # The same training on the age-0 rows alone (what the bench trained before the rows had ages): the
    # scoring throughput of a model of that size, like for like with the earlier figures.
    age0 = train_and_evaluate(training.loc[training["age_hours"] == 0], FEATURE_NAMES, None,
                              TrainingConfig(nthread=2, max_boost_round=400)).model
    return items, issues, comments_t, result.model, version, template, age0


def serve(registry_root: str, lake_root: str, port: int, max_body_bytes: int) -> None:
    from issue_assets.lake.store import LocalStore
    from issue_assets.registry import ModelRegistry
    from issue_assets.serving.service import run_server

    run_server("127.0.0.1", port, registry=ModelRegistry(LocalStore(Path(registry_root))),
               lake_store=LocalStore(Path(lake_root)), log_level="warning", max_body_bytes=max_body_bytes)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(registry_root: Path, lake_root: Path, max_body_bytes: int):
    """(process, url, start-up seconds: process start to /healthz 200 with every snapshot loaded)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    t0 = time.perf_counter()
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(str(registry_root), str(lake_root), port, max_body_bytes), daemon=True)
    process.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(3000):
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.02)
    return process, url, time.perf_counter() - t0


def rust_lake(root: Path):
    """The rust export as the pipeline leaves it: current tables, feature table, snapshot. None if absent."""
    issues_file = DATA / "rust-lang_rust_issues.jsonl.gz"
    if not issues_file.exists():
        return None
    snapshot = "2025-12-20"
    items = list(iter_export(issues_file))
    issues = issues_from_versions(issue_versions(items, RUST, snapshot)[0])
    comments = comment_versions(iter_export(DATA / "rust-lang_rust_comments.jsonl.gz"), RUST, snapshot)[0]
    lake = LocalStore(root)
    write_parquet(lake, current_key("issues", RUST), issues)
    write_parquet(lake, current_key("comments", RUST), comments)
    t0 = time.perf_counter()
    refresh = refresh_features(lake, RUST)
    template = next(i for i in reversed(items) if "pull_request" not in i)
    return {"refresh_s": time.perf_counter() - t0, "snapshot_mb": refresh.snapshot_bytes / 1e6, "template": template,
            "issues": len(issues), "comments": len(comments)}


def new_issue(template: dict, k: int) -> dict:
    item = copy.deepcopy(template)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # just opened: scored at its current age
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
                client: str = "light", offset: int = 0, repo: str = REPO) -> Load:
    """`n` single-issue requests, request i due at start + i / rate (rate 0: back to back, one thread)."""
    host, port = url.split("//", 1)[1].split(":")
    issues = [new_issue(template, offset + i) for i in range(n)]
    bodies = [json.dumps({"repository": repo, "issue": item}).encode() for item in issues]
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
                    status = session.post(f"{url}/predict", json={"repository": repo, "issue": issues[i]},
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
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        items, issues, comments, model, version, template, age0_model = build(root)
        setup_s = time.perf_counter() - t0

        process, url, startup_s = start_server(root / "registry", root / "lake", 50_000_000)
        try:
            warm = [requests.post(f"{url}/predict", json={"repository": REPO, "issue": new_issue(template, -k)},
                                  timeout=30).status_code for k in range(1, 21)]
            assert set(warm) == {200}, warm
            pid = process.pid
            rss_start = rss_mb(pid)
            light = single_load(url, template, args.requests, args.rate, args.concurrency, pid, "light")
            heavy = single_load(url, template, args.requests, args.rate, args.concurrency, pid, "requests",
                                offset=args.requests)
            alone = single_load(url, template, args.requests, 0, 1, pid, "light", offset=2 * args.requests)
            batch, batch_failures = batch_load(url, template, args.batches, args.batch_size)
            rss_end = rss_mb(pid)
        finally:
            process.terminate()
            process.join(timeout=10)

        rust = rust_lake(root / "rust-lake")
        if rust is not None:
            process, url, rust["startup_s"] = start_server(root / "registry", root / "rust-lake", 50_000_000)
            try:
                body = {"repository": RUST, "issue": new_issue(rust["template"], -1)}
                assert requests.post(f"{url}/predict", json=body, timeout=30).status_code == 200
                rust["rss_mb"] = rss_mb(process.pid)
                rust["load"] = single_load(url, rust["template"], args.requests, args.rate, args.concurrency,
                                           process.pid, "light", offset=3 * args.requests, repo=RUST)
            finally:
                process.terminate()
                process.join(timeout=10)

        store = load_snapshot(LocalStore(root / "lake"), REPO)
        open_now = normalize_issues(issues.loc[issues["closed_at"].isna() & ~issues["is_pull_request"]])
        rows = store.rows(raw_columns(open_now))
        features = pd.DataFrame(feature_columns(store.overlay(rows), rows, np.full(rows.n, SNAPSHOT.value / 1000)))
        features = features.assign(repo=REPO, id=rows["id"], number=rows["number"],
                                   created_at=open_now["created_at"].to_numpy())
        reps = int(np.ceil(args.rows / len(features)))
        big = pd.concat([features] * reps, ignore_index=True).iloc[: args.rows]
        t0 = time.perf_counter()  # the first call compiles (or loads from numba's cache) the TreeSHAP kernels
        score_features(model, version, big.iloc[:1000], SNAPSHOT)
        first_call_s = time.perf_counter() - t0

        def best_of_3(scoring_model, top_k: int = 5) -> float:
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                score_features(scoring_model, version, big, SNAPSHOT, top_k=top_k)
                runs.append(time.perf_counter() - t0)
            return min(runs)

        scoring_s, proba_s, age0_s = best_of_3(model), best_of_3(model, top_k=0), best_of_3(age0_model)
        t0 = time.perf_counter()
        batch_frame = batch_open_issue_predictions(model, version, store, issues, SNAPSHOT)
        end_to_end_s = time.perf_counter() - t0

    nproc = os.cpu_count()
    load = os.getloadavg()
    command = "cd /work/main && .venv/bin/python bench/bench_serving.py " + " ".join(sys.argv[1:])
    single_p99 = percentile(light.latencies, 99)

    def load_row(name: str, load: Load) -> str:
        lat = load.latencies
        return (f"| {name} | {len(lat)} | {load.failures} | {percentile(lat, 50):.1f} | {percentile(lat, 99):.1f} | "
                f"{max(lat) * 1000:.1f} | {load.rps:.0f} req/s | {load.per_request_ms(load.server_cpu):.2f} | "
                f"{load.per_request_ms(load.client_cpu):.2f} | {load.late} |")

    lines = [
        "# Serving benchmark",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {nproc} CPUs (nproc), {cpu_model()}, Python {platform.python_version()}; load average at the "
        f"start {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}, at the end {load[0]:.2f} / "
        f"{load[1]:.2f} / {load[2]:.2f} (other jobs share the host)",
        f"- command: `{command.strip()}`",
        f"- data: simulated repository, {len(issues)} issues/PRs and {len(comments)} comments in the lake; "
        f"model {version} ({len(FEATURE_NAMES)} features, {model.booster.num_boosted_rounds()} trees); "
        f"setup {setup_s:.1f} s",
        "- server: `run_server` (uvicorn, one worker) in a separate process on 127.0.0.1; the client runs in "
        "this process, on the same 2 cores. One path answers every request: the repository's event-store "
        "snapshot (loaded at start-up) + the request's own rows",
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
    ]
    if rust is not None:
        lines.append(load_row(f"rust-lang/rust ({rust['issues']:,} issues/PRs, {rust['comments']:,} comments): "
                              f"single-issue POST /predict, open loop at {args.rate:.0f} req/s", rust["load"]))
    lines += [
        "",
        "| service start-up and memory | start-up s (process start to /healthz 200, snapshots loaded) | "
        "snapshot MB | resident MB |",
        "|---|---|---|---|",
        f"| simulated repository | {startup_s:.2f} | | {rss_start:.0f} after warm-up, {rss_end:.0f} after the load "
        "phases |",
    ]
    if rust is not None:
        lines.append(f"| rust-lang/rust | {rust['startup_s']:.2f} | {rust['snapshot_mb']:.1f} | {rust['rss_mb']:.0f} "
                     f"after one request |")
    lines += [
        "",
        "| batch scoring, in process, no I/O | rows | seconds | issues/s |",
        "|---|---|---|---|",
        f"| first score_features call in this process (1,000 rows; includes compiling or loading the cached "
        f"TreeSHAP kernels) | 1,000 | {first_call_s:.3f} | |",
        f"| score_features: probability + rank + top-5 exact SHAP contributions (XGBoost's pred_contribs "
        f"values, computed by issue_assets.modeling.treeshap) on prepared features (best of 3), the served "
        f"model ({model.booster.num_boosted_rounds()} trees, trained on every age) | "
        f"{len(big):,} | {scoring_s:.3f} | {len(big) / scoring_s:,.0f} |",
        f"| the same with the model the same training gives on the age-0 rows alone "
        f"({age0_model.booster.num_boosted_rounds()} trees, like the earlier bench model) | {len(big):,} | "
        f"{age0_s:.3f} | {len(big) / age0_s:,.0f} |",
        f"| score_features with top_k=0: probability + rank only (best of 3) | {len(big):,} | {proba_s:.3f} | "
        f"{len(big) / proba_s:,.0f} |",
        f"| batch_open_issue_predictions end to end (every open or recent issue: features from the snapshot, "
        f"scored or decided) | {len(batch_frame):,} | {end_to_end_s:.3f} | {len(batch_frame) / end_to_end_s:,.0f} |",
        "",
        f"Targets: single-request p99 < 10 ms ({'met' if single_p99 < 10 else 'missed'}: {single_p99:.1f} ms); "
        f"batch scoring with exact top-5 SHAP contributions >= 300,000 issues/s: {len(big) / age0_s:,.0f}/s with "
        f"a model of the earlier size ({'met' if len(big) / age0_s >= 300_000 else 'missed'}), "
        f"{len(big) / scoring_s:,.0f}/s with the served {model.booster.num_boosted_rounds()}-tree model; "
        f"probability + rank {len(big) / proba_s:,.0f}/s.",
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
