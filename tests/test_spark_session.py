"""The Spark session segmatch starts: Delta's package resolved through Ivy once per machine,
its jars loaded directly by every later start."""

from __future__ import annotations

import textwrap

import pytest

from helpers import run_script

START_AND_WRITE = textwrap.dedent(
    """
    import json, sys
    from segmatch.config import SparkConfig
    from segmatch.engines.spark.session import session_for

    spark = session_for(SparkConfig(master="local[1]"))
    spark.range(3).write.format("delta").save(sys.argv[1])
    conf = spark.sparkContext.getConf()
    print("RESULT " + json.dumps({
        "packages": conf.get("spark.jars.packages"),
        "jars": conf.get("spark.jars"),
        "rows": spark.read.format("delta").load(sys.argv[1]).count(),
    }))
    """
)


@pytest.mark.usefixtures("spark_process")
def test_delta_is_resolved_once_then_loaded_from_the_listing(tmp_path):
    cache = tmp_path / "cache"
    env = {"SEGMATCH_CACHE_DIR": str(cache)}
    first = run_script(START_AND_WRITE, str(tmp_path / "a"), cwd=tmp_path, env=env)
    assert first["packages"].startswith("io.delta:delta-spark") and first["rows"] == 3
    (listing,) = cache.glob("spark-jars-*.txt")
    listed = listing.read_text().split()
    assert any("delta-spark" in jar for jar in listed)
    second = run_script(START_AND_WRITE, str(tmp_path / "b"), cwd=tmp_path, env=env)
    assert second["packages"] is None and second["rows"] == 3
    assert second["jars"].split(",") == listed
    # A listed jar gone (a cleaned Ivy cache): the next start resolves the packages again.
    (tmp_path / "gone").write_text("\n".join([*listed, "file:///nowhere/missing.jar"]))
    listing.write_text((tmp_path / "gone").read_text())
    third = run_script(START_AND_WRITE, str(tmp_path / "c"), cwd=tmp_path, env=env)
    assert third["packages"].startswith("io.delta:delta-spark") and third["rows"] == 3
    assert listing.read_text().split() == listed
