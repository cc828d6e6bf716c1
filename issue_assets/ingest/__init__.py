"""Ingestion core: one paged sweep per window, split into the day files of the raw log, and the
incremental merge of the raw log into the current state of each repository. No Dagster import."""
