"""sieve's shipped fastText proxy training against the reference fastText
(PyPI `fasttext-wheel` 0.9.2) on SST-2, both as whole processes, in one run.
Part of `make bench`.

For each seed, interleaved (sieve, reference, sieve, ...):
  sieve      `sieve train --dataset sst2 --data-dir DIR --seed S --out TMP --quiet`:
             the shipped command with the product's defaults (no flag overrides
             them; the header prints the sizes it trained with, from proxy.json).
             It reads the Parquet files, trains, writes the proxy (weights,
             proxy.json, training dynamics) and measures its accuracy on the
             descriptor's held-out split, SST-2 validation: `heldout_accuracy`
             in proxy.json.
  reference  this script run with `--reference`, a fresh Python process that
             reads the same Parquet rows with pyarrow, writes fastText's input
             files (`__label__K text` lines), trains `fasttext.train_supervised`
             with the dimension, word n-grams, learning rate, epochs and buckets
             that sieve's proxy.json records (its defaults, read from the first
             sieve run, so the two never drift apart), thread = the cores, saves
             the model as sieve saves its proxy, and tests it on validation.
Both are timed from process start to exit (GNU time's peak RSS beside them,
see benchlib.py); the reference also reports where its seconds go (the rest is
the interpreter starting, importing and exiting). Speed is reference seconds /
sieve seconds.

Usage (after building sieve, as `make bench` does; needs
`pip install -r benches/requirements.txt`):
  python3 benches/fasttext_baseline.py [--data-dir ../shared/datasets] [--seeds 3]
"""

import argparse
import importlib.metadata
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, cores, cpu_name, markdown_table, run_measured, sieve_binary


def run_sieve(data: Path, seed: int, out: Path):
    """(process, proxy.json) of the shipped `sieve train`."""
    job = run_measured([sieve_binary(), "train", "--dataset", "sst2", "--data-dir", data, "--seed", seed,
                        "--out", out, "--quiet"])
    return job, json.loads((out / "proxy.json").read_text())


def reference_config(proxy: dict) -> dict:
    """fastText's arguments for sieve's defaults, as proxy.json records them."""
    arch, schedule = proxy["architecture"], proxy["train_config"]["schedule"]
    assert arch["kind"] == "fasttext", arch
    return dict(dim=arch["dim"], wordNgrams=arch["ngrams"], bucket=arch["buckets"], lr=schedule["lr"],
                epoch=schedule["epochs"])


def run_reference(data: Path, seed: int, config: dict, threads: int, out: Path):
    """(process, its report) of this script's `--reference` mode."""
    job = run_measured([sys.executable, __file__, "--reference", "--data-dir", data, "--seed", seed, "--threads",
                        threads, "--config", json.dumps(config), "--out", out], capture=True)
    return job, json.loads(job.stdout)


def reference(args):
    """The reference fastText job: read, write its input, train, save, test."""
    import fasttext
    import pyarrow.parquet as pq

    phases = {}
    t = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in ("train", "validation"):
        rows = pq.read_table(Path(args.data_dir) / "sst2" / f"{split}.parquet", columns=["sentence", "label"])
        files[split] = out / f"{split}.txt"
        with open(files[split], "w") as f:
            for text, label in zip(rows["sentence"].to_pylist(), rows["label"].to_pylist()):
                f.write(f"__label__{label} {' '.join(text.split())}\n")
    phases["read + write input"] = time.perf_counter() - t
    t = time.perf_counter()
    model = fasttext.train_supervised(input=str(files["train"]), minCount=1, thread=args.threads, seed=args.seed,
                                      verbose=0, **json.loads(args.config))
    phases["train"] = time.perf_counter() - t
    t = time.perf_counter()
    model.save_model(str(out / "model.bin"))
    _, accuracy, _ = model.test(str(files["validation"]))
    phases["save + test"] = time.perf_counter() - t
    version = importlib.metadata.version("fasttext-wheel")
    print(json.dumps({"accuracy": accuracy, "phases": phases, "version": version}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1, interleaved; seconds and accuracy: means")
    ap.add_argument("--threads", type=int, default=cores(), help="the reference's training threads")
    ap.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)  # one reference job (internal)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reference:
        return reference(args)

    data = Path(args.data_dir).resolve()
    runs, config = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            sieve, proxy = run_sieve(data, seed, Path(tmp) / f"sieve-{seed}")
            config = config or reference_config(proxy)
            ref, report = run_reference(data, seed, config, args.threads, Path(tmp) / f"reference-{seed}")
            runs.append(dict(seed=seed, sieve=sieve, sieve_acc=proxy["heldout_accuracy"], ref=ref, report=report))

    mean = statistics.mean
    print(f"\n`sieve train` (fastText proxy, shipped defaults) vs the reference fastText (fasttext-wheel "
          f"{runs[0]['report']['version']}, {args.threads} threads) on SST-2, {cpu_name()}: dim {config['dim']}, "
          f"word n-grams {config['wordNgrams']}, lr {config['lr']}, {config['epoch']} epochs, "
          f"{config['bucket']:,} buckets; whole processes, start to exit; SST-2 validation accuracy\n")
    table = [[r["seed"], f"{r['sieve'].wall:.2f}", f"{r['ref'].wall:.2f}", f"{r['ref'].wall / r['sieve'].wall:.2f}x",
              f"{100 * r['sieve_acc']:.1f}%", f"{100 * r['report']['accuracy']:.1f}%",
              f"{r['sieve'].peak_mib:,.0f} / {r['ref'].peak_mib:,.0f}"] for r in runs]
    sieve_s, ref_s = mean(r["sieve"].wall for r in runs), mean(r["ref"].wall for r in runs)
    table.append([f"mean of {len(runs)}", f"{sieve_s:.2f}", f"{ref_s:.2f}", f"**{ref_s / sieve_s:.2f}x**",
                  f"{100 * mean(r['sieve_acc'] for r in runs):.1f}%",
                  f"{100 * mean(r['report']['accuracy'] for r in runs):.1f}%", ""])
    markdown_table(["seed", "sieve s", "reference s", "sieve speed (reference s / sieve s)", "sieve accuracy",
                    "reference accuracy", "peak RSS MiB (sieve / reference)"], table)
    phases = {k: mean(r["report"]["phases"][k] for r in runs) for k in runs[0]["report"]["phases"]}
    print("\nThe reference's seconds, mean: " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
          + f", the interpreter's start, imports and exit {ref_s - sum(phases.values()):.2f}.")


if __name__ == "__main__":
    sys.exit(main())
