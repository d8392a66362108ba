"""How the Spark engine lays out its data: the matrix as columns, and the helpers over it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812 -- the PySpark convention

ROW = "__segmatch_row"


LABEL, DISTANCE, RUNNER_UP = "label", "distance", "runner_up"


@dataclass(frozen=True)
class SparkMatrix:
    """Feature vectors as columns x0 … x{width-1} beside the id; labels once assigned.

    ``carried`` customer columns ride along (as c0, c1 …, so no name of the input can clash
    with the matrix's own), so results that show them need no join back to the customers.
    """

    frame: DataFrame
    id_column: str
    width: int
    labelled: bool = False
    carried: tuple[str, ...] = ()

    @property
    def value_columns(self) -> list[str]:
        return [f"x{j}" for j in range(self.width)]

    @property
    def carried_columns(self) -> list[str]:
        return [f"c{i}" for i in range(len(self.carried))]

    def carries(self, columns: Sequence[str]) -> bool:
        return set(columns) <= set(self.carried)

    def customer_column(self, name: str) -> Column:
        """A carried column under its own name."""
        return F.col(f"c{self.carried.index(name)}").alias(name)


def matrix_of(table: pa.Table | pa.RecordBatch, columns: Sequence[str]) -> np.ndarray:
    """The named double columns of an Arrow table (or batch) as one float64 matrix."""
    values = np.empty((table.num_rows, len(columns)), dtype=np.float64)
    # Chunk by chunk into place: joining each column's chunks first, then stacking the
    # columns, copied every value twice (5M × 6 values: 1.2 s against 0.06 s).
    for j, name in enumerate(columns):
        column = table.column(name)
        start = 0
        for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
            values[start : start + len(chunk), j] = chunk.to_numpy(zero_copy_only=False)
            start += len(chunk)
    return values


def values_of(batch: pa.RecordBatch, width: int) -> np.ndarray:
    if width == 0:
        return np.empty((batch.num_rows, 0))
    return np.column_stack(
        [batch.column(f"x{j}").to_numpy(zero_copy_only=False) for j in range(width)]
    ).astype(np.float64, copy=False)


#: The frames the current run cached (None outside a run), released when it ends.
_RUN_CACHES: ContextVar[list[DataFrame] | None] = ContextVar("segmatch_run_caches", default=None)


def persist(frame: DataFrame) -> DataFrame:
    cached = frame.persist(StorageLevel.MEMORY_AND_DISK)
    held = _RUN_CACHES.get()
    if held is not None:
        held.append(cached)
    return cached


@contextmanager
def caches_released() -> Iterator[None]:
    """Frames cached inside the block (a run) are released when it ends: a session that runs
    segmatch again and again (a notebook's) keeps none of an ended run's rows."""
    held: list[DataFrame] = []
    token = _RUN_CACHES.set(held)
    try:
        yield
    finally:
        _RUN_CACHES.reset(token)
        for frame in held:
            frame.unpersist(blocking=False)


#: What a regular expression's ``\s`` matches in Java: spaces, tabs, line ends.
WHITESPACE = " \t\n\x0b\f\r"


def trimmed(text: Column) -> Column:
    """Text without the whitespace around it (a character set, not a regular expression: on
    5M rows of two text columns, the regular expression took seconds)."""
    return F.btrim(text, F.lit(WHITESPACE))


def visible(frame: DataFrame) -> DataFrame:
    return frame.drop(ROW) if ROW in frame.columns else frame


#: Session settings are shared by every thread of the session (tables commit side by side):
#: one statement at a time runs under settings of its own.
_SETTINGS_LOCK = threading.Lock()


@contextmanager
def session_settings(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Session settings for one statement, the previous values restored after it."""
    if not settings:
        yield
        return
    with _SETTINGS_LOCK:
        previous: dict[str, str | None] = {key: spark.conf.get(key, None) for key in settings}
        for key, value in settings.items():
            spark.conf.set(key, value)
        try:
            yield
        finally:
            for key, earlier in previous.items():
                if earlier is None:
                    spark.conf.unset(key)
                else:
                    spark.conf.set(key, earlier)
