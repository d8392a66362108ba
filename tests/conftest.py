"""Shared fixtures: every engine-neutral test runs once per engine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import BUCKET, ENGINES
from segmatch.engines import make_engine
from segmatch.engines.base import Engine
from segmatch.synthetic import generate_customers


@pytest.fixture(scope="session", autouse=True)
def _shared_cache(tmp_path_factory: pytest.TempPathFactory):
    """One segmatch cache for the test run, outside the user's home: the Spark processes the
    tests start resolve Delta's jars (and write the JVM's class archive) once, as a machine
    would."""
    previous = os.environ.get("SEGMATCH_CACHE_DIR")
    os.environ["SEGMATCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        del os.environ["SEGMATCH_CACHE_DIR"]
    else:
        os.environ["SEGMATCH_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test reads or writes the user's home or the working folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)


@pytest.fixture(autouse=True)
def _no_mlflow_run_left_open():
    """Every test ends with no active MLflow run and no tracking worker thread left behind (the
    tracking process, shared by the runs of the test session, stays)."""
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        assert mlflow.active_run() is None, "an MLflow run was left open"
    workers = [t.name for t in threading.enumerate() if t.name.startswith("segmatch-mlflow")]
    assert not workers, f"tracking worker threads left running: {workers}"


@pytest.fixture(scope="session")
def tracking_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store for the test session (creating its schema takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def spark_session(tmp_path_factory: pytest.TempPathFactory):
    """One SparkSession for the whole test run (it takes ~10 s to start); its catalog's
    warehouse in the run's temporary folder, not ``spark-warehouse`` in the working one."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession  # noqa: PLC0415 -- only Spark tests pay for it

    from segmatch.engines.spark.session import delta_settings, launch_settings  # noqa: PLC0415

    builder = SparkSession.builder
    # As segmatch starts a session for small inputs: every test's input is a few MB at most.
    settings = {**launch_settings("local[2]", input_bytes=0), **delta_settings()}
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = (
        builder.master("local[2]")
        .appName("segmatch-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("spark-warehouse")))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    if request.param == "spark":
        return make_engine("spark", session=request.getfixturevalue("spark_session"))
    return make_engine(request.param)


@pytest.fixture(scope="session")
def customers_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 synthetic customers with the generator's usual faults."""
    return generate_customers(
        tmp_path_factory.mktemp("data") / "customers.parquet", rows=3000, seed=11
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """An S3-compatible server on 127.0.0.1 for this module, with one bucket."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "s3_server.py"), "127.0.0.1", str(port)],
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


@pytest.fixture
def spark_process() -> None:
    """The test starts Spark in processes of its own (a Connect server, a local-cluster
    master, concurrent runs): asking for this marks it a Spark test."""


def _needs_spark(item: pytest.Item) -> bool:
    """A test that starts or uses Spark: by the fixtures it asks for (the shared session, a
    Spark process of its own) or the spark engine as its parameter."""
    if {"spark_session", "spark_process"} & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "spark" in map(str, callspec.params.values())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark Spark tests, so `make test-quick` runs the rest (the local engine's) alone."""
    for item in items:
        if _needs_spark(item):
            item.add_marker(pytest.mark.spark)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """List what tests reported as ``quality`` (silhouette and inertia on real data sets)."""
    lines = [
        f"{report.nodeid}: {value}"
        for report in terminalreporter.stats.get("passed", [])
        for name, value in report.user_properties
        if name == "quality" and report.when == "call"
    ]
    if lines:
        terminalreporter.write_sep("-", "clustering quality on the shared data sets")
        for line in lines:
            terminalreporter.write_line(line)
