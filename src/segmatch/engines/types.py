"""The small types engines and stages exchange: rules, column facts, rows handed to kernels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, TypeVar

import numpy as np
import pyarrow as pa

ExprT = TypeVar("ExprT")
"""An engine's column expression (a Polars ``Expr``, a Spark ``Column``)."""


BlockKernel = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
"""Maps one block of rows (values, labels) to a small array; blocks' results are combined."""


Combine = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Merges two blocks' results into one of the same shape (a sum, by default)."""


ColumnKind = Literal["numeric", "string", "temporal", "boolean", "other"]


QUARANTINE_RULE = "quarantine_rule"


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

    def broken(self, ops: RuleOps[ExprT]) -> ExprT:
        """The engine's expression that is true where a row breaks this rule (never null)."""
        column = self.column
        if self.kind == "null_id":
            return ops.any_of([ops.is_null(column), ops.is_blank(column)])
        if self.kind == "not_null":
            return ops.is_null(column)
        if self.kind == "numeric":
            return ops.is_unparsable(column)
        if self.kind == "finite":
            return ops.is_infinite(column)
        return ops.is_outside(column, low=self.low, high=self.high)


class RuleOps(Protocol[ExprT]):
    """The column tests an engine gives, from which every :class:`Rule` is built.

    Each returns an expression that is false (not null) where the test does not apply.
    """

    def is_null(self, column: str) -> ExprT: ...

    def is_blank(self, column: str) -> ExprT:
        """Text that is empty once trimmed (false for non-text columns)."""
        ...

    def is_unparsable(self, column: str) -> ExprT:
        """Non-blank text that does not parse as a number."""
        ...

    def is_infinite(self, column: str) -> ExprT: ...

    def is_outside(self, column: str, *, low: float | None, high: float | None) -> ExprT: ...

    def any_of(self, conditions: Sequence[ExprT]) -> ExprT: ...


@dataclass(frozen=True)
class ParseCheck:
    """How many non-null values of a text column parse as numbers."""

    non_null: int
    failed: int
    example: str | None


@dataclass(frozen=True)
class ColumnStats:
    """Per-column facts from one pass: nulls, central values, category level counts."""

    nulls: dict[str, int]
    centers: dict[str, float]
    levels: dict[str, dict[str, int]] = field(default_factory=dict)


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
