"""The `issue-assets` command line: help everywhere, clear failures, ingest through the replay server."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import requests
from click.testing import CliRunner
from conftest import MATOMO_ISSUES

from issue_assets.cli import main
from issue_assets.ingest.current import load_current
from issue_assets.lake.store import LocalStore

TOKEN = "ghp_CliTestToken_abcdefABCDEF0123456789"


def all_commands(group: click.Group, prefix=()) -> list[tuple[str, ...]]:
    out = []
    for name, command in sorted(group.commands.items()):
        out.append((*prefix, name))
        if isinstance(command, click.Group):
            out.extend(all_commands(command, (*prefix, name)))
    return out


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ISSUE_ASSETS_HOME", str(tmp_path / "home"))
    for name in ("LAKE_STORE", "MODEL_STORE", "GITHUB_TOKEN", "GITHUB_API_URL", "ISSUE_ASSETS_REPOS", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


def invoke(*args, **kwargs):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kwargs)


def test_help_on_every_command():
    commands = all_commands(main)
    assert {("ingest",), ("simulate",), ("replay-server",), ("repos", "add"), ("repos", "list"), ("repos", "remove"),
            ("status",), ("dev",), ("demo",), ("run",)} <= set(commands)
    top = invoke("--help")
    assert top.exit_code == 0 and "Usage:" in top.output
    for path in commands:
        result = invoke(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output and " ".join(path) in result.output


def test_ingest_rejects_a_bad_repository_name(env):
    result = CliRunner().invoke(main, ["ingest", "--repo", "bad", "--api-url", "http://127.0.0.1:9"])
    assert result.exit_code != 0
    assert "repository must look like OWNER/NAME, got 'bad'" in result.output
    assert "Traceback" not in result.output


def test_ingest_without_repositories_says_so(env):
    result = CliRunner().invoke(main, ["ingest"])
    assert result.exit_code != 0 and "--repo OWNER/NAME" in result.output


def test_ingest_matomo_through_the_replay_server_then_poll(env, exports, replay_server):
    server = replay_server(files=[exports.path(MATOMO_ISSUES)])
    first = invoke("ingest", "--repo", "matomo-org/matomo", "--api-url", server.url)
    assert first.exit_code == 0, first.output
    summary = re.search(r"matomo-org/matomo: (\d+) issues \(\+(\d+) new, (\d+) updated, (\d+) rejected\), "
                        r"(\d+) comments \(\+(\d+) new\); (\d+) requests, (\d+) answered 304", first.output)
    assert summary, first.output
    assert [int(g) for g in summary.groups()] == [19_085, 19_085, 0, 0, 0, 0, 191 + 1, 0]  # + the empty comments page
    table = load_current(LocalStore(env / "lake"), "issues", "matomo-org/matomo")
    assert len(table) == 19_085 and table["id"].is_unique
    assert (env / "http_cache" / "matomo-org__matomo.json").exists()
    assert "✓ ingest_job matomo-org/matomo: 19,085 new issue versions (191 pages)" in first.output

    # The repository stays bound to the server: no --api-url needed any more.
    server.reset_stats()
    second = invoke("ingest", "--repo", "matomo-org/matomo")
    assert second.exit_code == 0, second.output
    assert "19085 issues (+0 new, 0 updated, 0 rejected), 0 comments (+0 new); 2 requests, 2 answered 304" \
        in second.output
    assert server.stats()["by_endpoint_status"] == {"issues": {"304": 1}, "comments": {"304": 1}}


def test_ingest_unknown_repository_and_wrong_token(env, replay_server, monkeypatch):
    from issue_assets.github.simulate import simulate_repository

    issues, comments = simulate_repository("demo-org/demo-project", n_issues=30, seed=2, days=30)
    server = replay_server(issues, comments, token=TOKEN)
    monkeypatch.setenv("GITHUB_API_URL", server.url)  # GITHUB_TOKEN is meant for this API
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    missing = CliRunner().invoke(main, ["ingest", "--repo", "nobody/nothing"])
    assert missing.exit_code == 1 and "repository nobody/nothing not found" in missing.output
    assert "Traceback" not in missing.output
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_wrong_" + TOKEN[::-1])
    wrong = CliRunner().invoke(main, ["ingest", "--repo", "demo-org/demo-project"])
    assert wrong.exit_code == 1
    assert "rejected the credentials" in wrong.output and "demo-org/demo-project" in wrong.output
    assert TOKEN not in wrong.output and TOKEN[::-1] not in wrong.output
    assert not (env / "lake" / "raw").exists()
    for log in (env / "logs").iterdir():
        assert TOKEN not in log.read_text() and TOKEN[::-1] not in log.read_text()


def test_simulate_writes_the_exports(env, tmp_path):
    out = tmp_path / "sim"
    result = invoke("simulate", "--out", str(out), "--issues", "200")
    assert result.exit_code == 0, result.output
    assert "simulated (demo data, not a real repository) demo-org/demo-project: 200 issues" in result.output
    issues_file = out / "demo-org__demo-project_issues.jsonl.gz"
    comments_file = out / "demo-org__demo-project_comments.jsonl.gz"
    with gzip.open(issues_file, "rt") as fh:
        items = [json.loads(line) for line in fh]
    assert len(items) == 200 and len({i["id"] for i in items}) == 200
    assert all(i["_meta"]["simulated"] for i in items)
    with gzip.open(comments_file, "rt") as fh:
        assert sum(1 for _ in fh) > 0
    bad = CliRunner().invoke(main, ["simulate", "--repo", "no-slash", "--out", str(out)])
    assert bad.exit_code != 0 and "OWNER/NAME" in bad.output


def test_replay_server_subprocess_prints_its_url_and_serves_stats(tmp_path):
    out = tmp_path / "sim"
    assert invoke("simulate", "--out", str(out), "--issues", "120").exit_code == 0
    exe = Path(sys.executable).with_name("issue-assets")
    if not exe.exists():
        pytest.skip(f"console script {exe} is not installed")
    proc = subprocess.Popen([str(exe), "replay-server", "--data", str(out / "demo-org__demo-project_issues.jsonl.gz"),
                             "--comments", str(out / "demo-org__demo-project_comments.jsonl.gz"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        match = re.match(r"replay server listening on (http://127\.0\.0\.1:\d+) \(1 repos, 120 issues, \d+ comments\)$",
                         line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = match.group(1)
        page = requests.get(f"{url}/repos/demo-org/demo-project/issues?state=all&per_page=50", timeout=10)
        assert page.status_code == 200 and len(page.json()) == 50
        stats = requests.get(f"{url}/_replay/stats", timeout=10).json()
        assert stats["requests"] == 1 and stats["by_endpoint_status"] == {"issues": {"200": 1}}
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_replay_server_needs_data(tmp_path):
    result = CliRunner().invoke(main, ["replay-server"])
    assert result.exit_code != 0 and "--data" in result.output


# ---- repositories, DAGSTER_HOME, errors ----------------------------------------------------------

def test_repos_add_list_remove_without_dagster_home(env):
    """DAGSTER_HOME unset: the CLI uses ISSUE_ASSETS_HOME/dagster_home (created with its dagster.yaml)."""
    added = invoke("repos", "add", "a/one", "b/two", "--api-url", "http://127.0.0.1:8765/")
    assert added.exit_code == 0, added.output
    assert "a/one -> http://127.0.0.1:8765, local, no token" in added.output
    assert (env / "dagster_home" / "dagster.yaml").exists()
    listed = invoke("repos", "list")
    assert listed.output.splitlines() == ["a/one  http://127.0.0.1:8765, local, no token",
                                          "b/two  http://127.0.0.1:8765, local, no token"]
    as_json = json.loads(invoke("repos", "list", "--json").output)
    assert as_json["b/two"]["api_url"] == "http://127.0.0.1:8765" and as_json["b/two"]["kind"] == "local"
    import dagster as dg

    with dg.DagsterInstance.from_config(str(env / "dagster_home")) as instance:
        assert instance.get_dynamic_partitions("repos") == ["a/one", "b/two"]
    removed = invoke("repos", "remove", "a/one", "c/never")
    assert removed.output.splitlines() == ["a/one: removed", "c/never: was not registered"]
    assert invoke("repos", "list").output.splitlines() == ["b/two  http://127.0.0.1:8765, local, no token"]
    with dg.DagsterInstance.from_config(str(env / "dagster_home")) as instance:
        assert instance.get_dynamic_partitions("repos") == ["b/two"]


@pytest.mark.parametrize("args, message", [
    (["repos", "add", "good/name", "bad"], "repository must look like OWNER/NAME, got 'bad'"),
    (["repos", "add", "a/one", "--api-url", "api.example.com"], "API URL must be an http(s) URL with a host"),
    (["repos", "add", "a/one", "--api-url", "https://github.com/"], "its API is https://api.github.com"),
    (["repos", "add", "a/one", "--api-url", "https://u:p@ghe.example.com"], "must not hold credentials"),
    (["repos", "add", "a/one", "--token-env", "NO SUCH"], "--token-env must name a token variable"),
    (["repos", "remove", "not a repo"], "repository must look like OWNER/NAME"),
    (["ingest", "--repo", "bad"], "repository must look like OWNER/NAME, got 'bad'"),
])
def test_bad_input_is_one_clear_line_and_nothing_is_registered(env, args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and message in result.output.splitlines()[0]
    assert "Traceback" not in result.output and "(run with --debug for the traceback)" in result.output
    assert "no repositories registered" in invoke("repos", "list").output
    assert not (env / "lake" / "sources").exists()


def test_debug_shows_the_traceback(env):
    result = CliRunner().invoke(main, ["--debug", "repos", "add", "bad"])
    assert result.exit_code != 0 and isinstance(result.exception, ValueError)


def test_model_commands_and_status_on_an_empty_home(env):
    assert invoke("model", "list").output.strip() == "no model versions registered yet"
    shown = CliRunner().invoke(main, ["model", "show"])
    assert shown.exit_code == 1 and "no champion yet" in shown.output
    status = invoke("status")
    assert status.exit_code == 0, status.output
    assert "dagster-daemon not running" in status.output and "no repositories registered" in status.output
    data = json.loads(invoke("status", "--json").output)
    assert set(data) == {"generated_at", "daemon", "repositories", "model", "freshness", "unbound"}
    assert data["model"]["champion"] is None and data["model"]["new_labels"]["threshold"] == 200
    # A partition added in the UI, not bound yet: named, never looked up anywhere.
    import dagster as dg

    with dg.DagsterInstance.from_config(str(env / "dagster_home")) as instance:
        instance.add_dynamic_partitions("repos", ["ui/added"])
    assert "not bound yet  ui/added" in invoke("status").output


def test_fast_commands_import_no_heavy_library(env):
    """`repos list`, `model list/show` and `status` must not load the feature code, xgboost or the code location."""
    script = ("import sys\nfrom click.testing import CliRunner\nfrom issue_assets.cli import main\n"
              "for args in (['repos', 'list'], ['model', 'list'], ['model', 'show'], ['status']):\n"
              "    CliRunner().invoke(main, args)\n"
              "heavy = [m for m in ('xgboost', 'sklearn', 'optuna', 'matplotlib', 'issue_assets.definitions',"
              " 'issue_assets.features.compute') if m in sys.modules]\n"
              "print(','.join(heavy) or 'none')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "none", proc.stdout + proc.stderr


def test_demo_is_quiet_short_and_true(env, tmp_path):
    """The demo's entry point as a user runs it: no DEBUG line, no warning, under 100 lines, exit 0; its
    summary agrees with what was stored."""
    exe = Path(sys.executable).with_name("issue-assets")
    clean = {k: v for k, v in __import__("os").environ.items()
             if not k.startswith(("ISSUE_ASSETS_", "DAGSTER_", "LAKE_STORE", "MODEL_STORE", "OPTUNA_STORAGE",
                                  "GITHUB_", "RETRAIN_", "PYTHONWARNINGS"))}
    clean["ISSUE_ASSETS_HOME"] = str(env)
    proc = subprocess.run([str(exe), "demo", "--issues", "600", "--trials", "3"], cwd=tmp_path, env=clean,
                          capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    lines = output.splitlines()
    assert len(lines) < 100, output
    assert not [line for line in lines if "DEBUG" in line or "Warning" in line or "WARNING" in line], output
    log = re.search(r"^log: (\S+)", output, re.MULTILINE).group(1)
    assert "STEP_SUCCESS" in Path(log).read_text()  # the event log went to the file
    for step in ("ingest_job", "refresh_job", "training_job", "predictions_job"):
        assert re.search(rf"^✓ {step} ", output, re.MULTILINE), output
    requests = re.search(r"requests +comments ([\d,]+) \((\d+) answered 304\) · issues ([\d,]+) \((\d+) answered 304\)",
                         output)
    assert requests and int(requests.group(2)) == 1 and int(requests.group(4)) == 1  # the closing poll
    opened = re.search(r"(\d+) open = (\d+) pull requests \+ (\d+) issues inside their 7-day window \+ (\d+) decided",
                       output)
    total, prs, inside, decided = (int(g) for g in opened.groups())
    assert total == prs + inside + decided and inside > 0
    table = load_current(LocalStore(env / "lake"), "issues", "demo-org/demo-project")
    assert total == int((table["state"] == "open").sum())
    assert "(LEAKY: ref_label_count, ref_has_bug_label, ref_comment_count" in output
    assert "make dev -> http://127.0.0.1:3000" in output


def test_dev_serves_bound_exports_live_and_stops_cleanly(env, tmp_path):
    """`make dev`: a live replay server for the repository the demo bound to exports, the repository rebound to
    it, `dagster dev` up; SIGTERM stops all of it (no process of its group is left)."""
    import os
    import signal
    import socket
    import time

    from issue_assets.ingest import sources
    from issue_assets.lake.store import LocalStore

    out = tmp_path / "sim"
    assert invoke("simulate", "--out", str(out), "--issues", "80").exit_code == 0
    store = LocalStore(env / "lake")
    exports = {"issues": [out / "demo-org__demo-project_issues.jsonl.gz"],
               "comments": [out / "demo-org__demo-project_comments.jsonl.gz"]}
    sources.add("demo-org/demo-project", "http://127.0.0.1:9", simulated=True, exports=exports, store=store)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("issue-assets")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ISSUE_ASSETS_", "DAGSTER_", "GITHUB_"))}
    proc = subprocess.Popen([str(exe), "dev", "--port", str(port), "--live", "0.5"], env=clean | {
        "ISSUE_ASSETS_HOME": str(env)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        first = proc.stdout.readline()
        assert re.match(r"demo-org/demo-project: served at http://127\.0\.0\.1:\d+, a new event every ~0\.5s", first)
        url = sources.all_sources(store)["demo-org/demo-project"].api_url
        assert url != "http://127.0.0.1:9" and first.split()[3].rstrip(",") == url
        before = len(requests.get(f"{url}/repos/demo-org/demo-project/issues?state=all&per_page=100", timeout=10)
                     .json())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        else:
            pytest.fail("dagster dev did not answer within 120 s")
        after = requests.get(f"{url}/repos/demo-org/demo-project/issues?state=all&per_page=100", timeout=10).json()
        assert len(after) >= before  # live activity keeps adding (or updating) items
        family = _descendants(proc.pid)
        assert len(family) >= 3  # dagster dev, its webserver, daemon and code servers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(2)
    alive = [pid for pid in family if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"]
    assert not alive, f"left running: {alive}"


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
