# sieve: `make prune` prunes the built-in image fixture; `make test` runs every test.
# DATASET names a descriptor in schemas/datasets/ (shapes, reviews, cifar10, sst2).
DATASET ?= shapes
DATA_DIR ?= ../shared/datasets
ARGS ?=
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
SIEVE := $(TARGET_DIR)/release/sieve

.PHONY: build prune test fixtures bench bench-conv clean

build:
	$(CARGO) build --release -p sieve

prune: build
	$(SIEVE) prune --dataset $(DATASET) --data-dir $(DATA_DIR) --out out/$(DATASET) $(ARGS)

test:
	DATA_DIR=$(abspath $(DATA_DIR)) $(CARGO) test --release --workspace

fixtures:
	$(CARGO) run --release -p sieve-fixtures -- --out fixtures

# Same-run ratios against PyTorch CPU (installs torch from PyPI; not part of `make test`).
bench:
	python3 -m pip install --quiet --root-user-action=ignore -r benches/requirements.txt
	CARGO=$(CARGO) python3 benches/compare.py --threads 2

bench-conv:
	$(CARGO) run --release -p sieve-udfs --example bench_conv

clean:
	rm -rf out
