"""Result tables in Polars: segments, scores, lookalikes per segment, profiles, transitions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from segmatch import kernels
from segmatch.cells import Cells
from segmatch.engines.base import SegmentRows
from segmatch.engines.local.matrix import LocalMatrix, labels_of
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

    def segments_frame(
        self, matrix: LocalMatrix, *, id_column: str, labels: dict[str, str | None]
    ) -> pl.DataFrame:
        coordinates = {f"pc_{j + 1}": matrix.values[:, j] for j in range(matrix.values.shape[1])}
        return pl.DataFrame(
            {
                id_column: matrix.ids,
                "segment": labels_of(matrix),
                "distance": matrix.distances,
                **coordinates,
            }
        ).with_columns(pl.lit(value, pl.String).alias(name) for name, value in labels.items())

    def scores_frame(self, matrix: LocalMatrix, *, id_column: str) -> pl.DataFrame:
        return pl.DataFrame(
            {
                id_column: matrix.ids,
                "segment": labels_of(matrix),
                "distance": matrix.distances,
                "confidence": kernels.confidence(matrix.distances, matrix.runner_up),
            }
        )

    def rows_for_ids(
        self, frame: pl.DataFrame, *, id_column: str, ids: Sequence[object], columns: Sequence[str]
    ) -> pa.Table:
        return (
            frame.filter(pl.col(id_column).is_in(list(ids))).select(id_column, *columns).to_arrow()
        )

    def segment_profiles(
        self, frame: pl.DataFrame, matrix: LocalMatrix, *, columns: Sequence[str]
    ) -> pa.Table:
        total = frame.height
        profiles = (
            frame.select(columns)
            .with_columns(pl.Series("segment", labels_of(matrix)))
            .group_by("segment")
            .agg(
                pl.len().cast(pl.Int64).alias("size"),
                *(pl.col(c).mean().alias(f"{c}_mean") for c in columns),
                *(pl.col(c).median().alias(f"{c}_median") for c in columns),
            )
            .with_columns((pl.col("size") / total).alias("share"))
            .sort("segment")
        )
        return profiles.select("segment", "size", "share", *profiles.columns[2:-1]).to_arrow()

    def _rows_per_segment(
        self,
        matrix: LocalMatrix,
        per_segment: Callable[[SegmentRows], pa.Table],
        *,
        id_column: str,
    ) -> pl.DataFrame:
        labels = labels_of(matrix)
        order = np.argsort(labels, kind="stable")
        bounds = np.flatnonzero(np.diff(labels[order])) + 1
        ids = matrix.ids.to_arrow()
        parts = []
        with progress("matching lookalikes", total=len(labels)) as task:
            for members in np.split(order, bounds):
                parts.append(
                    per_segment(
                        SegmentRows(ids.take(members), labels[members], matrix.values[members])
                    )
                )
                task.advance(len(members))
        return pl.from_arrow(pa.concat_tables(parts))

    def _rows_per_cell(
        self,
        matrix: LocalMatrix,
        cells: Cells,
        per_cell: Callable[[SegmentRows], pa.Table],
        *,
        id_column: str,
    ) -> pl.DataFrame:
        labels = labels_of(matrix)
        nearest = cells.nearest(matrix.values, labels)
        rows, probe = np.nonzero(nearest >= 0)
        cell_of = nearest[rows, probe]
        # Within a cell, its own rows (probe 0) first, then the copies.
        order = np.lexsort((probe != 0, cell_of))
        bounds = np.flatnonzero(np.diff(cell_of[order])) + 1
        ids = matrix.ids.to_arrow()
        parts = []
        with progress("matching lookalikes", total=len(labels)) as task:
            for members in np.split(order, bounds):
                home = probe[members] == 0
                chosen = rows[members]
                parts.append(
                    per_cell(
                        SegmentRows(ids.take(chosen), labels[chosen], matrix.values[chosen], home)
                    )
                )
                task.advance(int(home.sum()))
        return pl.from_arrow(pa.concat_tables(parts))

    def _rows_per_segment_against(
        self,
        reference: pl.DataFrame,
        matrix: LocalMatrix,
        per_segment: Callable[[SegmentRows, SegmentRows], pa.Table],
        *,
        id_column: str,
    ) -> pl.DataFrame:
        coordinates = [f"pc_{j + 1}" for j in range(matrix.values.shape[1])]
        labels = labels_of(matrix)
        ids = matrix.ids.to_arrow()
        parts = []
        for segment in np.unique(labels):
            members = np.flatnonzero(labels == segment)
            pool = reference.filter(pl.col("segment") == int(segment))
            new = SegmentRows(ids.take(members), labels[members], matrix.values[members])
            existing = SegmentRows(
                pool.get_column(id_column).to_arrow(),
                pool.get_column("segment").to_numpy(),
                pool.select(coordinates).to_numpy(),
            )
            parts.append(per_segment(new, existing))
        return pl.from_arrow(pa.concat_tables(parts)) if parts else pl.DataFrame()
