"""all-MiniLM-L6-v2 text embeddings: sieve's encoder against
sentence-transformers on PyTorch (fp32), on the same sentences (the first
10,000 of SST-2 train), the same threads (`sieve sql` runs on every core, the
peer on `--threads`, by default as many) and the same model directory, in one
run. Part of `make bench`.

  * sieve               `sieve sql "SELECT count(text_embedding(
                        'models/all-MiniLM-L6-v2', sentence)) FROM ..."`: the
                        whole process (start, reading Parquet, loading the
                        model, tokenizing, embedding);
  * sentence-transformers  `SentenceTransformer(<the same dir>).encode(...)`
                        on the sentences already in a Python list, model
                        loaded before the clock starts (encode only), at its
                        default batch size (32) and at 128, the best of the
                        two taken.

Runs alternate (sieve, then the peer's two batch sizes) `--rounds` times; the
ratio is the peer's best time over sieve's best. Agreement: the cosine
between sieve's and the peer's embedding of every sentence (mean, minimum),
which the issue wants at least 0.9999.

Usage (after `make build` and `make models`, as `make bench` does):
  python3 benches/text_encoder.py [--data-dir ../shared/datasets]
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

MINILM = "models/all-MiniLM-L6-v2"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=str(benchlib.ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--threads", type=int, default=benchlib.cores(), help="the peer's threads (sieve sql runs on every core)")
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    sieve = benchlib.sieve_binary()
    sentences = pq.read_table(Path(args.data_dir) / "sst2" / "train.parquet", columns=["sentence"])
    sentences = sentences["sentence"].to_pylist()[: args.rows]
    source = f"(SELECT sentence FROM input LIMIT {args.rows})"

    def sieve_sql(select, fmt="csv"):
        cmd = [sieve, "sql", "--dataset", "sst2", "--data-dir", args.data_dir, "--format", fmt,
               f"SELECT {select} FROM {source}"]
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=benchlib.ROOT, check=True, capture_output=True, text=True).stdout
        return time.perf_counter() - start, out

    model = SentenceTransformer(str(benchlib.ROOT / MINILM), device="cpu")
    times = {"sieve": [], "st32": [], "st128": []}
    theirs = None
    for _ in range(args.rounds):
        times["sieve"].append(sieve_sql(f"count(text_embedding('{MINILM}', sentence))")[0])
        for batch in (32, 128):
            start = time.perf_counter()
            theirs = model.encode(sentences, batch_size=batch, normalize_embeddings=True)
            times[f"st{batch}"].append(time.perf_counter() - start)
        print({k: [round(t, 2) for t in v] for k, v in times.items()}, flush=True)

    _, out = sieve_sql(f"text_embedding('{MINILM}', sentence) AS e", fmt="json")
    ours = np.array([json.loads(line)["e"] for line in out.splitlines() if line.strip()], dtype=np.float32)
    cosine = (ours * theirs).sum(1) / np.maximum(np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1), 1e-12)

    best = {k: min(v) for k, v in times.items()}
    peer = min(best["st32"], best["st128"])
    print(f"\nall-MiniLM-L6-v2, {len(sentences):,} SST-2 sentences, {args.threads} threads, {benchlib.cpu_name()}")
    benchlib.markdown_table(
        ["embedder", "seconds (best)", "sentences/s"],
        [
            ["sieve (whole `sieve sql` process)", f"{best['sieve']:.1f}", f"{len(sentences) / best['sieve']:,.0f}"],
            ["sentence-transformers, batch 32 (encode only)", f"{best['st32']:.1f}",
             f"{len(sentences) / best['st32']:,.0f}"],
            ["sentence-transformers, batch 128 (encode only)", f"{best['st128']:.1f}",
             f"{len(sentences) / best['st128']:,.0f}"],
        ],
    )
    print(f"\nsieve / sentence-transformers at its best: {peer / best['sieve']:.2f}x (target 1.5x)")
    print(f"cosine to sentence-transformers: mean {cosine.mean():.6f}, min {cosine.min():.6f} (target >= 0.9999)")


if __name__ == "__main__":
    main()
