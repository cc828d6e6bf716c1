"""Partitions: repositories (dynamic) for everything per repository, as-of days for training.

The raw log is partitioned by repository only: a materialization is one sweep since the stored cursor
(the whole history the first time), so a history backfill records one event per asset, not one per day
(README: "Why the raw log is partitioned this way").
"""

import dagster as dg

from issue_assets import config

repo_partitions = dg.DynamicPartitionsDefinition(name="repos")

as_of_partitions = dg.DailyPartitionsDefinition(start_date=config.start_date(), timezone="UTC", end_offset=1)
"""As-of days (cutoffs) of training sets, tuning studies and candidate models; today included."""

AS_OF_NOTE = (" Partitioned by as-of day (the training cutoff): a partition exists for every day since "
              f"{config.start_date()}, and only the days a training ran are materialized, so most show as "
              "missing; that is expected, the latest one feeds production_model.")
"""Appended to the description of every asset partitioned by as-of day (definitions.py)."""
