"""The whole pipeline in-process, through Dagster: what `issue-assets run` and `make demo` execute."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg

from issue_assets import config
from issue_assets.assets import ingestion, model, prediction, training
from issue_assets.ingest.sync import cursor
from issue_assets.lake.store import open_store
from issue_assets.resources import GitHubResource, LakeResource, ModelStoreResource


class PipelineError(RuntimeError):
    """A step of the pipeline failed; the message names the step and the partition."""


def _materialize(step: str, assets, *, instance, resources, echo, **kwargs) -> dg.ExecuteInProcessResult:
    began = time.perf_counter()
    try:
        result = dg.materialize(assets, instance=instance, resources=resources, raise_on_error=False, **kwargs)
    except dg.DagsterError as exc:
        raise PipelineError(f"{step}: {exc}") from None
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_step_failure] or ["see the run in the Dagster UI"]
        raise PipelineError(f"{step} failed: {failures[0]}")
    failed_checks = [c for c in result.get_asset_check_evaluations() if not c.passed]
    for check in failed_checks:
        echo(f"  check {check.asset_key.to_user_string()}.{check.check_name} did not pass")
    echo(f"  {step}: done in {time.perf_counter() - began:.1f}s")
    return result


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict:
    mats = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in mats[-1].metadata.items()} if mats else {}


def run_pipeline(repos: list[str], *, api_url: str | None = None, trials: int = 20, as_of: str | None = None,
                 instance: dg.DagsterInstance | None = None, echo: Callable[[str], None] = print) -> dict:
    """Ingest (history once, then only what changed), features, training set as of today, tuning,
    candidate, promotion decision. Raises PipelineError naming the failed step."""
    from issue_assets.definitions import resources as default_resources

    resources = default_resources()
    if api_url:
        token = dg.EnvVar("GITHUB_TOKEN") if config.github_token() else None
        resources["github"] = GitHubResource(api_url=api_url, token=token)
    resources.setdefault("lake", LakeResource())
    resources.setdefault("model_store", ModelStoreResource())
    owned = instance is None
    instance = instance or dg.DagsterInstance.get()
    today = datetime.now(UTC)
    yesterday = (today - timedelta(days=1)).strftime("%Y-%m-%d")
    as_of = as_of or today.strftime("%Y-%m-%d")
    store = open_store(config.lake_uri())
    summary: dict = {"repos": {}, "as_of": as_of}
    try:
        known = set(instance.get_dynamic_partitions("repos"))
        instance.add_dynamic_partitions("repos", [r for r in repos if r not in known])
        for repo in repos:
            since = cursor(store, repo, "issues")
            first = config.start_date()
            if since is not None and since.strftime("%Y-%m-%d") > first:
                first = min(since.strftime("%Y-%m-%d"), yesterday)
            echo(f"{repo}: ingesting updates from {first if since else 'the beginning'} to {yesterday} in one run")
            raw = _materialize(f"ingest {repo}", [ingestion.raw_issues, ingestion.raw_comments], instance=instance,
                               resources=resources, echo=echo,
                               tags={"dagster/asset_partition_range_start": f"{first}|{repo}",
                                     "dagster/asset_partition_range_end": f"{yesterday}|{repo}"})
            refreshed = _materialize(f"current state + features {repo}",
                                     [ingestion.issues, ingestion.issue_comments, training.issue_features],
                                     instance=instance, resources=resources, echo=echo, partition_key=repo)
            summary["repos"][repo] = {"raw": _meta(raw, "raw_issues"), "issues": _meta(refreshed, "issues"),
                                      "features": _meta(refreshed, "issue_features")}
        run_config = {"ops": {"tuned_params": {"config": {"n_trials": trials}}}}
        trained = _materialize(f"training as of {as_of}",
                               [training.training_set, model.tuned_params, model.candidate_model],
                               instance=instance, resources=resources, echo=echo, partition_key=as_of,
                               run_config=run_config)
        promoted = _materialize("promotion", [model.production_model], instance=instance, resources=resources,
                                echo=echo, selection=[model.production_model.key])
        summary.update(training_set=_meta(trained, "training_set"), tuned=_meta(trained, "tuned_params"),
                       candidate=_meta(trained, "candidate_model"), production=_meta(promoted, "production_model"))
        for repo in repos:
            scored = _materialize(f"predictions {repo}", [prediction.open_issue_predictions], instance=instance,
                                  resources=resources, echo=echo, partition_key=repo)
            summary["repos"][repo]["predictions"] = _meta(scored, "open_issue_predictions")
    finally:
        if owned:
            instance.dispose()
    return summary


def format_summary(summary: dict) -> list[str]:
    lines = ["== issue_assets pipeline summary =="]
    for repo, r in summary["repos"].items():
        lines.append(f"{repo}: {r['issues'].get('rows', 0)} items current ({r['issues'].get('pull_requests', 0)} PRs, "
                     f"{r['issues'].get('open', 0)} open); features {r['features'].get('mode')} "
                     f"({r['features'].get('recomputed_rows')} of {r['features'].get('rows')} rows computed); "
                     f"{r['raw'].get('requests', 0)} requests, {r['raw'].get('not_modified_304', 0)} answered 304")
    t, c, p = summary.get("training_set", {}), summary.get("candidate", {}), summary.get("production", {})
    lines.append(f"training set as of {summary['as_of']}: {t.get('rows')} labelled rows, label rate "
                 f"{t.get('label_rate', float('nan')):.3f}")
    tuned = summary.get("tuned", {})
    lines.append(f"tuning: best CV AUC {tuned.get('best_value', float('nan')):.4f} "
                 f"({tuned.get('trials_completed')} completed, {tuned.get('trials_pruned')} pruned)")
    lines.append(f"candidate {c.get('version')}: test AUC {c.get('test_auc', float('nan')):.4f}")
    vs = c.get("vs_references")
    if vs:
        lines.append(vs)
    lines.append(f"promotion: {'PROMOTED' if p.get('promoted') else 'not promoted'} — {p.get('reason')}; "
                 f"champion is {p.get('champion')}")
    for repo, r in summary["repos"].items():
        pred = r.get("predictions") or {}
        if pred:
            lines.append(f"{repo}: {pred.get('open_issues')} open issues scored by {pred.get('model_version')} "
                         f"-> {pred.get('csv')}")
    return lines
