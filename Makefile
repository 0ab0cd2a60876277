# Two entry points, each sets everything up first:  make demo  |  make test
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup system system-demo venv demo test bench bench-check clean

setup: system venv

system:
	bash scripts/setup-system.sh all

system-demo:
	bash scripts/setup-system.sh demo

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# the demo needs only the corpus's Debian packages, not the device test beds' tools
demo: system-demo venv
	$(BIN)/mtl-edge demo

test: setup
	$(BIN)/python -m pytest

# Every committed file under benchmarks/results/, each with the exact command in its `argv`; each script
# refuses to write there when the 1-minute load is above 0.5 (BENCH_FLAGS=--allow-busy overrides, recorded).
# georgiev-*/harness_overhead-* carry the machine in their names. The demo export is built first (mtl-edge demo).
RESULTS := benchmarks/results
DEMO_EXPORT := runs/demo/export
BENCH_FLAGS ?=
MICRO := $(BIN)/python -m pytest benchmarks/micro -p no:cacheprovider --benchmark-only --benchmark-min-rounds=10 --benchmark-max-time=2

$(DEMO_EXPORT)/manifest.json:
	$(BIN)/mtl-edge demo

# The WaveNet family's Georgiev table: scene + instrument heads on the scaled-down trunk against its two
# single-task WaveNets (issue 14; the paper's 3x6x64 trunk is the documented default for more compute)
WAVENET_RUN := runs/wavenet-eff
WAVENET_ARGS := --model wavenet --model-args channels=16,blocks=2,layers=5,tag_hidden=128,aux_hidden=32,crop=4000 \
	--tasks scene,instrument --single --steps 300 --batches-per-epoch 25

$(WAVENET_RUN)/export/manifest.json: $(DEMO_EXPORT)/manifest.json
	$(BIN)/mtl-edge train --corpus data/demo $(WAVENET_ARGS) --out $(WAVENET_RUN) --resume
	$(BIN)/mtl-edge export $(WAVENET_RUN) --allow-degraded

bench: setup $(DEMO_EXPORT)/manifest.json $(WAVENET_RUN)/export/manifest.json
	$(BIN)/python benchmarks/features.py --clips 300 --repeats 3 --out $(RESULTS)/features.json $(BENCH_FLAGS)
	$(BIN)/python benchmarks/demo_corpus.py --scale 1 --seed 0 --workers 2 --results $(RESULTS)/demo_corpus.json $(BENCH_FLAGS)
	$(BIN)/python benchmarks/train_throughput.py --corpus data/demo --epochs 3 --threads 1 --repeats 3 --out $(RESULTS)/train_throughput.json $(BENCH_FLAGS)
	$(BIN)/python benchmarks/georgiev.py --export $(DEMO_EXPORT) --results $(DEMO_EXPORT)/bench-georgiev --min-runs 100 --min-secs 2 --max-secs 20 $(BENCH_FLAGS)
	$(BIN)/python benchmarks/georgiev.py --export $(WAVENET_RUN)/export --results $(WAVENET_RUN)/export/bench-georgiev --name georgiev-wavenet --min-runs 100 --min-secs 2 --max-secs 20 $(BENCH_FLAGS)
	$(BIN)/python benchmarks/harness_overhead.py $(DEMO_EXPORT) --rounds 3 --min-secs 2 $(BENCH_FLAGS)
	$(BIN)/python benchmarks/sweep_executors.py --scale 0.05 --steps 100 --seeds 3 --workers 2 $(BENCH_FLAGS)
	$(BIN)/python benchmarks/wavenet_cost.py --corpus data/demo --steps 3 --clips 20 --out $(RESULTS)/wavenet_cost.json $(BENCH_FLAGS)
	$(MICRO) --benchmark-json=$(RESULTS)/.micro.json.partial $(BENCH_FLAGS) && mv $(RESULTS)/.micro.json.partial $(RESULTS)/micro.json

# The micro-benchmarks against the committed benchmarks/results/micro.json: fails on a median 15 % slower.
bench-check: setup
	@test -f $(RESULTS)/micro.json || { echo "no $(RESULTS)/micro.json to compare with: run make bench on an idle machine first"; exit 1; }
	$(MICRO) --benchmark-compare=$(RESULTS)/micro.json --benchmark-compare-fail=median:15%

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
