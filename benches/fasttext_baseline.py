"""sieve's fastText-style proxy against the reference fastText (PyPI
`fasttext-wheel`), same data, dimension, n-grams, learning rate and epochs, in
one run: training tokens/s (whitespace words x epochs / training seconds, the
same count for both) and SST-2 validation accuracy. Part of `make bench`.

sieve trains on one thread (deterministic); fastText is run on 1 thread (the
like-for-like figure) and on 2 (its Hogwild default on this machine).

Usage: python3 benches/fasttext_baseline.py [--data-dir ../shared/datasets] [--rounds 3]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fasttext
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
# sieve's defaults (FastTextConfig / FastTextTrainConfig), given to both.
DIM, NGRAMS, LR, EPOCHS, BUCKETS = 32, 2, 0.5, 5, 2_097_152


def fasttext_file(parquet: Path, dest: Path):
    """SST-2 as fastText's `__label__K text` lines; returns the word count."""
    t = pq.read_table(parquet, columns=["sentence", "label"]).to_pydict()
    words = 0
    with open(dest, "w") as f:
        for s, y in zip(t["sentence"], t["label"]):
            s = " ".join(s.split())
            words += len(s.split())
            f.write(f"__label__{y} {s}\n")
    return words


def run_fasttext(train: Path, valid: Path, words: int, threads: int, seed: int):
    start = time.perf_counter()
    model = fasttext.train_supervised(
        input=str(train), dim=DIM, wordNgrams=NGRAMS, lr=LR, epoch=EPOCHS, bucket=BUCKETS,
        minCount=1, thread=threads, seed=seed, verbose=0,
    )
    seconds = time.perf_counter() - start
    _, precision, _ = model.test(str(valid))
    return words * EPOCHS / seconds, precision


def run_sieve(data: Path, seed: int):
    cargo = os.environ.get("CARGO", "cargo")
    out = subprocess.run(
        [cargo, "run", "--release", "--quiet", "-p", "sieve-udfs", "--example", "fasttext_sst2", "--",
         f"dim={DIM}", f"ngrams={NGRAMS}", f"lr={LR}", f"epochs={EPOCHS}", f"buckets={BUCKETS}",
         f"seed={seed}", f"data={data}"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    tokens = float(re.search(r"train [\d.]+ s, ([\d.]+) M tokens/s", out).group(1)) * 1e6
    accuracy = float(re.search(r"validation accuracy ([\d.]+)%", out).group(1)) / 100
    return tokens, accuracy


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--rounds", type=int, default=3, help="seeds, interleaved; speed: best; accuracy: mean")
    args = ap.parse_args()
    sst2 = Path(args.data_dir) / "sst2"
    with tempfile.TemporaryDirectory() as tmp:
        train, valid = Path(tmp) / "train.txt", Path(tmp) / "valid.txt"
        words = fasttext_file(sst2 / "train.parquet", train)
        fasttext_file(sst2 / "validation.parquet", valid)
        results = {"sieve": [], "fastText 1 thread": [], "fastText 2 threads": []}
        for seed in range(args.rounds):
            results["sieve"].append(run_sieve(sst2, seed))
            results["fastText 1 thread"].append(run_fasttext(train, valid, words, 1, seed))
            results["fastText 2 threads"].append(run_fasttext(train, valid, words, 2, seed))
    sieve_tps = max(t for t, _ in results["sieve"])
    sieve_acc = sum(a for _, a in results["sieve"]) / args.rounds
    print(f"\nfastText-style proxy vs the reference fastText (fasttext-wheel 0.9.2) on SST-2: dim {DIM}, "
          f"word n-grams {NGRAMS}, lr {LR}, {EPOCHS} epochs, {BUCKETS:,} buckets; {args.rounds} seeds, "
          f"best speed, mean accuracy\n")
    print("| trainer | train tokens/s | sieve / it | validation accuracy | sieve - it (points) |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        tps = max(t for t, _ in rows)
        acc = sum(a for _, a in rows) / len(rows)
        print(f"| {name} | {tps / 1e6:.2f} M | {sieve_tps / tps:.2f}x | {100 * acc:.1f}% | "
              f"{100 * (sieve_acc - acc):+.1f} |")


if __name__ == "__main__":
    sys.exit(main())
