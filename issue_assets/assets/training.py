"""Feature and training-set assets: point-in-time features per repository, training sets per as-of day."""

import dagster as dg
import pandas as pd

from issue_assets.assets import follows_updates
from issue_assets.features import training_sets as ts
from issue_assets.features.catalog import FEATURE_NAMES, feature_registry_version
from issue_assets.features.table import load_features, refresh_features
from issue_assets.lake import keys
from issue_assets.lake.documents import read_json, write_json
from issue_assets.lake.store import KeyNotFound, write_parquet
from issue_assets.partitions import as_of_partitions, repo_partitions
from issue_assets.resources import LakeResource


@dg.asset(
    partitions_def=repo_partitions,
    deps=["issues", "issue_comments"],
    group_name="features", kinds={"pandas", "parquet"},
    automation_condition=follows_updates(),
    description="Point-in-time features, label and label_known_at of every issue of one repository at ages "
                "0, 6, 24 and 72 h (rows keyed by repo, id, age_hours; an age only while the issue is still "
                "open); only rows a change can affect are recomputed. Also writes the event-store snapshot "
                "the prediction service loads.",
)
def issue_features(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    refresh = refresh_features(lake.store(), context.partition_key)
    context.log.info(f"{refresh.repo}: {refresh.mode} refresh, {refresh.recomputed} of {refresh.rows} rows computed")
    return dg.MaterializeResult(metadata={
        "rows": refresh.rows, "issues": refresh.issues, "recomputed_rows": refresh.recomputed, "mode": refresh.mode,
        "snapshot_bytes": refresh.snapshot_bytes,
        "changed_since": refresh.changed_since or "", "labels_known": refresh.labels_known,
        "label_rate": refresh.label_rate if refresh.label_rate is not None else float("nan"),
        "seconds": round(refresh.seconds, 3), "features": len(FEATURE_NAMES),
        "feature_registry_version": feature_registry_version(),
    })


CHECKS = {
    "schema": "Columns and types as the feature registry says",
    "unique_ids": "No (repository, issue id, age) row twice",
    "null_rates": "Share of missing values of each feature within its bound",
    "label_rate": "Label rate within a plausible band and close to the previous as-of day's",
    "labels_known_at_cutoff": "No row whose label is not yet known at the cutoff",
    "features_available_at_prediction_time": "No feature whose availability is after its prediction time",
}


def _previous_info(store, as_of: str) -> dict | None:
    earlier = sorted(k for k in store.list("training/") if k.endswith(".json") and k < keys.training_info_key(as_of))
    return read_json(store, earlier[-1]) if earlier else None


def cutoff_of(as_of: str) -> pd.Timestamp:
    """The cutoff of an as-of day: the end of that day, or now if the day is today."""
    end = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
    return min(end, pd.Timestamp.now(tz="UTC"))


@dg.asset(
    partitions_def=as_of_partitions,
    deps=[dg.AssetDep("issue_features", partition_mapping=dg.AllPartitionMapping())],
    group_name="training", kinds={"pandas", "parquet"},
    check_specs=[dg.AssetCheckSpec(name, asset="training_set", description=desc,
                                   blocking=name != "label_rate") for name, desc in CHECKS.items()],
    description="Rows (every age) of all repositories' issues whose label is known at the as-of cutoff, split "
                "train / validation / test on issue boundaries by created_at (test = most recent).",
)
def training_set(context: dg.AssetExecutionContext, lake: LakeResource):
    store = lake.store()
    as_of = context.partition_key
    cutoff = cutoff_of(as_of)
    repos = context.instance.get_dynamic_partitions("repos")
    frames = []
    for repo in repos:
        try:
            frames.append(load_features(store, repo))
        except KeyNotFound:
            context.log.warning(f"{repo}: no issue_features yet; left out of the training set")
    if not frames:
        raise dg.Failure(f"no repository has issue_features yet (repositories: {repos or 'none registered'})")
    features = pd.concat(frames, ignore_index=True)
    rows, info = ts.build_training_set(features, cutoff)
    info["repos"] = sorted(rows["repo"].unique().tolist())
    previous = _previous_info(store, as_of)
    write_parquet(store, keys.training_set_key(as_of), rows)
    write_json(store, keys.training_info_key(as_of), info)
    results = {
        "schema": ts.check_schema(rows),
        "unique_ids": ts.check_unique_ids(rows),
        "null_rates": ts.check_null_rates(rows),
        "label_rate": ts.check_label_rate(rows, previous=previous["label_rate"] if previous else None),
        "labels_known_at_cutoff": ts.check_labels_known(rows, cutoff),
        "features_available_at_prediction_time": ts.check_availability(),
    }
    splits = info["splits"]
    yield dg.MaterializeResult(metadata={
        "rows": info["rows"], "issues": info["issues"], "rows_per_age": dg.MetadataValue.json(info["rows_per_age"]),
        "cutoff": info["cutoff"], "label_rate": info["label_rate"] or float("nan"),
        "repos": ", ".join(info["repos"]),
        "splits": dg.MetadataValue.md(pd.DataFrame(splits).T.astype(str).to_markdown()),
        "feature_registry_version": info["feature_registry_version"],
        "path": f"{store.uri}/{keys.training_set_key(as_of)}",
    })
    for name, (passed, details) in results.items():
        yield dg.AssetCheckResult(check_name=name, passed=bool(passed), metadata={
            k: (dg.MetadataValue.json(v) if isinstance(v, dict | list) else v) for k, v in details.items()},
            severity=dg.AssetCheckSeverity.WARN if name == "label_rate" else dg.AssetCheckSeverity.ERROR)
