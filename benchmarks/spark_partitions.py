"""The Spark engine with adaptive partitions against a fixed repartition(200), back to back.

Usage: python -m benchmarks.spark_partitions [--rows 1000000] [--k 6]

Generates (or reuses) the synthetic base, then runs the whole pipeline twice in one Spark
session: once with the partition planner, once forced to 200 partitions; prints the time per
stage, the total and the partitions of each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from segmatch.api import demo_config, run_pipeline
from segmatch.engines.spark import session_for
from segmatch.synthetic import generate_customers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=6, help="fixed k (0: sweep 2..10)")
    parser.add_argument("--data", type=Path, default=None, help="existing customers file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data = args.data or generate_customers(root / "customers.parquet", rows=args.rows, seed=42)
        base = demo_config(data, root / "warm-up", engine="spark", tracking=False, categorical=())
        session = session_for(base.spark)
        session.sparkContext.setLogLevel("ERROR")
        cluster = base.cluster.model_copy(update={"k": args.k or None})
        results = {}
        for name, fixed in (("adaptive", None), ("repartition(200)", 200)):
            config = base.model_copy(
                update={
                    "cluster": cluster,
                    "output": base.output.model_copy(
                        update={"path": root / name, "checkpoints": False}
                    ),
                    "spark": base.spark.model_copy(update={"fixed_partitions": fixed}),
                }
            )
            start = time.perf_counter()
            result = run_pipeline(config, spark=session)
            results[name] = (result, time.perf_counter() - start)
    print(f"{args.rows:,} customers, Spark {session.version}, {session.sparkContext.master}")
    for name, (result, wall) in results.items():
        stages = ", ".join(f"{r.stage} {r.seconds:.1f}" for r in result.stages)
        print(
            f"  {name:17s} partitions={result.partition_plan['partitions']:4d} "
            f"({result.partition_plan['reason']}) total={result.total_seconds:.1f} s "
            f"wall={wall:.1f} s k={result.k} silhouette={result.silhouette:.4f}\n    {stages}"
        )


if __name__ == "__main__":
    main()
