# posttrain: two commands.
#   make demo   set everything up, then run the quickstart pipeline (offline, CPU)
#   make test   set everything up, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Nothing downloads models or data at run time.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast clean

setup: $(STAMP)

# torch goes in first: the CPU build where no GPU is present (a plain `pip install torch` would
# pull a multi-GB CUDA build), then posttrain with its pinned ranges, which torch already meets.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "GPU found: installing the CUDA build of torch"; \
		$(BIN)/pip install "torch==2.13.0"; \
	else \
		echo "no GPU: installing the CPU build of torch"; \
		$(BIN)/pip install "torch==2.13.0+cpu" || \
		$(BIN)/pip install "torch==2.13.0+cpu" --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(BIN)/pip install -e ".[dev]"
	touch $@

# then compare the README's quickstart table with the run (a difference is reported, not fatal:
# other hardware may round differently; on the README's machine the table must reproduce exactly)
demo: setup
	$(BIN)/posttrain run recipes/quickstart.yaml
	-$(BIN)/python benchmarks/quickstart_table.py --run runs/quickstart

# Three workers, one torch thread each, on two cores: the tiny model gains nothing from a second
# thread, and a third worker keeps both cores busy while another waits (the quickstart's RL test
# for the SFT stages it shares, HTTP timeouts, torchrun rendezvous): 9 min 31 s to 10 min 4 s
# against 10 min 30 s with two. loadgroup hands out the tests one at a time in collection order (tests/conftest.py
# puts the longest first); --no-loadscope-reorder keeps that order.
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 3 --dist loadgroup --no-loadscope-reorder

# The fast subset while working (everything not marked slow).
test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
