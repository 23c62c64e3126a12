"""sieve's whole pipeline at scale: overhead over the model, rows/s and peak RSS
as the input grows, and throughput at 1 and 2 threads. Part of `make bench`.

Generates, once, into --work (default /tmp/sieve-bench; nothing is committed), in
directories named by kind and row count (`text-1000000`, `image-200000`):
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
    of each dataset: rows/s of the whole job and its own peak RSS (GNU time's %M, see
    benchlib.py: a child's wait4 figure would include this script's high-water mark);
    the script stops if the peaks read alike for every job;
  * threads: rows/s of the same job on 20% of each dataset at --threads 1 and 2.

Usage (after building sieve and the forward_only example, as `make bench` does):
  python3 benches/pipeline.py [--data-dir ../shared/datasets] [--work /tmp/sieve-bench] [--size 1.0]
`--size 0.01` runs the same sweep on 1% of the rows (a smoke test).
"""

import argparse
import json
import os
import random
import shutil
import statistics
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchlib import ROOT, check_peaks_differ, markdown_table, release_binary, run_measured, sieve_binary

FRACTIONS = (0.1, 0.2, 0.5, 1.0)  # whole files of the 10
FILES = 10
TEXT_ROWS = 1_000_000
IMAGE_ROWS = 200_000
KINDS = {
    "text": ["--text-column", "sentence", "--label-column", "label"],
    "image": ["--image-column", "img", "--label-column", "label"],
}


def generate(source: Path, rows: int, dest: Path, seed: int, columns):
    """Writes `rows` rows drawn from `source` (without replacement while it
    lasts, then again) into FILES files under dest/all/."""
    done = dest / "all" / f"part-{FILES - 1:02d}.parquet"
    if done.exists():
        return
    table = pq.read_table(source, columns=columns)
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


def overhead(sieve, forward_only, data, proxy, out, threads, rounds=3):
    """Medians over alternating runs: (rows, score-stage seconds, forward seconds,
    score CPU use, forward CPU use)."""
    score_s, forward_s, score_use, forward_use = [], [], [], []
    for _ in range(rounds):
        job = run_measured([sieve, "score", "--dataset", "cifar10", "--data-dir", data, "--proxy-dir", proxy,
                            "--out", out, "--quiet", *threads])
        manifest = json.loads((out / "manifest.json").read_text())
        rows = manifest["scoring"]["rows"]
        score_s.append(manifest["seconds"]["score"])
        score_use.append(job.cpu / job.wall)
        # Its CPU use covers decoding too (not timed): a rough figure.
        job = run_measured([forward_only, proxy, data / "cifar10" / "train.parquet", "img", threads[1]], capture=True)
        forward_s.append(json.loads(job.stdout)["seconds"])
        forward_use.append(job.cpu / job.wall)
    med = statistics.median
    return rows, med(score_s), med(forward_s), med(score_use), med(forward_use)


def prune(sieve, kind, dest, fraction, proxy, out, threads):
    """`sieve prune` with a given proxy on the first `fraction` of the files of
    `kind` generated into `dest`."""
    return run_measured([sieve, "prune", "--input", subset(dest, fraction), *KINDS[kind], "--proxy-dir", proxy,
                         "--keep", "0.5", "--out", out, "--quiet", "--threads", threads])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--work", default="/tmp/sieve-bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=float, default=1.0, help="fraction of the generated rows (below 1: a smoke test)")
    args = ap.parse_args()
    data, work = Path(args.data_dir), Path(args.work)
    sieve, forward_only = sieve_binary(), str(release_binary("examples/forward_only"))
    total = {"text": round(TEXT_ROWS * args.size), "image": round(IMAGE_ROWS * args.size)}
    # The generated data lives in directories named by their row counts.
    dirs = {kind: work / f"{kind}-{total[kind]}" for kind in KINDS}

    generate(data / "sst2" / "train.parquet", total["text"], dirs["text"], 1, ["sentence", "label"])
    generate(data / "cifar10" / "train.parquet", total["image"], dirs["image"], 2, ["img", "label"])
    proxies = {
        "text": (work / "proxy-text", ["--dataset", "sst2", "--data-dir", data]),
        "image": (work / "proxy-image", ["--dataset", "cifar10", "--data-dir", data, "--epochs", "1"]),
    }
    for proxy, flags in proxies.values():
        if not (proxy / "proxy.json").exists():
            run_measured([sieve, "train", *flags, "--out", proxy, "--quiet"])
    threads = ["--threads", str(args.threads)]

    # Overhead: the score stage against the forward passes alone.
    rows, score_s, forward_s, score_use, forward_use = overhead(sieve, forward_only, data, proxies["image"][0],
                                                                work / "out-score", threads)

    # Scale: the whole job on growing prefixes of each dataset.
    scale = {}
    for kind in KINDS:
        for f in FRACTIONS:
            job = prune(sieve, kind, dirs[kind], f, proxies[kind][0], work / f"out-{kind}", args.threads)
            scale[kind, f] = (round(f * total[kind]), job.wall, job.peak_mib)
    check_peaks_differ([peak for _, _, peak in scale.values()])

    # Threads: the same job on a fifth of each dataset.
    per_thread = {}
    for kind in KINDS:
        for t in (1, 2):
            job = prune(sieve, kind, dirs[kind], 0.2, proxies[kind][0], work / f"out-{kind}", t)
            per_thread[kind, t] = scale[kind, 0.2][0] / job.wall

    print(f"\nPipeline overhead ({args.threads} threads): `sieve score` on CIFAR-10 train, {rows:,} rows, score stage "
          f"{score_s:.2f} s (CPU use {score_use:.2f} cores); the proxy's forward passes alone over the same rows "
          f"{forward_s:.2f} s (CPU use with decoding {forward_use:.2f}); **overhead {score_s / forward_s:.2f}x** "
          "(target at most 1.15; medians of 3)\n")
    table = []
    for kind in KINDS:
        base = scale[kind, FRACTIONS[0]][0] / scale[kind, FRACTIONS[0]][1]
        for f in FRACTIONS:
            n, wall, peak = scale[kind, f]
            table.append([kind, f"{n:,}", f"{f:.0%}", f"{n / wall:,.0f}", f"{n / wall / base:.2f}", f"{peak:,.0f}"])
    markdown_table(["dataset", "rows", "fraction", "job rows/s", "rows/s vs 10%", "peak RSS (MiB)"], table)
    print("\n`sieve prune --proxy-dir P --keep 0.5` (score + select + write, proxy given), whole-job wall time; "
          "peak RSS is the job's own (GNU time).\n")
    table = []
    for kind in KINDS:
        one, two = per_thread[kind, 1], per_thread[kind, 2]
        table.append([kind, f"{scale[kind, 0.2][0]:,}", f"{one:,.0f}", f"{two:,.0f}", f"{two / one:.2f}x"])
    markdown_table(["dataset", "rows", "1 thread rows/s", "2 threads rows/s", "speed-up"], table)
    shutil.rmtree(work / "out-score", ignore_errors=True)


if __name__ == "__main__":
    main()
