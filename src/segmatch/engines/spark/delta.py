"""Delta tables through Delta Lake's own Spark writer: distributed, nothing through the driver.

Each commit carries the run's metadata as Delta's commit user metadata and, when the run has
a batch id, Delta's idempotent-write pair (``txnAppId``, ``txnVersion``): Delta skips a write
whose application already committed that version, so the same batch commits once. A session
without Delta falls back to delta-rs only where that is safe: a classic session whose executors
share the driver's machine (``local`` master).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pyspark.errors import AnalysisException, PySparkException
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F  # noqa: N812 -- the PySpark convention
from pyspark.sql import types as T  # noqa: N812 -- the PySpark convention

from segmatch.engines.spark.frames import session_settings
from segmatch.engines.spark.session import DELTA_EXTENSION, delta_settings
from segmatch.errors import ConfigError, EngineUnavailableError, InputError
from segmatch.locations import is_table_name, name_of, quoted_table_name
from segmatch.staging import TableCommit
from segmatch.storage import (
    TABLE_CONFIGURATION,
    check_restorable,
    commit_staged,
    history_row,
    open_table,
)
from segmatch.tables import WriteMode
from segmatch.writes import CommitInfo, Written, commit_rows

#: The idempotent-write version of a batch: one commit per (table, batch) application id.
BATCH_VERSION = 0


def no_delta_message() -> str:
    settings = " ".join(f"--conf {key}={value}" for key, value in delta_settings().items())
    return (
        "the Spark session has no Delta Lake, and its executors may not share the driver's "
        "disk, so segmatch cannot commit Delta tables through it. Run on Databricks, or start "
        f"Spark with Delta's package and extension ({settings}); a session segmatch builds "
        "itself gets them unless spark.delta is false"
    )


class SparkDelta:
    """Reading and committing Delta tables with the session's Delta Lake."""

    spark: SparkSession
    storage_options: dict[str, str]
    _has_delta: bool | None

    @property
    def has_delta(self) -> bool:
        """Whether the session runs Delta Lake's SQL extension (or is Databricks')."""
        if self._has_delta is None:
            extensions = self.spark.conf.get("spark.sql.extensions", "") or ""
            databricks = bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))
            self._has_delta = DELTA_EXTENSION in extensions or databricks
        return self._has_delta

    def _shares_driver_disk(self) -> bool:
        try:
            return (self.spark.sparkContext.master or "").startswith("local")
        except (PySparkException, AttributeError):
            return False  # Spark Connect: the server may run anywhere

    def read_delta_table(self, location: str, *, version: int | None) -> DataFrame:
        """A Delta table (at ``version``), by path or catalog name, through Delta's reader:
        deletion vectors and column mapping are honoured."""
        reader = self.spark.read
        if version is not None:
            reader = reader.option("versionAsOf", version)
        if is_table_name(location):
            return reader.table(quoted_table_name(location))
        return reader.format("delta").load(str(location))

    def has_table(self, location: str) -> bool:
        if is_table_name(location):
            return self.spark.catalog.tableExists(quoted_table_name(location))
        return super().has_table(location)  # type: ignore[misc]

    def table_version(self, location: str) -> int | None:
        if is_table_name(location):
            return self._version(location)
        return super().table_version(location)  # type: ignore[misc]

    def input_bytes(self, location: str) -> int:
        if is_table_name(location):
            detail = self.spark.sql(f"DESCRIBE DETAIL {_sql_target(location)}").first()
            return int(detail["sizeInBytes"] or 0) if detail is not None else 0
        return super().input_bytes(location)  # type: ignore[misc]

    def table_history(self, location: str) -> list[dict[str, Any]]:
        if not is_table_name(location):
            return super().table_history(location)  # type: ignore[misc]
        self._require_table(location)
        rows = self.spark.sql(f"DESCRIBE HISTORY {_sql_target(location)}").collect()
        return [history_row(row.asDict()) for row in rows]

    def restore_table(self, location: str, version: int) -> int:
        if not is_table_name(location):
            return super().restore_table(location, version)  # type: ignore[misc]
        self._require_table(location)
        latest = self._last_commit(location)[0]
        check_restorable(location, version, latest=latest)
        self.spark.sql(f"RESTORE TABLE {_sql_target(location)} TO VERSION AS OF {int(version)}")
        return self._last_commit(location)[0]

    def _require_table(self, name: str) -> None:
        if not self.spark.catalog.tableExists(quoted_table_name(name)):
            raise InputError(f"no table {name!r} in the session's catalog")

    def commit_table(
        self,
        location: str,
        *,
        staged: str | DataFrame,
        mode: WriteMode,
        keys: Sequence[str],
        app_id: str | None,
        metadata: Mapping[str, str],
    ) -> TableCommit:
        named = is_table_name(location)
        if not self.has_delta:
            if named or not self._shares_driver_disk():
                raise EngineUnavailableError(no_delta_message())
            if isinstance(staged, DataFrame):
                raise EngineUnavailableError(no_delta_message())
            return commit_staged(
                location, staged=staged, mode=mode, keys=keys, app_id=app_id, metadata=metadata
            )
        rows = staged if isinstance(staged, DataFrame) else self.spark.read.parquet(str(staged))
        return commit_rows(
            SparkDeltaWriter(self),
            location,
            _plain_strings(rows),
            name=location.rsplit(".", 1)[-1] if named else name_of(location),
            mode=mode,
            keys=keys,
            app_id=app_id,
            metadata=metadata,
        )

    def _write(
        self,
        location: str,
        frame: DataFrame,
        *,
        mode: Literal["overwrite", "append"],
        create: bool,
        commit: CommitInfo,
    ) -> None:
        named = is_table_name(location)
        user_metadata = json.dumps(dict(commit.metadata))
        writer = frame.write.format("delta").mode(mode).option("userMetadata", user_metadata)
        if create:
            # The same tables as delta-rs creates (see TABLE_CONFIGURATION).
            writer = writer.options(**TABLE_CONFIGURATION)
        writer = writer.option("overwriteSchema" if mode == "overwrite" else "mergeSchema", "true")
        if commit.app_id:
            writer = writer.option("txnAppId", commit.app_id).option("txnVersion", BATCH_VERSION)
        # Delta drops the writer's userMetadata option when a write to a named table runs as
        # CREATE (or REPLACE) TABLE AS SELECT: there the session setting carries it.
        settings = (
            {"spark.databricks.delta.commitInfo.userMetadata": user_metadata} if named else {}
        )
        try:
            with session_settings(self.spark, settings):
                if named:
                    writer.saveAsTable(quoted_table_name(location))
                else:
                    writer.save(str(location))
        except AnalysisException as exc:
            if named and "SCHEMA_NOT_FOUND" in str(exc):
                raise ConfigError(_missing_schema(location)) from exc
            raise

    def _merge(
        self,
        frame: DataFrame,
        location: str,
        *,
        keys: Sequence[str],
        commit: CommitInfo,
    ) -> None:
        """Upsert on ``keys``: only rows whose values differ are rewritten."""
        app_id, user_metadata = commit.app_id, json.dumps(dict(commit.metadata))
        order = "__segmatch_order"
        latest = Window.partitionBy(*keys).orderBy(F.col(order).desc())
        source = (
            frame.withColumn(order, F.monotonically_increasing_id())
            .withColumn("__segmatch_rank", F.row_number().over(latest))
            .where(F.col("__segmatch_rank") == 1)
            .drop(order, "__segmatch_rank")
        )
        view = f"segmatch_merge_{uuid.uuid4().hex}"
        source.createOrReplaceTempView(view)
        existing = set(self.read_delta_table(location, version=None).columns)
        compared = [c for c in source.columns if c not in keys and c in existing]
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in compared)
        update = f"WHEN MATCHED AND ({changed}) THEN UPDATE SET * " if changed else ""
        settings = {
            "spark.databricks.delta.commitInfo.userMetadata": user_metadata,
            "spark.databricks.delta.schema.autoMerge.enabled": "true",
        }
        if app_id:
            settings |= {
                "spark.databricks.delta.write.txnAppId": app_id,
                "spark.databricks.delta.write.txnVersion": str(BATCH_VERSION),
            }
        try:
            with session_settings(self.spark, settings):
                self.spark.sql(
                    f"MERGE INTO {_sql_target(location)} t USING {view} s ON {on} "
                    f"{update}WHEN NOT MATCHED THEN INSERT *"
                )
        finally:
            self.spark.catalog.dropTempView(view)

    def _version(self, location: str) -> int | None:
        if not is_table_name(location):
            return self.table_version(location)
        try:
            return self._last_commit(location)[0]
        except AnalysisException:
            return None

    def _last_commit(self, location: str) -> tuple[int, int]:
        """The table's latest version and the rows its commit wrote (inserted or updated).

        A folder's is read from its Delta log on the driver (delta-rs, as every other check of
        an output folder): ``DESCRIBE HISTORY`` cost about a second of the session per call,
        twice per table and commit."""
        if not is_table_name(location):
            table = open_table(location, storage_options=self.storage_options)
            if table is None:
                raise InputError(f"Delta table {location!r} has no history")
            newest = history_row(table.history(1)[0])
            return int(newest["version"]), int(newest["rows_written"])
        last = self.spark.sql(f"DESCRIBE HISTORY {_sql_target(location)} LIMIT 1").first()
        if last is None:
            raise InputError(f"Delta table {location!r} has no history")
        metrics: dict[str, Any] = last["operationMetrics"] or {}
        merged = sum(
            int(metrics.get(m, 0)) for m in ("numTargetRowsInserted", "numTargetRowsUpdated")
        )
        return int(last["version"]), merged or int(metrics.get("numOutputRows", 0))


def _sql_target(location: str) -> str:
    """A table in SQL: its quoted catalog name, or ``delta.`path```."""
    return quoted_table_name(location) if is_table_name(location) else f"delta.`{location}`"


def _missing_schema(name: str) -> str:
    schema = name.rsplit(".", 1)[0]
    return (
        f"schema {schema!r} does not exist, so table {name!r} cannot be created; create it "
        f"(CREATE SCHEMA {quoted_table_name(schema)}) or set "
        "output.catalog and output.schema to one that exists"
    )


def _plain_strings(frame: DataFrame) -> DataFrame:
    """The frame with text columns typed plain ``string``.

    Under Spark Connect, text from an Arrow UDF carries an explicit default collation
    (``string collate UTF8_BINARY``) into the Delta schema, which delta-rs, Polars and
    DuckDB cannot read; a cast to ``string`` drops it.
    """
    return frame.select(
        *(
            F.col(f.name).cast("string").alias(f.name)
            if isinstance(f.dataType, T.StringType)
            else F.col(f.name)
            for f in frame.schema.fields
        )
    )


class SparkDeltaWriter:
    """Delta's own Spark writer and MERGE for :func:`segmatch.writes.commit_rows`.

    Whether a table holds a batch is not asked ahead: Delta's idempotent-write options make
    the writer skip it, and the version then stays where it was.
    """

    def __init__(self, delta: SparkDelta) -> None:
        self.delta = delta

    def version(self, location: str) -> int | None:
        return self.delta._version(location)

    def holds_batch(self, location: str, app_id: str) -> bool:
        return False

    def write(
        self,
        location: str,
        rows: DataFrame,
        *,
        mode: Literal["overwrite", "append"],
        create: bool,
        commit: CommitInfo,
    ) -> Written:
        self.delta._write(location, rows, mode=mode, create=create, commit=commit)
        version, written = self.delta._last_commit(location)
        return Written(written, version)

    def merge(
        self, location: str, rows: DataFrame, *, keys: Sequence[str], commit: CommitInfo
    ) -> Written:
        self.delta._merge(rows, location, keys=keys, commit=commit)
        version, written = self.delta._last_commit(location)
        return Written(written, version)
