"""Where outputs land: Delta Lake tables written through delta-rs.

A run stages each table as Parquet files first; only when every stage has succeeded are the
files committed, one Delta commit per table. A reader sees the previous version or the new
one, never a half-written table. Commits carry the run id in their metadata, and a batch id
(config + input digest) as a Delta application transaction, so committing the same batch
twice changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Schema, Transaction
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, create_table_with_add_actions

from segmatch.errors import InputError
from segmatch.tables import WriteMode

STAGING_FOLDER = ".staging"
DELTA_LOG = "_delta_log"
RUNS_FOLDER = "runs"
SUMMARY_FILE = "summary.json"
MATCH_SAMPLE_FILE = "match_sample.parquet"
SCATTER_SAMPLE_FILE = "scatter_sample.parquet"
#: Customers a run keeps, stratified by segment, for its report's PCA scatter.
SCATTER_POINTS = 4000

#: Plain tables every Delta reader opens: no deletion vectors, no column mapping.
TABLE_CONFIGURATION = {"delta.enableDeletionVectors": "false"}
COMMIT_RETRIES = 8


@dataclass(frozen=True)
class TableCommit:
    """What committing one table did."""

    table: str
    path: Path
    version: int
    operation: str
    rows: int
    skipped: bool = False


class StagedOutputs:
    """Tables of one run, staged as Parquet under ``<root>/.staging/runs/<run_id>``.

    Example:
        >>> staged = StagedOutputs(Path("out"), "run-1")  # doctest: +SKIP
        >>> write_arrow(table, staged.path_for("segments") / "part-0.parquet")  # doctest: +SKIP
        >>> staged.commit(modes={"segments": "overwrite"}, keys={"segments": ["id"]})
    """

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = Path(root)
        self.run_id = run_id
        self.staging = self.root / STAGING_FOLDER / RUNS_FOLDER / run_id
        self._tables: list[str] = []

    def path_for(self, table: str) -> Path:
        """The folder to write ``table``'s Parquet files to."""
        folder = self.staging / table
        folder.mkdir(parents=True, exist_ok=True)
        if table not in self._tables:
            self._tables.append(table)
        return folder

    def table_path(self, table: str) -> Path:
        return self.root / table

    def commit(
        self,
        committer: TableCommitter,
        *,
        modes: Mapping[str, WriteMode],
        keys: Mapping[str, Sequence[str]],
        batch_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, TableCommit]:
        """Commit every staged table to its Delta table; return what each commit did.

        ``committer`` is the engine's way to commit one table (:func:`commit_staged` here).
        The staging folder stays until :meth:`discard` (other staged files may follow).
        """
        properties = {"segmatch.run_id": self.run_id, **(metadata or {})}
        done = {
            table: committer(
                self.table_path(table),
                staged=self.staging / table,
                mode=modes.get(table, "overwrite"),
                keys=keys.get(table, ()),
                app_id=f"segmatch:{table}:{batch_id}" if batch_id else None,
                metadata=properties,
            )
            for table in self._tables
        }
        self._tables.clear()
        return done

    def discard(self) -> None:
        """Remove whatever this run staged (the run failed or committed)."""
        shutil.rmtree(self.staging, ignore_errors=True)


class TableCommitter(Protocol):
    """Commits one table's staged Parquet folder to its Delta table."""

    def __call__(
        self,
        location: Path,
        *,
        staged: Path,
        mode: WriteMode,
        keys: Sequence[str],
        app_id: str | None,
        metadata: Mapping[str, str],
    ) -> TableCommit: ...


def commit_staged(
    location: Path,
    *,
    staged: Path,
    mode: WriteMode,
    keys: Sequence[str],
    app_id: str | None,
    metadata: Mapping[str, str],
) -> TableCommit:
    """Commit a staged folder's Parquet files with delta-rs (see :func:`commit_table`)."""
    return commit_table(
        location,
        sorted(Path(staged).glob("*.parquet")),
        mode=mode,
        keys=keys,
        app_id=app_id,
        metadata=metadata,
    )


def commit_table(
    path: Path,
    files: Sequence[Path],
    *,
    mode: WriteMode,
    keys: Sequence[str],
    app_id: str | None,
    metadata: Mapping[str, str],
) -> TableCommit:
    """Commit staged Parquet files to the Delta table at ``path``.

    Overwrite and append adopt the staged files as they are (moved into the table, then
    committed: no rewrite). Merge upserts on ``keys``: rows whose values changed are updated,
    new keys inserted, unchanged rows left alone. A concurrent commit that conflicts is retried
    on the new table version.
    """
    attempt = 0
    while True:
        try:
            return _commit_once(path, files, mode=mode, keys=keys, app_id=app_id, metadata=metadata)
        except CommitFailedError:
            attempt += 1
            if attempt == COMMIT_RETRIES:
                raise
            time.sleep(0.05 * 2**attempt)


def _commit_once(path, files, *, mode, keys, app_id, metadata) -> TableCommit:
    properties = CommitProperties(
        custom_metadata=dict(metadata),
        app_transactions=[Transaction(app_id, 0)] if app_id else None,
    )
    existing = open_table(path)
    if existing is not None and app_id and existing.transaction_version(app_id) is not None:
        return TableCommit(path.name, path, existing.version(), "skipped", 0, skipped=True)
    schema = pq.read_schema(files[0]) if files else pa.schema([])
    if existing is None or mode != "merge":
        adds, rows = _adopt(path, files)
        properties.custom_metadata["segmatch.rows_written"] = str(rows)
        if existing is None:
            create_table_with_add_actions(
                str(path),
                Schema.from_arrow(schema),
                adds,
                mode="error",
                configuration=TABLE_CONFIGURATION,
                commit_properties=properties,
            )
        else:
            existing.create_write_transaction(
                adds, mode=mode, schema=schema, commit_properties=properties
            )
        version = DeltaTable(str(path)).version()
        return TableCommit(path.name, path, version, mode, rows)
    source = _changed_or_new(_unique_on(_read_files(files), keys), path, existing, keys)
    changed = " OR ".join(
        f'(t."{c}" IS DISTINCT FROM s."{c}")' for c in source.column_names if c not in keys
    )
    merger = existing.merge(
        source,
        predicate=" AND ".join(f't."{k}" = s."{k}"' for k in keys),
        source_alias="s",
        target_alias="t",
        merge_schema=True,
        commit_properties=properties,
    )
    if changed:
        merger = merger.when_matched_update_all(predicate=changed)
    metrics = merger.when_not_matched_insert_all().execute()
    for file in files:
        file.unlink(missing_ok=True)
    rows = metrics["num_target_rows_inserted"] + metrics["num_target_rows_updated"]
    return TableCommit(path.name, path, DeltaTable(str(path)).version(), "merge", rows)


def _adopt(path: Path, files: Sequence[Path]) -> tuple[list[AddAction], int]:
    """Move staged files into the table folder and describe them as Delta add actions."""
    path.mkdir(parents=True, exist_ok=True)
    adds, rows = [], 0
    for file in files:
        name = f"part-{uuid.uuid4().hex}.parquet"
        target = path / name
        os.replace(file, target)
        stat = target.stat()
        records = pq.ParquetFile(target).metadata.num_rows
        rows += records
        adds.append(
            AddAction(
                name,
                stat.st_size,
                {},
                int(stat.st_mtime * 1000),
                True,
                json.dumps({"numRecords": records}),
            )
        )
    return adds, rows


def _unique_on(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """The last row for each key (a merge source must not repeat a key), in input order."""
    if not keys or table.num_rows == 0:
        return table
    numbered = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    last = numbered.group_by(list(keys), use_threads=False).aggregate([("__row", "max")])
    return table.take(np.sort(last["__row_max"].to_numpy()))


def _changed_or_new(
    source: pa.Table, path: Path, existing: DeltaTable, keys: Sequence[str]
) -> pa.Table:
    """The source rows that are new or differ from the table: only these go to the merge.

    delta-rs evaluates a merge row by row over the whole source; dropping unchanged rows first
    (one Arrow hash join) makes a mostly unchanged batch cost what its changes cost.
    """
    shared = [c for c in source.column_names if c in existing.schema().to_arrow().names]
    if set(keys) - set(shared) or source.num_rows == 0:
        return source
    local = pafs.SubTreeFileSystem(str(path.resolve()), pafs.LocalFileSystem())
    target = existing.to_pyarrow_dataset(filesystem=local).to_table(columns=shared)
    try:  # the table may store string as large_string and the like: compare as the source
        target = target.cast(source.select(shared).schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return source
    values = [c for c in shared if c not in keys]
    renamed = target.rename_columns([c if c in keys else f"{c}__old" for c in shared])
    renamed = renamed.append_column("__present", pa.array(np.ones(target.num_rows, dtype=bool)))
    joined = source.append_column("__row", pa.array(np.arange(source.num_rows), pa.int64())).join(
        renamed, keys=list(keys), join_type="left outer", use_threads=True
    )
    differs = pc.is_null(joined["__present"])
    for column in values:
        new, old = joined[column], joined[f"{column}__old"]
        both_null = pc.and_(pc.is_null(new), pc.is_null(old))
        unequal = pc.fill_null(pc.not_equal(new, old), True)
        differs = pc.or_(differs, pc.and_(pc.invert(both_null), unequal))
    rows = np.sort(joined["__row"].filter(differs).to_numpy())
    return source.take(rows)


def _read_files(files: Sequence[Path]) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})


def is_delta_table(path: Path) -> bool:
    """Whether ``path`` is the root of a Delta table (it has a transaction log)."""
    return (Path(path) / DELTA_LOG).is_dir()


def open_table(path: Path, *, version: int | None = None) -> DeltaTable | None:
    """The Delta table at ``path`` (at ``version``), or None when there is none."""
    try:
        return DeltaTable(str(path), version=version)
    except TableNotFoundError:
        return None


def read_delta(path: Path, *, version: int | None = None) -> pa.Table:
    """A whole Delta table as Arrow, read through Arrow's own local file system.

    (Reading through delta-rs's file-system handler can abort the interpreter at exit.)
    """
    table = open_table(path, version=version)
    if table is None:
        raise InputError(f"{str(path)!r} is not a Delta table")
    local = pafs.SubTreeFileSystem(str(path.resolve()), pafs.LocalFileSystem())
    return table.to_pyarrow_dataset(filesystem=local).to_table()


def table_history(path: Path) -> list[dict[str, Any]]:
    """Versions of a Delta table, newest first: time, operation, rows written, run id."""
    table = open_table(path)
    if table is None:
        raise InputError(f"{str(path)!r} is not a Delta table (no {DELTA_LOG})")
    rows = []
    for entry in table.history():
        metrics = entry.get("operationMetrics") or {}
        # delta-rs keeps commit metadata as top-level keys; Spark's writer as one JSON string.
        spark_metadata = json.loads(entry.get("userMetadata") or "{}")
        written = entry.get("segmatch.rows_written") or spark_metadata.get("segmatch.rows_written")
        rows.append(
            {
                "version": entry["version"],
                "timestamp": entry.get("timestamp"),
                "operation": entry.get("operation"),
                "rows_written": int(written or 0) or _rows_written(metrics),
                "run_id": entry.get("segmatch.run_id") or spark_metadata.get("segmatch.run_id"),
            }
        )
    return rows


def _rows_written(metrics: Mapping[str, Any]) -> int:
    """Rows a commit inserted or updated, from either writer's operation metrics."""
    names = (
        "num_target_rows_inserted",
        "num_target_rows_updated",
        "numTargetRowsInserted",
        "numTargetRowsUpdated",
    )
    merged = sum(int(metrics.get(name) or 0) for name in names)
    return merged or int(metrics.get("numOutputRows") or 0)


def restore_table(path: Path, version: int) -> int:
    """Roll a Delta table back to ``version`` (as a new version); return the new version."""
    table = open_table(path)
    if table is None:
        raise InputError(f"{str(path)!r} is not a Delta table (no {DELTA_LOG})")
    if not 0 <= version <= table.version():
        raise InputError(
            f"version {version} of {str(path)!r} does not exist (versions 0 to {table.version()})"
        )
    if version == table.version():
        raise InputError(f"{str(path)!r} is already at version {version}; nothing to restore")
    try:
        table.restore(
            version,
            commit_properties=CommitProperties(custom_metadata={"segmatch.operation": "restore"}),
        )
    except DeltaError as exc:
        raise InputError(f"cannot restore {str(path)!r} to version {version}: {exc}") from exc
    return DeltaTable(str(path)).version()


def run_folder(output: Path, run_id: str) -> Path:
    """Where a run keeps its summary, lookalike sample and report."""
    return Path(output) / RUNS_FOLDER / run_id


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


def input_digest(path: Path, *, version: int | None = None) -> str:
    """A SHA-256 digest that changes whenever the input does, read from metadata only.

    A Delta table's digest is its location and version (the one read); a file's or a folder's,
    the listing of its files with their sizes and modification times. Nothing reads the
    data: on Spark the driver never holds more than the listing.
    """
    digest = hashlib.sha256()
    table = open_table(path, version=version) if is_delta_table(path) else None
    if table is not None:
        digest.update(f"delta:{path.resolve()}:{table.version()}".encode())
        return digest.hexdigest()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        stat = file.stat()
        name = file.relative_to(path) if path.is_dir() else file.name
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
