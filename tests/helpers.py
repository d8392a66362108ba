"""Helpers the tests share: plain test data written to files, configs, the public data sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from segmatch.config import Config
from segmatch.config_loading import build_config

ENGINES = ["local", "spark"]
#: The bucket the S3-compatible test server (``s3_server``) holds.
BUCKET = "segmatch-tests"
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def write_table(rows: list[dict[str, Any]] | dict[str, list], path: Path) -> Path:
    """Write plain test data (rows or columns) as CSV or Parquet, by extension."""
    table = pa.Table.from_pylist(rows) if isinstance(rows, list) else pa.table(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def make_config(data: Path, out: Path, engine_name: str = "local", **sections: Any) -> Config:
    """A config for ``data`` with the demo's feature choices unless sections override them."""
    raw: dict[str, Any] = {
        "engine": engine_name,
        "input": {"path": str(data)},
        "output": {"path": str(out)},
        "cluster": {"k_min": 2, "k_max": 6, "seed": 3},
        "tracking": {"enabled": False},
    }
    for name, section in sections.items():
        raw[name] = {**raw.get(name, {}), **section} if isinstance(section, dict) else section
    return build_config(raw, source="test")


def shared_data(relative: str) -> Path:
    path = (SHARED_DATA / relative).resolve()
    if not path.exists():
        pytest.skip(f"public data set {relative} is not present at {path}")
    return path


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def run_script(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> dict:
    """Run Python code in its own process; return the JSON it prints after ``RESULT ``.

    For what cannot share the test process: a Spark Connect server, a local-cluster master.
    """
    return run_script_with_errors(script, *args, cwd=cwd, env=env)[0]


def run_script_with_errors(
    script: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[dict, str]:
    """:func:`run_script`'s result, and what the process wrote to its error stream."""
    completed = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, "PYSPARK_PYTHON": sys.executable, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert completed.returncode == 0, _what_failed(completed.stderr)
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), completed.stderr


def _what_failed(stderr: str) -> str:
    """The Python traceback and the distinct errors Spark logged: a failing Spark process can
    end its error stream with thousands of repeated warnings that say nothing of the cause."""
    errors = dict.fromkeys(line for line in stderr.splitlines() if " ERROR " in line)
    start = stderr.rfind("Traceback (most recent call last)")
    return "\n".join([*list(errors)[:20], stderr[max(start, 0) :][-4000:]])


def labelled_matrix(engine: Any, ids: list[str], points: Any, labels: Any, folder: Path):
    """A matrix of ``engine`` holding ``points`` with segment ``labels``, built as any input
    is: a file read by the engine, then its feature matrix."""
    import numpy as np  # noqa: PLC0415 -- only the tests that build matrices need it

    columns = [f"x{j}" for j in range(points.shape[1])]
    path = write_table(
        {
            "id": ids,
            **{name: points[:, j] for j, name in enumerate(columns)},
            "segment": np.asarray(labels, np.int32),
        },
        folder / f"matrix-{len(ids)}-{abs(hash(tuple(ids[:3])))}.parquet",
    )
    frame = engine.read(path=str(path), fmt="parquet", types={}, separator=",")
    return engine.feature_matrix(
        frame, id_column="id", numeric=columns, log=(), levels={}, labels="segment"
    )


def clustering_of(matrix: Any, labels: Any):
    """The clustering the match stage reads, for a matrix labelled by hand."""
    import numpy as np  # noqa: PLC0415

    from segmatch.stages.cluster import Clustering  # noqa: PLC0415

    segment_ids, sizes = np.unique(labels, return_counts=True)
    return Clustering(
        matrix=matrix,
        centroids=np.zeros((len(segment_ids), 1)),
        segment_ids=segment_ids,
        k=len(segment_ids),
        silhouette=0.0,
        sample_silhouette=0.0,
        inertia=0.0,
        sizes=sizes,
        candidates=(),
        sweep_rows=0,
        rows_in=len(labels),
        rows_out=len(labels),
    )
