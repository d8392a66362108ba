"""Every folder and file segmatch keeps under an output root, named in one place.

::

    <root>/
      segments/ lookalikes/ profiles/ quarantine/ stage_log/   Delta tables (tables.Table)
      model.json                  the current run's fitted model
      _segmatch/lease/            one-row Delta table: who commits, each table's version
      runs/<run_id>/              stage_log.jsonl, summary.json, samples, column_plan.json,
                                  report, logs
      .staging/runs/<run_id>/     a run's staged tables, until it commits or fails
      .staging/checkpoints/       checkpointed stage results (resume)
      .staging/runs/<run_id>.json a run's checkpoint manifest

Example:
    >>> OutputLayout("s3://bucket/out").staged_run("r1")
    's3://bucket/out/.staging/runs/r1'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from segmatch.locations import Files, is_remote, join, local_path

STAGING_FOLDER = ".staging"
RUNS_FOLDER = "runs"
CHECKPOINTS_FOLDER = "checkpoints"
LEASE_TABLE = join("_segmatch", "lease")
DELTA_LOG = "_delta_log"
MODEL_FILE = "model.json"
# A run's own folder:
#: One JSON line per stage of the run as each ends, written by that run alone: two runs on one
#: output never rewrite each other's lines (object storage cannot append).
STAGE_LOG_FILE = "stage_log.jsonl"
SUMMARY_FILE = "summary.json"
LOOKALIKE_SAMPLE_FILE = "lookalike_sample.parquet"
SCATTER_SAMPLE_FILE = "scatter_sample.parquet"
#: The weakest links and the strongest near misses of a run with identity, for the report.
IDENTITY_SAMPLE_FILE = "identity_pairs_sample.parquet"
#: The run's segment profiles beside its summary: the report reads them wherever the tables are.
PROFILES_FILE = "profiles.parquet"
COLUMN_PLAN_FILE = "column_plan.json"
#: The whole traceback of a run that failed on something unexpected.
ERROR_LOG_FILE = "error.log"
RUN_LOG_FILE = "run.log"
#: The one file a table staged from the driver is written as.
PART_FILE = "part-00000.parquet"
#: Customers a run keeps, stratified by segment, for its report's PCA scatter.
SCATTER_POINTS = 4000

Location = str | Path
"""A local path or a URI; functions here take either and give locations as strings."""


@dataclass(frozen=True)
class OutputLayout:
    """The locations under one output root."""

    root: str

    @property
    def model(self) -> str:
        return join(self.root, MODEL_FILE)

    @property
    def lease(self) -> str:
        return join(self.root, LEASE_TABLE)

    @property
    def staging(self) -> str:
        return join(self.root, STAGING_FOLDER)

    def staged_run(self, run_id: str) -> str:
        return join(self.root, STAGING_FOLDER, RUNS_FOLDER, run_id)


def run_folder(output: Location, run_id: str) -> str:
    """Where a run keeps its summary, samples and report."""
    return join(str(output), RUNS_FOLDER, run_id)


def write_arrow(table: pa.Table, location: Location, *, files: Files | None = None) -> None:
    """Write an Arrow table as one Parquet file."""
    if not is_remote(str(location)):
        local_path(str(location)).parent.mkdir(parents=True, exist_ok=True)
    filesystem, path = (files or Files()).resolve(str(location))
    pq.write_table(table, path, filesystem=filesystem)


def read_arrow(location: Location, *, files: Files | None = None) -> pa.Table:
    """Read one Parquet file written by :func:`write_arrow`."""
    filesystem, path = (files or Files()).resolve(str(location))
    return pq.read_table(path, filesystem=filesystem)


def write_json(data: Any, location: Location, *, files: Files | None = None) -> None:
    """Write JSON whole (locally: a temporary file, then a rename)."""
    text = json.dumps(data, indent=2, default=str)
    (files or Files()).write_text(str(location), text)
