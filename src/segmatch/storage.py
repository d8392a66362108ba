"""Where outputs land: Delta Lake tables written through delta-rs.

A run stages each table first (Parquet files, or rows an engine holds for its own Delta
writer); only when every stage has succeeded is each table committed, one Delta commit per
table. A reader sees the previous version or the new one, never a half-written table. Commits
carry the run id in their metadata, and a batch id (config + input digest) as a Delta
application transaction, so committing the same batch twice changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Schema, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from segmatch.errors import InputError
from segmatch.layout import DELTA_LOG, Location
from segmatch.locations import Files, is_remote, join, local_path, name_of
from segmatch.staging import TableCommit
from segmatch.tables import WriteMode
from segmatch.writes import CommitInfo, Written, commit_rows

logger = logging.getLogger(__name__)

#: Plain tables every Delta reader opens: no deletion vectors, no column mapping. File
#: statistics for the first two columns only, which in every table segmatch writes are its keys
#: (the id and the segment, the run and the stage): the ones a reader filters or Z-orders by.
#: Delta's default of 32 columns made Spark's writer compute minimums and maximums of every
#: coordinate and measure, about a third of a segments table's write (1M rows, 16 columns:
#: 1.4 s with them, 1.0 s without), for statistics that skip no file of rows spread by id.
TABLE_CONFIGURATION = {
    "delta.enableDeletionVectors": "false",
    "delta.dataSkippingNumIndexedCols": "2",
}
COMMIT_RETRIES = 8


def commit_staged(
    location: str,
    *,
    staged: str,
    mode: WriteMode,
    keys: Sequence[str],
    app_id: str | None,
    metadata: Mapping[str, str],
    storage_options: Mapping[str, str] | None = None,
) -> TableCommit:
    """Commit a staged folder's Parquet files with delta-rs (see :mod:`segmatch.writes`).

    On a local disk the staged files are adopted as they are; on object storage, where a file
    cannot be renamed into the table, their rows are written anew.
    """
    if not is_remote(location) and not is_remote(staged):
        files = sorted(local_path(staged).glob("*.parquet"))
        return commit_table(
            local_path(location), files, mode=mode, keys=keys, app_id=app_id, metadata=metadata
        )
    rows = _read_staged(staged, Files(storage_options))
    writer = ArrowRowsWriter(dict(storage_options or {}))
    return _with_retries(
        lambda: commit_rows(
            writer,
            location,
            rows,
            name=name_of(location),
            mode=mode,
            keys=keys,
            app_id=app_id,
            metadata=metadata,
        )
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
    """Commit staged Parquet files to the local Delta table at ``path``: overwrite and append
    adopt them as they are (moved into the table, then committed: no rewrite)."""
    return _with_retries(
        lambda: commit_rows(
            AdoptedFilesWriter(),
            str(path),
            list(files),
            name=path.name,
            mode=mode,
            keys=keys,
            app_id=app_id,
            metadata=metadata,
        )
    )


class _DeltaRsTables:
    """What both delta-rs writers read of a table."""

    storage_options: dict[str, str] | None = None

    def version(self, location: str) -> int | None:
        table = open_table(location, storage_options=self.storage_options)
        return None if table is None else table.version()

    def holds_batch(self, location: str, app_id: str) -> bool:
        table = open_table(location, storage_options=self.storage_options)
        return table is not None and table.transaction_version(app_id) is not None


class ArrowRowsWriter(_DeltaRsTables):
    """delta-rs writing Arrow rows, anywhere delta-rs reaches (object stores included)."""

    def __init__(self, storage_options: dict[str, str]) -> None:
        self.storage_options = storage_options or None

    def write(
        self,
        location: str,
        rows: pa.Table,
        *,
        mode: Literal["overwrite", "append"],
        create: bool,
        commit: CommitInfo,
    ) -> Written:
        write_deltalake(
            location,
            rows,
            mode=mode,
            schema_mode="overwrite" if mode == "overwrite" else "merge",
            configuration=TABLE_CONFIGURATION if create else None,
            storage_options=self.storage_options,
            commit_properties=_properties(commit, rows_written=rows.num_rows),
        )
        return Written(rows.num_rows)

    def merge(
        self, location: str, rows: pa.Table, *, keys: Sequence[str], commit: CommitInfo
    ) -> Written:
        existing = DeltaTable(location, storage_options=self.storage_options)
        target = existing.to_pyarrow_dataset()
        return Written(_merge(existing, _unique_on(rows, keys), target, keys, _properties(commit)))


class AdoptedFilesWriter(_DeltaRsTables):
    """delta-rs on a local disk, taking staged Parquet files into the table as they are."""

    def write(
        self,
        location: str,
        rows: list[Path],
        *,
        mode: Literal["overwrite", "append"],
        create: bool,
        commit: CommitInfo,
    ) -> Written:
        path = Path(location)
        schema = pq.read_schema(rows[0]) if rows else pa.schema([])
        adds, written = _adopt(path, rows)
        properties = _properties(commit, rows_written=written)
        if create:
            create_table_with_add_actions(
                str(path),
                Schema.from_arrow(schema),
                adds,
                mode="error",
                configuration=TABLE_CONFIGURATION,
                commit_properties=properties,
            )
        else:
            DeltaTable(str(path)).create_write_transaction(
                list[AddAction | RemoveAction](adds),
                mode=mode,
                schema=schema,
                commit_properties=properties,
            )
        return Written(written)

    def merge(
        self, location: str, rows: list[Path], *, keys: Sequence[str], commit: CommitInfo
    ) -> Written:
        existing = DeltaTable(location)
        local = pafs.SubTreeFileSystem(str(Path(location).resolve()), pafs.LocalFileSystem())
        target = existing.to_pyarrow_dataset(filesystem=local)
        written = _merge(
            existing, _unique_on(_read_files(rows), keys), target, keys, _properties(commit)
        )
        for file in rows:
            file.unlink(missing_ok=True)
        return Written(written)


def _read_staged(staged: str, files: Files) -> pa.Table:
    filesystem, path = files.resolve(staged)
    parts = [
        f"{path}/{entry.relative}"
        for entry in files.list_files(staged)
        if entry.relative.endswith(".parquet")
    ]
    return pa.concat_tables([pq.read_table(p, filesystem=filesystem) for p in parts])


def _with_retries(commit: Callable[[], TableCommit]) -> TableCommit:
    """Run a commit, again on the new table version when a concurrent one conflicted."""
    attempt = 0
    while True:
        try:
            return commit()
        except CommitFailedError:
            attempt += 1
            if attempt == COMMIT_RETRIES:
                raise
            logger.debug("a concurrent commit conflicted; retry %d of %d", attempt, COMMIT_RETRIES)
            time.sleep(0.05 * 2**attempt)


def _properties(commit: CommitInfo, *, rows_written: int | None = None) -> CommitProperties:
    written = {} if rows_written is None else {"segmatch.rows_written": str(rows_written)}
    return CommitProperties(
        custom_metadata={**commit.metadata, **written},
        app_transactions=[Transaction(commit.app_id, 0)] if commit.app_id else None,
    )


def _merge(
    existing: DeltaTable,
    source: pa.Table,
    target: Any,
    keys: Sequence[str],
    properties: CommitProperties,
) -> int:
    """Upsert ``source`` on ``keys``; return the rows inserted or updated."""
    source = _changed_or_new(source, target, existing, keys)
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
    return metrics["num_target_rows_inserted"] + metrics["num_target_rows_updated"]


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
    source: pa.Table, target_rows: Any, existing: DeltaTable, keys: Sequence[str]
) -> pa.Table:
    """The source rows that are new or differ from the table: only these go to the merge.

    delta-rs evaluates a merge row by row over the whole source; dropping unchanged rows first
    (one Arrow hash join) makes a mostly unchanged batch cost what its changes cost.
    """
    shared = [c for c in source.column_names if c in existing.schema().to_arrow().names]
    if set(keys) - set(shared) or source.num_rows == 0:
        return source
    target = target_rows.to_table(columns=shared)
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


def is_delta_table(location: Location, *, files: Files | None = None) -> bool:
    """Whether ``location`` is the root of a Delta table (it has a transaction log)."""
    return (files or Files()).is_dir(join(str(location), DELTA_LOG))


def open_table(
    location: Location,
    *,
    version: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> DeltaTable | None:
    """The Delta table at ``location`` (at ``version``), or None when there is none."""
    try:
        return DeltaTable(str(location), version=version, storage_options=_options(storage_options))
    except TableNotFoundError:
        return None


def read_delta(
    location: Location,
    *,
    version: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pa.Table:
    """A whole Delta table as Arrow.

    Local tables are read through Arrow's own local file system (reading through delta-rs's
    file-system handler can abort the interpreter at exit); remote ones through delta-rs.
    """
    table = open_table(location, version=version, storage_options=storage_options)
    if table is None:
        raise InputError(f"{str(location)!r} is not a Delta table")
    if is_remote(str(location)):
        return table.to_pyarrow_table()
    root = str(local_path(str(location)).resolve())
    return table.to_pyarrow_dataset(
        filesystem=pafs.SubTreeFileSystem(root, pafs.LocalFileSystem())
    ).to_table()


def table_history(
    path: Location, *, storage_options: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Versions of a Delta table, newest first: time, operation, rows written, run id."""
    table = open_table(path, storage_options=storage_options)
    if table is None:
        raise InputError(f"{str(path)!r} is not a Delta table (no {DELTA_LOG})")
    return [history_row(entry) for entry in table.history()]


def history_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One version of a table's history (a delta-rs or Spark ``DESCRIBE HISTORY`` entry) as
    segmatch shows it: version, time (ms), operation, rows written, run id."""
    metrics = entry.get("operationMetrics") or {}
    # delta-rs keeps commit metadata as top-level keys; Spark's writer as one JSON string.
    spark_metadata = json.loads(entry.get("userMetadata") or "{}")
    written = entry.get("segmatch.rows_written") or spark_metadata.get("segmatch.rows_written")
    timestamp = entry.get("timestamp")
    if isinstance(timestamp, datetime):  # Spark's: naive, in this process's local time
        timestamp = int(timestamp.timestamp() * 1000)
    return {
        "version": entry["version"],
        "timestamp": timestamp,
        "operation": entry.get("operation"),
        "rows_written": int(written or 0) or _rows_written(metrics),
        "run_id": entry.get("segmatch.run_id") or spark_metadata.get("segmatch.run_id"),
    }


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


def restore_table(
    path: Location, version: int, *, storage_options: Mapping[str, str] | None = None
) -> int:
    """Roll a Delta table back to ``version`` (as a new version); return the new version."""
    table = open_table(path, storage_options=storage_options)
    if table is None:
        raise InputError(f"{str(path)!r} is not a Delta table (no {DELTA_LOG})")
    check_restorable(str(path), version, latest=table.version())
    try:
        table.restore(
            version,
            commit_properties=CommitProperties(custom_metadata={"segmatch.operation": "restore"}),
        )
    except DeltaError as exc:
        raise InputError(f"cannot restore {str(path)!r} to version {version}: {exc}") from exc
    return DeltaTable(str(path), storage_options=_options(storage_options)).version()


def check_restorable(table: str, version: int, *, latest: int) -> None:
    """Refuse a restore to a version the table does not have, or already is at."""
    if not 0 <= version <= latest:
        raise InputError(f"version {version} of {table!r} does not exist (versions 0 to {latest})")
    if version == latest:
        raise InputError(f"{table!r} is already at version {version}; nothing to restore")


def table_digest(name: str, version: int) -> str:
    """The digest of a catalog table's version (see :func:`input_digest`)."""
    return hashlib.sha256(f"table:{name}:{version}".encode()).hexdigest()


def input_digest(
    location: Location, *, version: int | None = None, files: Files | None = None
) -> str:
    """A SHA-256 digest that changes whenever the input does, read from metadata only.

    A Delta table's digest is its location and version (the one read); a file's or a folder's,
    the listing of its files with their sizes and modification times. Nothing reads the
    data: on Spark the driver never holds more than the listing.
    """
    files = files or Files()
    location = str(location)
    digest = hashlib.sha256()
    if is_delta_table(location, files=files):
        try:
            table = open_table(location, version=version, storage_options=files.storage_options)
        except DeltaError:
            table = None  # a damaged log: reading the input reports it, naming the table
        if table is not None:
            where = location if is_remote(location) else str(local_path(location).resolve())
            digest.update(f"delta:{where}:{table.version()}".encode())
            return digest.hexdigest()
    for entry in files.list_files(location):
        digest.update(f"{entry.relative}\0{entry.size}\0{entry.mtime_ns}\n".encode())
    return digest.hexdigest()


def _options(storage_options: Mapping[str, str] | None) -> dict[str, str] | None:
    """delta-rs takes its storage options as a dict."""
    return None if storage_options is None else dict(storage_options)
