"""Result tables in Polars: segments, scores, lookalikes per segment, profiles, transitions."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from segmatch.cells import Cells
from segmatch.engines.expressions import Expr, columns_used
from segmatch.engines.local.expressions import kinds_of, to_polars
from segmatch.engines.local.matrix import LocalMatrix, labels_of
from segmatch.engines.shaping import customer_columns_beside
from segmatch.engines.types import (
    DISTANCE,
    RUNNER_UP,
    SEGMENT,
    SegmentRows,
    vector_column,
)
from segmatch.progress import progress


class PolarsResults:
    """Tables of results, shaped from an assigned matrix."""

    def segment_transitions(
        self, previous: pl.DataFrame, matrix: LocalMatrix, *, id_column: str
    ) -> pa.Table:
        current = pl.DataFrame({id_column: matrix.ids, "to_segment": labels_of(matrix)})
        return (
            previous.select(id_column, pl.col("segment").alias("from_segment"))
            .join(current, on=id_column, how="inner")
            .group_by("from_segment", "to_segment")
            .agg(pl.len().alias("customers"))
            .sort("from_segment", "to_segment")
            .to_arrow()
        )

    def matrix_frame(
        self,
        matrix: LocalMatrix,
        *,
        id_column: str,
        columns: Mapping[str, Expr],
        customers: pl.DataFrame | None = None,
        customer_columns: Sequence[str] = (),
    ) -> pl.DataFrame:
        available: dict[str, np.ndarray | None] = {
            vector_column(j): matrix.values[:, j] for j in range(matrix.values.shape[1])
        }
        if matrix.labels is not None:
            available |= {
                SEGMENT: matrix.labels,
                DISTANCE: matrix.distances,
                RUNNER_UP: matrix.runner_up,
            }
        used = set().union(*(columns_used(e) for e in columns.values()))
        base = pl.DataFrame(
            [matrix.ids.alias(id_column)],
        ).with_columns(pl.Series(name, available[name]) for name in available if name in used)
        kinds = kinds_of(base.schema)
        rows = base.select(
            id_column,
            *(to_polars(e, kinds).alias(name) for name, e in columns.items()),
        )
        return _with_customer_columns(rows, customers, customer_columns)

    def map_groups(
        self,
        matrix: LocalMatrix,
        per_group: Callable[[SegmentRows], pa.Table],
        *,
        schema: Callable[[pa.DataType], pa.Schema],
        cells: Cells | None = None,
        reference: LocalMatrix | None = None,
    ) -> pl.DataFrame:
        if reference is not None:
            parts = _groups_against(reference, matrix, cells, per_group)
        elif cells is not None:
            parts = _groups_of_cells(matrix, cells, per_group)
        else:
            parts = _groups_of_segments(matrix, per_group)
        empty = schema(matrix.ids.to_arrow().type).empty_table()
        frame = pl.from_arrow(pa.concat_tables(parts) if parts else empty)
        assert isinstance(frame, pl.DataFrame)
        return frame


def _groups_of_segments(
    matrix: LocalMatrix, per_segment: Callable[[SegmentRows], pa.Table]
) -> list[pa.Table]:
    labels = labels_of(matrix)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    ids = matrix.ids.to_arrow()
    parts = []
    with progress("finding lookalikes", total=len(labels)) as task:
        for members in np.split(order, bounds):
            parts.append(
                per_segment(SegmentRows(ids.take(members), labels[members], matrix.values[members]))
            )
            task.advance(len(members))
    return parts


def _groups_of_cells(
    matrix: LocalMatrix, cells: Cells, per_cell: Callable[[SegmentRows], pa.Table]
) -> list[pa.Table]:
    labels = labels_of(matrix)
    nearest = cells.nearest(matrix.values, labels)
    rows, probe = np.nonzero(nearest >= 0)
    cell_of = nearest[rows, probe]
    # Within a cell, its own rows (probe 0) first, then the copies.
    order = np.lexsort((probe != 0, cell_of))
    bounds = np.flatnonzero(np.diff(cell_of[order])) + 1
    ids = matrix.ids.to_arrow()
    parts = []
    with progress("finding lookalikes", total=len(labels)) as task:
        for members in np.split(order, bounds):
            home = probe[members] == 0
            chosen = rows[members]
            parts.append(
                per_cell(SegmentRows(ids.take(chosen), labels[chosen], matrix.values[chosen], home))
            )
            task.advance(int(home.sum()))
    return parts


def _groups_against(
    reference: LocalMatrix,
    matrix: LocalMatrix,
    cells: Cells | None,
    per_group: Callable[[SegmentRows], pa.Table],
) -> list[pa.Table]:
    new_labels, old_labels = labels_of(matrix), labels_of(reference)
    if cells is None:
        new_group, old_rows, old_group = new_labels, np.arange(len(old_labels)), old_labels
    else:
        new_group = cells.homes(matrix.values, new_labels)
        nearest = cells.nearest(reference.values, old_labels)
        old_rows, probe = np.nonzero(nearest >= 0)
        old_group = nearest[old_rows, probe]
    new_ids = matrix.ids.to_arrow()
    old_ids = reference.ids.to_arrow().cast(new_ids.type)
    new_order = np.argsort(new_group, kind="stable")
    old_order = np.argsort(old_group, kind="stable")
    groups = np.unique(new_group)
    new_bounds = np.searchsorted(new_group[new_order], groups, side="left")
    new_ends = np.searchsorted(new_group[new_order], groups, side="right")
    old_bounds = np.searchsorted(old_group[old_order], groups, side="left")
    old_ends = np.searchsorted(old_group[old_order], groups, side="right")
    parts = []
    for g in range(len(groups)):
        new = new_order[new_bounds[g] : new_ends[g]]
        old = old_rows[old_order[old_bounds[g] : old_ends[g]]]
        parts.append(
            per_group(
                SegmentRows(
                    pa.chunked_array([new_ids.take(new), old_ids.take(old)]),
                    np.concatenate([new_labels[new], old_labels[old]]),
                    np.vstack([matrix.values[new], reference.values[old]]),
                    np.concatenate([np.ones(len(new), bool), np.zeros(len(old), bool)]),
                )
            )
        )
    return parts


def _with_customer_columns(
    rows: pl.DataFrame, customers: pl.DataFrame | None, columns: Sequence[str]
) -> pl.DataFrame:
    # The matrix keeps the customers' row order, so the columns line up without a join.
    wanted = customer_columns_beside(rows.columns, columns)
    if not wanted:
        return rows
    if customers is None:
        raise ValueError(f"customer columns {wanted} asked for without the customers' frame")
    if rows.height != customers.height:
        raise ValueError(
            f"{rows.height:,} result rows for {customers.height:,} customers: not aligned"
        )
    return pl.concat([rows, customers.select(wanted)], how="horizontal")
