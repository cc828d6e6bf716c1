"""Served predictions kept and judged against what happened: the served log, live quality, drift. No Dagster."""
