"""The whole CIFAR-10 pruning job, sieve against a plain PyTorch script doing the
same job, in one run. Part of `make bench`.

  sieve    `sieve prune --dataset cifar10 --data-dir DIR --keep 0.5 --balance class
           --out TMP --quiet`: the shipped defaults train a ResNet-8 proxy (4 epochs),
           score every row, keep the half of each class with the highest EL2N,
           write the kept rows, scores.parquet and report.html.
  PyTorch  benches/pytorch_job.py on the same files: reads them with pyarrow,
           decodes the images with Pillow, trains ResNet-8 with sieve's recipe,
           scores every row's EL2N, keeps the same half of each class and
           writes the kept rows as Parquet.
Each is timed from process start to exit, with its own peak RSS (GNU time, see
benchlib.py). Train seconds: sieve's `seconds.train` in manifest.json (its
train stage: reading and decoding the rows it trains on, training, held-out
accuracy); PyTorch's train and heldout phases (its decoding, done once up
front for training and scoring alike, is a phase of its own).
Held-out accuracy on CIFAR-10 test: `proxy.heldout_accuracy` in the manifest,
and the script's own. Before printing, the script checks that the recipe sieve
recorded in its proxy.json is the one pytorch_job.py trains with, and stops
otherwise.

A full run takes minutes per side on 2 cores. `--limit-rows N` runs both
sides on the first N rows of each split instead (a smoke test): they are
written to a temporary directory and sieve reads them with `--input ...
--image-column img --label-column label --heldout ...`, the same job without a
descriptor.

Usage (after building sieve, as `make bench` does; needs
`pip install -r benches/requirements.txt`):
  python3 benches/e2e_cifar10.py [--data-dir ../shared/datasets] [--limit-rows N]
"""

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from benchlib import ROOT, cores, cpu_name, markdown_table, run_measured, sieve_binary

TORCH_JOB = ROOT / "benches" / "pytorch_job.py"
KEEP = 0.5


def sieve_recipe(proxy: dict) -> dict:
    """sieve's training recipe, as its proxy.json records it, in pytorch_job.py's terms."""
    cfg, arch = proxy["train_config"], proxy["architecture"]
    for what, ok in (("model", cfg["kind"] == "resnet"), ("weight decay", cfg["sgd"]["decay"] == "L2"),
                     ("augmentation", cfg["augment"]["flip"])):
        if not ok:
            sys.exit(f"sieve's {what} is not pytorch_job.py's: {cfg}")
    return dict(depth=arch["depth"], width=arch["width"], epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                peak_lr=cfg["peak_lr"], warmup=cfg["warmup"], momentum=cfg["sgd"]["momentum"],
                nesterov=cfg["sgd"]["nesterov"], weight_decay=cfg["sgd"]["weight_decay"],
                crop_padding=cfg["augment"]["crop_padding"], mean=cfg["normalize"]["mean"], std=cfg["normalize"]["std"])


def same(a, b):
    """Equal, floats to f32 precision (proxy.json stores sieve's f32 constants as f64)."""
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return math.isclose(a, b, rel_tol=1e-6) if isinstance(a, float) else a == b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--limit-rows", type=int, help="only the first N rows of each split (a smoke test)")
    args = ap.parse_args()
    data = Path(args.data_dir).resolve()
    threads = cores()  # sieve's default; PyTorch gets the same

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train, test = data / "cifar10" / "train.parquet", data / "cifar10" / "test.parquet"
        if args.limit_rows:
            (tmp / "input").mkdir()
            for name in ("train", "test"):
                rows = pq.read_table(data / "cifar10" / f"{name}.parquet").slice(0, args.limit_rows)
                pq.write_table(rows, tmp / "input" / f"{name}.parquet")
            train, test = tmp / "input" / "train.parquet", tmp / "input" / "test.parquet"
            source = ["--input", train, "--image-column", "img", "--label-column", "label", "--heldout", test]
        else:
            source = ["--dataset", "cifar10", "--data-dir", data]
        sieve = run_measured([sieve_binary(), "prune", *source, "--keep", KEEP, "--balance", "class",
                              "--out", tmp / "sieve", "--quiet"])
        manifest = json.loads((tmp / "sieve" / "manifest.json").read_text())
        pytorch = run_measured([sys.executable, TORCH_JOB, "--train", train, "--test", test, "--keep", KEEP,
                              "--threads", threads, "--out", tmp / "torch"], capture=True)
        report = json.loads(pytorch.stdout)

    recipe, theirs = sieve_recipe(manifest["proxy"]), report["recipe"]
    if set(recipe) != set(theirs) or not all(same(recipe[k], theirs[k]) for k in recipe):
        sys.exit(f"the two recipes differ:\n  sieve          {recipe}\n  pytorch_job.py {theirs}")
    torch_train = report["seconds"]["train"] + report["seconds"]["heldout"]
    sieve_acc, torch_acc = manifest["proxy"]["heldout_accuracy"], report["heldout_accuracy"]
    rows = manifest["scoring"]["rows"]

    print(f"\nCIFAR-10 pruning job, {rows:,} rows{' (--limit-rows)' if args.limit_rows else ''}, keep "
          f"{KEEP:.0%} per class by EL2N; ResNet-8 proxy, {recipe['epochs']} epochs; {cpu_name()}, {threads} "
          f"threads; torch {report['torch']}; whole processes, start to exit\n")
    markdown_table(["", "sieve", "PyTorch", "PyTorch / sieve"], [
        ["total seconds", f"{sieve.wall:.1f}", f"{pytorch.wall:.1f}", f"**{pytorch.wall / sieve.wall:.2f}x**"],
        ["train seconds", f"{manifest['seconds']['train']:.1f}", f"{torch_train:.1f}",
         f"{torch_train / manifest['seconds']['train']:.2f}x"],
        ["held-out accuracy", f"{100 * sieve_acc:.1f}%", f"{100 * torch_acc:.1f}%",
         f"{100 * (torch_acc - sieve_acc):+.1f} points"],
        ["peak RSS (MiB)", f"{sieve.peak_mib:,.0f}", f"{pytorch.peak_mib:,.0f}",
         f"{pytorch.peak_mib / sieve.peak_mib:.2f}x"],
        ["kept rows", f"{manifest['selection']['kept']:,}", f"{report['kept']:,}", ""],
    ])
    print("\nAbove 1: sieve is faster / smaller. sieve's seconds by stage: "
          + ", ".join(f"{k} {v:.1f}" for k, v in manifest["seconds"].items())
          + "; PyTorch's by phase: " + ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items())
          + f", the interpreter's start, imports and exit {pytorch.wall - sum(report['seconds'].values()):.1f}. "
          "PyTorch's train seconds are its train and heldout phases.")


if __name__ == "__main__":
    main()
