"""The label-issue peer of benches/label_issues.py: cleanlab 2.9 as its
documentation says to run it, on out-of-sample class probabilities from
K-fold cross-validation of the same proxy recipe sieve trains
(benches/pytorch_job.py's ResNet-8, 4 epochs, in PyTorch on the CPU).

  read + decode   pyarrow and Pillow, every image once
  cross-fit       sklearn's StratifiedKFold (shuffled, seeded): per fold, a
                  proxy trained on the other folds predicts the fold's rows
                  (eval mode, batch norm folded), softmax probabilities
  decide          cleanlab.filter.find_label_issues(labels, probs) with its
                  defaults, and cleanlab.rank.get_label_quality_scores

Usage:
  python3 benches/pytorch_cleanlab.py --train TRAIN.parquet --out FLAGGED.json [--folds 2] [--threads N]
writes FLAGGED.json: {"flagged": [rows], "quality_order": [rows, most likely
wrong first], "seconds": {...}, "fold_accuracy": [...]}.
"""

import argparse
import json
import time

import numpy as np
import pyarrow.parquet as pq
import torch
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.model_selection import StratifiedKFold

from benchlib import cores
from pytorch_job import LAYOUT, decode, logits_of, train
from pytorch_resnet import fold_batch_norm


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True, help="Parquet with img (struct of bytes) and label")
    ap.add_argument("--out", required=True, help="JSON file of the flagged rows")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=cores(), help="torch.set_num_threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seconds = {}
    t = time.perf_counter()
    images, labels = decode(pq.read_table(args.train, columns=["img", "label"]))
    seconds["read_decode"] = time.perf_counter() - t
    t = time.perf_counter()
    probs = np.zeros((len(labels), int(labels.max()) + 1), dtype=np.float32)
    accuracy = []
    folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=args.seed)
    for k, (fit, held) in enumerate(folds.split(np.zeros(len(labels)), labels.numpy())):
        model = train(images[fit], labels[fit], args.seed + k)
        model.eval()
        p = logits_of(fold_batch_norm(model, LAYOUT), images[held]).softmax(1).numpy()
        probs[held] = p
        accuracy.append(float((p.argmax(1) == labels[held].numpy()).mean()))
    seconds["cross_fit"] = time.perf_counter() - t
    t = time.perf_counter()
    y = labels.numpy()
    flagged = np.flatnonzero(find_label_issues(y, probs))
    quality = get_label_quality_scores(y, probs)
    seconds["decide"] = time.perf_counter() - t
    with open(args.out, "w") as f:
        json.dump(dict(flagged=flagged.tolist(), quality_order=np.argsort(quality, kind="stable").tolist(),
                       seconds=seconds, fold_accuracy=accuracy), f)


if __name__ == "__main__":
    main()
