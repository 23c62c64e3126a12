"""sieve's proxy throughput against PyTorch CPU, measured in the same run.

Runs `proxy/examples/bench_conv.rs` (custom kernels only, `--no-candle --json`) and
`benches/pytorch_resnet.py` in each of its variants in turn, `--rounds` times
(sieve, torch eager, eager-cl, compile, compile-cl, sieve, ...), keeps the best
figure of each, and prints one markdown table of ratios. Absolute images/s on a
shared 2-core machine move with whatever else runs; interleaving the runs and
keeping each one's best makes the ratio the number to read.

The torch column is the fastest PyTorch variant per cell, named beside the figure
(see pytorch_resnet.py): for inference, eager NCHW and channels_last with batch
norm folded, and torch.compile (inductor, freezing) of the folded model in both
layouts; for training, eager and torch.compile in both layouts (batch norm cannot
be folded while it trains). Every variant's own figures follow the table.

Usage (what `make bench` runs, after building bench_conv; needs
`pip install -r benches/requirements.txt`):
  python3 benches/compare.py --threads 2 [--rounds 3]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchlib import ROOT, cpu_name, markdown_table, release_binary

TORCH_SCRIPT = ROOT / "benches" / "pytorch_resnet.py"
MODELS = ("ResNet-8", "ResNet-20")
MODES = ("train", "infer")
TORCH_VARIANTS = {  # impl name -> pytorch_resnet.py flags
    "eager": [],
    "eager-cl": ["--channels-last"],
    "compile": ["--compile"],
    "compile-cl": ["--compile", "--channels-last"],
}


def load1():
    """The 1-minute load average, as bench_conv reports it."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def json_lines(cmd):
    """Runs `cmd` and returns the JSON objects it printed, one a line."""
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="threads for both sides")
    ap.add_argument("--rounds", type=int, default=3, help="times each side runs, interleaved; best kept")
    args = ap.parse_args()

    threads = ["--threads", str(args.threads)]
    runs = [("sieve", [str(release_binary("examples/bench_conv")), "--no-candle", "--json", *threads])]
    runs += [("torch", [sys.executable, str(TORCH_SCRIPT), *threads, *flags]) for flags in TORCH_VARIANTS.values()]
    best = {}  # (side, model, mode) -> (images/s, impl)
    by_impl = {}  # (impl, model, mode) -> images/s, to show every torch variant
    compile_s = {}  # (impl, model, mode) -> seconds of torch.compile's first call, longest seen
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
                    if "compile_s" in row:
                        compile_s[k] = max(compile_s.get(k, 0.0), row["compile_s"])
                    if ips > best.get(key, (0.0, ""))[0]:
                        best[key] = (ips, row["impl"])

    def cell(side, model, mode):
        ips, impl = best[side, model, mode]
        return f"{ips:,.0f}" + (f" ({impl})" if side == "torch" else "")

    def pct(side, model, mode):
        gf = best[side, model, mode][0] * flop_per_image[model, mode]
        return f"{100 * gf / peak:.0f}%"

    print(
        f"{cpu_name()}, {args.threads} threads; torch {torch_version}; {args.rounds} interleaved rounds, "
        f"best of each, {time.time() - start:.0f} s; 1-minute load average before each run: "
        + ", ".join(f"{l:.2f}" for l in loads)
    )
    print(f"gemm peak: {peak:.0f} GFLOP/s (1024^3 f32, {args.threads} threads)\n")
    rows = []
    for model in MODELS:
        ratio = {m: best["sieve", model, m][0] / best["torch", model, m][0] for m in MODES}
        rows.append([
            model, args.threads,
            cell("sieve", model, "train"), cell("torch", model, "train"), f"{ratio['train']:.2f}",
            cell("sieve", model, "infer"), cell("torch", model, "infer"), f"{ratio['infer']:.2f}",
            f"{pct('sieve', model, 'train')} / {pct('torch', model, 'train')}",
            f"{pct('sieve', model, 'infer')} / {pct('torch', model, 'infer')}",
        ])
    markdown_table(["model", "threads", "sieve train img/s", "best torch train img/s", "ratio", "sieve infer img/s",
                    "best torch infer img/s", "ratio", "train % of peak (sieve / torch)",
                    "infer % of peak (sieve / torch)"], rows)
    print(
        "\nratio = sieve / best torch (above 1: sieve is faster). Train: full SGD step, batch 128; infer: batch 256, "
        "batch norm folded on both sides, eval mode, no_grad. In brackets, the torch variant that won the cell: "
        "eager = eager NCHW, -cl = channels_last, compile = torch.compile (inductor; for inference with freezing). "
        "% of peak counts sieve's multiply-adds for both (2 flops each, 3 passes per training step)."
    )
    if max(loads) > args.threads + 1:
        print(
            f"warning: load average up to {max(loads):.1f} on {args.threads} threads: other jobs shared the cores, "
            "and torch's OpenMP threads lose more to that than sieve's rayon pool, so the ratios lean towards "
            "sieve; rerun on a quiet machine"
        )
    print("\nEvery torch variant, best of its rounds, train / infer img/s (compile: seconds of the first, compiling, "
          "call, train / infer):")
    for impl in TORCH_VARIANTS:
        figures = "; ".join(f"{m} {by_impl[impl, m, 'train']:,.0f} / {by_impl[impl, m, 'infer']:,.0f}" for m in MODELS)
        compiled = "; ".join(f"{m} {compile_s[impl, m, 'train']:.0f} / {compile_s[impl, m, 'infer']:.0f} s"
                             for m in MODELS if (impl, m, "train") in compile_s)
        print(f"- {impl}: {figures}" + (f" (compile {compiled})" if compiled else ""))


if __name__ == "__main__":
    main()
