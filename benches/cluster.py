"""sieve on a Ballista cluster against one process, on the same cores: the
overhead of `sieve score --cluster`, where its time goes, and what to expect
at 10, 100 and 1,000 executors on ImageNet-sized data. Part of `make bench`.

In one run, alternating (three rounds, medians), on CIFAR-10 train (50,000
images, 10 row groups) with one proxy (ResNet-8 trained for 1 epoch into
--work once; the bench measures throughput, not accuracy):
  * local:  `sieve score --threads 2`, one process;
  * 1 x 2:  the same with `--cluster`, one executor of 2 vcores;
  * 2 x 1:  the same with `--cluster`, two executors of 1 vcore each.
The scheduler and executors are started once per layout, before its runs, on
127.0.0.1 with free ports (waited for by their health probes) and stopped
after: a cluster is a long-lived service, so its start is not timed. Each run
is timed as the whole client process, from start to exit, and every run must
write the same scores.parquet bytes as the local one.

Where the time goes, per cluster run: the job (Ballista's "finished executing
in" on the client), planning (the scheduler's "planning took"), the tasks'
own seconds (the executors' "Finished task ... in", summed and divided by the
vcores: the time the slots were busy), and the rest of the score stage (the
client's merge of the shards into scores.parquet).

Then the scaling estimate, from the measured per-row task cost of a
realistic ImageNet image: 500 synthetic 500x375 JPEGs (~110 KB, as
ImageNet's average) scored locally with the same proxy (decoded and resized
to 32x32). See the README's "On a cluster" for the model and its limits.

Usage (after building sieve, as `make bench` does):
  python3 benches/cluster.py [--data-dir ../shared/datasets] [--work /tmp/sieve-bench]
"""

import argparse
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

from benchlib import ROOT, markdown_table, run_measured, sieve_binary

ROUNDS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class Cluster:
    """A scheduler and `executors` executors of `vcores` each, on 127.0.0.1;
    stopped (killed and reaped) by `stop`, also when the bench fails."""

    def __init__(self, sieve: str, work: Path, executors: int, vcores: int):
        self.dir = work / f"cluster-{executors}x{vcores}"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.procs = []
        self.logs = []
        port = free_port()
        self.url = f"df://127.0.0.1:{port}"
        self._start([sieve, "cluster", "scheduler", "--bind-host", "127.0.0.1", "--bind-port", str(port)],
                    "scheduler", port, "/healthz")
        for i in range(executors):
            health, ex = free_port(), self.dir / f"executor-{i}"
            ex.mkdir()
            self._start([sieve, "cluster", "executor", "--bind-host", "127.0.0.1", "--scheduler-host", "127.0.0.1",
                         "--scheduler-port", str(port), "--bind-port", str(free_port()), "--bind-grpc-port",
                         str(free_port()), "--bind-health-port", str(health), "--vcores", str(vcores), "--work-dir",
                         str(ex)], f"executor-{i}", health, "/readyz")
        self.vcores = executors * vcores

    def _start(self, cmd, name, port, probe, limit=60):
        log = self.dir / f"{name}.log"
        self.logs.append(log)
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"))
        self.procs.append(proc)
        started = time.monotonic()
        while not http_ok(port, probe):
            if proc.poll() is not None or time.monotonic() - started > limit:
                self.stop()
                raise SystemExit(f"{name} did not become ready:\n{log.read_text()}")
            time.sleep(0.1)

    def log_text(self, since: dict) -> str:
        """What the nodes logged after the offsets in `since` (updated)."""
        text = []
        for log in self.logs:
            data = log.read_text()
            text.append(data[since.get(log, 0):])
            since[log] = len(data)
        return "".join(text)

    def stop(self):
        for proc in self.procs:
            proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=30)
        self.procs = []


def score(sieve, data, proxy, out, cluster=None):
    """One `sieve score` of CIFAR-10 train; (wall seconds, score-stage seconds, client stderr)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sieve, "score", "--dataset", "cifar10", "--data-dir", data, "--proxy-dir", proxy, "--out", out,
           "--threads", "2"]
    if cluster:
        cmd += ["--cluster", cluster.url]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{proc.stderr}")
    manifest = json.loads((out / "manifest.json").read_text())
    return wall, manifest["seconds"]["score"], proc.stderr


UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def seconds(prefix, text):
    """The durations (Rust's `Duration` debug format: 1.5s, 802.1µs) logged after `prefix`, in seconds."""
    return [float(n) * UNITS[u] for n, u in re.findall(prefix + r"([0-9.]+)(ns|µs|us|ms|s)\b", text)]


def imagenet_like(dest: Path, n=500):
    """`n` 500x375 JPEGs of about ImageNet's mean size (110 KB): smooth
    gradients with grain, so they compress like photographs, not like noise."""
    if dest.exists():
        return
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image
    rng = np.random.default_rng(0)
    images, sizes = [], []
    y, x = np.mgrid[0:375, 0:500]
    for _ in range(n):
        base = np.stack([np.sin(x / rng.uniform(20, 90) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(20, 90))
                         for _ in range(3)], axis=-1)
        pixels = np.clip(128 + 90 * base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
        images.append({"bytes": buf.getvalue(), "path": None})
        sizes.append(len(buf.getvalue()))
    table = pa.table({"img": images, "label": pa.array(rng.integers(0, 10, n), pa.int64())})
    dest.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, dest.with_suffix(".tmp"), row_group_size=n)
    dest.with_suffix(".tmp").rename(dest)
    print(f"imagenet-like: {n} JPEGs, mean {statistics.mean(sizes) / 1e3:.0f} KB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--work", default="/tmp/sieve-bench")
    args = ap.parse_args()
    data, work = Path(args.data_dir).resolve(), Path(args.work).resolve()
    sieve = sieve_binary()
    proxy = work / "proxy-image"
    if not (proxy / "proxy.json").exists():
        run_measured([sieve, "train", "--dataset", "cifar10", "--data-dir", data, "--epochs", "1", "--out", proxy,
                      "--quiet"])

    layouts = {"local": None, "1 x 2": (1, 2), "2 x 1": (2, 1)}
    results = {name: [] for name in layouts}
    reference = None
    for name, layout in layouts.items():
        cluster = Cluster(sieve, work, *layout) if layout else None
        try:
            since = {}
            if cluster:
                cluster.log_text(since)
            for _ in range(ROUNDS):
                out = work / f"out-cluster-{name.replace(' ', '')}"
                wall, stage, stderr = score(sieve, data, proxy, out, cluster)
                scores = (out / "scores.parquet").read_bytes()
                reference = reference or scores
                if scores != reference:
                    raise SystemExit(f"{name}: scores.parquet differs from the local run's")
                run = {"wall": wall, "stage": stage}
                if cluster:
                    nodes = cluster.log_text(since)
                    tasks = seconds(r"Finished task : \[[^\]]+\] in ", nodes)
                    run["job"] = seconds(r"finished executing in ", stderr)[-1]
                    run["planning_ms"] = seconds(r"planning took ", nodes)[-1] * 1e3
                    run["task_busy"] = sum(tasks) / cluster.vcores
                    run["tasks"] = len(tasks)
                results[name].append(run)
        finally:
            if cluster:
                cluster.stop()

    med = lambda name, key: statistics.median(r[key] for r in results[name])
    local = med("local", "wall")
    rows = [["local, 2 threads", f"{local:.2f}", "1.00", f"{med('local', 'stage'):.2f}", "", "", "", ""]]
    for name in ("1 x 2", "2 x 1"):
        rows.append([f"cluster {name} vcores", f"{med(name, 'wall'):.2f}", f"{med(name, 'wall') / local:.2f}",
                     f"{med(name, 'stage'):.2f}", f"{med(name, 'job'):.2f}", f"{med(name, 'planning_ms'):.1f}",
                     f"{med(name, 'task_busy'):.2f} ({int(med(name, 'tasks'))} tasks)",
                     f"{med(name, 'stage') - med(name, 'job'):.2f}"])
    print(f"\nsieve score, CIFAR-10 train (50,000 images), medians of {ROUNDS} alternating runs; "
          "every run wrote the local scores.parquet bytes\n")
    markdown_table(["run", "wall s", "cluster/local", "score stage s", "job s", "planning ms",
                    "task-seconds / vcore", "merge s"], rows)

    # The scaling estimate: the measured per-image cost of an ImageNet-sized JPEG.
    big = work / "imagenet-like" / "train.parquet"
    imagenet_like(big)
    out = work / "out-imagenet-like"
    shutil.rmtree(out, ignore_errors=True)
    run_measured([sieve, "score", "--input", big, "--image-column", "img", "--label-column", "label",
                  "--proxy-dir", proxy, "--out", out, "--quiet", "--threads", "1"])
    per_image = json.loads((out / "manifest.json").read_text())["seconds"]["score"] / 500
    task_overhead = max(0.0, (med("2 x 1", "job") - med("2 x 1", "task_busy")) / math.ceil(10 / 2))
    merge_per_row = (med("2 x 1", "stage") - med("2 x 1", "job")) / 50_000
    print(f"\nper image on one core, 500x375 JPEG decoded, resized, scored: {per_image * 1e3:.2f} ms; "
          f"per task beyond its rows (launch, answer), from the 2 x 1 run: {task_overhead * 1e3:.0f} ms; "
          f"the client's merge: {merge_per_row * 1e6:.1f} µs per row\n")
    images = 1_281_167
    merge = images * merge_per_row
    est = []
    for row_group in (5_000, 1_000):
        tasks = math.ceil(images / row_group)
        for executors in (10, 100, 1000):
            waves = math.ceil(tasks / executors)  # one vcore each
            scoring = waves * (row_group * per_image + task_overhead)
            total = scoring + merge
            est.append([f"{row_group:,}", str(executors), f"{tasks:,}", str(waves), f"{scoring:,.0f}", f"{merge:.0f}",
                        f"{images / total:,.0f}", f"{110e9 / scoring / 1e9:.1f}"])
    print("ImageNet-sized scoring (1.28 M images, 110 GB of JPEG), 1-vcore executors, from the figures above:\n")
    markdown_table(["rows per row group", "executors", "tasks", "waves", "scoring s", "client merge s",
                    "images/s", "input GB/s while scoring"], est)


if __name__ == "__main__":
    main()
