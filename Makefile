# Everything a newcomer needs: each target sets up what it uses (venv,
# packages, Kafka jars, broker) and stops what it started.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench lint install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "govstream needs Python 3.11"' \
		|| { echo "govstream needs Python 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[worker,dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/govstream demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[worker,dev,bench]' 'py-spy>=0.4'
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.dashboards
	$(BIN)/python -m bench.replay
	$(BIN)/python -m bench.redaction
	$(BIN)/python -m bench.install
	$(BIN)/python -m bench.console

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf .govstream .pytest_cache .ruff_cache
