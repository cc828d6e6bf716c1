"""The code location: every asset, job, schedule, sensor and resource, configured from the environment."""


import dagster as dg

from issue_assets import config, jobs, sensors
from issue_assets.assets import ingestion, model, monitoring, prediction, training
from issue_assets.loggers import LOGGERS
from issue_assets.partitions import AS_OF_NOTE, as_of_partitions
from issue_assets.resources import GitHubResource, LakeResource, ModelStoreResource
from issue_assets.schedules import daily_reconcile_schedule

_MODULES = [ingestion, training, model, prediction, monitoring]


def resources() -> dict:
    token = dg.EnvVar("GITHUB_TOKEN") if config.github_token() else None
    return {
        "lake": LakeResource(),
        "github": GitHubResource(token=token),
        "model_store": ModelStoreResource(),
    }


def _note_as_of(spec: dg.AssetSpec) -> dg.AssetSpec:
    """The UI shows "1 / 1,000 missing" for an as-of asset after a training; its description says why."""
    if spec.partitions_def == as_of_partitions:
        return spec.replace_attributes(description=(spec.description or "") + AS_OF_NOTE)
    return spec


def _assets() -> list:
    return [a.map_asset_specs(_note_as_of) if isinstance(a, dg.AssetsDefinition) else a
            for a in dg.load_assets_from_modules(_MODULES)]


# One process per run: every step of these runs is light or waits for the previous one, and a process per
# step (Dagster's default) pays the code location's import (~3 s on a small machine) once per step.
defs = dg.Definitions(
    assets=_assets(),
    asset_checks=dg.load_asset_checks_from_modules(_MODULES),
    jobs=jobs.ALL,
    schedules=[daily_reconcile_schedule],
    sensors=sensors.ALL,
    resources=resources(),
    loggers=LOGGERS,
    executor=dg.in_process_executor,
)
