"""Alerts: an `[ALERT]` log line and, when ALERT_WEBHOOK_URL is set, a short JSON POST (bounded, never raising)."""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit

import requests

log = logging.getLogger("issue_assets.alerts")
_posting = threading.local()


class _WebhookRequestLines(logging.Filter):
    """urllib3 logs every request line (path and query) at DEBUG; while an alert is posted on this
    thread, its records are dropped, since webhook paths often hold tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_posting, "active", False)


logging.getLogger("urllib3.connectionpool").addFilter(_WebhookRequestLines())


def webhook_host(url: str) -> str:
    """The host of a webhook URL, the only part that is ever logged (paths often hold tokens)."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1] or "?"


def post_alert(url: str | None, payload: dict, *, timeout: float = 5.0) -> bool:
    """POST the payload as JSON; False (logged, not raised) on any failure or non-2xx answer."""
    if not url:
        return False
    _posting.active = True
    try:
        response = requests.post(url, json=payload, timeout=timeout)
    except requests.RequestException as exc:
        log.warning("alert webhook at %s unreachable: %s", webhook_host(url), type(exc).__name__)
        return False
    finally:
        _posting.active = False
    if not 200 <= response.status_code < 300:
        log.warning("alert webhook at %s answered %s", webhook_host(url), response.status_code)
        return False
    return True


def failure_payload(job_name: str, run_id: str, message: str, *, partition: str | None = None) -> dict:
    text = f"[ALERT] issue_assets run of {job_name} failed"
    if partition:
        text += f" (partition {partition})"
    return {"text": f"{text}: {message[:500]}", "job": job_name, "run_id": run_id, "partition": partition,
            "message": message[:2000]}
