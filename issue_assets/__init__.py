"""issue_assets: learn which new GitHub issues close within 7 days, point-in-time correct."""

import warnings

__version__ = "0.1.0"

# Dagster warns, on every import of a code location and in every run, about its own APIs: beta/preview
# markers on features this project relies on (pinned by `dagster>=1.13,<1.14`, so the behaviour cannot
# shift under us) and deprecations raised inside Dagster's own code (e.g. S3Resource's set-up calling
# InitResourceContext.dagster_run). They say nothing a user of the platform can act on. Filtered here, once,
# by message and by the module that raises them, without importing dagster (the CLI must start fast).
warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"dagster(_\w+)?(\.|$)")
