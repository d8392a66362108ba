"""The small types engines and stages exchange: rules, column facts, rows handed to kernels."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from segmatch.engines.expressions import Expr, Kind, col, lit

BlockKernel = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
"""Maps one block of rows (values, labels) to a small array; blocks' results are combined."""


Combine = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Merges two blocks' results into one of the same shape (a sum, by default)."""


#: How a checkpoint stores an engine's value: rows, or a feature matrix.
StoredKind = Literal["frame", "matrix"]

#: What a column holds (the kinds expressions are compiled for).
ColumnKind = Kind


QUARANTINE_RULE = "quarantine_rule"

#: A column's value read as text, where an engine counts rows per value.
LEVEL = "__segmatch_level"


QUARANTINE_COLUMN = "quarantine_column"


@dataclass(frozen=True)
class Rule:
    """A validation rule; rows breaking it are quarantined under ``name``.

    kinds: ``null_id`` (null or blank), ``not_null``, ``numeric`` (text that does not parse as a
    number), ``finite`` (±inf), ``range`` (outside [low, high]).
    """

    name: str
    column: str
    kind: Literal["null_id", "not_null", "numeric", "finite", "range"]
    low: float | None = None
    high: float | None = None

    def broken(self, kinds: Mapping[str, Kind]) -> Expr:
        """True where a row breaks this rule (never null), for a frame of these column kinds."""
        value = col(self.column)
        if self.kind == "null_id":
            is_text = kinds[self.column] == "string"
            blank = value.strip().eq("").fill_null(False) if is_text else lit(False)
            return value.is_null().or_(blank)
        if self.kind == "not_null":
            return value.is_null()
        if self.kind == "numeric":
            text = value.as_text().strip()
            return text.ne("").and_(text.as_number().is_null()).fill_null(False)
        number = value.as_number()
        if self.kind == "finite":
            return number.is_infinite().fill_null(False)
        outside = lit(False)
        if self.low is not None:
            outside = outside.or_(number.lt(self.low))
        if self.high is not None:
            outside = outside.or_(number.gt(self.high))
        # NaN compares above every number, but it is a missing value (imputed), not an outlier.
        return outside.and_(number.is_nan().not_()).fill_null(False)


@dataclass(frozen=True)
class ColumnStats:
    """Per-column facts from one pass: nulls, central values, category level counts."""

    nulls: dict[str, int]
    centers: dict[str, float]
    levels: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ColumnSummary:
    """Per group (the key None without groups): its rows, and per numeric column its values
    (not null), their sum and their exact quantile."""

    rows: dict[Any, int]
    values: dict[Any, dict[str, int]]
    sums: dict[Any, dict[str, float]]
    quantiles: dict[Any, dict[str, float | None]]

    def mean(self, group: Any, column: str) -> float | None:
        values = self.values[group][column]
        return self.sums[group][column] / values if values else None


@dataclass(frozen=True)
class TransactionColumns:
    """Column roles of a transactions table, already checked against the input."""

    id_column: str
    timestamp: str
    amount: str | None
    quantity: str | None
    unit_price: str | None
    invoice: str | None
    category: str | None
    cancellation_prefix: str | None
    drop_returns: bool
    as_of: datetime | None


@dataclass(frozen=True)
class SegmentRows:
    """Rows of one segment (or one search cell) handed to a kernel: ids, labels and values
    as arrays; in a cell, ``home`` tells its own rows from copies of its neighbours'."""

    ids: pa.Array | pa.ChunkedArray
    labels: np.ndarray
    values: np.ndarray
    home: np.ndarray | None = None


@dataclass(frozen=True)
class SampledRows:
    """Rows a seeded sample drew, in the order of their ids' seeded hashes: ids, values, and
    segment labels once the matrix has them."""

    values: np.ndarray
    labels: np.ndarray | None
    #: The ids the sample drew from, and the positions it took: its ids are taken when asked
    #: for (k-means' fit sample reads only the values; at 5M rows taking every id cost 0.4 s).
    drawn_from: pa.Array | pa.ChunkedArray
    positions: np.ndarray

    @cached_property
    def ids(self) -> pa.Array | pa.ChunkedArray:
        return self.drawn_from.take(pa.array(self.positions))

    @property
    def segments(self) -> np.ndarray:
        """The rows' segment labels (the matrix must be labelled)."""
        if self.labels is None:
            raise ValueError("the matrix has no segment labels yet; assign centroids first")
        return self.labels


#: The columns of an assigned matrix, as :meth:`Engine.matrix_frame` names them.
SEGMENT, DISTANCE, RUNNER_UP = "segment", "distance", "runner_up"


def vector_column(j: int) -> str:
    """The name :meth:`Engine.matrix_frame` gives the vector's ``j``-th value (from 0)."""
    return f"x_{j + 1}"
