"""Reading and writing rows and matrices with Polars, and the column kinds of a frame."""

from __future__ import annotations

import codecs
import io
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
from deltalake.exceptions import DeltaError

from segmatch.engines.local.expressions import kind_of_dtype
from segmatch.engines.local.matrix import LocalMatrix
from segmatch.engines.types import ColumnKind, StoredKind
from segmatch.errors import InputError, first_line
from segmatch.layout import PART_FILE, read_arrow, write_arrow
from segmatch.locations import Files, is_remote, join
from segmatch.staging import StagedOutputs

#: Values of a text column checked before it is parsed whole as dates.
DATE_SAMPLE = 200
#: The arrays of a matrix saved beside its ids.
MATRIX_ARRAYS = ("values", "labels", "distances", "runner_up")

_POLARS_TYPES: dict[str, pl.DataType] = {
    "float": pl.Float64(),
    "int": pl.Int64(),
    "str": pl.String(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
    "bool": pl.Boolean(),
}


class PolarsStorage:
    """Reading inputs, staging outputs and checkpointing frames and matrices."""

    storage_options: dict[str, str]

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
    ) -> pl.DataFrame:
        overrides = {name: _POLARS_TYPES[kind] for name, kind in types.items()}
        options = self.storage_options or None
        selected = None if columns is None else list(columns)
        try:
            if fmt == "csv":
                source: str | io.BytesIO = path
                if codecs.lookup(encoding).name != "utf-8":
                    # Polars reads UTF-8 only: other encodings are decoded here first.
                    text = Files(self.storage_options).read_bytes(path).decode(encoding)
                    source = io.BytesIO(text.encode("utf-8"))
                frame = _with_dates(
                    pl.read_csv(
                        source,
                        storage_options=options,
                        infer_schema=infer_numbers,
                        infer_schema_length=None,
                        separator=separator,
                        schema_overrides=overrides,
                        columns=selected,
                    ),
                    typed=overrides,
                )
            elif fmt == "parquet":
                # A folder is read whole: nested files, and Hive partition folders
                # (``country=BR/``) as columns.
                source = path
                if is_remote(path) and Files(self.storage_options).is_dir(path):
                    source = join(path, "**", "*.parquet")
                frame = pl.read_parquet(
                    source,
                    hive_partitioning=None,
                    storage_options=options,
                    columns=selected,
                )
            else:
                frame = pl.read_delta(
                    path,
                    version=version,
                    storage_options=options,
                    columns=selected,
                )
        except (pl.exceptions.PolarsError, OSError, ValueError, DeltaError) as exc:
            raise InputError(f"cannot read {fmt} input {str(path)!r}: {first_line(exc)}") from exc
        except BaseException as exc:
            # delta-rs reports some corrupt files as a Rust panic, a BaseException subclass.
            if type(exc).__name__ != "PanicException":
                raise
            raise InputError(f"cannot read {fmt} input {str(path)!r}: {first_line(exc)}") from exc
        if fmt != "csv" and overrides:
            frame = _cast_columns(frame, overrides, source=str(path))
        return frame

    def schema(self, frame: pl.DataFrame) -> dict[str, ColumnKind]:
        return {name: kind_of_dtype(dtype) for name, dtype in frame.schema.items()}

    def stage_table(self, frame: pl.DataFrame, *, outputs: StagedOutputs, table: str) -> None:
        frame.write_parquet(
            join(outputs.path_for(table), PART_FILE), storage_options=self.storage_options or None
        )

    def save(self, value: pl.DataFrame | LocalMatrix, *, folder: str) -> None:
        files = Files(self.storage_options)
        if isinstance(value, pl.DataFrame):
            write_arrow(value.to_arrow(), join(folder, PART_FILE), files=files)
            return
        write_arrow(value.ids.to_frame().to_arrow(), join(folder, "ids.parquet"), files=files)
        for name in MATRIX_ARRAYS:
            array = getattr(value, name)
            if array is not None:
                buffer = io.BytesIO()
                np.save(buffer, array)
                files.write_bytes(join(folder, f"{name}.npy"), buffer.getvalue())

    def load(self, *, folder: str, kind: StoredKind) -> pl.DataFrame | LocalMatrix:
        files = Files(self.storage_options)
        if kind == "frame":
            return pl.DataFrame(pl.from_arrow(read_arrow(join(folder, PART_FILE), files=files)))
        ids = pl.from_arrow(read_arrow(join(folder, "ids.parquet"), files=files))
        assert isinstance(ids, pl.DataFrame)
        arrays: dict[str, Any] = {
            name: np.load(io.BytesIO(files.read_bytes(join(folder, f"{name}.npy"))))
            if files.exists(join(folder, f"{name}.npy"))
            else None
            for name in MATRIX_ARRAYS
        }
        return LocalMatrix(ids=ids.to_series(), **arrays)

    def to_arrow(
        self,
        frame: pl.DataFrame,
        *,
        limit: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        rows = frame if columns is None else frame.select(columns)
        return (rows if limit is None else rows.head(limit)).to_arrow()


def _with_dates(frame: pl.DataFrame, *, typed: dict[str, pl.DataType]) -> pl.DataFrame:
    """Text columns that are dates or times, parsed as such.

    Only a column whose first values all read as dates is parsed whole: trying every text
    column of a file cost seconds per megabyte (13 s for a 5.8 MB export of text columns).
    """
    parsed = {}
    for name, dtype in frame.schema.items():
        if name in typed or dtype != pl.String:
            continue
        sample = frame.get_column(name).drop_nulls().head(DATE_SAMPLE)
        if sample.is_empty() or not sample.str.contains(r"^\d{4}-\d{2}-\d{2}").all():
            continue
        for target in (pl.Date, pl.Datetime("us")):
            try:
                sample.str.strptime(target, strict=True)
            except pl.exceptions.PolarsError:
                continue
            parsed[name] = target
            break
    if not parsed:
        return frame
    return frame.with_columns(
        pl.col(name).str.strptime(target, strict=False) for name, target in parsed.items()
    )


def _cast_columns(
    frame: pl.DataFrame, types: dict[str, pl.DataType], *, source: str
) -> pl.DataFrame:
    for name, dtype in types.items():
        if name not in frame.columns:
            continue
        try:
            frame = frame.with_columns(pl.col(name).cast(dtype, strict=True))
        except pl.exceptions.PolarsError as exc:
            raise InputError(
                f"column {name!r} of {source!r} cannot be read as {dtype}: {first_line(exc)}"
            ) from exc
    return frame
