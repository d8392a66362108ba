"""The Engine interface: the few primitives a stage needs, and nothing about any library.

A stage passes engine-owned objects (a ``FrameT`` of rows, a ``MatrixT`` of feature vectors)
back to the engine without looking inside them. Everything a stage decides is made from the
small NumPy results the primitives return, with the math in :mod:`segmatch.kernels`.

The public methods that shape results the same way on every engine (which rule a row broke
first, the rows of a lookalike answer) are written here once; an engine supplies the small
primitives under them (``_first_broken_rule``, ``_rows_per_segment`` …), the way a database
API wraps one ``_execute`` per backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import pyarrow as pa

from segmatch import kernels
from segmatch.cells import Cells
from segmatch.engines.expressions import Expr, col, rows, when
from segmatch.engines.types import (
    DISTANCE,
    LEVEL,
    SEGMENT,
    BlockKernel,
    ColumnKind,
    ColumnSummary,
    Combine,
    SampledRows,
    SegmentRows,
    StoredKind,
)
from segmatch.locations import Files
from segmatch.staging import StagedOutputs, TableCommit
from segmatch.storage import commit_staged, open_table, restore_table, table_history
from segmatch.tables import WriteMode

FrameT = TypeVar("FrameT")
"""An engine's table of rows (a Polars DataFrame locally, a Spark DataFrame on Spark)."""

MatrixT = TypeVar("MatrixT")
"""An engine's feature matrix: one vector per customer id, with segment labels once assigned."""


Frame = Any
"""A frame as stages see it: opaque, handed back to the engine that made it."""

Matrix = Any
"""A matrix as stages see it: opaque, handed back to the engine that made it."""


class Engine(ABC, Generic[FrameT, MatrixT]):
    """Primitives every engine supplies. Arguments are keyword-only and already validated."""

    name: str
    #: The classes of this engine's frames and matrices.
    frame_types: tuple[type, ...] = ()
    matrix_types: tuple[type, ...] = ()
    #: The most customers one lookalike search holds when the config sets no cap: ``None``
    #: searches each segment whole (one process holds every row anyway).
    default_max_cell_size: int | None = None
    #: Credentials and endpoints for remote locations (the config's ``storage_options``).
    storage_options: dict[str, str] = {}  # noqa: RUF012 -- replaced per engine, never mutated
    #: Tables a run commits at the same time.
    commit_concurrency: int = 1

    @property
    def partitions(self) -> int:
        """Partitions the data is spread over (1 in one process)."""
        return 1

    def tagged_jobs(self, tag: str) -> AbstractContextManager[None]:
        """Work this thread starts inside carries ``tag`` where the engine lists its jobs
        (nothing to tag in one process)."""
        return nullcontext()

    def run_scope(self) -> AbstractContextManager[None]:
        """One run's work: what the engine holds for it (caches, rows on the driver) is
        released when the run ends, committed or failed (nothing to release in one process)."""
        return nullcontext()

    def partition_plan(self) -> dict[str, Any]:
        """The last partitioning decision and its inputs (empty when nothing was planned)."""
        return {}

    def spread(self, frame: FrameT, *, key: Expr, stored_bytes: int) -> FrameT:
        """The rows spread over the engine's workers by ``key`` and held (nothing to do in
        one process); ``stored_bytes``, what they occupy in storage, sizes the spread."""
        return frame

    # -- reading and writing -------------------------------------------------------------
    def commit_table(
        self,
        location: str,
        *,
        staged: str,
        mode: WriteMode,
        keys: Sequence[str],
        app_id: str | None,
        metadata: Mapping[str, str],
    ) -> TableCommit:
        """Commit one table's staged Parquet folder to its Delta table (``location``).

        Overwrite and append replace or add the staged rows; merge upserts on ``keys``
        (changed rows updated, new ones inserted, unchanged ones left alone). A commit carries
        ``metadata``, and ``app_id`` as its application transaction, so a batch commits once.
        This default commits through delta-rs on the machine that runs the driver.
        """
        return commit_staged(
            location,
            staged=staged,
            mode=mode,
            keys=keys,
            app_id=app_id,
            metadata=metadata,
            storage_options=self.storage_options,
        )

    def has_table(self, location: str) -> bool:
        """Whether a Delta table is at ``location``."""
        return open_table(location, storage_options=self.storage_options) is not None

    def table_version(self, location: str) -> int | None:
        """The latest version of the Delta table at ``location`` (None: no table there)."""
        table = open_table(location, storage_options=self.storage_options)
        return None if table is None else table.version()

    def input_bytes(self, location: str) -> int:
        """The bytes an input occupies (the partition planner's measure)."""
        return Files(self.storage_options).stored_bytes(location)

    def table_history(self, location: str) -> list[dict[str, Any]]:
        """The table's versions, newest first (see :func:`segmatch.storage.history_row`)."""
        return table_history(location, storage_options=self.storage_options)

    def restore_table(self, location: str, version: int) -> int:
        """Roll the table back to ``version`` (as a new version); return the new version."""
        return restore_table(location, version, storage_options=self.storage_options)

    @abstractmethod
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
    ) -> FrameT:
        """Read a file, a folder of Parquet files, or a Delta table (at ``version``); a CSV
        file's text in ``encoding`` (a Python codec name), its untyped columns as text when
        ``infer_numbers`` is false; only ``columns`` when given (the others never read from a
        Parquet file or a Delta table)."""

    @abstractmethod
    def schema(self, frame: FrameT) -> dict[str, ColumnKind]: ...

    def count(self, frame: FrameT) -> int:
        """How many rows a frame has."""
        counted = self.to_arrow(self.aggregate(frame, {"rows": rows()}))
        return int(counted.column("rows")[0].as_py())

    @abstractmethod
    def stage_table(self, frame: FrameT, *, outputs: StagedOutputs, table: str) -> None:
        """Stage the frame as ``table``'s rows for the run's commit: Parquet files in
        ``outputs.path_for(table)``, or the frame held for a commit that writes it itself."""

    def stored_kind(self, value: Any) -> StoredKind | None:
        """Whether a value is one of this engine's frames or matrices (a checkpoint stores
        those with :meth:`save`, everything else as it is)."""
        if isinstance(value, self.frame_types):
            return "frame"
        return "matrix" if isinstance(value, self.matrix_types) else None

    @abstractmethod
    def save(self, value: FrameT | MatrixT, *, folder: str) -> None:
        """Write a frame or a matrix under ``folder`` (a checkpoint), whole."""

    @abstractmethod
    def load(self, *, folder: str, kind: StoredKind) -> FrameT | MatrixT:
        """What :meth:`save` wrote under ``folder``."""

    @abstractmethod
    def to_arrow(
        self, frame: FrameT, *, limit: int | None = None, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """A small frame (profiles, summaries) or its first ``limit`` rows, as Arrow (only
        ``columns``, when given)."""

    # -- rows ----------------------------------------------------------------------------
    @abstractmethod
    def with_columns(self, frame: FrameT, columns: Mapping[str, Expr]) -> FrameT:
        """The frame with each named column set to its row expression (added or replaced)."""

    @abstractmethod
    def filter(self, frame: FrameT, condition: Expr) -> FrameT:
        """The rows where ``condition`` (never null) holds, in their order."""

    @abstractmethod
    def aggregate(
        self, frame: FrameT, aggregations: Mapping[str, Expr], *, by: Sequence[str] = ()
    ) -> FrameT:
        """One row (or one per group of ``by``, in no set order) with each named aggregation;
        small results are read with :meth:`to_arrow`."""

    def level_counts(
        self, frame: FrameT, columns: Sequence[str], *, by: str | None = None
    ) -> dict[str, dict[tuple[Any, str | None], int]]:
        """How many rows hold each value of each of ``columns``, read as text (None: missing);
        per column, keyed by (the rows' value of ``by``, or None without it; the value)."""
        keys = [*([by] if by else []), LEVEL]
        counts: dict[str, dict[tuple[Any, str | None], int]] = {}
        for column in columns:
            counted = self.aggregate(
                self.with_columns(frame, {LEVEL: col(column).as_text()}), {"rows": rows()}, by=keys
            )
            counts[column] = {
                (row[by] if by else None, row[LEVEL]): row["rows"]
                for row in self.to_arrow(counted, columns=[*keys, "rows"]).to_pylist()
            }
        return counts

    def text_levels(
        self, frame: FrameT, columns: Sequence[str], *, most: int
    ) -> dict[str, dict[str, int] | int]:
        """Per column, read as text without the spaces around it (blank cells left out): how
        many rows hold each of its values when it has at most ``most`` values, else how many
        values it has."""
        found: dict[str, dict[str, int] | int] = {}
        for column in columns:
            grouped = self.aggregate(
                self.filter(
                    self.with_columns(frame, {LEVEL: present_text(column)}),
                    col(LEVEL).is_null().not_(),
                ),
                {"rows": rows()},
                by=[LEVEL],
            )
            levels = self.count(grouped)
            found[column] = (
                levels
                if levels > most
                else {
                    row[LEVEL]: row["rows"]
                    for row in self.to_arrow(grouped, columns=[LEVEL, "rows"]).to_pylist()
                }
            )
        return found

    def hold(self, frame: FrameT) -> FrameT:
        """The frame, kept where the engine can read it again without recomputing it (a
        cache on Spark; one process holds every frame already)."""
        return frame

    @abstractmethod
    def lookup(self, frame: FrameT, *, key: str, table: pa.Table) -> FrameT:
        """``frame`` with ``table``'s other columns beside each row whose ``key`` is one of
        ``table``'s keys (null where none is): a left join of a small table held on the
        driver, whose keys are unique."""

    @abstractmethod
    def deduplicate(
        self,
        frame: FrameT,
        *,
        id_column: str,
        keep: Literal["first", "latest"],
        order_by: str | None,
    ) -> tuple[FrameT, int]:
        """One row per id (the first, or the latest by ``order_by``), and how many rows that is."""

    # -- features ------------------------------------------------------------------------
    @abstractmethod
    def feature_matrix(
        self,
        frame: FrameT,
        *,
        id_column: str,
        numeric: Sequence[str],
        log: Sequence[str],
        levels: Mapping[str, Sequence[str]],
        carry: Sequence[str] = (),
        labels: str | None = None,
    ) -> MatrixT:
        """One row per customer: numeric columns (signed-log where listed), then one-hot levels.

        ``carry`` names columns of ``frame`` the results will want beside the segments (for
        profiles and the segments table); an engine that cannot line rows up without a join
        keeps them in the matrix. ``labels`` names an integer column of segment labels (a
        segments table read back): the matrix is then labelled with them.
        """

    # -- passes over the matrix ----------------------------------------------------------
    def matrix_rows(self, matrix: MatrixT) -> int:
        """How many rows a matrix has."""
        return self.count(self.matrix_frame(matrix, id_column="id", columns={}))

    def hold_rows(self, matrix: MatrixT) -> None:
        """Keep every row of ``matrix`` where passes over it, and over the matrices mapped
        from it, run without a job each (on Spark, the driver), for a caller that knows they
        fit there. One process holds every row already."""

    @abstractmethod
    def reduce_blocks(
        self, matrix: MatrixT, *, kernel: BlockKernel, combine: Combine = np.add
    ) -> np.ndarray: ...

    @abstractmethod
    def quantiles(
        self, frame: FrameT, *, columns: Sequence[str], q: float, by: str | None = None
    ) -> dict[Any, dict[str, float | None]]:
        """The exact ``q`` quantile of each numeric column, per value of ``by`` (the key None
        without it): interpolated linearly, as ``np.quantile``; the median as the mean of the
        two middle values. Nulls are left out; a column without values gives None."""

    def column_summary(
        self, frame: FrameT, *, columns: Sequence[str], q: float, by: str | None = None
    ) -> ColumnSummary:
        """Per value of ``by``: its rows, and each numeric column's values (not null), their
        sum and their :meth:`quantiles`; an engine whose quantiles count and add the values on
        their way takes all of it from the same passes."""
        counted: dict[str, Expr] = {"rows": rows()}
        for i, c in enumerate(columns):
            counted |= {f"nulls{i}": col(c).is_null().as_float().sum(), f"sum{i}": col(c).sum()}
        keys = [by] if by else []
        found = self.to_arrow(self.aggregate(frame, counted, by=keys)).to_pylist()
        groups = {row[by] if by else None: row for row in found if row["rows"]}
        return ColumnSummary(
            rows={g: int(row["rows"]) for g, row in groups.items()},
            values={
                g: {c: int(row["rows"] - (row[f"nulls{i}"] or 0)) for i, c in enumerate(columns)}
                for g, row in groups.items()
            },
            sums={
                g: {c: float(row[f"sum{i}"] or 0.0) for i, c in enumerate(columns)}
                for g, row in groups.items()
            },
            quantiles=self.quantiles(frame, columns=columns, q=q, by=by) if columns else {},
        )

    @abstractmethod
    def affine(self, matrix: MatrixT, *, shift: np.ndarray, linear: np.ndarray) -> MatrixT:
        """``(x − shift) @ linear`` for every row."""

    @abstractmethod
    def sample_rows(
        self,
        matrix: MatrixT,
        *,
        rows: int | Mapping[int, int],
        seed: int,
        sizes: int | Mapping[int, int] | None = None,
    ) -> SampledRows:
        """The customers with the smallest seeded id hashes, in hash order: the same customers
        on every engine (so the first m of a sample are the sample of m). ``rows`` is how
        many, or how many of each segment (label → rows); ``sizes``, the matrix's rows (or
        each segment's) when the caller knows them, spares counting them."""

    def refine_centroids(
        self, matrix: MatrixT, *, centroids: np.ndarray, max_iter: int, shift_tolerance: float
    ) -> np.ndarray:
        """Lloyd iterations over every row from ``centroids`` (fitted on a sample), one pass
        of :meth:`reduce_blocks` each; an engine may use a library's own k-means instead.

        They stop once the centroids' summed squared shift is at most ``shift_tolerance`` (an
        absolute figure, in the matrix's squared units) or after ``max_iter``.
        """
        k, d = centroids.shape
        for _ in range(max_iter):
            current = centroids
            step = kernels.nearest_then(current, kernels.cluster_sums_kernel(k))
            sums = kernels.ClusterSums.from_flat(self.reduce_blocks(matrix, kernel=step), k, d)
            centroids = np.where(
                sums.counts[:, None] > 0,
                sums.sums / np.maximum(sums.counts, 1)[:, None],
                current,
            )
            if np.sum((centroids - current) ** 2) <= shift_tolerance:
                break
        return centroids

    @abstractmethod
    def assign(self, matrix: MatrixT, *, centroids: np.ndarray) -> MatrixT:
        """The matrix with each row's nearest centroid (label) and its distance."""

    @abstractmethod
    def relabel(self, matrix: MatrixT, *, ids: np.ndarray) -> MatrixT:
        """The matrix with each label ``i`` replaced by ``ids[i]``."""

    @abstractmethod
    def segment_transitions(self, previous: FrameT, matrix: MatrixT, *, id_column: str) -> pa.Table:
        """(from_segment, to_segment, customers) for ids present in both assignments."""

    @abstractmethod
    def map_groups(
        self,
        matrix: MatrixT,
        per_group: Callable[[SegmentRows], pa.Table],
        *,
        schema: Callable[[pa.DataType], pa.Schema],
        cells: Cells | None = None,
        reference: MatrixT | None = None,
    ) -> FrameT:
        """``per_group`` run on groups of a labelled matrix's rows; its tables, of
        ``schema(the ids' type)``, as one frame.

        Without ``reference`` a group is a segment's rows, or (with ``cells``) a search
        cell's own rows (``home`` True) then the copies of the rows that probe it. With
        ``reference`` (another labelled matrix) a group is the matrix's rows of a segment or
        cell (``home`` True) then the reference's rows that belong there.
        """

    @abstractmethod
    def matrix_frame(
        self,
        matrix: MatrixT,
        *,
        id_column: str,
        columns: Mapping[str, Expr],
        customers: FrameT | None = None,
        customer_columns: Sequence[str] = (),
    ) -> FrameT:
        """A matrix's rows as a frame: the id (named ``id_column``), each of ``columns``,
        then each customer's ``customer_columns`` from ``customers``, the frame the matrix
        was built from (a name ``columns`` uses is left out, see
        :func:`customer_columns_beside`).

        ``columns`` are expressions over the matrix's own columns: ``x_1`` … ``x_d`` (the
        vector, :func:`vector_column`) and, once assigned, ``segment``, ``distance`` and
        ``runner_up`` (the distance to the second-nearest centroid).
        """

    def distance_quantiles(self, matrix: MatrixT, *, id_column: str, q: float) -> dict[int, float]:
        """Per segment of an assigned matrix, the ``q`` quantile of its rows' distances to their
        centroid (as :meth:`quantiles`)."""
        rows_of = self.matrix_frame(
            matrix, id_column=id_column, columns={SEGMENT: col(SEGMENT), DISTANCE: col(DISTANCE)}
        )
        found = self.quantiles(rows_of, columns=[DISTANCE], q=q, by=SEGMENT)
        return {
            int(segment): float(distance)
            for segment, value in found.items()
            if (distance := value[DISTANCE]) is not None
        }


def present_text(column: str) -> Expr:
    """A column read as text without the spaces around it; null where that leaves nothing."""
    value = col(column).as_text().strip()
    return when([(value.ne("").fill_null(False), value)])
