"""Greedy k-center per class on SST-2's MiniLM embeddings (67,349 x 384):
sieve's k-center against the textbook loop, in Rust in the same process
and in PyTorch, on the same rows, in one run. Part of `make bench`.

  * in one process  `selection/examples/kcenter_speed.rs`: sieve's
             working-set loop and the textbook loop as sieve shipped it
             before (every row lowered against each pick, 2 threads), from
             the same first picks, and whether the picks are identical;

  * sieve    `sieve select --strategy kcenter --keep K` over the scores of a
             `sieve prune --score prototype` (MiniLM embeddings, made once
             into .bench/sst2-minilm); its seconds
             are the k-center step of the manifest (`global.seconds`) and
             the whole `select` process.
  * PyTorch  the loop as DeepCore and SVP's code write it: after each pick,
             every row's squared distance to it (|x|^2 + |c|^2 - 2 x.c, one
             matrix-vector product), the running minimum, and the argmax;
             fp32, the same threads. It starts each class from sieve's first
             pick (the row with the lowest `kcenter_rank`), so both follow
             the same greedy path, and the bench reports how many of sieve's
             picks it picks too (rounding in the distances can break a near
             tie the other way).

Usage (after building sieve, as `make bench` does):
  python3 benches/kcenter.py [--data-dir ../shared/datasets] [--keep 0.7] [--threads 2]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402


def torch_k_center(x, first, budget):
    """The textbook greedy loop from `first`: `budget` picks in order."""
    import torch

    sq = (x * x).sum(1)
    mins = torch.full((x.shape[0],), float("inf"))
    picks = [first]
    while True:
        c = picks[-1]
        d = sq + sq[c] - 2.0 * (x @ x[c])
        torch.minimum(mins, d, out=mins)
        mins[c] = -1.0
        if len(picks) == budget:
            return picks
        picks.append(int(torch.argmax(mins)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=str(benchlib.ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--work", default=str(benchlib.ROOT / ".bench" / "kcenter"))
    ap.add_argument("--keep", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sieve, work = benchlib.sieve_binary(), Path(args.work)
    data = ["--dataset", "sst2", "--data-dir", args.data_dir, "--threads", str(args.threads), "--quiet"]
    scored = benchlib.sst2_scores(sieve, args.data_dir, "models/all-MiniLM-L6-v2", args.threads)
    table = pq.read_table(scored / "scores.parquet", columns=["row", "label", "embedding", "error"])
    valid = [i for i, e in enumerate(table["error"].to_pylist()) if e is None]
    emb = np.array(table["embedding"].to_pylist(), dtype=np.float32)[valid]
    labels = np.array(table["label"].to_pylist())[valid]
    work.mkdir(parents=True, exist_ok=True)
    emb.astype("<f4").tofile(work / "embeddings.f32")
    labels.astype("<u4").tofile(work / "labels.u32")
    speed = subprocess.run([str(benchlib.release_binary("examples/kcenter_speed")), str(work / "embeddings.f32"),
                            str(emb.shape[1]), str(work / "labels.u32"), str(args.keep)],
                           check=True, capture_output=True, text=True).stdout
    speed = json.loads(speed.strip().splitlines()[-1])
    out = work / "select"
    ours = benchlib.run_measured([sieve, "select", *data, "--scores", scored, "--strategy", "kcenter",
                                  "--keep", args.keep, "--out", out])
    manifest = json.loads((out / "manifest.json").read_text())
    step = dict(manifest["global"]["seconds"])["kcenter"]
    ranks = pq.read_table(out / "scores.parquet", columns=["row", "kcenter_rank"])
    rank_of = dict(zip(ranks["row"].to_pylist(), ranks["kcenter_rank"].to_pylist()))
    rows = np.array(table["row"].to_pylist())[valid]
    theirs_s, same, picked = 0.0, 0, 0
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        ranked = sorted((rank_of[rows[i]], j) for j, i in enumerate(idx) if rank_of.get(rows[i]) is not None)
        ours_picks = {j for _, j in ranked}
        x = torch.from_numpy(np.ascontiguousarray(emb[idx]))
        start = time.perf_counter()
        theirs = torch_k_center(x, ranked[0][1], len(ranked))
        theirs_s += time.perf_counter() - start
        same += len(ours_picks.intersection(theirs))
        picked += len(ranked)
    print(f"\n### k-center per class, SST-2 MiniLM ({len(rows):,} x {emb.shape[1]}), keep {args.keep}: "
          f"{picked:,} picks, {args.threads} threads, {benchlib.cpu_name()}\n")
    benchlib.markdown_table(
        ["impl", "k-center s", "whole process s", "vs PyTorch"],
        [["sieve select", f"{step:.2f}", f"{ours.wall:.1f}", f"{theirs_s / step:.1f}x"],
         ["PyTorch textbook loop", f"{theirs_s:.1f}", "", "1.0x"]])
    print(f"\nIn one process (kcenter_speed): sieve {speed['sieve_s']:.2f} s, the textbook loop "
          f"{speed['textbook_s']:.2f} s (**{speed['textbook_s'] / speed['sieve_s']:.1f}x**), "
          f"identical picks: {speed['identical']}")
    print(f"\nsame picks: {same:,} of {picked:,} ({same / picked:.2%})")


if __name__ == "__main__":
    main()
