"""Near-duplicates, sieve against the reference tools on the same rows, in
one run. Part of `make bench`.

Text (SST-2's training split, 67,349 sentences): shingles are 3-word runs
of the lowercased, whitespace-split words (a shorter sentence is one
shingle), 128 permutations, Jaccard threshold 0.8. Every tool's candidate
pairs are verified by its own estimated Jaccard (at least 0.8) and joined
into components whose first row is kept; a row is *flagged* when it is
not the first of its component.
  * sieve              `sieve prune` (defaults): the `minhash` column from
                       scoring (datasketch's MinHash bit for bit: the
                       bench also counts equal signatures), then the
                       near-duplicate stage; its seconds
                       are the `minhash` pass (`sieve sql`, the whole
                       process) plus the near-duplicate stage of the job's
                       manifest;
  * datasketch 2.0     MinHash (update_batch) + MinHashLSH(0.8, 128),
                       insert and query every row;
  * rensa              RMinHash + RMinHashLSH(0.8, 128, bands): its bands
                       must divide 128, so 8 of 16 (datasketch: 9 of 13);
                       insert and query every row.
Agreement is over flagged rows and over (row, first row of its component)
pairs, each tool against datasketch.

Images (CIFAR-10's test split, 10,000 images, JPEG-encoded in this
export): sieve's `phash` against the imagehash library's on the same bytes,
image by image: equal hashes and the largest Hamming distance; seconds for
each (sieve's is the `phash` pass of `sieve sql`). Each decodes the JPEG
itself, both with libjpeg-turbo's decoder (sieve: its C sources through the
mozjpeg crate; imagehash: Pillow's).

Usage (after building sieve, as `make bench` does):
  python3 benches/near_dup.py [--data-dir ../shared/datasets] [--work /tmp/sieve-bench]
  python3 benches/near_dup.py --banding   # datasketch's (bands, rows) for a few thresholds
"""

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

THRESHOLD = 0.8
PERMUTATIONS = 128
SHINGLE = 3


def shingles(text):
    words = text.lower().split()
    if not words:
        return []
    n = min(SHINGLE, len(words))
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def components(n, pairs):
    """First row of each row's component, from verified pairs (union-find)."""
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {i: find(i) for i in range(n) if find(i) != i}


def datasketch_run(texts):
    from datasketch import MinHash, MinHashLSH

    started = time.perf_counter()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=PERMUTATIONS)

    def signature(text):
        m = MinHash(num_perm=PERMUTATIONS)
        m.update_batch([s.encode() for s in shingles(text)])
        return m

    rep, hashes = lsh_components(texts, lsh, signature)
    return rep, time.perf_counter() - started, (lsh.b, lsh.r), hashes


def lsh_components(texts, lsh, signature):
    """Every text's signature into `lsh`, each queried back; candidates
    verified by the signatures' estimated Jaccard, then joined. Returns the
    components and the signatures."""
    hashes = []
    for i, t in enumerate(texts):
        hashes.append(signature(t))
        lsh.insert(i, hashes[-1])
    pairs = []
    for i, m in enumerate(hashes):
        for j in lsh.query(m):
            if j > i and m.jaccard(hashes[j]) >= THRESHOLD:
                pairs.append((i, j))
    return components(len(texts), pairs), hashes


def rensa_run(texts, bands):
    """rensa's LSH needs bands that divide the permutations: the divisor of
    128 nearest datasketch's."""
    from rensa import RMinHash, RMinHashLSH

    bands = min((b for b in range(1, PERMUTATIONS + 1) if PERMUTATIONS % b == 0), key=lambda b: abs(b - bands))
    started = time.perf_counter()
    lsh = RMinHashLSH(threshold=THRESHOLD, num_perm=PERMUTATIONS, num_bands=bands)

    def signature(text):
        m = RMinHash(num_perm=PERMUTATIONS, seed=1)
        m.update(shingles(text))
        return m

    return lsh_components(texts, lsh, signature)[0], time.perf_counter() - started, bands


def sieve_text(data_dir, work):
    sieve = benchlib.sieve_binary()
    out = work / "near-dup-sst2"
    subprocess.run([sieve, "prune", "--dataset", "sst2", "--data-dir", str(data_dir), "--out", str(out), "--quiet", "--no-report"], check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    started = time.perf_counter()
    subprocess.run([sieve, "sql", "--dataset", "sst2", "--data-dir", str(data_dir), "SELECT count(minhash(sentence)) FROM input"], check=True, capture_output=True)
    hashing = time.perf_counter() - started
    scores = pq.read_table(out / "scores.parquet", columns=["row", "near_dup_of", "id", "minhash"]).to_pydict()
    # The descriptor's id is the row position here, so near_dup_of names a row.
    rep = {r: o for r, o in zip(scores["row"], scores["near_dup_of"]) if o is not None}
    return rep, hashing + manifest["seconds"]["near_dups"], manifest["near_dups"], scores["minhash"]


def agreement(rep, reference):
    flagged, ref_flagged = set(rep), set(reference)
    pairs, ref_pairs = set(rep.items()), set(reference.items())
    recall = len(flagged & ref_flagged) / max(len(ref_flagged), 1)
    precision = len(flagged & ref_flagged) / max(len(flagged), 1)
    pair_recall = len(pairs & ref_pairs) / max(len(ref_pairs), 1)
    pair_precision = len(pairs & ref_pairs) / max(len(pairs), 1)
    return precision, recall, pair_precision, pair_recall


def images(data_dir):
    import imagehash
    from PIL import Image

    sieve = benchlib.sieve_binary()
    table = pq.read_table(Path(data_dir) / "cifar10" / "test.parquet", columns=["img"])
    blobs = [d["bytes"] for d in table.column("img").to_pylist()]
    started = time.perf_counter()
    theirs = [int(str(imagehash.phash(Image.open(io.BytesIO(b)))), 16) for b in blobs]
    their_seconds = time.perf_counter() - started
    query = "SELECT phash(img) AS h FROM input ORDER BY __pos"
    test = str(Path(data_dir) / "cifar10" / "test.parquet")
    started = time.perf_counter()
    command = [sieve, "sql", "--input", test, "--image-column", "img", "--label-column", "label", "--format", "json", query]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    our_seconds = time.perf_counter() - started
    ours = [json.loads(line)["h"] for line in done.stdout.splitlines() if line.strip()]
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    distances = [bin(a ^ b).count("1") for a, b in zip(ours, theirs)]
    return sum(d == 0 for d in distances) / len(distances), max(distances), our_seconds, their_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--work", default="/tmp/sieve-bench")
    parser.add_argument("--banding", action="store_true", help="print datasketch's banding and stop")
    args = parser.parse_args()
    if args.banding:
        from datasketch import MinHashLSH

        for t, n in [(0.8, 128), (0.5, 128), (0.9, 256), (0.7, 64)]:
            lsh = MinHashLSH(threshold=t, num_perm=n)
            print(f"threshold {t}, {n} permutations: bands {lsh.b}, rows {lsh.r}")
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    texts = pq.read_table(Path(args.data_dir) / "sst2" / "train.parquet", columns=["sentence"]).column("sentence").to_pylist()
    ours, our_seconds, found, our_signatures = sieve_text(args.data_dir, work)
    reference, ref_seconds, (bands, rows), their_signatures = datasketch_run(texts)
    # A text without words has no signature in sieve (null) and datasketch's
    # empty one (every value 2^32 - 1).
    same = sum(a is not None and list(a) == [int(v) for v in m.hashvalues] for a, m in zip(our_signatures, their_signatures))
    if (bands, rows) != (found["bands"], found["rows_per_band"]):
        print(f"warning: banding differs: sieve {found['bands']}x{found['rows_per_band']}, datasketch {bands}x{rows}")
    theirs, rensa_seconds, rensa_bands = rensa_run(texts, bands)
    rows_out = []
    tools = [("sieve", ours, our_seconds), ("datasketch 2.0", reference, ref_seconds)]
    tools.append((f"rensa ({rensa_bands} bands of {PERMUTATIONS // rensa_bands})", theirs, rensa_seconds))
    for name, rep, seconds in tools:
        p, r, pp, pr = agreement(rep, reference)
        rows_out.append([name, f"{len(rep):,}", f"{p:.3f}", f"{r:.3f}", f"{pp:.3f}", f"{pr:.3f}", f"{seconds:.1f}", f"{ref_seconds / seconds:.1f}x"])
    print(f"SST-2 train, {len(texts):,} rows: near-duplicates at Jaccard {THRESHOLD} ({PERMUTATIONS} permutations, {SHINGLE}-word shingles, {bands} bands of {rows})")
    print(f"sieve's minhash equals datasketch's MinHash on {same:,} of {len(texts):,} rows\n")
    benchlib.markdown_table(["tool", "flagged", "precision", "recall", "pair precision", "pair recall", "seconds", "speed vs datasketch"], rows_out)
    equal, worst, ours_s, theirs_s = images(args.data_dir)
    print(f"\nCIFAR-10 test, 10,000 images: sieve's phash equals imagehash's on {equal:.2%}, largest difference {worst} bits; sieve {ours_s:.1f} s, imagehash {theirs_s:.1f} s ({theirs_s / ours_s:.1f}x)")


if __name__ == "__main__":
    main()
