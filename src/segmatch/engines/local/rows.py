"""Row-level work in Polars: expressions over rows, de-duplication, column statistics, and
transactions → customers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa

from segmatch.engines.expressions import Expr
from segmatch.engines.local.expressions import kinds_of, to_polars


class PolarsCleaning:
    """Validation, de-duplication, imputation and the transactions aggregation."""

    def with_columns(self, frame: pl.DataFrame, columns: Mapping[str, Expr]) -> pl.DataFrame:
        if not columns:
            return frame
        kinds = kinds_of(frame.schema)
        return frame.with_columns(to_polars(e, kinds).alias(name) for name, e in columns.items())

    def filter(self, frame: pl.DataFrame, condition: Expr) -> pl.DataFrame:
        return frame.filter(to_polars(condition, kinds_of(frame.schema)))

    def lookup(self, frame: pl.DataFrame, *, key: str, table: pa.Table) -> pl.DataFrame:
        right = pl.from_arrow(table)
        assert isinstance(right, pl.DataFrame)
        right = right.with_columns(pl.col(key).cast(frame.schema[key]))
        return frame.join(right, on=key, how="left", maintain_order="left")

    def aggregate(
        self, frame: pl.DataFrame, aggregations: Mapping[str, Expr], *, by: Sequence[str] = ()
    ) -> pl.DataFrame:
        kinds = kinds_of(frame.schema)
        compiled = [to_polars(e, kinds).alias(name) for name, e in aggregations.items()]
        if by:
            return frame.group_by(list(by), maintain_order=True).agg(compiled)
        return frame.select(compiled)

    def deduplicate(
        self,
        frame: pl.DataFrame,
        *,
        id_column: str,
        keep: Literal["first", "latest"],
        order_by: str | None,
    ) -> tuple[pl.DataFrame, int]:
        repeated = frame.get_column(id_column).is_duplicated()
        if not repeated.any():
            return frame, frame.height
        # Only the rows of repeated ids are ordered and compared; the others stay where they are.
        position = "__segmatch_position"
        candidates = frame.select(
            id_column, *([order_by] if keep == "latest" else [])
        ).with_row_index(position)
        candidates = candidates.filter(repeated)
        if keep == "latest":
            candidates = candidates.sort(
                order_by, descending=True, nulls_last=True, maintain_order=True
            )
        chosen = candidates.unique(subset=[id_column], keep="first", maintain_order=True)
        keep_row = ~repeated.to_numpy()
        keep_row[chosen.get_column(position).to_numpy()] = True
        kept = frame.filter(pl.Series(keep_row))
        return kept, kept.height

    def quantiles(
        self,
        frame: pl.DataFrame,
        *,
        columns: Sequence[str],
        q: float,
        by: str | None = None,
    ) -> dict[Any, dict[str, float | None]]:
        if not columns:
            return {}
        groups = (
            {None: frame}
            if by is None
            else {key[0]: part for key, part in frame.group_by(by, maintain_order=True)}
        )
        return {
            key: {column: _quantile(part.get_column(column), q) for column in columns}
            for key, part in groups.items()
        }


def _quantile(values: pl.Series, q: float) -> float | None:
    present = values.drop_nulls().cast(pl.Float64)
    if present.len() == 0:
        return None
    if q == 0.5:
        median = present.median()
        return None if median is None else float(median)  # type: ignore[arg-type]
    return float(np.quantile(present.to_numpy(), q))
