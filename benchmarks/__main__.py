"""Benchmark segmatch against the pipeline it replaces, back to back on the same data.

Usage:
    python -m benchmarks [--rows 100000,1000000,5000000] [--k 6] [--out benchmarks/results]
    python -m benchmarks --quick        # 20,000 customers: the smoke test's size

For each size it generates the synthetic base (seeded), then runs, each in its own process:
the monolithic PySpark baseline, segmatch's spark engine, segmatch's local engine, and a minimal
scikit-learn script. It records time per stage, total time, peak memory of the process tree and
silhouette, and writes JSON and a Markdown table with the machine and library versions.
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

from segmatch.synthetic import generate_customers

PIPELINES = {
    "baseline": ["-m", "benchmarks.baseline_spark", "{data}", "{work}"],
    "segmatch spark": ["-m", "benchmarks.segmatch_run", "{data}", "{work}", "--engine", "spark"],
    "segmatch local": ["-m", "benchmarks.segmatch_run", "{data}", "{work}", "--engine", "local"],
    "sklearn script": ["-m", "benchmarks.sklearn_script", "{data}"],
}
LIBRARIES = ("segmatch", "pyspark", "polars", "numpy", "scikit-learn", "deltalake", "mlflow")


def run_measured(command: list[str], cwd: Path) -> tuple[dict, float, float]:
    """Run a command; return its JSON line, wall seconds and peak RSS (MiB) of its tree."""
    peak = 0.0
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watched = psutil.Process(process.pid)

    def watch() -> None:
        nonlocal peak
        while process.poll() is None:
            try:
                tree = [watched, *watched.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = process.communicate()
    watcher.join()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1]), wall, peak


def benchmark(rows: int, k: int, root: Path) -> list[dict]:
    data = generate_customers(root / f"customers_{rows}.parquet", rows=rows, seed=42)
    measured = []
    for name, template in PIPELINES.items():
        work = root / f"{name.replace(' ', '_')}_{rows}"
        work.mkdir()
        command = [
            sys.executable,
            *(p.format(data=data, work=work) for p in template),
            "--k",
            str(k),
        ]
        try:
            result, wall, peak = run_measured(command, cwd=Path.cwd())
        except RuntimeError as failure:
            print(f"  {rows:>10,} {name:15s} FAILED: {str(failure)[-300:]}", flush=True)
            measured.append({"pipeline": name, "rows": rows, "failed": str(failure)[-2000:]})
            continue
        measured.append({**result, "rows": rows, "wall_seconds": wall, "peak_mib": peak})
        print(f"  {rows:>10,} {name:15s} {wall:7.1f} s  peak {peak:7.0f} MiB  "
              f"silhouette {result['silhouette']:.4f}", flush=True)  # fmt: skip
    baseline = measured[0].get("wall_seconds")
    for entry in measured:
        if baseline and "wall_seconds" in entry:
            entry["baseline_over_this"] = baseline / entry["wall_seconds"]
    return measured


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
        "| rows | pipeline | wall s | baseline ÷ this | peak MiB | silhouette | stages (s) |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for entry in report["results"]:
        if "wall_seconds" not in entry:
            lines.append(f"| {entry['rows']:,} | {entry['pipeline']} | failed | | | | |")
            continue
        stages = ", ".join(f"{k} {v:.1f}" for k, v in entry["stages"].items() if v >= 0.05)
        lines.append(
            f"| {entry['rows']:,} | {entry['pipeline']} | {entry['wall_seconds']:.1f} | "
            f"{entry.get('baseline_over_this', 0):.1f}× | {entry['peak_mib']:.0f} | "
            f"{entry['silhouette']:.4f} | {stages} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000,5000000")
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="one small size (20,000)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    sizes = [20_000] if args.quick else [int(r) for r in args.rows.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for rows in sizes:
            results += benchmark(rows, args.k, Path(folder))
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
