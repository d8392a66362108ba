"""Merge of a 10%-changed batch into a 1,000,000-customer segments table vs a full overwrite.

Usage: python -m benchmarks.delta_merge [--rows 1000000] [--repeats 3]

Each repeat times, back to back on the same table, staging the batch as Parquet and committing
it: (a) merging only the changed customers, (b) merging the whole batch of which 10% changed,
(c) overwriting the table with the whole batch.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from segmatch.storage import commit_table


def segments(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = pa.array([f"C{i:08d}" for i in range(rows)])
    columns = {"idcliente": ids, "segment": rng.integers(0, 6, rows), "distance": rng.random(rows)}
    columns.update({f"pc_{j}": rng.normal(size=rows) for j in range(1, 6)})
    return pa.table(columns)


def changed(table: pa.Table, share: float, seed: int) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    mask = rng.random(table.num_rows) < share
    distance = np.where(mask, np.asarray(table["distance"]) + 1.0, np.asarray(table["distance"]))
    batch = table.set_column(2, "distance", pa.array(distance))
    return batch, batch.filter(pa.array(mask))


def timed_commit(path: Path, staging: Path, table: pa.Table, mode: str) -> float:
    start = time.perf_counter()
    staging.mkdir(parents=True, exist_ok=True)
    file = staging / "part-0.parquet"
    pq.write_table(table, file)
    commit_table(path, [file], mode=mode, keys=("idcliente",), app_id=None, metadata={})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = segments(args.rows, seed=0)
    timings: dict[str, list[float]] = {
        "merge changed only": [],
        "merge whole batch": [],
        "overwrite": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for repeat in range(args.repeats):
            for name, mode in (
                ("merge changed only", "merge"),
                ("merge whole batch", "merge"),
                ("overwrite", "overwrite"),
            ):
                path = root / f"{name}-{repeat}".replace(" ", "_")
                timed_commit(path, root / "stage", base, "overwrite")
                batch, only_changed = changed(base, 0.10, seed=repeat + 1)
                data = only_changed if name == "merge changed only" else batch
                timings[name].append(timed_commit(path, root / "stage", data, mode))
    reference = statistics.median(timings["overwrite"])
    print(f"{args.rows:,} customers, 10% changed, {args.repeats} repeats (median seconds):")
    for name, values in timings.items():
        median = statistics.median(values)
        print(
            f"  {name:20s} {median:6.2f} s  ({median / reference:4.2f}× overwrite)  runs: "
            + ", ".join(f"{v:.2f}" for v in values)
        )


if __name__ == "__main__":
    main()
