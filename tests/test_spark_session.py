"""The Spark session segmatch starts: Delta's package resolved through Ivy once per machine,
its jars loaded directly by every later start; a local session sized to its cores and input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from helpers import run_script, run_script_with_errors
from segmatch.engines.spark.class_archive import ClassArchive
from segmatch.engines.spark.session import (
    DATAFRAME_DEBUGGING,
    DELTA_SNAPSHOT_PARTITIONS,
    LOGGING,
    QUICK_JIT,
    QUICK_JIT_BYTES,
    UNCOMPRESSED_CACHE,
    launch_settings,
    local_cores,
)

START_AND_WRITE = textwrap.dedent(
    """
    import json, sys
    from segmatch.config import SparkConfig
    from segmatch.engines.spark.session import session_for

    # The config's own setting wins over segmatch's sizing.
    own = {"spark.databricks.delta.snapshotPartitions": "5"}
    size = None if sys.argv[2] == "unknown" else int(sys.argv[2])
    spark = session_for(SparkConfig(master="local[1]", conf=own), input_bytes=size)
    spark.range(3).write.format("delta").save(sys.argv[1])
    conf = spark.sparkContext.getConf()
    print("RESULT " + json.dumps({
        "packages": conf.get("spark.jars.packages"),
        "jars": conf.get("spark.jars"),
        "rows": spark.read.format("delta").load(sys.argv[1]).count(),
        "java": conf.get("spark.driver.extraJavaOptions"),
        "snapshots": conf.get("spark.databricks.delta.snapshotPartitions"),
        "debugging": conf.get("spark.python.sql.dataFrameDebugging.enabled"),
    }))
    """
)


@pytest.mark.usefixtures("spark_process")
def test_delta_is_resolved_once_then_loaded_from_the_listing(tmp_path):
    cache = tmp_path / "cache"
    env = {"SEGMATCH_CACHE_DIR": str(cache)}
    first, terminal = run_script_with_errors(
        START_AND_WRITE, str(tmp_path / "a"), "unknown", cwd=tmp_path, env=env
    )
    assert first["packages"].startswith("io.delta:delta-spark") and first["rows"] == 3
    # segmatch's logging file: none of Spark's start-up notices on the terminal.
    assert f"-Dlog4j2.configurationFile={LOGGING.as_uri()}" in first["java"].split()
    for notice in ("default log4j profile", "loopback address", "native-hadoop", "log level"):
        assert notice not in terminal
    assert first["debugging"] == "false"
    assert first["snapshots"] == "5"
    (listing,) = cache.glob("spark-jars-*.txt")
    listed = listing.read_text().split()
    assert any("delta-spark" in jar for jar in listed)
    # The first start's JVM wrote its class archive as it stopped; later starts map it, a
    # small input's too (which would not have written one).
    assert any(o.startswith("-XX:ArchiveClassesAtExit=") for o in first["java"].split())
    (archive,) = cache.glob("spark-classes-*.jsa")
    assert not list(cache.glob("*.partial"))
    second, terminal = run_script_with_errors(
        START_AND_WRITE, str(tmp_path / "b"), "0", cwd=tmp_path, env=env
    )
    assert second["packages"] is None and second["rows"] == 3
    assert second["jars"].split(",") == listed
    assert set(QUICK_JIT.split()) <= set(second["java"].split())
    assert f"-XX:SharedArchiveFile={archive}" in second["java"].split()
    assert "[cds]" not in terminal
    # A listed jar gone (a cleaned Ivy cache): the next start resolves the packages again.
    (tmp_path / "gone").write_text("\n".join([*listed, "file:///nowhere/missing.jar"]))
    listing.write_text((tmp_path / "gone").read_text())
    third = run_script(START_AND_WRITE, str(tmp_path / "c"), "0", cwd=tmp_path, env=env)
    assert third["packages"].startswith("io.delta:delta-spark") and third["rows"] == 3
    assert listing.read_text().split() == listed


@pytest.mark.parametrize(
    ("master", "cores"),
    [
        ("local", 1),
        ("local[3]", 3),
        ("local[*]", os.cpu_count()),
        ("local[2, 4]", 2),
        ("local-cluster[2, 1, 1024]", 2),
        ("spark://host:7077", None),
        ("sc://host:15002", None),
    ],
)
def test_local_cores_are_read_from_the_master(master, cores):
    assert local_cores(master) == cores


def test_a_local_session_is_sized_to_its_cores_and_its_input():
    small = launch_settings("local[3]", input_bytes=1_000)
    assert small[DELTA_SNAPSHOT_PARTITIONS] == "3"
    # Its caches are held uncompressed: the machine's memory is the session's.
    assert small[UNCOMPRESSED_CACHE] == "false"
    logging = f"-Dlog4j2.configurationFile={LOGGING.as_uri()}"
    assert small["spark.driver.extraJavaOptions"] == f"{logging} {QUICK_JIT}"
    assert small["spark.executor.extraJavaOptions"] == f"{logging} {QUICK_JIT}"
    assert LOGGING.is_file()
    # At QUICK_JIT_BYTES and beyond, or of an unknown size, the JVM keeps its optimising
    # compiler: at 5M customers quick compilation alone took 1.7 times as long.
    for sized in (
        launch_settings("local[3]", input_bytes=QUICK_JIT_BYTES),
        launch_settings("local[3]"),
    ):
        assert sized["spark.driver.extraJavaOptions"] == logging
        assert sized[DELTA_SNAPSHOT_PARTITIONS] == "3"
    # A cluster's session is sized by the cluster: segmatch only turns PySpark's call-site
    # capture off (a Connect client has none to turn off).
    assert launch_settings("spark://host:7077", input_bytes=1_000) == {DATAFRAME_DEBUGGING: "false"}
    assert DATAFRAME_DEBUGGING not in launch_settings("sc://host:15002", remote=True)
    # A Connect server started here outlives one client's run: it keeps the optimising compiler.
    served = launch_settings("local[2]", remote=True, input_bytes=1_000)
    assert served["spark.driver.extraJavaOptions"] == logging
    assert served[DELTA_SNAPSHOT_PARTITIONS] == "2"


def test_one_process_at_a_time_writes_the_class_archive(tmp_path):
    archive = ClassArchive(tmp_path, "a java|a spark")
    assert archive.java_options(may_write=False) == []
    # A process that ended while its JVM wrote the archive left a part of it: removed.
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    left = tmp_path / f"{archive.path.stem}.{int(ended.stdout)}.partial"
    left.write_bytes(b"part of an archive")
    (writes,) = [o for o in archive.java_options() if "ArchiveClassesAtExit" in o]
    assert writes.endswith(f".{os.getpid()}.partial") and not left.exists()
    # While a live process's JVM writes it, another start neither writes nor maps it.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as writer:
        try:
            (tmp_path / f"{archive.path.stem}.{writer.pid}.partial").write_bytes(b"being written")
            assert ClassArchive(tmp_path, "a java|a spark").java_options() == []
        finally:
            writer.kill()
    archive.path.write_bytes(b"an archive")
    assert ClassArchive(tmp_path, "a java|a spark").java_options()[0] == (
        f"-XX:SharedArchiveFile={archive.path}"
    )
