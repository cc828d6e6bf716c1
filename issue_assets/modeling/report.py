"""A model version's report: one self-contained HTML page (inline CSS, plots as data URIs, no script,
no external host), written into the registry beside the model and served by the prediction service.

It shows what a reviewer of a promotion needs: test metrics against the references (the leaky one
marked), metrics per age bucket where the model has them, ROC / PR / calibration plots with their
legends spelled out, feature importance, the training windows, the parameters, the tuning history and
every decision recorded for the version. Numbers are rounded to 4 places.

Public API:
    render_report(metadata, artifacts, events, state=None) -> str
        metadata: the version's registry metadata.json; artifacts: file name -> bytes (its PNGs);
        events: the registry history events of this version (oldest first); state: its VersionState.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from issue_assets.features.catalog import PREDICTION_MEANING
from issue_assets.modeling.plots import png_text

#: metrics shown, in order, with their labels
METRICS = (("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC (average precision)"), ("brier", "Brier score"),
           ("log_loss", "log loss"), ("base_rate", "base rate"), ("n", "rows"))
PLOTS = (("roc.png", "ROC"), ("pr.png", "Precision-recall"), ("calibration.png", "Calibration"),
         ("feature_importance.png", "Feature importance"), ("tuning_history.png", "Tuning history"))

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#1d1d1f;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f5f5f7}td:first-child,th:first-child{text-align:left}.muted{color:#6e6e73}
.state{display:inline-block;padding:.1em .6em;border-radius:1em;background:#e8f0fe;font-weight:600}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}figcaption{font-size:.85em;color:#444;
max-width:600px}img{max-width:520px;border:1px solid #eee}.leaky{color:#b3261e;font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value: Any) -> str:
    """Numbers rounded to 4 places (integers as they are); missing as an en dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metrics_table(metadata: Mapping[str, Any]) -> str:
    refs = metadata.get("reference_metrics") or {}
    columns = [(_e("this model"), metadata.get("metrics") or {})]
    if isinstance(refs.get("base_rate"), Mapping):
        columns.append((_e("base rate (constant)"), refs["base_rate"]))
    older = refs.get("older_projects")
    leaky = isinstance(older, Mapping) and "roc_auc" in older
    if leaky:
        columns.append(('<span class="leaky">&quot;older projects&quot; features: LEAKY</span>', older))
    header = "".join(f"<th>{name}</th>" for name, _ in columns)
    rows = "".join(f"<tr><td>{_e(label)}</td>" + "".join(f"<td>{_e(fmt(m.get(key)))}</td>" for _, m in columns)
                   + "</tr>" for key, label in METRICS)
    note = ('<p class="muted">The "older projects" reference reads comment counts and labels as they were years '
            "later; it leaks the outcome and is shown only for contrast, never served.</p>") if leaky else ""
    return f"<table><tr><th>test window</th>{header}</tr>{rows}</table>{note}"


def _by_age(metadata: Mapping[str, Any]) -> str:
    by_age = metadata.get("metrics_by_age") or {}
    if not isinstance(by_age, Mapping) or not by_age:
        return '<p class="muted">This version was evaluated at creation time only (no per-age metrics).</p>'
    rows = [[f"{age} h"] + [m.get(k) for k, _ in METRICS] for age, m in by_age.items() if isinstance(m, Mapping)]
    return _table(["age at prediction"] + [label for _, label in METRICS], rows)


def _figures(artifacts: Mapping[str, bytes]) -> str:
    out = []
    for name, label in PLOTS:
        data = artifacts.get(name)
        if not data:
            continue
        text = png_text(data)
        legend = text.get("Description", "")
        caption = f"{label}" + (f": {legend}" if legend else "")
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        out.append(f'<figure><img src="{uri}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>')
    return "".join(out) or '<p class="muted">No plots were stored with this version.</p>'


def _calibration(metadata: Mapping[str, Any]) -> str:
    cal = metadata.get("calibration") or {}
    if not cal:
        return ""
    applied = bool(cal.get("applied"))
    verdict = (f"a {cal.get('method')} calibrator is applied to the booster's probabilities" if applied
               else "no calibrator is applied: none lowered the validation log loss out of fold")
    rows = [["validation log loss, raw", cal.get("validation_log_loss_raw")],
            ["validation log loss, as served", cal.get("validation_log_loss_calibrated")],
            ["test log loss, raw", cal.get("test_log_loss_raw")]]
    for name, loss in (cal.get("candidates") or {}).items():
        rows.append([f"out-of-fold validation log loss with {name}", loss])
    return f"<p>Calibration: {_e(verdict)}.</p>" + _table(["", "value"], rows)


def _importance(metadata: Mapping[str, Any], top: int = 20) -> str:
    records = metadata.get("feature_importance") or []
    rows = [[r.get("feature"), r.get("gain"), r.get("total_gain"), r.get("splits")] for r in records[:top]]
    if not rows:
        return ""
    return _table(["feature", "mean gain per split", "total gain", "splits"], rows)


def _windows(metadata: Mapping[str, Any]) -> str:
    windows = metadata.get("windows") or {}
    rows = [[name, w.get("rows"), w.get("positives"), w.get("base_rate"), w.get("created_from"), w.get("created_to")]
            for name, w in windows.items() if isinstance(w, Mapping)]
    cutoff = metadata.get("cutoff")
    head = f"<p>Labels known at the cutoff {_e(cutoff)} (as-of day {_e(metadata.get('as_of'))}).</p>" if cutoff else ""
    return head + _table(["split", "rows", "positives", "base rate", "first created", "last created"], rows)


def _params(metadata: Mapping[str, Any]) -> str:
    params = metadata.get("params") or {}
    rows = [[k, v] for k, v in sorted(params.items())]
    best = metadata.get("best_iteration")
    extra = f"<p>Best boosting round: {_e(fmt(best))}.</p>" if best is not None else ""
    return _table(["parameter", "value"], rows) + extra


def _tuning(metadata: Mapping[str, Any]) -> str:
    tuning = metadata.get("tuning") or {}
    if not tuning:
        return '<p class="muted">No tuning summary was stored with this version.</p>'
    rows = [["study", tuning.get("study_name")], ["best mean validation ROC AUC", tuning.get("best_value")],
            ["trials completed", tuning.get("n_complete")], ["trials pruned", tuning.get("n_pruned")],
            ["trials failed", tuning.get("n_failed")], ["warm-started from", tuning.get("warm_started_from")]]
    return _table(["", "value"], rows)


def _decisions(version: str, events: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for e in events:
        kind = e.get("event")
        decision = e.get("decision") or {}
        if e.get("version") != version:
            what = f"replaced as champion by {e.get('version')}"
        elif kind == "registered":
            what = "registered"
        elif kind == "promoted":
            what = f"promoted (champion before: {e.get('previous') or 'none'})"
        elif kind == "rolled_back":
            what = f"champion again by rollback from {e.get('from')}"
        elif kind == "decision":
            what = "kept out: " + ("failed the blocking check" if decision.get("check_passed") is False
                                   else "did not beat the champion")
        else:
            what = str(kind)
        reason = decision.get("reason") or e.get("reason") or e.get("note") or ""
        rows.append(f"<tr><td>{_e(e.get('at'))}</td><td>{_e(what)}</td><td>{_e(reason)}</td></tr>")
    if not rows:
        return '<p class="muted">No decision recorded yet.</p>'
    return f"<table><tr><th>when</th><th>what</th><th>why</th></tr>{''.join(rows)}</table>"


def render_report(metadata: Mapping[str, Any], artifacts: Mapping[str, bytes],
                  events: Sequence[Mapping[str, Any]] = (), state=None) -> str:
    version = metadata.get("version", "?")
    state_html = ""
    if state is not None:
        reason = f" — {_e(state.reason)}" if state.reason else ""
        state_html = f'<p><span class="state">{_e(state.state)}</span>{reason}</p>'
    code = metadata.get("code_version") or {}
    sections = [
        ("Test metrics against the references", _metrics_table(metadata)),
        ("Metrics per age bucket", _by_age(metadata)),
        ("Plots", _figures(artifacts) + _calibration(metadata)),
        ("Feature importance", _importance(metadata)),
        ("Training window", _windows(metadata)),
        ("Parameters", _params(metadata)),
        ("Tuning", _tuning(metadata)),
        ("Promotion decisions", _decisions(version, events)),
    ]
    body = "".join(f"<h2>{_e(title)}</h2>{content}" for title, content in sections)
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Model {_e(version)} — issue_assets</title><style>{_CSS}</style></head><body>"
        f"<h1>Model {_e(version)}</h1>{state_html}"
        f"<p class=\"muted\">created {_e(metadata.get('created_at'))} · as of {_e(metadata.get('as_of'))} · "
        f"{len(metadata.get('feature_names') or [])} features · code {_e(code.get('issue_assets'))} "
        f"{_e((code.get('git_sha') or '')[:12])} · model sha256 {_e((metadata.get('model_sha256') or '')[:12])}</p>"
        f"<p>{_e(PREDICTION_MEANING)}</p>{body}</body></html>"
    )
