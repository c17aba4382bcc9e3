# Two commands: `make run` (the full workflow on the embedded data) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
SNAKEMAKE := $(BIN)/snakemake --cores $(CORES)
RUN    ?= default

.PHONY: run test install lint dryrun report clean

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
