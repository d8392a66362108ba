"""Where outputs land: written to a staging folder first, then moved into place.

A reader never sees a half-written output: each table is complete in staging before it
replaces the previous one, and a failed run leaves the previous outputs as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

STAGING_FOLDER = ".staging"


class StagedOutputs:
    """Tables of one run, staged under ``<root>/.staging/<run_id>`` until :meth:`commit`.

    Example:
        >>> staged = StagedOutputs(Path("out"), "run-1")  # doctest: +SKIP
        >>> write_arrow(table, staged.path_for("segments"))  # doctest: +SKIP
        >>> staged.commit()  # doctest: +SKIP
        {'segments': PosixPath('out/segments.parquet')}
    """

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = Path(root)
        self.staging = self.root / STAGING_FOLDER / run_id
        self._tables: list[str] = []

    def path_for(self, table: str) -> Path:
        """The staging path to write ``table`` to."""
        self.staging.mkdir(parents=True, exist_ok=True)
        if table not in self._tables:
            self._tables.append(table)
        return self.staging / f"{table}.parquet"

    def final_path(self, table: str) -> Path:
        return self.root / f"{table}.parquet"

    def commit(self) -> dict[str, Path]:
        """Move every staged table into place; return the final paths."""
        placed = {}
        for table in self._tables:
            os.replace(self.staging / f"{table}.parquet", self.final_path(table))
            placed[table] = self.final_path(table)
        self.discard()
        return placed

    def discard(self) -> None:
        """Remove whatever this run staged (the run failed or committed)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        parent = self.staging.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


def write_arrow(table: pa.Table, path: Path) -> None:
    """Write an Arrow table as one Parquet file."""
    pq.write_table(table, path)


def write_json(data: Any, path: Path) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(temporary, path)


def append_json_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON record as a line (the structured stage log)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=str) + "\n")


def input_digest(path: Path) -> str:
    """SHA-256 over every byte of the input (a file, or a folder's files in name order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()
