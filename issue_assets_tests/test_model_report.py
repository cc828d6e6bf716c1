"""Plots say what they draw, the model report is self-contained and true, and each version's state
(champion, former champion, rejected, failed check, candidate) follows from the registry history."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from issue_assets.lake.store import LocalStore
from issue_assets.modeling.plots import calibration_png, png_text, pr_png, roc_png
from issue_assets.modeling.synthetic import FEATURES, make_training_set
from issue_assets.modeling.training import TrainingConfig, train_and_evaluate
from issue_assets.registry import ModelRegistry
from issue_assets.registry.reports import report_html, report_key, write_report
from issue_assets.registry.states import CANDIDATE, CHAMPION, FAILED, FORMER, REJECTED, version_states

PARAMS = {"max_depth": 3, "eta": 0.3}


class _Page(HTMLParser):
    """Images (src, alt), figure captions, table cells and every URL-bearing attribute of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.captions, self.cells, self.urls, self.tags = [], [], [], [], []
        self._in = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append((attrs.get("src", ""), attrs.get("alt", "")))
        for name in ("src", "href"):
            if attrs.get(name):
                self.urls.append(attrs[name])
        if tag in ("figcaption", "td"):
            self._in = tag
            (self.captions if tag == "figcaption" else self.cells).append("")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "figcaption":
            self.captions[-1] += data
        elif self._in == "td":
            self.cells[-1] += data


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def _image(page: _Page, prefix: str) -> bytes:
    for src, alt in page.images:
        if alt.startswith(prefix):
            assert src.startswith("data:image/png;base64,")
            return base64.b64decode(src.split(",", 1)[1])
    raise AssertionError(f"no {prefix} plot in the report: {[alt for _, alt in page.images]}")


# ------------------------------------------------------------------------------------------- plots
def test_calibration_legend_names_the_served_model_truthfully():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.4).astype(int)
    raw = np.clip(0.4 + 0.3 * (y - 0.4) + rng.normal(0, 0.15, 500), 0.01, 0.99)
    without = png_text(calibration_png(y, raw, raw, None))["Description"]
    assert "no calibrator" in without and "calibrated (served)" not in without and "before calibration" not in without
    calibrated = png_text(calibration_png(y, raw * 0.8, raw, "isotonic"))["Description"]
    assert "isotonic-calibrated (served)" in calibrated and "booster before calibration" in calibrated


def test_roc_and_pr_name_a_constant_score_on_its_reference_line_instead_of_hiding_a_curve_under_it():
    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.35).astype(int)
    model = y * 0.3 + rng.random(400) * 0.7
    curves = {"model": model, "base rate": np.full(400, 0.35)}
    roc = png_text(roc_png(y, curves))["Description"].split("; ")
    assert roc[0] == "chance, AUC 0.5 = base rate (a constant score)"
    assert len(roc) == 2 and re.fullmatch(r"model, AUC 0\.\d{4}", roc[1])
    pr = png_text(pr_png(y, curves))["Description"].split("; ")
    assert pr[0] == f"base rate {y.mean():.4f} = base rate (a constant score)"
    assert len(pr) == 2 and re.fullmatch(r"model, AP 0\.\d{4}", pr[1])


# ------------------------------------------------------------------------------------------- report
@pytest.fixture(scope="module")
def data():
    return make_training_set(2400, seed=3)


@pytest.mark.parametrize("calibration", ["none", "forced"])
def test_report_is_self_contained_rounded_and_true_to_the_stored_model(tmp_path, data, calibration):
    config = TrainingConfig(nthread=1, max_boost_round=40, early_stopping_rounds=10,
                            calibration="none" if calibration == "none" else "platt",
                            min_calibration_gain=-1.0 if calibration == "forced" else 1e-4)
    result = train_and_evaluate(data, FEATURES, PARAMS, config)
    assert result.calibration["applied"] is (calibration == "forced")
    registry = ModelRegistry(LocalStore(tmp_path / "registry"))
    version = registry.register(result.model, result.metadata(as_of="2024-12-31"), artifacts=result.plots)
    key = write_report(registry, version)
    assert key == report_key(version)
    html = registry.store.get_bytes(key).decode("utf-8")
    assert html == report_html(registry, version)
    page = _parse(html)

    # self-contained: no script, every URL an inline image
    assert "script" not in page.tags
    assert page.urls and all(u.startswith("data:image/png;base64,") for u in page.urls)
    assert not re.search(r"https?://", html)
    # the plots are there and each caption is the legend stored in the picture itself
    for prefix in ("ROC", "Precision-recall", "Calibration", "Feature importance"):
        png = _image(page, prefix)
        assert png.startswith(b"\x89PNG")
    calibration_caption = next(c for c in page.captions if c.startswith("Calibration"))
    legend = png_text(_image(page, "Calibration"))["Description"]
    assert calibration_caption == f"Calibration: {legend}"
    if calibration == "forced":
        assert "platt-calibrated (served)" in legend
    else:
        assert "no calibrator" in legend and "calibrated (served)" not in legend
    # the leaky reference is marked, its numbers and ours rounded to 4 places
    assert "LEAKY" in html
    auc = result.metrics["roc_auc"]
    assert f"{auc:.4f}" in page.cells and repr(auc) not in html
    assert all(not re.fullmatch(r"-?\d+\.\d{5,}", cell) for cell in page.cells)
    # training window, parameters, registration
    assert str(result.windows["test"]["rows"]) in "".join(page.cells).replace(",", "")
    assert "max_depth" in page.cells and "registered" in page.cells


# ------------------------------------------------------------------------------------------- states
def _events():
    ev = [{"event": "registered", "version": f"v000{i}"} for i in range(1, 6)]
    ev += [
        {"event": "promoted", "version": "v0001", "previous": None, "sequence": 1,
         "decision": {"promote": True, "reason": "first model", "check_passed": True}},
        {"event": "decision", "version": "v0002",
         "decision": {"promote": False, "reason": "does not beat champion", "check_passed": True}},
        {"event": "decision", "version": "v0003",
         "decision": {"promote": False, "reason": "test roc_auc 0.55 < 0.6", "check_passed": False}},
        {"event": "promoted", "version": "v0004", "previous": "v0001", "sequence": 2,
         "decision": {"promote": True, "reason": "beats champion", "check_passed": True}},
    ]
    return ev


def test_every_version_has_one_state_from_the_history():
    states = version_states(_events(), champion="v0004")
    assert {v: s.state for v, s in states.items()} == {
        "v0001": FORMER, "v0002": REJECTED, "v0003": FAILED, "v0004": CHAMPION, "v0005": CANDIDATE}
    assert states["v0003"].reason == "test roc_auc 0.55 < 0.6"
    assert states["v0002"].reason == "does not beat champion"


def test_a_rollback_makes_the_replaced_champion_former_and_the_old_one_champion_again():
    events = _events() + [{"event": "rolled_back", "version": "v0001", "from": "v0004", "sequence": 3}]
    states = version_states(events, champion="v0001")
    assert states["v0001"].state == CHAMPION and states["v0004"].state == FORMER
