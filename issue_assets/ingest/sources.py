"""Where each repository lives: the API it is fetched from (GitHub, a GitHub Enterprise server, a replay server).

A repository is bound to its API once (`issue-assets repos add OWNER/NAME --api-url URL`, the demo, or the
repositories sensor for a repository named in ISSUE_ASSETS_REPOS or added in the UI) and the binding is
kept in the lake, `sources/repositories.json`, written with compare-and-put so concurrent writers never
lose each other's change and a restart finds it again. Ingestion, the polling and retraining sensors,
the CLI and the HTTP service all build their client with `client_for(repo)`, so a simulated repository
bound to a replay server is never looked up on github.com.

A token is only ever sent to the API it belongs to: GITHUB_TOKEN to GITHUB_API_URL's origin (api.github.com
by default), or the variable a binding names (`--token-env`) to that binding's API. The binding stores the
variable's name, never a token.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from issue_assets import config
from issue_assets.ingest import layout
from issue_assets.lake.documents import read_json, update_json
from issue_assets.lake.store import ObjectStore, open_store

SOURCES_KEY = "sources/repositories.json"
FORMAT = 1
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
GITHUB_API = "https://api.github.com"


#: the way out of a damaged bindings document: it records choices, nothing it could be derived from
REMEDY = ("it holds choices nothing can derive: delete it, then bind each repository again with "
          "`issue-assets repos add OWNER/NAME --api-url URL`")


class SourceError(ValueError):
    """A binding that cannot be made (malformed API URL, token variable) or read (corrupt document)."""


@dataclass(frozen=True)
class Source:
    repo: str
    api_url: str
    token_env: str | None = None
    simulated: bool = False
    added_at: str | None = None
    exports: dict | None = None
    bound: bool = True

    @property
    def kind(self) -> str:
        host = (urlsplit(self.api_url).hostname or "").lower()
        if self.api_url.rstrip("/") == GITHUB_API:
            return "github"
        if host in _LOOPBACK or host.startswith("127."):
            return "replay server" if self.simulated else "local"
        return "github enterprise"

    def token_variable(self) -> str | None:
        """The environment variable whose token this source may receive, or None (anonymous)."""
        if self.token_env:
            return self.token_env
        return "GITHUB_TOKEN" if same_origin(self.api_url, config.api_url()) else None

    def token(self, default: str | None = None) -> str | None:
        """The token for this API: from `token_env`, or `default` / GITHUB_TOKEN when the API is GITHUB_API_URL's.
        Never over plain http to a host other than this machine, and only from a variable named as a token
        (the bindings live in the lake: whoever can write it must not be able to aim a secret at a host)."""
        if self.token_env:
            check_token_env(self.token_env)
            token = config.env(self.token_env)
        elif same_origin(self.api_url, config.api_url()):
            token = default or config.github_token()
        else:
            return None
        if token and not _may_carry_token(self.api_url):
            raise SourceError(f"{self.repo}: a token is never sent over plain http to {self.api_url}; use https")
        return token

    def describe(self) -> str:
        parts = [self.api_url, self.kind]
        if self.simulated:
            parts.append("simulated data")
        variable = self.token_variable()
        parts.append(f"token from {variable}" if variable else "no token")
        if not self.bound:
            parts.append("not registered: the default API")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        return asdict(self) | {"kind": self.kind}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def same_origin(a: str, b: str) -> bool:
    return _origin(a) == _origin(b)


def check_api_url(url: str) -> str:
    """A normalized API base URL, or SourceError saying what is wrong with it."""
    text = (url or "").strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise SourceError(f"API URL {text!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceError(f"API URL must be an http(s) URL with a host, got {text!r}")
    if "@" in parts.netloc:
        raise SourceError("API URL must not hold credentials (user:password@); give the token through "
                          "an environment variable (--token-env)")
    if parts.query or parts.fragment:
        raise SourceError(f"API URL must not have a query or fragment, got {text!r}")
    if parts.hostname.lower() in ("github.com", "www.github.com"):
        raise SourceError(f"{text!r} is GitHub's web site; its API is {GITHUB_API}")
    if port == 0:
        raise SourceError(f"API URL has no usable port: {text!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def _default_store() -> ObjectStore:
    return open_store(config.lake_uri())


def _doc(store: ObjectStore) -> dict:
    doc = read_json(store, SOURCES_KEY, default=None, remedy=REMEDY) or {"format": FORMAT, "repositories": {}}
    if not isinstance(doc, dict) or not isinstance(doc.get("repositories"), dict):
        raise SourceError(f"{store.uri}/{SOURCES_KEY} is not a repository-sources document")
    return doc


def check_token_env(name: str) -> str:
    """`name` if it is a variable a token may come from: GITHUB_TOKEN or a name ending in _TOKEN, and none of
    the platform's other secrets (AWS_*, ...): a binding names where its token comes from, nothing else."""
    if not _ENV_NAME.match(name or "") or not (name == "GITHUB_TOKEN" or name.endswith("_TOKEN")) \
            or name.startswith(("AWS_", "DAGSTER_", "OPTUNA_", "PG", "DATABASE")):
        raise SourceError(f"--token-env must name a token variable (GITHUB_TOKEN or NAME_TOKEN, not AWS_*), "
                          f"got {name!r}")
    return name


def _may_carry_token(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" or host in _LOOPBACK or host.startswith("127.")


def _from_entry(repo: str, entry: dict) -> Source:
    return Source(repo=repo, api_url=str(entry["api_url"]), token_env=entry.get("token_env") or None,
                  simulated=bool(entry.get("simulated")), added_at=entry.get("added_at"),
                  exports=entry.get("exports") or None)


def all_sources(store: ObjectStore | None = None) -> dict[str, Source]:
    """Every registered repository and its source, by name."""
    store = store or _default_store()
    try:
        return {repo: _from_entry(repo, entry) for repo, entry in sorted(_doc(store)["repositories"].items())}
    except (KeyError, TypeError) as exc:
        raise SourceError(f"{store.uri}/{SOURCES_KEY} has a malformed entry ({exc})") from None


def source_of(repo: str, store: ObjectStore | None = None) -> Source:
    """The repository's bound source, or (not bound) GITHUB_API_URL."""
    layout.check_repo(repo)
    found = all_sources(store).get(repo)
    return found if found is not None else Source(repo=repo, api_url=config.api_url(), bound=False)


def bound_source(repo: str, store: ObjectStore | None = None) -> Source:
    """The repository's bound source; SourceError when it has none (never a fall-back to GITHUB_API_URL)."""
    source = source_of(repo, store)
    if not source.bound:
        raise SourceError(f"{repo} is not bound to an API: issue-assets repos add {repo} [--api-url URL]")
    return source


def add(repo: str, api_url: str | None = None, *, token_env: str | None = None, simulated: bool = False,
        exports: dict | None = None, store: ObjectStore | None = None) -> Source:
    """Bind `repo` to `api_url` (default GITHUB_API_URL), replacing an earlier binding. Validated first:
    a malformed name, URL or variable name raises SourceError / ValueError and nothing is written.

    `exports` ({"issues": [paths], "comments": [paths]}) records the files a replay server serves the
    repository from, so `issue-assets dev` can serve it again."""
    layout.check_repo(repo)
    url = check_api_url(api_url or config.api_url())
    if token_env is not None:
        check_token_env(token_env)
    store = store or _default_store()
    entry = {"api_url": url, "token_env": token_env, "simulated": bool(simulated),
             "added_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    if exports:
        entry["exports"] = {kind: [str(p) for p in exports.get(kind, [])] for kind in ("issues", "comments")}

    def change(doc: dict) -> dict:
        doc.setdefault("format", FORMAT)
        doc.setdefault("repositories", {})[repo] = entry
        return doc

    update_json(store, SOURCES_KEY, change, default=lambda: {"format": FORMAT, "repositories": {}}, remedy=REMEDY)
    return _from_entry(repo, entry)


def remove(repo: str, store: ObjectStore | None = None) -> bool:
    """Forget the binding; True if there was one. The repository's data in the lake is left alone."""
    layout.check_repo(repo)
    store = store or _default_store()
    removed = []

    def change(doc: dict) -> dict:
        removed[:] = [doc.setdefault("repositories", {}).pop(repo, None) is not None]
        return doc

    if store.exists(SOURCES_KEY):
        update_json(store, SOURCES_KEY, change, default=dict, remedy=REMEDY)
    return bool(removed and removed[0])


def cache_path(repo: str, cache_dir: str | Path | None = None) -> Path:
    """The repository's own validator file (concurrent runs of other repositories never rewrite it)."""
    return Path(cache_dir or config.http_cache_dir()) / f"{layout.repo_slug(repo)}.json"


def client_for(repo: str, store: ObjectStore | None = None, *, source: Source | None = None,
               token: str | None = None, cache_dir: str | Path | None = None, save_validators: bool = True,
               **options):
    """A GitHubClient for the repository's API, with its validator cache and only the token meant for it.

    save_validators=False reads validators but never writes them (a poll that does not store what it
    fetches must not make the ingest's next request answer 304). `options` go to GitHubClient."""
    from issue_assets.github.client import GitHubClient
    from issue_assets.github.conditional_cache import ConditionalCache

    source = source or source_of(repo, store)
    path = cache_path(repo, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    cache = ConditionalCache(path, read_only=not save_validators)
    return GitHubClient(source.api_url, source.token(token), cache=cache, **options)


__all__ = ["SOURCES_KEY", "Source", "SourceError", "add", "all_sources", "cache_path",
           "check_api_url", "client_for", "remove", "same_origin", "source_of"]
