"""Partitions: repositories (dynamic) and days of `updated_at` for the raw log."""

import dagster as dg

from issue_assets import config

repo_partitions = dg.DynamicPartitionsDefinition(name="repos")

day_partitions = dg.DailyPartitionsDefinition(start_date=config.start_date(), timezone="UTC")

raw_partitions = dg.MultiPartitionsDefinition({"repo": repo_partitions, "day": day_partitions})

REPO_FROM_RAW = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="repo")

as_of_partitions = dg.DailyPartitionsDefinition(start_date=config.start_date(), timezone="UTC", end_offset=1)
"""As-of days (cutoffs) of training sets, tuning studies and candidate models; today included."""
