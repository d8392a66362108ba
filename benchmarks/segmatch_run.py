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
    from segmatch.api import demo_config, run_pipeline, stored_bytes  # noqa: PLC0415
    from segmatch.heap import own_process  # noqa: PLC0415

    own_process()  # as the segmatch command does: the process ends with the run

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
    session = None
    session_seconds = 0.0
    if args.engine == "spark":
        from segmatch.engines.spark.session import session_for  # noqa: PLC0415

        opened = time.perf_counter()
        session = session_for(config.spark, input_bytes=stored_bytes(config))
        session_seconds = time.perf_counter() - opened
    imported = time.perf_counter() - started - session_seconds
    result = run_pipeline(config, spark=session)
    total = time.perf_counter() - started
    stages = {r.stage: r.seconds for r in result.stages}
    jobs = {}
    if session is not None:
        from benchmarks.spark_jobs import jobs_by_stage  # noqa: PLC0415

        jobs = jobs_by_stage(session)
    print(json.dumps({
        "pipeline": f"segmatch {args.engine}", "stages": stages, "silhouette": result.silhouette,
        "total_seconds": total, "customers": result.customers,
        "partitions": result.partition_plan.get("partitions", 1),
        # Outside the stages: imports, the Spark session, and what runs between and after
        # the stages (output checks, tracking, commits).
        "outside": {
            "imports": imported,
            "session": session_seconds,
            "between_and_after": total - imported - session_seconds - sum(stages.values()),
        },
        "jobs": jobs,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
