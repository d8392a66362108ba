"""segmatch on one engine, as the benchmark runs it: fixed k, PCA 5, tracking and Delta on.

Usage: python -m benchmarks.segmatch_run DATA.parquet WORK_DIR --engine local --k 6
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("work")
    parser.add_argument("--engine", default="local")
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--components", type=int, default=5)
    parser.add_argument("--match", action="store_true", help="include the match stage")
    args = parser.parse_args()
    started = time.perf_counter()
    os.chdir(args.work)  # the MLflow store goes in the work folder
    from segmatch.api import demo_config, run_pipeline  # noqa: PLC0415

    base = demo_config(args.data, f"{args.work}/out", engine=args.engine, categorical=())
    config = base.model_copy(
        update={
            "cluster": base.cluster.model_copy(update={"k": args.k}),
            "reduce": base.reduce.model_copy(
                update={"components": args.components, "variance": None}
            ),
            "lookalikes": base.lookalikes.model_copy(update={"enabled": args.match}),
            "output": base.output.model_copy(update={"report": False}),
        }
    )
    result = run_pipeline(config)
    stages = {"startup": 0.0, **{r.stage: r.seconds for r in result.stages}}
    print(json.dumps({
        "pipeline": f"segmatch {args.engine}", "stages": stages, "silhouette": result.silhouette,
        "total_seconds": time.perf_counter() - started, "customers": result.customers,
        "partitions": result.partition_plan.get("partitions", 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
