"""Input and output on object storage: an S3-compatible server (moto's server mode) on
127.0.0.1, started by the tests, and the local engine reading and writing ``s3://``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from helpers import make_config
from segmatch.api import run_pipeline, score_customers
from segmatch.storage import read_delta, table_history
from segmatch.synthetic import generate_customers

BUCKET = "segmatch-tests"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """An S3-compatible server on 127.0.0.1 for this module, with one bucket."""
    port = free_port()
    server_cli = Path(sys.executable).parent / "moto_server"
    server = subprocess.Popen(
        [str(server_cli), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(endpoint, timeout=2):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the S3-compatible test server (moto_server) did not start")
            time.sleep(0.3)
    settings = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "segmatch",
        "AWS_SECRET_ACCESS_KEY": "segmatch-secret",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    import boto3  # noqa: PLC0415 -- comes with moto, only these tests need it

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield endpoint
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.terminate()
    server.wait(timeout=30)


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
    assert read_delta(f"{out}/matches").num_rows == 10 * first.customers
    assert first.outputs["report"].startswith(f"{out}/runs/{first.run_id}/")

    again = run_pipeline(config)  # the same batch: nothing new is committed
    assert again.table_versions == first.table_versions
    history = table_history(f"{out}/segments")
    assert [h["run_id"] for h in history] == [first.run_id]

    scored = score_customers(out, source, f"s3://{BUCKET}/scores")
    assert scored.customers == first.customers
    assert read_delta(scored.outputs["scores"]).num_rows == first.customers
    assert read_delta(scored.outputs["lookalikes"]).num_rows == 10 * first.customers
