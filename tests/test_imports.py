import subprocess
import sys


def test_import_segmatch_loads_neither_spark_nor_mlflow_nor_engine_libraries():
    code = (
        "import sys, segmatch, segmatch.config, segmatch.errors;"
        "heavy = [m for m in ('pyspark', 'mlflow', 'polars', 'sklearn') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def test_running_the_api_does_not_import_spark_or_mlflow():
    code = (
        "import sys; from segmatch.api import run_pipeline;"
        "print(','.join(m for m in ('pyspark', 'mlflow') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
