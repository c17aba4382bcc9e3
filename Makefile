# Two commands: `make run` (the full workflow on the embedded data) and `make test`;
# `make check CONFIG=my.yaml` checks a config file before a run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
SNAKEMAKE := $(BIN)/snakemake --cores $(CORES)
RUN    ?= default
CONFIG ?= config/config.yaml

.PHONY: run test install check lint dryrun report clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

run: install
	$(SNAKEMAKE) --config run=$(RUN)
	$(SNAKEMAKE) --config run=$(RUN) --report results/$(RUN)/report.html

check: install
	PYTHONPATH=src $(BIN)/python -m pipeline.config check $(CONFIG)

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check workflow/

dryrun: install
	$(BIN)/snakemake -n --forceall --cores 1 --quiet rules

test: install
	$(BIN)/python -m pytest -q tests
	$(MAKE) --no-print-directory lint dryrun

clean:
	rm -rf results .snakemake
