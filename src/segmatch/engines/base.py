"""The Engine interface: the few primitives a stage needs, and nothing about any library.

A stage passes engine-owned objects (a ``Frame`` of rows, a ``Matrix`` of feature vectors)
back to the engine without looking inside them. Everything a stage decides is made from the
small NumPy results the primitives return, with the math in :mod:`segmatch.kernels`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

Frame = Any
"""An engine's table of rows (a Polars DataFrame locally, a Spark DataFrame on Spark)."""

Matrix = Any
"""An engine's feature matrix: one vector per customer id, with segment labels once assigned."""

BlockKernel = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
"""Maps one block of rows (values, labels) to a small array; blocks' results are summed."""

ColumnKind = Literal["numeric", "string", "temporal", "boolean", "other"]

QUARANTINE_RULE = "quarantine_rule"
QUARANTINE_COLUMN = "quarantine_column"
MISSING_LEVEL = "(missing)"
OTHER_LEVEL = "(other)"


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


class Engine(ABC):
    """Primitives every engine supplies. Arguments are keyword-only and already validated."""

    name: str

    @property
    def partitions(self) -> int:
        """Partitions the data is spread over (1 in one process)."""
        return 1

    def partition_plan(self) -> dict[str, Any]:
        """The last partitioning decision and its inputs (empty when nothing was planned)."""
        return {}

    def distribute(self, frame: Frame, *, key: str, input_bytes: int) -> Frame:
        """Spread the rows over the engine's workers by ``key`` (nothing to do in one process)."""
        return frame

    # -- reading and writing -------------------------------------------------------------
    @abstractmethod
    def read(
        self,
        *,
        path: Path,
        fmt: Literal["csv", "parquet", "delta"],
        types: dict[str, str],
        separator: str,
        version: int | None = None,
    ) -> Frame:
        """Read a file, a folder of Parquet files, or a Delta table (at ``version``)."""

    @abstractmethod
    def schema(self, frame: Frame) -> dict[str, ColumnKind]: ...

    @abstractmethod
    def count(self, frame: Frame) -> int: ...

    @abstractmethod
    def write_parquet(self, frame: Frame, *, folder: Path) -> None:
        """Write the frame as Parquet files into ``folder`` (staged for a Delta commit)."""

    @abstractmethod
    def stored_kind(self, value: Any) -> Literal["frame", "matrix"] | None:
        """Whether a value is one of this engine's frames or matrices (for checkpoints)."""

    @abstractmethod
    def save_frame(self, frame: Frame, *, path: Path) -> None: ...

    @abstractmethod
    def load_frame(self, *, path: Path) -> Frame: ...

    @abstractmethod
    def save_matrix(self, matrix: Matrix, *, folder: Path) -> None: ...

    @abstractmethod
    def load_matrix(self, *, folder: Path) -> Matrix: ...

    @abstractmethod
    def to_arrow(self, frame: Frame, *, limit: int | None = None) -> pa.Table:
        """A small frame (profiles, summaries) or the first ``limit`` rows, as Arrow."""

    # -- validation and cleaning ---------------------------------------------------------
    @abstractmethod
    def check_numeric_text(self, frame: Frame, *, column: str) -> ParseCheck: ...

    @abstractmethod
    def split_quarantine(self, frame: Frame, *, rules: Sequence[Rule]) -> tuple[Frame, Frame]:
        """(rows breaking no rule, rows breaking one with its first rule's name and column)."""

    @abstractmethod
    def cast_to_float(self, frame: Frame, *, columns: Sequence[str]) -> Frame: ...

    @abstractmethod
    def deduplicate(
        self,
        frame: Frame,
        *,
        id_column: str,
        keep: Literal["first", "latest"],
        order_by: str | None,
    ) -> tuple[Frame, int]:
        """One row per id (the first, or the latest by ``order_by``), and how many rows that is."""

    @abstractmethod
    def column_stats(
        self,
        frame: Frame,
        *,
        numeric: Sequence[str],
        categorical: Sequence[str],
        center: Literal["median", "mean"],
    ) -> ColumnStats: ...

    @abstractmethod
    def fill_missing(
        self, frame: Frame, *, numeric: dict[str, float], categorical: Sequence[str]
    ) -> Frame: ...

    # -- features ------------------------------------------------------------------------
    @abstractmethod
    def aggregate_transactions(self, frame: Frame, *, columns: TransactionColumns) -> Frame: ...

    @abstractmethod
    def feature_matrix(
        self,
        frame: Frame,
        *,
        id_column: str,
        numeric: Sequence[str],
        log: Sequence[str],
        levels: dict[str, Sequence[str]],
    ) -> Matrix:
        """One row per customer: numeric columns (signed-log where listed), then one-hot levels."""

    # -- passes over the matrix ----------------------------------------------------------
    @abstractmethod
    def matrix_rows(self, matrix: Matrix) -> int: ...

    @abstractmethod
    def reduce_blocks(self, matrix: Matrix, *, kernel: BlockKernel) -> np.ndarray: ...

    @abstractmethod
    def quantiles(self, matrix: Matrix, *, q: Sequence[float]) -> np.ndarray:
        """len(q) × d quantiles of each column."""

    @abstractmethod
    def affine(self, matrix: Matrix, *, shift: np.ndarray, linear: np.ndarray) -> Matrix:
        """``(x − shift) @ linear`` for every row."""

    @abstractmethod
    def sample_values(self, matrix: Matrix, *, rows: int, seed: int) -> np.ndarray:
        """About ``rows`` rows' values, seeded, in memory (all rows when there are fewer)."""

    @abstractmethod
    def stratified_sample(
        self, matrix: Matrix, *, rows: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """About ``rows`` rows (values, labels), each segment drawn in proportion to its size."""

    @abstractmethod
    def refine_centroids(
        self, matrix: Matrix, *, centroids: np.ndarray, max_iter: int, shift_tolerance: float
    ) -> np.ndarray:
        """Lloyd iterations over every row from ``centroids`` (fitted on a sample).

        They stop once the centroids' summed squared shift is at most ``shift_tolerance`` (an
        absolute figure, in the matrix's squared units) or after ``max_iter``.
        """

    @abstractmethod
    def assign(self, matrix: Matrix, *, centroids: np.ndarray) -> Matrix:
        """The matrix with each row's nearest centroid (label) and its distance."""

    @abstractmethod
    def relabel(self, matrix: Matrix, *, ids: np.ndarray) -> Matrix:
        """The matrix with each label ``i`` replaced by ``ids[i]``."""

    @abstractmethod
    def segment_transitions(self, previous: Frame, matrix: Matrix, *, id_column: str) -> pa.Table:
        """(from_segment, to_segment, customers) for ids present in both assignments."""

    @abstractmethod
    def top_k_within_segments(
        self,
        matrix: Matrix,
        *,
        id_column: str,
        k: int,
        kernel: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    ) -> Frame:
        """Rows (id, segment, match_id, rank, distance, similarity), the kernel run per segment."""

    # -- results -------------------------------------------------------------------------
    @abstractmethod
    def segments_frame(
        self, matrix: Matrix, *, id_column: str, labels: dict[str, str | None]
    ) -> Frame:
        """Rows (id, segment, distance, pc_1 … pc_d, then each label as a text column)."""

    @abstractmethod
    def scores_frame(self, matrix: Matrix, *, id_column: str) -> Frame:
        """Rows (id, segment, distance, confidence) of an assigned matrix."""

    @abstractmethod
    def top_k_against(
        self,
        reference: Frame,
        matrix: Matrix,
        *,
        id_column: str,
        k: int,
        kernel: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    ) -> Frame:
        """For each row of ``matrix``, its k nearest rows of ``reference`` (a segments table
        with pc_* coordinates) within the same segment."""

    @abstractmethod
    def rows_for_ids(
        self, frame: Frame, *, id_column: str, ids: Sequence[Any], columns: Sequence[str]
    ) -> pa.Table:
        """The rows of a few ids (a report's sample), as Arrow."""

    @abstractmethod
    def segment_profiles(self, frame: Frame, matrix: Matrix, *, columns: Sequence[str]) -> pa.Table:
        """Per segment: size, share, and the mean and median of each column."""
