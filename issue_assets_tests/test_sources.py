"""Repository sources: each repository bound to its API, stored in the lake, safe for concurrent writers, and
the token sent only to the API it is meant for."""

from __future__ import annotations

import json
import multiprocessing
import re
import threading

import pytest

from issue_assets.github.client import AuthError
from issue_assets.github.replay import ReplayServer
from issue_assets.github.simulate import simulate_repository
from issue_assets.ingest import sources
from issue_assets.lake.store import LocalStore

REPO = "demo-org/demo-project"
TOKEN = "ghp_SourcesTestToken_0123456789abcdef"


@pytest.fixture
def store(tmp_path, monkeypatch):
    for name in ("GITHUB_API_URL", "GITHUB_TOKEN", "OTHER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ISSUE_ASSETS_HOME", str(tmp_path / "home"))
    return LocalStore(tmp_path / "lake")


def test_add_list_remove_survives_a_new_process_view(store):
    added = sources.add(REPO, "http://127.0.0.1:8765/", simulated=True, store=store,
                        exports={"issues": ["/x/i.jsonl.gz"], "comments": []})
    assert added.api_url == "http://127.0.0.1:8765" and added.kind == "replay server"
    sources.add("rust-lang/rust", store=store)
    # What another process sees: only the document in the lake.
    fresh = sources.all_sources(LocalStore(store.root))
    assert list(fresh) == [REPO, "rust-lang/rust"]
    assert fresh[REPO] == added and fresh[REPO].exports == {"issues": ["/x/i.jsonl.gz"], "comments": []}
    assert fresh["rust-lang/rust"].api_url == "https://api.github.com" and fresh["rust-lang/rust"].kind == "github"
    # Rebinding replaces; removing forgets; an unbound repository falls back to GITHUB_API_URL, unbound.
    assert sources.add(REPO, "http://127.0.0.1:9999", store=store).api_url == "http://127.0.0.1:9999"
    assert sources.remove(REPO, store=store) is True and sources.remove(REPO, store=store) is False
    default = sources.source_of(REPO, store)
    assert default.bound is False and default.api_url == "https://api.github.com"
    assert json.loads(store.get_bytes(sources.SOURCES_KEY))["repositories"].keys() == {"rust-lang/rust"}


@pytest.mark.parametrize("repo, url, message", [
    ("no-slash", None, "repository must look like OWNER/NAME, got 'no-slash'"),
    ("a/b/c", None, "OWNER/NAME"),
    ("owner/..", None, "OWNER/NAME"),
    (REPO, "ftp://example.com", "must be an http(s) URL"),
    (REPO, "127.0.0.1:8000", "must be an http(s) URL"),
    (REPO, "http://", "must be an http(s) URL"),
    (REPO, "https://user:secret@ghe.example.com/api/v3", "must not hold credentials"),
    (REPO, "https://ghe.example.com/api/v3?x=1", "must not have a query"),
    (REPO, "https://github.com", "GitHub's web site; its API is https://api.github.com"),
    (REPO, "http://[::1", "is not a URL"),
])
def test_malformed_bindings_are_refused_and_nothing_is_written(store, repo, url, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sources.add(repo, url, store=store)
    assert not store.exists(sources.SOURCES_KEY)


@pytest.mark.parametrize("name", ["NOT A NAME", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "DAGSTER_PG_PASSWORD",
                                  "HOME", "OPTUNA_STORAGE"])
def test_a_binding_takes_its_token_only_from_a_token_variable(store, name):
    """The bindings live in the lake: whoever can write it must not be able to send another secret to a host."""
    with pytest.raises(sources.SourceError, match="--token-env must name a token variable"):
        sources.add(REPO, "https://ghe.example.com/api/v3", token_env=name, store=store)
    assert not store.exists(sources.SOURCES_KEY)


def test_a_planted_binding_with_another_secret_or_plain_http_sends_no_token(store, monkeypatch):
    from issue_assets.lake.documents import write_json

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    monkeypatch.setenv("GHE_TOKEN", "ghe-token")
    write_json(store, sources.SOURCES_KEY, {"format": 1, "repositories": {
        "a/aws": {"api_url": "https://collector.example/api", "token_env": "AWS_SECRET_ACCESS_KEY"},
        "a/http": {"api_url": "http://ghe.example.com/api/v3", "token_env": "GHE_TOKEN"},
        "a/local": {"api_url": "http://127.0.0.1:8765", "token_env": "GHE_TOKEN"}}})
    bound = sources.all_sources(store)
    with pytest.raises(sources.SourceError, match="token variable") as aws:
        bound["a/aws"].token()
    with pytest.raises(sources.SourceError, match="never sent over plain http") as http:
        bound["a/http"].token()
    assert "very-secret" not in str(aws.value) and "ghe-token" not in str(http.value)
    assert bound["a/local"].token() == "ghe-token"  # loopback: a replay server of one's own


def _add_many(root: str, prefix: str, n: int) -> None:
    store = LocalStore(root)
    for i in range(n):
        sources.add(f"{prefix}/repo-{i}", f"http://127.0.0.1:{9000 + i}", store=store)


def test_concurrent_writers_lose_nothing(store):
    """Threads and processes binding different repositories at once: every binding is kept."""
    threads = [threading.Thread(target=_add_many, args=(str(store.root), f"t{k}", 15)) for k in range(3)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(str(store.root), f"p{k}", 15)) for k in range(2)]
    for worker in [*threads, *procs]:
        worker.start()
    for worker in [*threads, *procs]:
        worker.join(120)
    assert all(p.exitcode == 0 for p in procs)
    bound = sources.all_sources(store)
    assert len(bound) == 5 * 15
    assert bound["p1/repo-14"].api_url == "http://127.0.0.1:9014"


def test_token_goes_only_to_the_api_it_belongs_to(store, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("OTHER_TOKEN", "ghp_other")
    github = sources.add("a/github", store=store)
    replay = sources.add("a/replay", "http://127.0.0.1:8765", store=store)
    ghe = sources.add("a/ghe", "https://ghe.example.com/api/v3", token_env="OTHER_TOKEN", store=store)
    assert github.token() == TOKEN and github.token_variable() == "GITHUB_TOKEN"
    assert replay.token() is None and replay.token_variable() is None
    assert ghe.token() == "ghp_other"
    # GITHUB_TOKEN belongs to GITHUB_API_URL: pointing that at GHE moves it there, away from github.com.
    monkeypatch.setenv("GITHUB_API_URL", "https://ghe.example.com/api/v3")
    assert github.token() is None and sources.add("a/ghe2", store=store).token() == TOKEN
    for source in (github, replay, ghe):
        assert TOKEN not in json.dumps(source.as_dict()) and TOKEN not in source.describe()
    assert TOKEN not in store.get_bytes(sources.SOURCES_KEY).decode()


def test_client_for_uses_the_binding_and_its_token(store, monkeypatch):
    issues, comments = simulate_repository(REPO, n_issues=20, seed=1, days=30)
    with ReplayServer(issues, comments, token=TOKEN) as server:
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        sources.add(REPO, server.url, simulated=True, store=store)
        # Bound to a replay server that is not GITHUB_API_URL: GITHUB_TOKEN is not sent, the server refuses.
        with sources.client_for(REPO, store) as client, pytest.raises(AuthError, match="no token was configured"):
            client.get_repo(REPO)
        assert server.stats()["by_status"] == {"401": 1}
        # The same server as GITHUB_API_URL: now the token is meant for it.
        monkeypatch.setenv("GITHUB_API_URL", server.url)
        with sources.client_for(REPO, store) as client:
            assert client.api_url == server.url and client.get_repo(REPO)["full_name"] == REPO
        # A binding names its own variable.
        monkeypatch.delenv("GITHUB_API_URL")
        monkeypatch.setenv("REPLAY_TOKEN", TOKEN)
        sources.add(REPO, server.url, token_env="REPLAY_TOKEN", store=store)
        with sources.client_for(REPO, store) as client:
            assert client.get_repo(REPO)["full_name"] == REPO


def test_validator_files_are_per_repository(store, tmp_path):
    assert sources.cache_path("a/one", tmp_path) != sources.cache_path("a/two", tmp_path)
    assert sources.cache_path("a/one", tmp_path).parent == tmp_path


def test_corrupt_document_is_a_clear_error(store):
    store.put_bytes(sources.SOURCES_KEY, b'{"repositories": []}')
    with pytest.raises(sources.SourceError, match="is not a repository-sources document"):
        sources.all_sources(store)
    store.put_bytes(sources.SOURCES_KEY, b"{not json")
    with pytest.raises(Exception, match=r"repositories.json is damaged \(not valid JSON.*repos add"):
        sources.all_sources(store)
