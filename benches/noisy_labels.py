"""Writes a copy of a labeled Parquet dataset with a fraction of its labels
flipped, uniformly to another class, by a seeded generator; and the list of
flipped rows. The benchmark set for label-issue detection (issue 18):
CIFAR-10 train with 10% of the labels flipped. Nothing is committed: the
copy goes to --out.

  python3 benches/noisy_labels.py --input ../shared/datasets/cifar10/train.parquet \
      --out /tmp/sieve-bench/cifar10-noisy [--fraction 0.1] [--seed 0]

writes OUT/train.parquet (the same columns, `label` changed on the flipped
rows) and OUT/flipped.json ({"rows": [...], "original": [...]}: input
positions and their true labels).
"""

import argparse
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    table = pq.read_table(args.input)
    labels = table[args.label_column].to_pylist()
    classes = sorted(set(labels))
    rng = random.Random(args.seed)
    rows = sorted(rng.sample(range(len(labels)), round(args.fraction * len(labels))))
    noisy = list(labels)
    for r in rows:
        noisy[r] = rng.choice([c for c in classes if c != labels[r]])
    idx = table.schema.get_field_index(args.label_column)
    table = table.set_column(idx, table.schema.field(idx), pa.array(noisy, table.schema.field(idx).type))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / ".train.parquet.tmp", row_group_size=5000)
    (out / ".train.parquet.tmp").rename(out / "train.parquet")
    (out / "flipped.json").write_text(json.dumps({"rows": rows, "original": [labels[r] for r in rows]}))
    print(f"{len(rows)} of {len(labels)} labels flipped into {out}")


if __name__ == "__main__":
    main()
