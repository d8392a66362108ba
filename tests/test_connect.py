"""The Spark engine over Spark Connect (Databricks serverless, shared clusters, Databricks
Connect): a session with no SparkContext, started here from pyspark's own jars.

A local Connect server cannot share a process with the classic session of the other Spark
tests, so each run goes in a subprocess, as a Databricks Connect client would.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from helpers import make_config, run_script
from segmatch.api import run_pipeline
from segmatch.storage import read_delta, table_history

CONNECT_RUN = textwrap.dedent(
    """
    import json, sys
    from segmatch.api import run_pipeline, score_customers
    from segmatch.config_loading import build_config

    raw, scores_out = json.loads(sys.argv[1]), sys.argv[2]
    first = run_pipeline(build_config(raw, source="test"))
    raw["output"]["modes"] = {"segments": "merge", "lookalikes": "merge", "profiles": "merge"}
    again = run_pipeline(build_config(raw, source="test"))
    scored = score_customers(raw["output"]["path"], raw["input"]["path"], scores_out)
    print("RESULT " + json.dumps({
        "k": first.k,
        "silhouette": first.silhouette,
        "mlflow_run_id": first.mlflow_run_id,
        "model_version": first.model_version,
        "partitions": first.partition_plan.get("partitions"),
        "cores": first.partition_plan.get("cores"),
        "stages": [r.stage for r in first.stages],
        "merge_run_id": again.run_id,
        "scored": scored.customers,
    }))
    """
)


def test_the_whole_job_runs_over_spark_connect(
    spark_process, customers_path, tmp_path, tracking_store
):
    config = make_config(
        customers_path,
        tmp_path / "connect",
        "spark",
        clean={"max_bad_share": 0.2},
        tracking={"enabled": True, "uri": tracking_store, "model_name": "t-connect"},
    )
    connect = run_script(
        CONNECT_RUN,
        json.dumps(config.model_dump(mode="json")),
        str(tmp_path / "scores"),
        cwd=tmp_path,
        env={"SPARK_REMOTE": "local[2]", "MLFLOW_DISABLE_TELEMETRY": "true"},
    )

    local = run_pipeline(
        make_config(customers_path, tmp_path / "local", clean={"max_bad_share": 0.2})
    )
    assert connect["k"] == local.k
    assert connect["silhouette"] == pytest.approx(local.silhouette, abs=1e-6)
    assert connect["stages"] == [r.stage for r in local.stages]
    assert connect["cores"] == 2 and connect["partitions"] >= 2
    assert connect["mlflow_run_id"] and connect["model_version"]
    assert connect["scored"] == local.customers

    def labels(out):
        table = read_delta(out / "segments").sort_by("idcliente")
        return table["idcliente"].to_pylist(), np.asarray(table["segment"])

    ids_connect, over_connect = labels(tmp_path / "connect")
    ids_local, over_local = labels(tmp_path / "local")
    assert ids_connect == ids_local
    assert adjusted_rand_score(over_local, over_connect) >= 0.99
    merged = table_history(tmp_path / "connect" / "segments")[0]
    assert (merged["operation"], merged["run_id"]) == ("MERGE", connect["merge_run_id"])
    assert merged["rows_written"] == local.customers  # every row names the new run
