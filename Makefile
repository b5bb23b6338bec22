# The two commands of the README: `make demo` (set up + run the main job) and `make test` (set up + tests).
# The environment lives in .venv/ in this checkout; torch is pinned to the CPU wheel 2.13.0.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test setup clean methods

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[export,test]"
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/distilmt run --preset quick --run-dir runs/demo

# The comparison of distillation methods on the built-in corpus (quick teacher, 2 seeds); ~30-35 min on 2 CPU cores.
METHODS_ARGS ?= --steps 200 --test-sentences 150 --seeds 1,2
methods: $(STAMP)
	$(BIN)/distilmt methods --preset quick --run-dir runs/methods $(METHODS_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs/demo
