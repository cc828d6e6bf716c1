"""GitHub REST access: the client, export loading, normalization and the replay server (no Dagster)."""
