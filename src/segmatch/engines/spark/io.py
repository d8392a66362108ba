"""Reading inputs, staging outputs, and checkpointing frames and matrices with Spark."""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F  # noqa: N812 -- the PySpark convention
from pyspark.sql import types as T  # noqa: N812 -- the PySpark convention

from segmatch.engines.spark.delta import SparkDelta
from segmatch.engines.spark.expressions import kinds_of
from segmatch.engines.spark.frames import (
    ROW,
    SparkMatrix,
    persist,
    visible,
)
from segmatch.engines.types import ColumnKind, StoredKind
from segmatch.errors import InputError, first_line
from segmatch.locations import Files, join
from segmatch.staging import StagedOutputs

#: ``monotonically_increasing_id`` keeps the partition index above this bit.

_SPARK_TYPES = {
    "float": "double",
    "int": "bigint",
    "str": "string",
    "date": "date",
    "datetime": "timestamp",
    "bool": "boolean",
}


#: The charsets Spark 4 reads CSV in (others need a legacy setting checked at every read).
_SPARK_CHARSETS = {"UTF-8", "ISO-8859-1", "US-ASCII", "UTF-16", "UTF-16BE", "UTF-16LE", "UTF-32"}
#: Python codec names Java spells differently.
_JAVA_CHARSETS = {"utf-8": "UTF-8", "iso8859-1": "ISO-8859-1", "cp1252": "windows-1252"}


class SparkStorage(SparkDelta):
    """Reads inputs, stages outputs as Parquet, checkpoints frames and matrices."""

    def read(
        self,
        *,
        path: str,
        fmt: Literal["csv", "parquet", "delta"],
        types: Mapping[str, str],
        separator: str,
        version: int | None = None,
        encoding: str = "utf-8",
        infer_numbers: bool = True,
        columns: Sequence[str] | None = None,
    ) -> DataFrame:
        try:
            if fmt == "csv":
                options: dict[str, Any] = {
                    "header": True,
                    "sep": separator,
                    "mode": "FAILFAST",
                    "encoding": _spark_charset(encoding),
                }
                inferred = self.spark.read.csv(
                    str(path), inferSchema=infer_numbers, samplingRatio=1.0, **options
                ).schema
                # Text columns are read as text, never through a number: ids keep their
                # leading zeros and gain no ".0".
                schema = T.StructType(
                    [
                        T.StructField(f.name, T.StringType()) if types.get(f.name) == "str" else f
                        for f in inferred.fields
                    ]
                )
                frame = _single_byte_text(
                    self.spark.read.csv(str(path), schema=schema, **options), encoding
                )
            elif fmt == "parquet":
                # Hive partition folders (``country=BR/``) become columns; any other folder
                # layout is read file by file, whatever its nesting.
                hive = any("=" in name for name in Files(self.storage_options).subfolders(path))
                reader = self.spark.read
                if not hive:
                    reader = reader.option("recursiveFileLookup", "true")
                frame = reader.parquet(str(path))
            elif self.has_delta:
                frame = self.read_delta_table(path, version=version)
            else:
                frame = self.spark.read.parquet(*_delta_files(path, version, self.storage_options))
            if columns is not None:
                frame = frame.select(*columns)
            typed = {
                name: F.col(name).cast(_SPARK_TYPES[kind])
                for name, kind in types.items()
                if name in frame.columns
            }
            frame = frame.withColumns({**typed, ROW: F.monotonically_increasing_id()})
            frame.schema  # noqa: B018 -- resolves the files now, so errors name the input
        except (PySparkException, Py4JJavaError, OSError, ValueError, DeltaError) as exc:
            raise InputError(f"cannot read {fmt} input {str(path)!r}: {first_line(exc)}") from exc
        return frame

    def schema(self, frame: DataFrame) -> dict[str, ColumnKind]:
        return kinds_of(frame.schema)

    def stage_table(self, frame: DataFrame, *, outputs: StagedOutputs, table: str) -> None:
        if self.has_delta:
            # Delta's writer commits the frame itself: staging its rows as Parquet first would
            # write every row twice.
            outputs.hold(table, visible(frame))
        else:
            visible(frame).write.mode("overwrite").parquet(outputs.path_for(table))

    def to_arrow(
        self, frame: DataFrame, *, limit: int | None = None, columns: Sequence[str] | None = None
    ) -> pa.Table:
        rows = visible(frame) if columns is None else frame.select(*columns)
        return (rows if limit is None else rows.limit(limit)).toArrow()

    def save(self, value: DataFrame | SparkMatrix, *, folder: str) -> None:
        if isinstance(value, DataFrame):
            value.write.mode("overwrite").parquet(folder)
            return
        value.frame.write.mode("overwrite").parquet(join(folder, "rows"))
        meta = {
            "id_column": value.id_column,
            "width": value.width,
            "labelled": value.labelled,
            "carried": list(value.carried),
        }
        Files(self.storage_options).write_text(join(folder, "matrix.json"), json.dumps(meta))

    def load(self, *, folder: str, kind: StoredKind) -> DataFrame | SparkMatrix:
        if kind == "frame":
            return self.spark.read.parquet(folder)
        meta = json.loads(Files(self.storage_options).read_text(join(folder, "matrix.json")))
        meta["carried"] = tuple(meta.get("carried", ()))
        return SparkMatrix(frame=persist(self.spark.read.parquet(join(folder, "rows"))), **meta)


def _spark_charset(encoding: str) -> str:
    """The charset Spark reads a CSV in: its own name for the encoding, or, for a one-byte
    encoding Spark 4 does not take (cp1252 …), ISO-8859-1, translated after reading."""
    name = _JAVA_CHARSETS.get(codecs.lookup(encoding).name, encoding.upper())
    if name in _SPARK_CHARSETS:
        return name
    if len(bytes(range(256)).decode(encoding, errors="replace")) != 256:
        raise InputError(
            f"Spark reads CSV only in {', '.join(sorted(_SPARK_CHARSETS))} or a one-byte "
            f"encoding; {encoding!r} is neither: convert the file to UTF-8"
        )
    return "ISO-8859-1"


def _single_byte_text(frame: DataFrame, encoding: str) -> DataFrame:
    """Text read as ISO-8859-1 turned into ``encoding``'s characters (names included): each
    byte is one character in both, so a translation of the upper 128 is exact."""
    if _spark_charset(encoding) != "ISO-8859-1" or codecs.lookup(encoding).name == "iso8859-1":
        return frame
    upper = bytes(range(128, 256))
    read, meant = upper.decode("latin-1"), upper.decode(encoding, errors="replace")
    table = str.maketrans(read, meant)
    return frame.select(
        *(
            (
                F.translate(F.col(f"`{f.name}`"), read, meant)
                if isinstance(f.dataType, T.StringType)
                else F.col(f"`{f.name}`")
            ).alias(f.name.translate(table))
            for f in frame.schema.fields
        )
    )


def _delta_files(path: str, version: int | None, storage_options: dict[str, str]) -> list[str]:
    """The Parquet files of a Delta table version, via delta-rs (no Delta jars needed)."""
    table = DeltaTable(str(path), version=version, storage_options=storage_options or None)
    files = table.file_uris()
    if not files:
        raise ValueError(f"Delta table {str(path)!r} has no data files")
    return files
