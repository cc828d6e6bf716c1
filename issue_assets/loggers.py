"""Dagster loggers: a run's event log written to a file (the CLI's runs), with step progress forwarded.

Runs the daemon launches keep Dagster's default console logger: only run config that names `run_file`
(the CLI's application layer) switches it on.
"""

from __future__ import annotations

import logging

import dagster as dg

from issue_assets import progress

_STEP_EVENTS = {"STEP_START": "started", "STEP_SUCCESS": "done", "STEP_FAILURE": "failed"}
_FILES: dict[str, logging.Handler] = {}  # one handler per file for every run of this process


class _StepProgress(logging.Handler):
    """Step starts and ends of the run, as progress events (`step`), for the CLI's progress lines."""

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        kind = getattr(event, "event_type_value", None)
        if kind in _STEP_EVENTS:
            progress.report("step", step=meta.get("step_key") or getattr(event, "step_key", ""),
                            state=_STEP_EVENTS[kind], job=meta.get("job_name"))


@dg.logger(
    config_schema={"path": dg.Field(str, description="File the run's log lines are appended to"),
                   "log_level": dg.Field(str, default_value="DEBUG")},
    description="Appends the run's event log to a file; the issue-assets CLI prints its path.",
)
def run_file(init_context: dg.InitLoggerContext) -> logging.Logger:
    cfg = init_context.logger_config
    logger = logging.getLogger(f"issue_assets.runs.{init_context.run_id}")
    logger.setLevel(cfg["log_level"].upper())
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    if cfg["path"] not in _FILES:
        _FILES[cfg["path"]] = logging.FileHandler(cfg["path"], encoding="utf-8")
        _FILES[cfg["path"]].setFormatter(logging.Formatter("%(asctime)s %(levelname)s dagster: %(message)s"))
    logger.addHandler(_FILES[cfg["path"]])
    logger.addHandler(_StepProgress())
    return logger


LOGGERS = {"console": dg.colored_console_logger, "run_file": run_file}
