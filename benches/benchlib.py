"""Helpers shared by the `make bench` scripts: where the built binaries are, a
process runner that measures a job's wall time, CPU time and its own peak RSS,
and markdown tables.

Peak RSS is read by GNU time (`/usr/bin/time -f %M`, Debian package `time`),
not from the `wait4` of a child of this Python process: on Linux, exec folds
the high-water mark of the memory the process had before (this script's,
shared by vfork or copied by fork) into the child's `maxrss`, so every job
would read at least as large as the script that started it. GNU time is
small and forks the job itself, so its `%M` is the job's own peak. The first
measured run checks that this holds (a trivial job must read a few MiB, a job
that touches 64 MiB at least that) and stops the script loudly otherwise.

The scripts do not build anything: `make bench` builds the sieve binary and
the examples first. Run on their own, they read the binaries from
`$CARGO_TARGET_DIR` (default `target/` in the repository).
"""

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GNU_TIME = "/usr/bin/time"


def target_dir() -> Path:
    """Cargo's target directory, as the Makefile sets it."""
    return ROOT / os.environ.get("CARGO_TARGET_DIR", "target")


def release_binary(name: str) -> Path:
    """`<target>/release/<name>` (e.g. `sieve`, `examples/bench_conv`); stops the
    script with the command that builds it when it is missing."""
    path = target_dir() / "release" / name
    if not path.is_file():
        example = Path(name).name
        crate = {"bench_conv": "sieve-proxy", "forward_only": "sieve-udfs", "kcenter_speed": "sieve-selection"}.get(example)
        build = "-p sieve" if name == "sieve" else f"-p {crate} --example {example}"
        sys.exit(f"{path} does not exist: run `make bench`, or `cargo build --release {build}` "
                 "(with the same CARGO_TARGET_DIR)")
    return path


def sieve_binary() -> str:
    """The release build of the `sieve` binary."""
    return str(release_binary("sieve"))


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def own_peak_mib() -> float:
    """This process's own high-water mark (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@dataclass
class Measured:
    """One finished process."""

    wall: float  # seconds from starting the process to its exit
    cpu: float  # user + system CPU seconds of the job
    peak_mib: float  # the job's own peak resident set, MiB
    stdout: str  # what it printed, when captured


_peak_rss_checked = False


def run_measured(cmd, capture=False) -> Measured:
    """Runs `cmd` in the repository root under GNU time; stops the script,
    showing the job's stderr, if it fails. `capture` keeps its stdout (else
    discarded)."""
    global _peak_rss_checked
    if not os.access(GNU_TIME, os.X_OK):
        sys.exit(f"{GNU_TIME} is missing: it measures each job's own peak RSS (apt-get install time)")
    if not _peak_rss_checked:
        _peak_rss_checked = True
        _check_peak_rss()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        proc = subprocess.run([GNU_TIME, "-f", "%U %S %M", "-o", report.name, *map(str, cmd)], cwd=ROOT,
                              stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        wall = time.perf_counter() - start
        # When the job fails, GNU time writes "Command exited with non-zero status N" first.
        last = report.read().strip().splitlines()[-1]
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr}")
    user, system, kib = last.split()
    return Measured(wall, float(user) + float(system), int(kib) / 1024, proc.stdout if capture else "")


def _check_peak_rss():
    """The figure must be the job's own: a few MiB for `true`, below this
    script's own peak (a figure inherited from it would not be), and at least
    the 64 MiB that a small Python job touches."""
    tiny = run_measured(["true"]).peak_mib
    touched = run_measured([sys.executable, "-c", "x = b'x' * (64 << 20)"]).peak_mib
    parent = own_peak_mib()
    if not (tiny < min(16, parent) and touched >= 64):
        sys.exit(f"peak RSS is not measured per job: `true` read {tiny:.1f} MiB and a job touching 64 MiB "
                 f"read {touched:.1f} MiB, with this script's own peak at {parent:.1f} MiB")


def check_peaks_differ(peaks_mib):
    """Stops the script when the peaks of different jobs are all the same, or
    all equal this script's own high-water mark: the sign that they are
    inherited, not measured."""
    parent = own_peak_mib()
    if len(peaks_mib) > 1 and (max(peaks_mib) - min(peaks_mib) < 1
                               or all(abs(p - parent) < 0.02 * parent for p in peaks_mib)):
        sys.exit(f"peak RSS reads alike for every job ({', '.join(f'{p:.0f}' for p in peaks_mib)} MiB; this "
                 f"script's own peak {parent:.0f} MiB): it is not the jobs' own")


def markdown_table(header, rows):
    """Prints a markdown table: `header` is a list of column names, `rows` lists
    of cells (already formatted)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")


def sst2_scores(sieve, data_dir, embedding, threads=2) -> Path:
    """`.bench/sst2-<embedding>/`: the scores of `sieve prune --dataset sst2
    --score prototype --embedding <embedding>` (embedding: a directory or
    `static`), made once and reused by the benches that read embeddings."""
    name = "minilm" if embedding == "models/all-MiniLM-L6-v2" else Path(embedding).name
    out = ROOT / ".bench" / f"sst2-{name}"
    if not (out / "manifest.json").is_file():
        print(f"scoring SST-2 with --embedding {embedding} (once) ...", flush=True)
        run_measured([sieve, "prune", "--dataset", "sst2", "--data-dir", data_dir, "--threads", threads, "--quiet",
                      "--score", "prototype", "--embedding", embedding, "--out", out])
    return out
