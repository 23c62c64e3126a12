"""sieve's proxy throughput against PyTorch CPU, measured in the same run.

Runs `udfs/examples/bench_conv.rs` (custom kernels only, `--no-candle --json`) and
`benches/pytorch_resnet.py` in turn, `--rounds` times (sieve, torch NCHW, torch
channels_last, sieve, ...), keeps the best figure of each, and prints one markdown
table of ratios. Absolute images/s on a shared 2-core machine move with whatever
else runs; interleaving the two and keeping each one's best makes the ratio the
number to read. The torch column is the faster of its two memory layouts per cell
(marked `cl` where channels_last won), so the baseline is the best eager PyTorch.

Usage (what `make bench` runs; needs `pip install -r benches/requirements.txt`):
  python3 benches/compare.py --threads 2 [--rounds 3]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_SCRIPT = ROOT / "benches" / "pytorch_resnet.py"
MODELS = ("ResNet-8", "ResNet-20")


def load1():
    """The 1-minute load average, as bench_conv reports it."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def sieve_binary():
    """Builds bench_conv (release) and returns its path, honouring CARGO_TARGET_DIR."""
    cargo = os.environ.get("CARGO", "cargo")
    subprocess.run(
        [cargo, "build", "--release", "--quiet", "-p", "sieve-udfs", "--example", "bench_conv"],
        cwd=ROOT,
        check=True,
    )
    meta = subprocess.run(
        [cargo, "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(json.loads(meta.stdout)["target_directory"]) / "release" / "examples" / "bench_conv"


def json_lines(cmd):
    """Runs `cmd` and returns the JSON objects it printed, one a line."""
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="threads for both sides")
    ap.add_argument("--rounds", type=int, default=3, help="times each side runs, interleaved; best kept")
    args = ap.parse_args()

    sieve = str(sieve_binary())
    runs = [
        ("sieve", [sieve, "--no-candle", "--json", "--threads", str(args.threads)]),
        ("torch", [sys.executable, str(TORCH_SCRIPT), "--threads", str(args.threads)]),
        ("torch", [sys.executable, str(TORCH_SCRIPT), "--threads", str(args.threads), "--channels-last"]),
    ]
    best = {}  # (side, model, mode) -> (images/s, impl)
    by_impl = {}  # (impl, model, mode) -> images/s, to show both torch layouts
    peak, loads, torch_version = 0.0, [], "?"
    flop_per_image = {}  # (model, mode) -> GFLOP per image, from sieve's own count
    start = time.time()
    for _ in range(args.rounds):
        for side, cmd in runs:
            loads.append(load1())
            for row in json_lines(cmd):
                if "gemm_peak_gflop_per_s" in row:
                    peak = max(peak, row["gemm_peak_gflop_per_s"])
                elif "torch" in row:
                    torch_version = row["torch"]
                elif "images_per_s" in row:
                    key = (side, row["model"], row["mode"])
                    ips = row["images_per_s"]
                    if "gflop_per_s" in row:
                        flop_per_image[row["model"], row["mode"]] = row["gflop_per_s"] / ips
                    k = (row["impl"], row["model"], row["mode"])
                    by_impl[k] = max(by_impl.get(k, 0.0), ips)
                    if ips > best.get(key, (0.0, ""))[0]:
                        best[key] = (ips, row["impl"])

    def cell(side, model, mode):
        ips, impl = best[side, model, mode]
        return f"{ips:,.0f}" + (" (cl)" if impl.startswith("torch-nhwc") else "")

    def pct(side, model, mode):
        gf = best[side, model, mode][0] * flop_per_image[model, mode]
        return f"{100 * gf / peak:.0f}%"

    print(
        f"{cpu_name()}, {args.threads} threads; torch {torch_version}; {args.rounds} interleaved rounds, "
        f"best of each, {time.time() - start:.0f} s; 1-minute load average before each run: "
        + ", ".join(f"{l:.2f}" for l in loads)
    )
    print(f"gemm peak: {peak:.0f} GFLOP/s (1024^3 f32, {args.threads} threads)\n")
    print(
        "| model | threads | sieve train img/s | torch train img/s | ratio | sieve infer img/s | torch infer img/s "
        "| ratio | train % of peak (sieve / torch) | infer % of peak (sieve / torch) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in MODELS:
        ratio = {m: best["sieve", model, m][0] / best["torch", model, m][0] for m in ("train", "infer")}
        print(
            f"| {model} | {args.threads} "
            f"| {cell('sieve', model, 'train')} | {cell('torch', model, 'train')} | {ratio['train']:.2f} "
            f"| {cell('sieve', model, 'infer')} | {cell('torch', model, 'infer')} | {ratio['infer']:.2f} "
            f"| {pct('sieve', model, 'train')} / {pct('torch', model, 'train')} "
            f"| {pct('sieve', model, 'infer')} / {pct('torch', model, 'infer')} |"
        )
    print(
        "\nratio = sieve / torch (above 1: sieve is faster). Train: full SGD step, batch 128; infer: batch 256, "
        "sieve with batch norm folded, torch eager (eval, no_grad). (cl) = torch's channels_last beat NCHW. "
        "% of peak counts sieve's multiply-adds for both (2 flops each, 3 passes per training step)."
    )
    if max(loads) > args.threads + 1:
        print(
            f"warning: load average up to {max(loads):.1f} on {args.threads} threads: other jobs shared the cores, "
            "and torch's OpenMP threads lose more to that than sieve's rayon pool, so the ratios lean towards "
            "sieve; rerun on a quiet machine"
        )
    for impl, label in (("torch", "NCHW"), ("torch-nhwc", "channels_last")):
        print(
            f"torch {label}, train / infer img/s: "
            + "; ".join(f"{m} {by_impl[impl, m, 'train']:,.0f} / {by_impl[impl, m, 'infer']:,.0f}" for m in MODELS)
        )


if __name__ == "__main__":
    main()
