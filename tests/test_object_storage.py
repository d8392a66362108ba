"""Input and output on object storage: an S3-compatible server (moto's server mode) on
127.0.0.1, started by the tests, and the local engine reading and writing ``s3://``."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import polars as pl
import pytest

from helpers import BUCKET, make_config, run_script
from segmatch.api import run_pipeline, score_customers
from segmatch.locations import Files
from segmatch.pipeline import CHECKPOINTED, STAGES
from segmatch.storage import read_delta, table_history
from segmatch.synthetic import generate_customers

# An S3-compatible server per module: seconds to start, so not in the quick loop.
pytestmark = pytest.mark.slow


def test_the_local_engine_reads_and_writes_object_storage(s3_server, tmp_path):
    data = generate_customers(tmp_path / "customers.parquet", rows=3000, seed=11)
    source = f"s3://{BUCKET}/input/customers.parquet"
    pl.read_parquet(data).write_parquet(source)
    out = f"s3://{BUCKET}/runs/out"
    config = make_config(
        source,
        out,
        clean={"max_bad_share": 0.2},
        output={"modes": {"segments": "merge"}},
    )
    first = run_pipeline(config)
    local = run_pipeline(make_config(data, tmp_path / "local", clean={"max_bad_share": 0.2}))
    assert (first.k, first.customers) == (local.k, local.customers)
    assert first.silhouette == pytest.approx(local.silhouette, abs=1e-9)
    assert first.outputs["segments"] == f"{out}/segments"
    segments = read_delta(first.outputs["segments"])
    assert segments.num_rows == first.customers
    assert set(segments["run_id"].to_pylist()) == {first.run_id}
    assert read_delta(f"{out}/lookalikes").num_rows == 10 * first.customers
    assert first.outputs["report"].startswith(f"{out}/runs/{first.run_id}/")

    again = run_pipeline(config)  # the same batch: nothing new is committed
    assert again.table_versions == first.table_versions
    history = table_history(f"{out}/segments")
    assert [h["run_id"] for h in history] == [first.run_id]

    scored = score_customers(out, source, f"s3://{BUCKET}/scores")
    assert scored.customers == first.customers
    assert read_delta(scored.outputs["scores"]).num_rows == first.customers
    assert read_delta(scored.outputs["lookalikes"]).num_rows == 10 * first.customers


def test_checkpoints_on_object_storage_are_reused_by_a_rerun(s3_server, tmp_path):
    data = generate_customers(tmp_path / "customers.parquet", rows=3000, seed=12)
    out = f"s3://{BUCKET}/resume/out"
    settings = {"clean": {"max_bad_share": 0.2}, "output": {"checkpoint_min_seconds": 0}}
    first = run_pipeline(make_config(data, out, **settings))
    assert not any(r.reused for r in first.stages)
    files = Files()
    assert files.subfolders(f"{out}/.staging/checkpoints")
    assert files.subfolders(f"{out}/.staging/runs") == []  # an ended run leaves no staging

    second = run_pipeline(make_config(data, out, lookalikes={"top_k": 5}, **settings))
    before_match = STAGES[: STAGES.index("lookalikes")]
    assert [r.stage for r in second.stages if r.reused] == [
        s for s in before_match if s in CHECKPOINTED
    ]
    assert (second.k, second.silhouette) == (first.k, first.silhouette)
    assert read_delta(f"{out}/lookalikes").num_rows == 5 * second.customers
    assert files.subfolders(f"{out}/.staging/runs") == []


CLUSTER_RUN = textwrap.dedent(
    """
    import json, sys
    from segmatch.api import run_pipeline
    from segmatch.config_loading import build_config

    result = run_pipeline(build_config(json.loads(sys.argv[1]), source="test"))
    print("RESULT " + json.dumps({
        "k": result.k, "silhouette": result.silhouette, "run_id": result.run_id,
        "customers": result.customers, "outputs": result.outputs,
        "partitions": result.partition_plan.get("partitions"),
        "cells": result.lookalikes["cells"],
    }))
    """
)


def _spark_home_in(folder: Path) -> Path:
    """PySpark's own Spark home, linked entry by entry into ``folder``.

    A local-cluster worker keeps each executor's folder under ``$SPARK_HOME/work``, and each
    executor copies every jar there (hadoop-aws brings a 686 MB SDK): in PySpark's own home
    that is inside the virtual environment, where each run left 1.4 GB behind.
    """
    import pyspark  # noqa: PLC0415 -- only this test needs where PySpark is installed

    installed = Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent)
    folder.mkdir()
    for entry in installed.iterdir():
        if entry.name != "work":
            (folder / entry.name).symlink_to(entry)
    return folder


def test_the_spark_engine_on_a_cluster_writes_object_storage(spark_process, s3_server, tmp_path):
    """Executors in their own JVMs (local-cluster) share no folder with the driver: input,
    staging and every table go through s3a://, the tables through Delta's Spark writer."""
    data = generate_customers(tmp_path / "customers.parquet", rows=3000, seed=11)
    pl.read_parquet(data).write_parquet(f"s3://{BUCKET}/cluster/customers.parquet")
    out = f"s3a://{BUCKET}/cluster/out"
    config = make_config(
        f"s3a://{BUCKET}/cluster/customers.parquet",
        out,
        "spark",
        clean={"max_bad_share": 0.2},
        # Checkpoints and search cells written and read by executors in their own JVMs.
        output={"checkpoint_min_seconds": 0},
        lookalikes={"max_cell_size": 500},
        spark={
            "master": "local-cluster[2,1,1024]",
            "conf": {
                "spark.jars.packages": "org.apache.hadoop:hadoop-aws:3.5.0",
                "spark.hadoop.fs.s3a.endpoint": s3_server,
                "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
                "spark.hadoop.fs.s3a.path.style.access": "true",
                "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
                "spark.hadoop.fs.s3a.access.key": os.environ["AWS_ACCESS_KEY_ID"],
                "spark.hadoop.fs.s3a.secret.key": os.environ["AWS_SECRET_ACCESS_KEY"],
                "spark.executor.memory": "768m",
            },
        },
    )
    cluster = run_script(
        CLUSTER_RUN,
        json.dumps(config.model_dump(mode="json")),
        cwd=tmp_path,
        env={"SPARK_HOME": str(_spark_home_in(tmp_path / "spark_home"))},
    )
    local = run_pipeline(make_config(data, tmp_path / "local", clean={"max_bad_share": 0.2}))
    assert (cluster["k"], cluster["customers"]) == (local.k, local.customers)
    assert cluster["silhouette"] == pytest.approx(local.silhouette, abs=1e-6)
    segments = read_delta(f"s3://{BUCKET}/cluster/out/segments")
    assert segments.num_rows == local.customers
    assert set(segments["run_id"].to_pylist()) == {cluster["run_id"]}
    history = table_history(f"s3://{BUCKET}/cluster/out/segments")
    assert (history[0]["operation"], history[0]["run_id"]) == ("WRITE", cluster["run_id"])
    assert read_delta(f"s3://{BUCKET}/cluster/out/lookalikes").num_rows == 10 * local.customers
    assert cluster["cells"] > cluster["k"]
    assert Files().subfolders(f"s3://{BUCKET}/cluster/out/.staging/checkpoints")
