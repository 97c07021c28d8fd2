# Two entry points for a fresh machine: `make demo` and `make test`.
# torch is pinned and installed first: on these machines torch==2.13.0 is a local CPU build,
# while an unpinned torch would pull gigabytes of CUDA packages.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deepmetric-installed
TORCH_PIN := torch==2.13.0
PYTEST_WORKERS ?= 2

.PHONY: install test conformance demo bench bench-quick bench-large lint fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS)

# The reference library's own test suite, run against deepmetric through an import alias. It lives
# beside the project (../shared/conformance), not in it: a user's clone has none and skips, CI must have it.
CONFORMANCE := ../shared/conformance/run
conformance: $(STAMP)
	@if [ -x $(CONFORMANCE) ]; then \
		PYTHON=$(abspath $(PY)) $(CONFORMANCE); \
	elif [ "$${CI:-}" = "true" ]; then \
		echo "conformance: $(CONFORMANCE) not found, and CI=true requires it"; exit 1; \
	else \
		echo "conformance: $(CONFORMANCE) not found (it is not part of a clone); skipped"; \
	fi

demo: $(STAMP)
	$(PY) -m deepmetric train --output runs/demo --overwrite

# Every grid on every input shape (about half an hour on two cores); regenerates docs/performance.md.
bench: $(STAMP)
	$(PY) -m benchmarks

# One row per family (loss, miner, evaluation, training) on two shapes, in a minute or two, printed
# next to the previous bench-quick run: run it before and after a change.
bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick-check

# Large-batch training in bounded memory (cached trunk passes, tiled losses): minutes and
# gigabytes; run it on a quiet machine. Results in benchmarks/results/large_batch.json.
bench-large: $(STAMP)
	$(PY) -m benchmarks.large_batch

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples

# The property-based suite with many more examples than CI runs.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -q -n $(PYTEST_WORKERS) tests/losses/test_properties.py \
		tests/miners/test_properties_miners.py tests/reducers/test_properties_reducers.py \
		tests/evaluation/test_properties_accuracy.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
