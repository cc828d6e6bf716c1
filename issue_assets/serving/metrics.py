"""Prometheus text exposition (format 0.0.4), hand-written: request counts, a latency histogram, the model.

prometheus_client is not a dependency; three metric families do not need it.
"""

from __future__ import annotations

import bisect
import threading

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class Metrics:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = tuple(buckets)
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        self._latency: dict[tuple[str, str], list] = {}  # (method, route) -> [bucket counts..., sum, count]
        self.model_version: str | None = None
        self.model_swaps = 0
        self.predictions = {"scored": 0, "decided": 0}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            hist = self._latency.setdefault((method, route), [0] * len(self.buckets) + [0.0, 0])
            i = bisect.bisect_left(self.buckets, seconds)
            if i < len(self.buckets):
                hist[i] += 1
            hist[-2] += seconds
            hist[-1] += 1

    def count_predictions(self, n: int, decided: int = 0) -> None:
        with self._lock:
            self.predictions["scored"] += n - decided
            self.predictions["decided"] += decided

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP issue_assets_http_requests_total HTTP requests by route template, method and status.",
                "# TYPE issue_assets_http_requests_total counter",
            ]
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(f"issue_assets_http_requests_total{_labels(method=method, route=route, status=status)} {n}")
            lines += [
                "# HELP issue_assets_http_request_duration_seconds Time from request start to response end.",
                "# TYPE issue_assets_http_request_duration_seconds histogram",
            ]
            for (method, route), hist in sorted(self._latency.items()):
                cumulative = 0
                for bound, n in zip(self.buckets, hist, strict=False):
                    cumulative += n
                    labels = _labels(method=method, route=route, le=repr(float(bound)))
                    lines.append(f"issue_assets_http_request_duration_seconds_bucket{labels} {cumulative}")
                labels = _labels(method=method, route=route, le="+Inf")
                lines.append(f"issue_assets_http_request_duration_seconds_bucket{labels} {hist[-1]}")
                base = _labels(method=method, route=route)
                lines.append(f"issue_assets_http_request_duration_seconds_sum{base} {hist[-2]!r}")
                lines.append(f"issue_assets_http_request_duration_seconds_count{base} {hist[-1]}")
            lines += [
                "# HELP issue_assets_model_info The champion model the service is answering with (value 1).",
                "# TYPE issue_assets_model_info gauge",
            ]
            if self.model_version is not None:
                lines.append(f"issue_assets_model_info{_labels(version=self.model_version)} 1")
            lines += [
                "# HELP issue_assets_model_swaps_total Champion changes picked up without a restart.",
                "# TYPE issue_assets_model_swaps_total counter",
                f"issue_assets_model_swaps_total {self.model_swaps}",
                "# HELP issue_assets_predictions_total Issues answered by the service: scored (a probability) or "
                "decided (outcome already known).",
                "# TYPE issue_assets_predictions_total counter",
                *(f"issue_assets_predictions_total{_labels(status=k)} {v}" for k, v in self.predictions.items()),
            ]
        return "\n".join(lines) + "\n"
