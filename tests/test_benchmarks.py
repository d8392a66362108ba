"""The benchmark's small version: it must produce a complete table (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_produces_a_complete_table(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((tmp_path / "quick.json").read_text())
    pipelines = [r["pipeline"] for r in report["results"]]
    assert pipelines == [
        "baseline",
        "segmatch spark",
        "segmatch local",
        "segmatch local again",
        "sklearn script",
    ]
    for entry in report["results"]:
        assert entry["wall_seconds"] > 0 and entry["peak_mib"] > 0
        assert -1 <= entry["silhouette"] <= 1 and entry["stages"]
        assert -1 <= entry["silhouette_exact"] <= 1 and entry["inertia"] > 0
        # Every pipeline finds the generator's segments, more or less well.
        assert 0.3 < entry["ari"] <= 1
        assert entry["baseline_over_this"] > 0
    spark, local = report["results"][1], report["results"][2]
    # segmatch's own runs say what ran outside their stages, and the Spark one its jobs.
    for run in (spark, local):
        assert set(run["outside"]) == {"imports", "session", "between_and_after"}
        assert run["outside"]["between_and_after"] > 0
    assert local["outside"]["session"] == 0 and local["jobs"] == {}
    assert spark["outside"]["session"] > 0
    # The cluster and export stages run no job of their own here: the rows fit the fit sample,
    # so the scale stage brought them to the driver, where the fit, the sums, the silhouette and
    # the segment profiles then run (the segments table's rows are assigned as it is written).
    assert "cluster" not in spark["jobs"] and "export" not in spark["jobs"]
    for stage in ("ingest", "clean", "scale"):
        assert spark["jobs"][stage]["jobs"] >= 1
        assert spark["jobs"][stage]["spark_stages"] >= 1
    assert {"cores", "memory_gib", "python"} <= set(report["machine"])
    assert report["libraries"]["segmatch"] != "not installed"
    assert report["matching"]["rows"] == 20_000
    assert 0.0 <= report["matching"]["recall_at_10"] <= 1.0
    assert report["matching"]["segmatch_seconds"] > 0 and report["matching"]["sklearn_seconds"] > 0
    assert report["scale"]["rows"] == 20_000 and report["scale"]["peak_mib"] > 0
    assert "lookalikes" in report["scale"]["stages"]
    assert [r["rows"] for r in report["linearity"]] == [20_000]
    table = (tmp_path / "quick.md").read_text()
    assert table.count("\n| 20,000 |") == 6  # five pipelines, one linearity row
    assert "Matching, top-10" in table and "Scale run" in table
