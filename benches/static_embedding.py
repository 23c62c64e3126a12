"""Static embeddings (`--embedding static`, all-MiniLM-L6-v2 distilled by
`sieve distill` as model2vec distills it): speed against model2vec on the
same model directory and against MiniLM, and agreement with MiniLM on the
methods that read embeddings, on SST-2's 67,349 training sentences, in one
run. Part of `make bench`.

Speed (sentences/s; 2 threads each):
  * sieve static   `sieve sql "SELECT count(text_embedding('<static dir>',
                   sentence)) FROM input"` over SST-2: the whole process
                   (start, reading Parquet, tokenizing, embedding);
  * model2vec      `StaticModel.from_pretrained(<the same dir>).encode(...)`
                   on the sentences already in a Python list (encode only);
  * sieve MiniLM   the same query with the encoder, on the first 10,000
                   sentences (it takes minutes on all of them).
Agreement:
  * with model2vec on the same directory: the cosine between the two
    embeddings of every sentence (mean and minimum), which checks that the
    layout, tokenization and pooling are model2vec's;
  * with MiniLM, each method run on each embedding (`sieve prune --score
    prototype --embedding E`, then `sieve select` over its scores):
    prototype scores (Spearman), SemDeDup at eps 0.01 (rows each flags,
    and both), and k-center per class at keep 0.7 (coverage in MiniLM's
    space: the mean and the largest distance from an unpicked row to its
    nearest pick of its class, for static's picks, MiniLM's and a random
    70%).

Usage (after `make build` and `make models`, as `make bench` does):
  python3 benches/static_embedding.py [--data-dir ../shared/datasets]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

MINILM = "models/all-MiniLM-L6-v2"
STATIC = "models/all-MiniLM-L6-v2-static"


def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def sieve_sql(sieve, data_dir, query):
    """Runs `sieve sql` over SST-2 (on every core); returns (seconds of the
    whole process, stdout)."""
    cmd = [sieve, "sql", "--dataset", "sst2", "--data-dir", data_dir, "--format", "csv", query]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=benchlib.ROOT, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - start, out


def selected(sieve, data_dir, scores, name, flags, column, threads, n):
    """`sieve select` over `scores` into .bench/<name>: for every row, in
    row order, whether `column` of its scores.parquet is set."""
    out = benchlib.ROOT / ".bench" / name
    benchlib.run_measured([sieve, "select", "--dataset", "sst2", "--data-dir", data_dir, "--scores", scores,
                           "--threads", threads, "--quiet", *flags, "--out", out])
    table = pq.read_table(out / "scores.parquet", columns=["row", column])
    mask = np.zeros(n, dtype=bool)
    mask[np.array(table["row"].to_pylist())] = np.array(table[column].is_valid().to_pylist())
    return mask


def coverage(emb, labels, picked):
    """Mean and largest distance from an unpicked row to its class's nearest pick."""
    import torch

    dists = []
    for label in np.unique(labels):
        cls = labels == label
        x = torch.from_numpy(emb[cls & ~picked])
        p = torch.from_numpy(emb[cls & picked])
        best = torch.full((x.shape[0],), float("inf"))
        for s in range(0, p.shape[0], 4096):
            torch.minimum(best, torch.cdist(x, p[s : s + 4096]).min(1).values, out=best)
        dists.append(best.numpy())
    d = np.concatenate(dists)
    return float(d.mean()), float(d.max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=str(benchlib.ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch
    from model2vec import StaticModel

    torch.set_num_threads(args.threads)
    sieve = benchlib.sieve_binary()
    sentences = pq.read_table(Path(args.data_dir) / "sst2" / "train.parquet", columns=["sentence"])
    sentences = sentences["sentence"].to_pylist()
    n = len(sentences)

    query = f"SELECT count(text_embedding('{STATIC}', sentence)) FROM input"
    static_s, _ = sieve_sql(sieve, args.data_dir, query)
    minilm_rows = 10_000
    query = f"SELECT count(text_embedding('{MINILM}', sentence)) FROM (SELECT sentence FROM input LIMIT {minilm_rows})"
    minilm_s, _ = sieve_sql(sieve, args.data_dir, query)
    model = StaticModel.from_pretrained(str(benchlib.ROOT / STATIC))
    start = time.perf_counter()
    theirs = model.encode(sentences)
    m2v_s = time.perf_counter() - start

    fast_dir = benchlib.sst2_scores(sieve, args.data_dir, "static", args.threads)
    slow_dir = benchlib.sst2_scores(sieve, args.data_dir, MINILM, args.threads)
    fast = pq.read_table(fast_dir / "scores.parquet", columns=["row", "label", "embedding", "prototype", "error"])
    slow = pq.read_table(slow_dir / "scores.parquet", columns=["row", "label", "embedding", "prototype", "error"])
    assert fast["row"].to_pylist() == slow["row"].to_pylist() == list(range(n)), "both in row order"
    ours = np.array(fast["embedding"].to_pylist(), dtype=np.float32)
    theirs = theirs / np.maximum(np.linalg.norm(theirs, axis=1, keepdims=True), 1e-12)
    agree = (ours * theirs).sum(1)
    known = np.linalg.norm(ours, axis=1) > 0
    labels = np.array(slow["label"].to_pylist())
    minilm = np.array(slow["embedding"].to_pylist(), dtype=np.float32)

    rho = spearman(np.array(fast["prototype"].to_pylist()), np.array(slow["prototype"].to_pylist()))
    dups = {}
    kc = {}
    for name, scores in (("static", fast_dir), ("minilm", slow_dir)):
        dups[name] = set(np.flatnonzero(selected(sieve, args.data_dir, scores, f"sst2-{name}-dedup",
                                                 ["--dedup", "0.01"], "dup_of", args.threads, n)))
        kc[name] = selected(sieve, args.data_dir, scores, f"sst2-{name}-kcenter",
                            ["--strategy", "kcenter", "--keep", "0.7"], "kcenter_rank", args.threads, n)
    rng = np.random.default_rng(0)
    kc["random"] = np.zeros(n, dtype=bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        kc["random"][rng.choice(idx, round(0.7 * len(idx)), replace=False)] = True

    print(f"\n### Static embeddings, SST-2 train ({n:,} sentences), {args.threads} threads, {benchlib.cpu_name()}\n")
    benchlib.markdown_table(["embedding", "seconds", "sentences/s", "vs MiniLM"], [
        ["sieve static (whole `sieve sql` process)", f"{static_s:.2f}", f"{n / static_s:,.0f}",
         f"{(n / static_s) / (minilm_rows / minilm_s):,.0f}x"],
        ["model2vec 0.10 on the same directory (encode only)", f"{m2v_s:.2f}", f"{n / m2v_s:,.0f}",
         f"{(n / m2v_s) / (minilm_rows / minilm_s):,.0f}x"],
        [f"sieve MiniLM (first {minilm_rows:,})", f"{minilm_s:.1f}", f"{minilm_rows / minilm_s:,.0f}", "1x"],
    ])
    print(f"\nsieve against model2vec, same directory: cosine mean {agree[known].mean():.6f}, "
          f"min {agree[known].min():.6f} over the {known.sum():,} sentences with a known token "
          f"({n - known.sum()} have none: zero in both)\n")
    both = dups["static"] & dups["minilm"]
    rows = [["prototype scores (k = 2), Spearman against MiniLM's", f"{rho:.3f}"],
            ["SemDeDup eps 0.01: rows flagged (static / MiniLM / both)",
             f"{len(dups['static']):,} / {len(dups['minilm']):,} / {len(both):,}"]]
    for name in ("static", "minilm", "random"):
        mean, worst = coverage(minilm, labels, kc[name])
        rows.append([f"k-center keep 0.7, {name} picks: distance to the nearest pick in MiniLM space (mean / max)",
                     f"{mean:.4f} / {worst:.4f}"])
    benchlib.markdown_table(["agreement with MiniLM", "figure"], rows)


if __name__ == "__main__":
    main()
