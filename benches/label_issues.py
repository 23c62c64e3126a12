"""Label errors found on CIFAR-10 with 10% of its training labels flipped
(benches/noisy_labels.py, seed 0), sieve against cleanlab, in one run. Part
of `make bench`.

Each job is timed as a whole process, on the same cores, one after another:
  * sieve (defaults)    `sieve prune --keep 0.5`: in-sample probabilities of
                        the proxy, label errors counted from its held-out
                        accuracy;
  * sieve --folds 2     out-of-sample probabilities from 2 fold proxies;
  * sieve --folds 2 --issue-count joint
                        the same probabilities decided by the calibrated
                        confident joint per class (cleanlab's
                        prune_by_class); `sieve select` re-decides from the
                        scores of the run above, so its seconds are the
                        decision's alone;
  * PyTorch + cleanlab  benches/pytorch_cleanlab.py: 2-fold cross-validated
                        probabilities of the same ResNet-8 recipe, and
                        cleanlab's find_label_issues with its defaults;
  * cleanlab on sieve's probabilities
                        find_label_issues (defaults) on the --folds 2 run's
                        out-of-sample `probs`, timed in this process: the
                        decision alone, on the same numbers.
Each row gives the rows flagged, their precision and recall against the
flipped rows, F1, the share of the flips among the 10% of rows ranked most
likely wrong (sieve's `label_quality`, cleanlab's label quality scores),
and seconds.

Usage (after building sieve, as `make bench` does):
  python3 benches/label_issues.py [--data-dir ../shared/datasets] [--work /tmp/sieve-bench]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from benchlib import ROOT, markdown_table, run_measured, sieve_binary


def figures(flagged, order, flipped, rows):
    """(flagged, precision, recall, F1, share of flips in the top 10% of `order`)."""
    hits = len(flagged & flipped)
    p, r = hits / max(len(flagged), 1), hits / len(flipped)
    top = set(order[: round(0.1 * rows)])
    return len(flagged), p, r, 2 * p * r / max(p + r, 1e-12), len(top & flipped) / len(flipped)


def sieve_figures(out, flipped):
    t = pq.read_table(Path(out) / "scores.parquet", columns=["row", "label_issue", "label_quality"])
    rows = t["row"].to_numpy()
    issue = np.array(t["label_issue"].to_pylist(), dtype=bool)
    quality = np.nan_to_num(np.array(t["label_quality"].to_pylist(), dtype=float), nan=-1.0)
    order = rows[np.lexsort((rows, -quality))].tolist()
    return figures(set(rows[issue].tolist()), order, flipped, len(rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="../shared/datasets")
    ap.add_argument("--work", default="/tmp/sieve-bench")
    args = ap.parse_args()
    data = Path(args.data_dir).resolve() / "cifar10"
    work = Path(args.work).resolve() / "label-issues"
    noisy = work / "cifar10-noisy"
    if not (noisy / "flipped.json").is_file():
        subprocess.run([sys.executable, ROOT / "benches/noisy_labels.py", "--input", data / "train.parquet",
                        "--out", noisy], check=True)
    flipped = set(json.loads((noisy / "flipped.json").read_text())["rows"])
    sieve = sieve_binary()
    rows_in = ["--input", noisy / "train.parquet", "--image-column", "img", "--label-column", "label"]
    prune = [sieve, "prune", *rows_in, "--heldout", data / "test.parquet", "--keep", "0.5", "--quiet"]
    results = []
    for name, extra, out in [("sieve (defaults)", [], "in-sample"), ("sieve --folds 2", ["--folds", "2"], "folds2")]:
        m = run_measured([*prune, *extra, "--out", work / out])
        results.append((name, *sieve_figures(work / out, flipped), m.wall))
    m = run_measured([sieve, "select", *rows_in, "--scores", work / "folds2", "--keep", "0.5", "--issue-count", "joint",
                      "--quiet", "--out", work / "folds2-joint"])
    results.append(("sieve --folds 2 --issue-count joint (decision only)",
                    *sieve_figures(work / "folds2-joint", flipped), m.wall))
    peer_out = work / "cleanlab.json"
    m = run_measured([sys.executable, ROOT / "benches/pytorch_cleanlab.py", "--train", noisy / "train.parquet",
                      "--out", peer_out, "--folds", "2"])
    peer = json.loads(peer_out.read_text())
    results.append(("PyTorch 2-fold + cleanlab", *figures(set(peer["flagged"]), peer["quality_order"], flipped,
                                                         len(peer["quality_order"])), m.wall))
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    t = pq.read_table(work / "folds2" / "scores.parquet", columns=["row", "label", "probs"])
    labels, probs = t["label"].to_numpy(), np.array(t["probs"].to_pylist(), dtype=np.float32)
    start = time.perf_counter()
    flagged = np.flatnonzero(find_label_issues(labels, probs))
    order = np.argsort(get_label_quality_scores(labels, probs), kind="stable")
    decide = time.perf_counter() - start
    rows = t["row"].to_numpy()
    results.append(("cleanlab on sieve's --folds 2 probs (decision only)",
                    *figures(set(rows[flagged].tolist()), rows[order].tolist(), flipped, len(rows)), decide))
    print(f"\nCIFAR-10 train, {len(flipped)} of 50,000 labels flipped uniformly (seed 0); proxy ResNet-8, 4 epochs")
    markdown_table(["job", "flagged", "precision", "recall", "F1", "flips in top 10%", "seconds"],
                   [[name, f"{n:,}", f"{p:.3f}", f"{r:.3f}", f"**{f1:.3f}**", f"{top:.1%}", f"{s:.1f}"]
                    for name, n, p, r, f1, top, s in results])


if __name__ == "__main__":
    main()
