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
    for name in ("LAKE_STORE", "GITHUB_TOKEN", "GITHUB_API_URL", "ISSUE_ASSETS_REPOS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


def invoke(*args, **kwargs):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kwargs)


def test_help_on_every_command():
    commands = all_commands(main)
    assert {("ingest",), ("simulate",), ("replay-server",), ("repos", "add")} <= set(commands)
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
    assert [int(g) for g in summary.groups()] == [19_085, 19_085, 0, 0, 0, 0, 191 + 1, 0]  # the repo lookup is not in the sync counts
    table = load_current(LocalStore(env / "lake"), "issues", "matomo-org/matomo")
    assert len(table) == 19_085 and table["id"].is_unique
    assert (env / "http_cache.json").exists()

    server.reset_stats()
    second = invoke("ingest", "--repo", "matomo-org/matomo", "--api-url", server.url)
    assert second.exit_code == 0, second.output
    assert "19085 issues (+0 new, 0 updated, 0 rejected), 0 comments (+0 new); 2 requests, 2 answered 304" \
        in second.output
    assert server.stats()["by_endpoint_status"] == {"repo": {"200": 1}, "issues": {"304": 1},
                                                    "comments": {"304": 1}}


def test_ingest_unknown_repository_and_wrong_token(env, replay_server, monkeypatch):
    from issue_assets.github.simulate import simulate_repository

    issues, comments = simulate_repository("demo-org/demo-project", n_issues=30, seed=2, days=30)
    server = replay_server(issues, comments, token=TOKEN)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    missing = CliRunner().invoke(main, ["ingest", "--repo", "nobody/nothing", "--api-url", server.url])
    assert missing.exit_code != 0 and "nobody/nothing not found" in missing.output
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_wrong_" + TOKEN[::-1])
    wrong = CliRunner().invoke(main, ["ingest", "--repo", "demo-org/demo-project", "--api-url", server.url])
    assert wrong.exit_code != 0
    assert "rejected the credentials" in wrong.output and "demo-org/demo-project" in wrong.output
    assert TOKEN not in wrong.output and TOKEN[::-1] not in wrong.output
    assert not (env / "lake" / "raw").exists()


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
