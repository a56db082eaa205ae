# Two-command quick start: `make run` and `make test`. Both create .venv if missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEERS := .venv-peers

# torch comes first, pinned, from PyTorch's CPU wheel index: PyPI's Linux torch is the CUDA build
# (GBs of CUDA packages). A GPU machine: make clean-venv, then
# make run TORCH_INDEX=https://download.pytorch.org/whl/cu128 (the CUDA version of its driver).
# An extra index, not a replacement: where pip already finds the wheel (a local wheel folder,
# a mirror) it still installs from there, offline too. Only torch is looked up there
# (--no-deps): its dependencies come from the ordinary index with genworld's. pip shows its
# progress (no --quiet): the first install takes minutes.
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

# genworld needs Python 3.11 (pyproject's requires-python): say what to install instead of
# making, or reusing, a venv of another version.
IS_311 := -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'
NO_311 := needs Python 3.11: install it (apt install python3.11 python3.11-venv, brew install python@3.11, pyenv install 3.11 or python.org) and rerun, or point make at one: make PY=/path/to/python3.11

.PHONY: run test integration lint bench peers clean-venv python-version

python-version:
	@for venv in $(VENV) $(PEERS); do \
		if [ -x $$venv/bin/python ] && ! $$venv/bin/python $(IS_311); then \
			echo "$$venv holds $$($$venv/bin/python -V 2>&1), not Python 3.11: remove it (make clean-venv) and rerun"; exit 1; \
		fi; \
	done

$(BIN)/python:
	@$(PY) $(IS_311) 2>/dev/null || { echo "genworld $(NO_311) ($(PY): $$($(PY) -V 2>&1 || echo not found))"; exit 1; }
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --no-deps $(TORCH) --extra-index-url $(TORCH_INDEX)
	$(BIN)/pip install -e ".[dev,dmc,metaworld,retrieval]"
	touch $(STAMP)

run: python-version $(STAMP)
	$(BIN)/genworld run $(ARGS)

test: python-version $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# end-to-end CLI scenarios, kills and multi-process runs, the toy "does it learn" checks and
# every benchmark's quick mode (its figures are not asserted: that the code runs is)
integration: python-version $(STAMP)
	$(BIN)/python -m pytest -m "integration or learns or bench" $(PYTEST_ARGS)

lint: python-version $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

bench: python-version $(STAMP)
	$(BIN)/genworld bench $(ARGS)

# d3rlpy 2.8.1 (the peer check) pins gymnasium 1.0.0, the core set 1.4.0: the peers get their own
# venv, the core set and dev extra with pyproject's [tool.genworld.peers] pins in place of their
# namesakes, then genworld without its dependencies. Run the peer check and its tests with
# .venv-peers/bin/python.
PEERS_STAMP := $(PEERS)/.installed

$(PEERS)/bin/python:
	@$(PY) $(IS_311) 2>/dev/null || { echo "the peer check $(NO_311)"; exit 1; }
	$(PY) -m venv $(PEERS)

$(PEERS_STAMP): $(PEERS)/bin/python pyproject.toml benchmarks/peers_requirements.py
	$(PEERS)/bin/pip install --no-deps $(TORCH) --extra-index-url $(TORCH_INDEX)
	$(PEERS)/bin/python benchmarks/peers_requirements.py > $(PEERS)/requirements.txt
	$(PEERS)/bin/pip install -r $(PEERS)/requirements.txt
	$(PEERS)/bin/pip install --no-deps -e .
	touch $(PEERS_STAMP)

peers: python-version $(PEERS_STAMP)

clean-venv:
	rm -rf $(VENV) $(PEERS)
