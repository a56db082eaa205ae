# Two-command quick start: `make run` and `make test`. Both create .venv if missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test integration lint bench peers clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)

# torch first, pinned, from the CPU wheel: an unpinned torch would pull GBs of CUDA packages.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,dmc,metaworld,retrieval]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/genworld run $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# end-to-end CLI scenarios, kills and multi-process runs: minutes, not seconds
integration: $(STAMP)
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/genworld bench $(ARGS)

# d3rlpy 2.8.1 (the peer check) pins gymnasium 1.0.0, the core set 1.4.0: the peers get their own
# venv, the core set and dev extra with pyproject's [tool.genworld.peers] pins in place of their
# namesakes, then genworld without its dependencies. Run the peer check and its tests with
# .venv-peers/bin/python.
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed

$(PEERS)/bin/python:
	$(PY) -m venv $(PEERS) || python3 -m venv $(PEERS)

$(PEERS_STAMP): $(PEERS)/bin/python pyproject.toml benchmarks/peers_requirements.py
	$(PEERS)/bin/pip install --quiet torch==2.13.0
	$(PEERS)/bin/python benchmarks/peers_requirements.py > $(PEERS)/requirements.txt
	$(PEERS)/bin/pip install --quiet -r $(PEERS)/requirements.txt
	$(PEERS)/bin/pip install --quiet --no-deps -e .
	touch $(PEERS_STAMP)

peers: $(PEERS_STAMP)

clean-venv:
	rm -rf $(VENV) $(PEERS)
