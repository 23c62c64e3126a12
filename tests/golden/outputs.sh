#!/usr/bin/env bash
# What sieve writes, pinned: the SHA-256 of scores.parquet, every file of
# data/ and the proxy weights of `sieve prune` on the two fixtures (the
# `make prune` job and its text twin) and on SST-2 with seed 0. A change that
# must not change behaviour (issue 16's redesign) keeps them identical:
#
#   tests/golden/outputs.sh --check    # compare with tests/golden/sha256.txt
#   tests/golden/outputs.sh --record   # write it anew (a change that means to)
#
# The figures are those of one kind of CPU: the AVX-512 convolution tiles and
# the portable path round differently, so the file names the kernel it was
# recorded with, and --check refuses to compare across kernels.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:---check}
sieve=${SIEVE:-${CARGO_TARGET_DIR:-target}/release/sieve}
data=${DATA_DIR:-../shared/datasets}
want=tests/golden/sha256.txt
kernel=$(grep -qw avx512f /proc/cpuinfo && echo avx512 || echo portable)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -x "$sieve" ] || { echo "no $sieve: cargo build --release -p sieve" >&2; exit 2; }

run() { # name, then prune's arguments
  local name=$1; shift
  "$sieve" prune "$@" --quiet --out "$work/$name"
  (cd "$work" && sha256sum "$name/scores.parquet" "$name"/data/* "$name/proxy/model.safetensors")
}
{
  echo "# kernel: $kernel"
  run shapes --dataset shapes
  run reviews --dataset reviews
  run sst2 --dataset sst2 --data-dir "$data" --seed 0
} > "$work/got.txt"

case $mode in
  --record) cp "$work/got.txt" "$want"; echo "recorded $want ($kernel)";;
  --check)
    recorded=$(head -n1 "$want")
    [ "$recorded" = "# kernel: $kernel" ] || { echo "$want was recorded with ${recorded#\# kernel: }, this CPU runs $kernel: not comparable" >&2; exit 2; }
    diff -u "$want" "$work/got.txt" && echo "sieve's outputs are as recorded";;
  *) echo "usage: $0 --check|--record" >&2; exit 2;;
esac
