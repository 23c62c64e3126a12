#!/usr/bin/env bash
# The GPU benchmark, run on the GPU machine from the directory `make
# gpu-bench` prepared (sieve.xz, data/, datasets/, this script and the
# PyTorch baseline). That machine has an NVIDIA driver and PyTorch with its
# CUDA libraries but no Rust toolchain and no network, so the binary was
# built elsewhere; this script finds the CUDA libraries it links against
# (libcublas, libcublasLt, libcudart, libcurand, libnvrtc) in the NVIDIA pip
# packages next to PyTorch and puts them on LD_LIBRARY_PATH; libcuda.so.1
# comes with the driver.
#
# Prints a table and writes results.json to $1 (default: .):
#   sieve   10 proxy epochs of ResNet-20 on CIFAR-10 (seconds, test accuracy),
#           scoring images/s (f32 and bf16), end to end from Parquet
#   torch   the same recipe in PyTorch eager on the same GPU
#
# Usage: bash run.sh [results-dir]
# Environment: SIEVE_ONLY=1 skips PyTorch; DEVICE (cuda:0), EPOCHS (10) and
# PRECISIONS ("f32 bf16") change the runs (a CPU smoke test of this script:
# DEVICE=cpu EPOCHS=1 PRECISIONS=f32 SIEVE_ONLY=1 with a CPU build's sieve.xz).
set -euo pipefail
device=${DEVICE:-cuda:0}
epochs=${EPOCHS:-10}
precisions=${PRECISIONS:-f32 bf16}
here=$(cd "$(dirname "$0")" && pwd)
results=$(realpath -m "${1:-.}")
mkdir -p "$results"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The binary, and the CUDA libraries of the pip packages PyTorch uses.
xz -dc "$here/sieve.xz" >"$work/sieve" && chmod +x "$work/sieve"
cuda_libs=$(python3 - <<'EOF'
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
dirs = []
for root in roots:
    for d in glob.glob(os.path.join(root, "nvidia", "*", "lib")) + glob.glob(os.path.join(root, "nvidia", "cu*", "lib")):
        if d not in dirs:
            dirs.append(d)
print(":".join(dirs))
EOF
)
export LD_LIBRARY_PATH="$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=$(ldd "$work/sieve" | grep "not found" || true)
if [[ -n "$missing" ]]; then
    echo "run.sh: libraries not found (searched $cuda_libs):" >&2
    echo "$missing" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

sieve() { "$work/sieve" "$@" --datasets-dir "$here/datasets" --data-dir "$here/data" --device "$device" --quiet; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# 10 proxy epochs of ResNet-20 (train = timed by sieve itself, in proxy.json).
sieve train --dataset cifar10 --proxy resnet20 --epochs "$epochs" --out "$work/proxy"
train_s=$(json "$work/proxy/proxy.json" 'd["seconds"]')
train_acc=$(json "$work/proxy/proxy.json" 'd["heldout_accuracy"]')
train_epoch_s=$(json "$work/proxy/proxy.json" 'sum(e["seconds"] for e in d["history"])')

# Scoring every training row, end to end: read, decode, forward, write.
declare -A rate
for precision in $precisions; do
    sieve score --dataset cifar10 --precision "$precision" --proxy-dir "$work/proxy" --out "$work/scores-$precision"
    rate[$precision]=$(json "$work/scores-$precision/manifest.json" '50000 / d["seconds"]["score"]')
done
# Half precision against f32: how often the prediction and how far el2n move.
agreement="1 0"
if [[ -d "$work/scores-bf16" ]]; then
    agreement=$(python3 - "$work/scores-f32/scores.parquet" "$work/scores-bf16/scores.parquet" <<'EOF'
import sys
import pyarrow.parquet as pq
a, b = (pq.read_table(p, columns=["el2n", "pred"]).to_pydict() for p in sys.argv[1:3])
n = len(a["el2n"])
same_pred = sum(x == y for x, y in zip(a["pred"], b["pred"])) / n
err = max(abs(x - y) for x, y in zip(a["el2n"], b["el2n"]))
print(f"{same_pred:.4f} {err:.4f}")
EOF
)
fi

torch_json="{}"
if [[ -z "${SIEVE_ONLY:-}" ]]; then
    torch_json=$(python3 "$here/pytorch_proxy.py" --data "$here/data/cifar10" --epochs "$epochs")
fi

python3 - "$results/results.json" "$train_s" "$train_epoch_s" "$train_acc" "${rate[f32]}" "${rate[bf16]:-nan}" \
    "$agreement" "$torch_json" "$device" "$epochs" <<'EOF'
import json, sys
out, train_s, epoch_s, acc, f32, bf16, agreement, torch, device, epochs = sys.argv[1:11]
same_pred, el2n_err = agreement.split()
torch = json.loads(torch)
sieve = dict(device=device, epochs=int(epochs), train_seconds=float(train_s), epoch_seconds=float(epoch_s), test_accuracy=float(acc),
             score_images_per_s=float(f32), score_bf16_images_per_s=float(bf16),
             bf16_same_prediction=float(same_pred), bf16_max_el2n_error=float(el2n_err))
json.dump(dict(sieve=sieve, torch=torch), open(out, "w"), indent=2)
rows = [(f"{epochs} epochs ResNet-20, seconds (target <= 60 for 10)", sieve["train_seconds"], torch.get("train_seconds")),
        (f"test accuracy after {epochs} epochs", sieve["test_accuracy"], torch.get("test_accuracy")),
        ("scoring images/s, f32 (target >= 20,000)", sieve["score_images_per_s"], torch.get("score_images_per_s")),
        ("scoring images/s, bf16", sieve["score_bf16_images_per_s"], torch.get("score_bf16_images_per_s"))]
print(f"| {'measure':48} | {'sieve':>10} | {'PyTorch eager':>13} |")
print(f"|{'-' * 50}|{'-' * 12}|{'-' * 15}|")
for name, s, t in rows:
    t = "-" if t is None else f"{t:,.3f}"
    print(f"| {name:48} | {s:>10,.3f} | {t:>13} |")
if bf16 != "nan":
    print(f"bf16 vs f32: same prediction on {float(same_pred):.2%} of rows, el2n within {float(el2n_err):.4f}")
EOF
