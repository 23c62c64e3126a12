"""sieve's whole pipeline at scale: overhead over the model, rows/s and peak RSS
as the input grows, and throughput at 1 and 2 threads. Part of `make bench`.

Generates, once, into --work (default /tmp/sieve-bench; nothing is committed):
  text:  1,000,000 rows sampled with replacement from SST-2 train, 10 files of 100,000
  image: 200,000 rows, CIFAR-10 train four times over in a shuffled order, 10 files of 20,000
and trains one proxy per kind with `sieve train` (fastText; ResNet-8 for 1 epoch:
the bench measures throughput, not accuracy).

Then, in one run (ratios, not absolute times, are the figures to read on a shared machine):
  * overhead: `sieve score` on CIFAR-10 train (seconds of its score stage) divided by
    the time of the proxy's forward passes alone over the same rows, decoded beforehand
    (udfs/examples/forward_only.rs, same proxy, micro-batches and threads); three
    alternating runs of each, medians; with each side's CPU use (CPU seconds / wall
    seconds), which tells added work (more CPU) from waiting (less);
  * scale: `sieve prune --proxy-dir P --keep 0.5` on the first 10%, 20%, 50% and 100%
    of each dataset: rows/s of the whole job and its peak RSS (from wait4);
  * threads: rows/s of the same job on 20% of each dataset at --threads 1 and 2.

Usage: python3 benches/pipeline.py [--data-dir ../shared/datasets] [--work /tmp/sieve-bench]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent

FRACTIONS = (0.1, 0.2, 0.5, 1.0)  # whole files of the 10
FILES = 10
TEXT_ROWS = 1_000_000
IMAGE_ROWS = 200_000
KINDS = {
    "text": ["--text-column", "sentence", "--label-column", "label"],
    "image": ["--image-column", "img", "--label-column", "label"],
}


def target_dir():
    meta = subprocess.run(
        [os.environ.get("CARGO", "cargo"), "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return Path(json.loads(meta.stdout)["target_directory"])


def generate(source: Path, rows: int, dest: Path, seed: int, columns):
    """Writes `rows` rows drawn from `source` (without replacement while it
    lasts, then again) into FILES files under dest/all/."""
    done = dest / "all" / f"part-{FILES - 1:02d}.parquet"
    if done.exists():
        return
    table = pq.read_table(source, columns=columns)
    import random

    rng = random.Random(seed)
    order = []
    while len(order) < rows:
        block = list(range(table.num_rows))
        rng.shuffle(block)
        order.extend(block)
    per_file = rows // FILES
    (dest / "all").mkdir(parents=True, exist_ok=True)
    for f in range(FILES):
        idx = pa.array(order[f * per_file:(f + 1) * per_file])
        part = table.take(idx)
        part = part.append_column("id", pa.array(range(f * per_file, (f + 1) * per_file), pa.int64()))
        tmp = dest / "all" / f".part-{f:02d}.tmp"
        pq.write_table(part, tmp, row_group_size=10_000)
        tmp.rename(dest / "all" / f"part-{f:02d}.parquet")


def subset(dest: Path, fraction: float) -> Path:
    """A directory of links to the first `fraction` of the files."""
    d = dest / f"first-{int(fraction * 100)}pct"
    if not d.exists():
        d.mkdir()
        for f in range(round(fraction * FILES)):
            (d / f"part-{f:02d}.parquet").symlink_to(dest / "all" / f"part-{f:02d}.parquet")
    return d


def run(cmd, usage_out=None, stdout=subprocess.DEVNULL):
    """Runs `cmd`; returns (wall seconds, peak RSS in MiB); appends (wall seconds,
    CPU seconds) to `usage_out`."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    if status != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{err}")
    if usage_out is not None:
        usage_out.append((wall, usage.ru_utime + usage.ru_stime))
    return wall, usage.ru_maxrss / 1024


def overhead(sieve, forward_only, data, proxy, out, threads, rounds=3):
    """Medians over alternating runs: (rows, score-stage seconds, forward seconds,
    score CPU use, forward CPU use)."""
    score_s, forward_s, score_use, forward_use = [], [], [], []
    for _ in range(rounds):
        usage = []
        run([sieve, "score", "--dataset", "cifar10", "--data-dir", str(data), "--proxy-dir", str(proxy),
             "--out", str(out), "--quiet", *threads], usage)
        manifest = json.loads((out / "manifest.json").read_text())
        rows = manifest["scoring"]["rows"]
        score_s.append(manifest["seconds"]["score"])
        score_use.append(usage[0][1] / usage[0][0])
        # Its CPU use covers decoding too (not timed): a rough figure.
        with open(out / "forward.json", "w") as f:
            run([forward_only, str(proxy), str(data / "cifar10" / "train.parquet"), "img", threads[1]], usage, f)
        forward_s.append(json.loads((out / "forward.json").read_text())["seconds"])
        forward_use.append(usage[1][1] / usage[1][0])
    med = statistics.median
    return rows, med(score_s), med(forward_s), med(score_use), med(forward_use)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--work", default="/tmp/sieve-bench")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    data, work = Path(args.data_dir), Path(args.work)
    subprocess.run([os.environ.get("CARGO", "cargo"), "build", "--release", "--quiet", "-p", "sieve"], cwd=ROOT, check=True)
    subprocess.run([os.environ.get("CARGO", "cargo"), "build", "--release", "--quiet", "-p", "sieve-udfs", "--example",
                    "forward_only"], cwd=ROOT, check=True)
    sieve = str(target_dir() / "release" / "sieve")
    forward_only = str(target_dir() / "release" / "examples" / "forward_only")

    generate(data / "sst2" / "train.parquet", TEXT_ROWS, work / "text", 1, ["sentence", "label"])
    generate(data / "cifar10" / "train.parquet", IMAGE_ROWS, work / "image", 2, ["img", "label"])
    proxies = {
        "text": (work / "proxy-text", ["--dataset", "sst2", "--data-dir", str(data)]),
        "image": (work / "proxy-image", ["--dataset", "cifar10", "--data-dir", str(data), "--epochs", "1"]),
    }
    for proxy, flags in proxies.values():
        if not (proxy / "proxy.json").exists():
            run([sieve, "train", *flags, "--out", str(proxy), "--quiet"])
    threads = ["--threads", str(args.threads)]

    # Overhead: the score stage against the forward passes alone.
    rows, score_s, forward_s, score_use, forward_use = overhead(sieve, forward_only, data, proxies["image"][0],
                                                      work / "out-score", threads)

    # Scale: the whole job on growing prefixes of each dataset.
    scale = {}
    for kind, cols in KINDS.items():
        total = TEXT_ROWS if kind == "text" else IMAGE_ROWS
        for f in FRACTIONS:
            wall, rss = run([sieve, "prune", "--input", str(subset(work / kind, f)), *cols, "--proxy-dir",
                             str(proxies[kind][0]), "--keep", "0.5", "--out", str(work / f"out-{kind}"), "--quiet", *threads])
            scale[kind, f] = (round(f * total), wall, rss)

    # Threads: the same job on a fifth of each dataset.
    per_thread = {}
    for kind, cols in KINDS.items():
        for t in (1, 2):
            rows_t = scale[kind, 0.2][0]
            wall, _ = run([sieve, "prune", "--input", str(subset(work / kind, 0.2)), *cols, "--proxy-dir",
                           str(proxies[kind][0]), "--keep", "0.5", "--out", str(work / f"out-{kind}"), "--quiet",
                           "--threads", str(t)])
            per_thread[kind, t] = rows_t / wall

    print(f"\nPipeline overhead ({args.threads} threads): `sieve score` on CIFAR-10 train, {rows:,} rows, score stage "
          f"{score_s:.2f} s (CPU use {score_use:.2f} cores); the proxy's forward passes alone over the same rows "
          f"{forward_s:.2f} s (CPU use with decoding {forward_use:.2f}); **overhead {score_s / forward_s:.2f}x** (target at most 1.15; medians of 3)\n")
    print("| dataset | rows | fraction | job rows/s | rows/s vs 10% | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for kind in KINDS:
        base = scale[kind, FRACTIONS[0]][0] / scale[kind, FRACTIONS[0]][1]
        for f in FRACTIONS:
            n, wall, rss = scale[kind, f]
            print(f"| {kind} | {n:,} | {f:.0%} | {n / wall:,.0f} | {n / wall / base:.2f} | {rss:,.0f} |")
    print("\n`sieve prune --proxy-dir P --keep 0.5` (score + select + write, proxy given), whole-job wall time.\n")
    print("| dataset | rows | 1 thread rows/s | 2 threads rows/s | speed-up |")
    print("|---|---|---|---|---|")
    for kind in KINDS:
        one, two = per_thread[kind, 1], per_thread[kind, 2]
        print(f"| {kind} | {scale[kind, 0.2][0]:,} | {one:,.0f} | {two:,.0f} | {two / one:.2f}x |")
    shutil.rmtree(work / "out-score", ignore_errors=True)


if __name__ == "__main__":
    main()
