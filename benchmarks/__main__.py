"""Benchmark segmatch against the pipeline it replaces, back to back on the same data.

Usage:
    python -m benchmarks [--rows 100000,1000000,5000000] [--k 6] [--out benchmarks/results]
                         [--matching 1000000] [--scale 10000000]
    python -m benchmarks --quick        # 20,000 customers everywhere: the smoke test's size

For each size it generates the synthetic base (seeded), then runs, each in its own process:
the monolithic PySpark baseline, segmatch's spark engine, segmatch's local engine, and a minimal
scikit-learn script. It records time per stage, total time, peak memory of the process tree and
silhouette, inertia and adjusted Rand index against the generator's latent segments (see
benchmarks/quality.py). Then the matching benchmark (top-10 lookalikes against scikit-learn's
NearestNeighbors, recall@10 against exact) and a scale run of the local engine, matching
included. It writes JSON and a Markdown table with the machine and library versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import psutil

from benchmarks.quality import STORED, quality, stored_segments
from segmatch.synthetic import generate_customers

PIPELINES = {
    "baseline": ["-m", "benchmarks.baseline_spark", "{data}", "{work}"],
    "segmatch spark": ["-m", "benchmarks.segmatch_run", "{data}", "{work}", "--engine", "spark"],
    "segmatch local": ["-m", "benchmarks.segmatch_run", "{data}", "{work}", "--engine", "local"],
    "segmatch local again": [
        "-m", "benchmarks.segmatch_run", "{data}", "{work}", "--engine", "local",
    ],
    "sklearn script": ["-m", "benchmarks.sklearn_script", "{data}"],
}  # fmt: skip
#: A pipeline run again in another's folder: the MLflow store and the Delta tables already
#: exist there, as on every run after a user's first.
SAME_FOLDER = {"segmatch local again": "segmatch local"}
LIBRARIES = ("segmatch", "pyspark", "polars", "numpy", "scikit-learn", "deltalake", "mlflow")


def run_measured(command: list[str], cwd: Path) -> tuple[dict, float, float]:
    """Run a command; return its JSON line, wall seconds and peak RSS (MiB) of its tree."""
    peak = 0.0
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watched = psutil.Process(process.pid)
    descendants: dict[int, psutil.Process] = {}

    def watch() -> None:
        nonlocal peak
        while process.poll() is None:
            try:
                children = watched.children(recursive=True)
                descendants.update((child.pid, child) for child in children)
                peak = max(peak, sum(p.memory_info().rss for p in [watched, *children]) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = process.communicate()
    watcher.join()
    wall = time.perf_counter() - start
    # What the command left still ending (a Spark JVM releasing its heap) would otherwise run
    # beside the next pipeline's measurement; the command itself had returned, so it is not
    # counted in this one's.
    psutil.wait_procs(list(descendants.values()), timeout=60)
    # Nor the files it wrote still going to disk (the baseline's Parquet between stages: GBs at
    # 5M rows), flushed here rather than during the next one's measurement.
    os.sync()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1]), wall, peak


def benchmark(rows: int, k: int, root: Path) -> list[dict]:
    data = generate_customers(root / f"customers_{rows}.parquet", rows=rows, seed=42)
    measured = []
    for name, template in PIPELINES.items():
        work = root / f"{SAME_FOLDER.get(name, name).replace(' ', '_')}_{rows}"
        work.mkdir(exist_ok=name in SAME_FOLDER)
        command = [
            sys.executable,
            *(p.format(data=data, work=work) for p in template),
            "--k",
            str(k),
        ]
        try:
            result, wall, peak = run_measured(command, cwd=Path.cwd())
        except RuntimeError as failure:
            print(f"  {rows:>10,} {name:20s} FAILED: {str(failure)[-300:]}", flush=True)
            measured.append({"pipeline": name, "rows": rows, "failed": str(failure)[-2000:]})
            continue
        if name == "sklearn script":
            # It stores nothing when timed; a second, untimed run keeps its segments.
            subprocess.run(
                [*command, "--store", str(work / STORED[name])], check=True, capture_output=True
            )
        scores = quality(*stored_segments(name, work), rows=rows)
        measured.append(
            {**result, **scores, "pipeline": name, "rows": rows, "wall_seconds": wall,
             "peak_mib": peak}
        )  # fmt: skip
        print(f"  {rows:>10,} {name:20s} {wall:7.1f} s  peak {peak:7.0f} MiB  "
              f"silhouette {scores['silhouette_exact']:.4f}  inertia {scores['inertia']:,.0f}  "
              f"ARI {scores['ari']:.4f}", flush=True)  # fmt: skip
    baseline = measured[0].get("wall_seconds")
    for entry in measured:
        if baseline and "wall_seconds" in entry:
            entry["baseline_over_this"] = baseline / entry["wall_seconds"]
    return measured


def matching(rows: int) -> dict:
    """The matching benchmark's figures (see benchmarks/matching.py)."""
    command = [sys.executable, "-m", "benchmarks.matching", "--rows", str(rows)]
    result, wall, peak = run_measured(command, cwd=Path.cwd())
    print(
        f"  matching {rows:,}: segmatch {result['segmatch_seconds']:.1f} s, scikit-learn "
        f"{result['sklearn_seconds']:.1f} s, recall@10 {result['recall_at_10']:.4f}",
        flush=True,
    )
    return {**result, "wall_seconds": wall, "peak_mib": peak}


def scale_run(rows: int, k: int, root: Path) -> dict:
    """The local engine's whole pipeline, matching included, on one large base."""
    data = generate_customers(root / f"customers_{rows}.parquet", rows=rows, seed=42)
    work = root / f"scale_{rows}"
    work.mkdir()
    command = [
        sys.executable, "-m", "benchmarks.segmatch_run", str(data), str(work),
        "--engine", "local", "--k", str(k), "--match",
    ]  # fmt: skip
    result, wall, peak = run_measured(command, cwd=Path.cwd())
    print(f"  scale {rows:,}: {wall:.1f} s, peak {peak:.0f} MiB", flush=True)
    return {**result, "rows": rows, "wall_seconds": wall, "peak_mib": peak}


def linearity(results: list[dict]) -> list[dict]:
    """The local engine's stage seconds per customer at each size, relative to the smallest
    size of at least a million (fixed start-up costs left out)."""
    local = sorted(
        (r for r in results if r["pipeline"] == "segmatch local" and "stages" in r),
        key=lambda r: r["rows"],
    )
    per_customer = {r["rows"]: sum(r["stages"].values()) / r["rows"] for r in local}
    reference = next((rows for rows in per_customer if rows >= 1_000_000), None)
    if reference is None:
        reference = min(per_customer, default=None)
    return [
        {"rows": rows, "microseconds_per_customer": value * 1e6,
         "relative": value / per_customer[reference], "reference_rows": reference}
        for rows, value in per_customer.items()
    ]  # fmt: skip


def markdown(report: dict) -> str:
    lines = [
        f"# segmatch benchmark — {report['date']}",
        "",
        f"Machine: {report['machine']['cores']} cores, {report['machine']['memory_gib']:.0f} GiB, "
        f"{report['machine']['platform']}; Python {report['machine']['python']}.",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in report["libraries"].items()) + ".",
        f"Fixed k={report['k']}, PCA 5 components; wall time of the whole process (imports and "
        "Spark start-up included); peak memory of the process tree.",
        "",
        "| rows | pipeline | wall s | baseline ÷ this | peak MiB | silhouette | inertia | ARI | "
        "stages (s) | outside the stages (s) | Spark jobs / stages run |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for entry in report["results"]:
        if "wall_seconds" not in entry:
            lines.append(f"| {entry['rows']:,} | {entry['pipeline']} | failed | | | | | | | | |")
            continue
        stages = ", ".join(f"{k} {v:.1f}" for k, v in entry["stages"].items() if v >= 0.05)
        lines.append(
            f"| {entry['rows']:,} | {entry['pipeline']} | {entry['wall_seconds']:.1f} | "
            f"{entry.get('baseline_over_this', 0):.1f}× | {entry['peak_mib']:.0f} | "
            f"{entry['silhouette_exact']:.4f} | {entry['inertia']:,.0f} | {entry['ari']:.4f} | "
            f"{stages} | {_outside(entry)} | {_jobs(entry)} |"
        )
    lines += [
        "",
        "Silhouette: exact squared-Euclidean on every customer; inertia: the sum of squared "
        "distances to the segment means, in the same coordinates (each pipeline's own 5 PCA "
        "components); ARI: adjusted Rand index of the segments against the latent segment the "
        "generator drew for each customer (1 = the same partition). Computed after each run "
        "from what it stored, outside its timing. Spark jobs / stages run: per segmatch stage, "
        "the Spark jobs its work started and the Spark stages they ran (each a pass over some "
        "rows; stages Spark skipped because their output was reused are not counted), from the "
        "session's status store.",
    ]
    if report.get("linearity"):
        lines += ["", "Local engine, stage seconds per customer (start-up left out):", ""]
        lines += ["| rows | µs per customer | relative |", "|---:|---:|---:|"]
        lines += [
            f"| {r['rows']:,} | {r['microseconds_per_customer']:.2f} | {r['relative']:.2f}× |"
            for r in report["linearity"]
        ]
    if report.get("matching"):
        m = report["matching"]
        lines += [
            "",
            f"Matching, top-10 lookalikes within segment, {m['rows']:,} customers: segmatch "
            f"{m['segmatch_seconds']:.1f} s, scikit-learn NearestNeighbors per segment "
            f"{m['sklearn_seconds']:.1f} s ({m['sklearn_over_segmatch']:.1f}×); recall@10 "
            f"against exact neighbours on {m['recall_sample']:,} customers: "
            f"{m['recall_at_10']:.4f}.",
        ]
    if report.get("scale"):
        r = report["scale"]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items() if v >= 0.05)
        lines += [
            "",
            f"Scale run, local engine, {r['rows']:,} customers, whole pipeline with matching: "
            f"{r['wall_seconds']:.1f} s, peak {r['peak_mib'] / 1024:.1f} GiB ({stages}).",
        ]
    return "\n".join(lines) + "\n"


def _outside(entry: dict) -> str:
    """segmatch's seconds outside its stages: imports, the Spark session, and between and
    after the stages (checks, tracking, commits)."""
    outside = entry.get("outside")
    if not outside:
        return ""
    return ", ".join(f"{name.replace('_', ' ')} {value:.1f}" for name, value in outside.items())


def _jobs(entry: dict) -> str:
    """Spark jobs and the Spark stages they ran, per segmatch stage, in run order."""
    jobs = entry.get("jobs")
    if not jobs:
        return ""
    order = [*entry["stages"], "between stages and commit", "before and after the run"]
    parts = [
        f"{name} {jobs[name]['jobs']}/{jobs[name]['spark_stages']}"
        for name in order
        if name in jobs
    ]
    total = sum(j["jobs"] for j in jobs.values()), sum(j["spark_stages"] for j in jobs.values())
    return ", ".join(parts) + f"; all {total[0]}/{total[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000,5000000")
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--matching", type=int, default=1_000_000, help="0 skips it")
    parser.add_argument("--scale", type=int, default=10_000_000, help="0 skips it")
    parser.add_argument("--quick", action="store_true", help="20,000 customers everywhere")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    sizes = [20_000] if args.quick else [int(r) for r in args.rows.split(",")]
    matching_rows = 20_000 if args.quick else args.matching
    scale_rows = 20_000 if args.quick else args.scale
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for rows in sizes:
            results += benchmark(rows, args.k, Path(folder))
        matched = matching(matching_rows) if matching_rows else None
        scaled = scale_run(scale_rows, args.k, Path(folder)) if scale_rows else None
    stamp = datetime.now(UTC)
    report = {
        "date": stamp.isoformat(timespec="seconds"),
        "k": args.k,
        "machine": {
            "cores": os.cpu_count(),
            "memory_gib": psutil.virtual_memory().total / 2**30,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "libraries": {name: _version(name) for name in LIBRARIES},
        "results": results,
        "linearity": linearity(results),
        "matching": matched,
        "scale": scaled,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "quick" if args.quick else stamp.strftime("%Y-%m-%d")
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2))
    (args.out / f"{name}.md").write_text(markdown(report))
    print(f"wrote {args.out / name}.json and .md")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
