# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench dev clean

# pip's own notices (index locations, the editable-install banner) go to a log; shown only if it fails.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing issue-assets and its dependencies into $(VENV) (a few minutes the first time; log: $(VENV)/install.log)"
	@( $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e ".[test]" ) \
		> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; echo "error: installing into $(VENV) failed (log above)"; exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	@$(VENV)/bin/issue-assets demo

test: $(STAMP)
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check issue_assets issue_assets_tests bench

lint: $(STAMP)
	$(VENV)/bin/ruff check issue_assets issue_assets_tests bench

bench: $(STAMP)
	$(PY) bench/bench_ingest.py
	$(PY) bench/bench_partitioning.py
	$(PY) bench/bench_automation.py
	$(PY) bench/bench_soak.py

# The UI and the daemon on the demo's instance, with a live replay server for the simulated repository.
dev: $(STAMP)
	@$(VENV)/bin/issue-assets dev

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
