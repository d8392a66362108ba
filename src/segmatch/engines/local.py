"""The embedded engine: Polars for rows, NumPy for matrices (k-means: scikit-learn, via kernels).

Everything runs in this process. Passes over the matrix go in blocks whose size follows the
matrix's width, so memory stays flat whatever the number of customers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from deltalake.exceptions import DeltaError

from segmatch import kernels
from segmatch.engines.base import (
    MISSING_LEVEL,
    OTHER_LEVEL,
    QUARANTINE_COLUMN,
    QUARANTINE_RULE,
    BlockKernel,
    ColumnKind,
    ColumnStats,
    Engine,
    ParseCheck,
    Rule,
    TransactionColumns,
)
from segmatch.errors import InputError, first_line
from segmatch.progress import progress

#: Bytes of float64 scratch space a block may use; blocks of rows are sized from it.
BLOCK_BYTES = 32 * 2**20

_POLARS_TYPES: dict[str, pl.DataType] = {
    "float": pl.Float64(),
    "int": pl.Int64(),
    "str": pl.String(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
    "bool": pl.Boolean(),
}


@dataclass(frozen=True)
class LocalMatrix:
    """Feature vectors aligned row for row with ``ids``; labels once assigned."""

    ids: pl.Series
    values: np.ndarray
    labels: np.ndarray | None = None
    distances: np.ndarray | None = None
    runner_up: np.ndarray | None = None


class LocalEngine(Engine):
    """Polars + NumPy + scikit-learn in one process."""

    name = "local"

    # -- reading and writing -------------------------------------------------------------
    def read(
        self,
        *,
        path: Path,
        fmt: Literal["csv", "parquet", "delta"],
        types: dict[str, str],
        separator: str,
        version: int | None = None,
    ) -> pl.DataFrame:
        overrides = {name: _POLARS_TYPES[kind] for name, kind in types.items()}
        try:
            if fmt == "csv":
                frame = pl.read_csv(
                    path,
                    infer_schema_length=None,
                    separator=separator,
                    schema_overrides=overrides,
                    try_parse_dates=True,
                )
            elif fmt == "parquet":
                source = str(path / "**" / "*.parquet") if path.is_dir() else path
                frame = pl.read_parquet(source)
            else:
                frame = pl.read_delta(str(path), version=version)
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
        return {name: _kind(dtype) for name, dtype in frame.schema.items()}

    def count(self, frame: pl.DataFrame) -> int:
        return frame.height

    def write_parquet(self, frame: pl.DataFrame, *, folder: Path) -> None:
        frame.write_parquet(folder / "part-00000.parquet")

    def stored_kind(self, value: object) -> Literal["frame", "matrix"] | None:
        if isinstance(value, pl.DataFrame):
            return "frame"
        return "matrix" if isinstance(value, LocalMatrix) else None

    def save_frame(self, frame: pl.DataFrame, *, path: Path) -> None:
        frame.write_parquet(path, compression="lz4")

    def load_frame(self, *, path: Path) -> pl.DataFrame:
        return pl.read_parquet(path)

    def save_matrix(self, matrix: LocalMatrix, *, folder: Path) -> None:
        folder.mkdir(parents=True)
        matrix.ids.to_frame().write_parquet(folder / "ids.parquet", compression="lz4")
        for name in ("values", "labels", "distances", "runner_up"):
            array = getattr(matrix, name)
            if array is not None:
                np.save(folder / f"{name}.npy", array)

    def load_matrix(self, *, folder: Path) -> LocalMatrix:
        ids = pl.read_parquet(folder / "ids.parquet").to_series()
        arrays = {
            name: np.load(folder / f"{name}.npy") if (folder / f"{name}.npy").exists() else None
            for name in ("values", "labels", "distances", "runner_up")
        }
        return LocalMatrix(ids=ids, **arrays)

    def to_arrow(self, frame: pl.DataFrame, *, limit: int | None = None) -> pa.Table:
        return (frame if limit is None else frame.head(limit)).to_arrow()

    # -- validation and cleaning ---------------------------------------------------------
    def check_numeric_text(self, frame: pl.DataFrame, *, column: str) -> ParseCheck:
        text = frame.get_column(column).cast(pl.String).drop_nulls().str.strip_chars()
        text = text.filter(text != "")
        failed = text.filter(text.cast(pl.Float64, strict=False).is_null())
        return ParseCheck(text.len(), failed.len(), failed[0] if failed.len() else None)

    def split_quarantine(
        self, frame: pl.DataFrame, *, rules: Sequence[Rule]
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        if not rules:
            return frame, frame.clear().with_columns(
                pl.lit(None, pl.String).alias(QUARANTINE_RULE),
                pl.lit(None, pl.String).alias(QUARANTINE_COLUMN),
            )
        broken = [_broken(rule, frame.schema[rule.column]) for rule in rules]
        first_rule = pl.when(broken[0]).then(pl.lit(rules[0].name))
        first_column = pl.when(broken[0]).then(pl.lit(rules[0].column))
        for rule, condition in zip(rules[1:], broken[1:], strict=True):
            first_rule = first_rule.when(condition).then(pl.lit(rule.name))
            first_column = first_column.when(condition).then(pl.lit(rule.column))
        marked = frame.with_columns(
            first_rule.otherwise(None).alias(QUARANTINE_RULE),
            first_column.otherwise(None).alias(QUARANTINE_COLUMN),
        )
        is_bad = pl.col(QUARANTINE_RULE).is_not_null()
        return (
            marked.filter(~is_bad).drop(QUARANTINE_RULE, QUARANTINE_COLUMN),
            marked.filter(is_bad),
        )

    def cast_to_float(self, frame: pl.DataFrame, *, columns: Sequence[str]) -> pl.DataFrame:
        """Numeric columns as float64; blank text and NaN become missing (null)."""
        return frame.with_columns(
            _as_float(name, frame.schema[name]).fill_nan(None).alias(name) for name in columns
        )

    def deduplicate(
        self,
        frame: pl.DataFrame,
        *,
        id_column: str,
        keep: Literal["first", "latest"],
        order_by: str | None,
    ) -> tuple[pl.DataFrame, int]:
        if keep == "latest":
            position = "__segmatch_position"
            kept = (
                frame.with_row_index(position)
                .sort(order_by, descending=True, nulls_last=True, maintain_order=True)
                .unique(subset=[id_column], keep="first", maintain_order=True)
                .sort(position)
                .drop(position)
            )
        else:
            kept = frame.unique(subset=[id_column], keep="first", maintain_order=True)
        return kept, kept.height

    def column_stats(
        self,
        frame: pl.DataFrame,
        *,
        numeric: Sequence[str],
        categorical: Sequence[str],
        center: Literal["median", "mean"],
    ) -> ColumnStats:
        columns = [*numeric, *categorical]
        nulls = frame.select(pl.col(c).null_count() for c in columns).row(0) if columns else ()
        centers = (
            frame.select(getattr(pl.col(c), center)() for c in numeric).row(0) if numeric else ()
        )
        levels = {}
        for name in categorical:
            counts = frame.get_column(name).cast(pl.String).fill_null(MISSING_LEVEL).value_counts()
            levels[name] = dict(zip(counts[name].to_list(), counts["count"].to_list(), strict=True))
        return ColumnStats(
            nulls=dict(zip(columns, nulls, strict=True)),
            centers={
                c: (float(v) if v is not None else 0.0)
                for c, v in zip(numeric, centers, strict=True)
            },
            levels=levels,
        )

    def fill_missing(
        self, frame: pl.DataFrame, *, numeric: dict[str, float], categorical: Sequence[str]
    ) -> pl.DataFrame:
        return frame.with_columns(
            *(pl.col(name).fill_null(value) for name, value in numeric.items()),
            *(pl.col(name).cast(pl.String).fill_null(MISSING_LEVEL) for name in categorical),
        )

    # -- features ------------------------------------------------------------------------
    def aggregate_transactions(
        self, frame: pl.DataFrame, *, columns: TransactionColumns
    ) -> pl.DataFrame:
        c = columns
        amount = (pl.col(c.amount) if c.amount else pl.col(c.quantity) * pl.col(c.unit_price)).cast(
            pl.Float64
        )
        is_return = amount < 0
        if c.cancellation_prefix and c.invoice:
            cancelled = pl.col(c.invoice).cast(pl.String).str.starts_with(c.cancellation_prefix)
            is_return = is_return | cancelled
        lines = frame.with_columns(amount.alias("__amount"), is_return.alias("__return"))
        if c.drop_returns:
            lines = lines.filter(~pl.col("__return"))
        as_of = c.as_of or (lines.get_column(c.timestamp).max() + timedelta(days=1))
        purchase = ~pl.col("__return")
        frequency = (
            pl.col(c.invoice).filter(purchase).n_unique() if c.invoice else purchase.sum()
        ).cast(pl.Float64)
        aggregations = [
            ((pl.lit(as_of) - pl.col(c.timestamp).max()).dt.total_seconds() / 86400.0).alias(
                "recency_days"
            ),
            frequency.alias("frequency"),
            pl.col("__amount").sum().alias("monetary_total"),
            ((pl.lit(as_of) - pl.col(c.timestamp).min()).dt.total_seconds() / 86400.0).alias(
                "tenure_days"
            ),
            pl.col("__return").mean().cast(pl.Float64).alias("return_share"),
        ]
        if c.category:
            aggregations.append(
                pl.col(c.category)
                .filter(purchase)
                .n_unique()
                .cast(pl.Float64)
                .alias("distinct_categories")
            )
        customers = lines.group_by(c.id_column, maintain_order=True).agg(aggregations)
        return customers.with_columns(
            (pl.col("monetary_total") / pl.max_horizontal("frequency", pl.lit(1.0))).alias(
                "monetary_avg"
            )
        )

    def feature_matrix(
        self,
        frame: pl.DataFrame,
        *,
        id_column: str,
        numeric: Sequence[str],
        log: Sequence[str],
        levels: dict[str, Sequence[str]],
    ) -> LocalMatrix:
        width = len(numeric) + sum(len(v) for v in levels.values())
        values = np.empty((frame.height, width), dtype=np.float64)
        for j, name in enumerate(numeric):
            column = frame.get_column(name).cast(pl.Float64).to_numpy()
            values[:, j] = kernels.signed_log1p(column) if name in log else column
        j = len(numeric)
        for name, column_levels in levels.items():
            text = frame.get_column(name).cast(pl.String)
            named = [level for level in column_levels if level != OTHER_LEVEL]
            for level in column_levels:
                hit = ~text.is_in(named) if level == OTHER_LEVEL else text == level
                values[:, j] = hit.fill_null(False).to_numpy()
                j += 1
        return LocalMatrix(ids=frame.get_column(id_column), values=values)

    # -- passes over the matrix ----------------------------------------------------------
    def matrix_rows(self, matrix: LocalMatrix) -> int:
        return matrix.values.shape[0]

    def reduce_blocks(self, matrix: LocalMatrix, *, kernel: BlockKernel) -> np.ndarray:
        total: np.ndarray | None = None
        for block in self._blocks(matrix.values.shape):
            labels = None if matrix.labels is None else matrix.labels[block]
            part = kernel(matrix.values[block], labels)
            total = part if total is None else total + part
        assert total is not None
        return total

    def quantiles(self, matrix: LocalMatrix, *, q: Sequence[float]) -> np.ndarray:
        return np.quantile(matrix.values, q, axis=0)

    def affine(self, matrix: LocalMatrix, *, shift: np.ndarray, linear: np.ndarray) -> LocalMatrix:
        out = np.empty((matrix.values.shape[0], linear.shape[1]), dtype=np.float64)
        for block in self._blocks(matrix.values.shape):
            np.matmul(matrix.values[block] - shift, linear, out=out[block])
        return LocalMatrix(ids=matrix.ids, values=out)

    def sample_values(self, matrix: LocalMatrix, *, rows: int, seed: int) -> np.ndarray:
        hashes = kernels.id_hashes(matrix.ids.to_arrow(), seed)
        if rows < len(hashes):
            chosen = np.argpartition(hashes, rows - 1)[:rows]
            return matrix.values[chosen[np.argsort(hashes[chosen], kind="stable")]]
        return matrix.values[np.argsort(hashes, kind="stable")]

    def stratified_sample(
        self, matrix: LocalMatrix, *, rows: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        labels = _labels(matrix)
        n = len(labels)
        if rows >= n:
            return matrix.values, labels
        rng = np.random.default_rng(seed)
        chosen = []
        for segment in np.unique(labels):
            members = np.flatnonzero(labels == segment)
            take = min(len(members), max(2, round(rows * len(members) / n)))
            chosen.append(rng.choice(members, size=take, replace=False))
        picked = np.sort(np.concatenate(chosen))
        return matrix.values[picked], labels[picked]

    def refine_centroids(
        self, matrix: LocalMatrix, *, centroids: np.ndarray, max_iter: int, shift_tolerance: float
    ) -> np.ndarray:
        return kernels.kmeans(
            matrix.values,
            k=len(centroids),
            seed=0,
            max_iter=max_iter,
            n_init=1,
            shift_tolerance=shift_tolerance,
            init=centroids,
        )

    def assign(self, matrix: LocalMatrix, *, centroids: np.ndarray) -> LocalMatrix:
        n = matrix.values.shape[0]
        labels = np.empty(n, dtype=np.int32)
        distances = np.empty(n, dtype=np.float64)
        runner_up = np.empty(n, dtype=np.float64)
        for block in self._blocks((n, matrix.values.shape[1] + len(centroids))):
            labels[block], distances[block], runner_up[block] = kernels.nearest_centroids(
                matrix.values[block], centroids
            )
        return replace(matrix, labels=labels, distances=distances, runner_up=runner_up)

    def relabel(self, matrix: LocalMatrix, *, ids: np.ndarray) -> LocalMatrix:
        return replace(matrix, labels=ids[_labels(matrix)])

    def segment_transitions(
        self, previous: pl.DataFrame, matrix: LocalMatrix, *, id_column: str
    ) -> pa.Table:
        current = pl.DataFrame({id_column: matrix.ids, "to_segment": _labels(matrix)})
        return (
            previous.select(id_column, pl.col("segment").alias("from_segment"))
            .join(current, on=id_column, how="inner")
            .group_by("from_segment", "to_segment")
            .agg(pl.len().alias("customers"))
            .sort("from_segment", "to_segment")
            .to_arrow()
        )

    def top_k_within_segments(
        self,
        matrix: LocalMatrix,
        *,
        id_column: str,
        k: int,
        kernel: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    ) -> pl.DataFrame:
        labels = _labels(matrix)
        order = np.argsort(labels, kind="stable")
        bounds = np.flatnonzero(np.diff(labels[order])) + 1
        groups = np.split(order, bounds)
        sources, targets, ranks, distances = [], [], [], []
        with progress("matching lookalikes", total=len(labels)) as task:
            for members in groups:
                neighbours, distance = kernel(matrix.values[members], k)
                width = neighbours.shape[1]
                sources.append(np.repeat(members, width))
                targets.append(members[neighbours].ravel())
                ranks.append(np.tile(np.arange(1, width + 1, dtype=np.int16), len(members)))
                distances.append(distance.ravel())
                task.advance(len(members))
        source = np.concatenate(sources)
        distance = np.concatenate(distances)
        return pl.DataFrame(
            {
                id_column: matrix.ids.gather(source),
                "segment": labels[source],
                "match_id": matrix.ids.gather(np.concatenate(targets)),
                "rank": np.concatenate(ranks),
                "distance": distance,
                "similarity": kernels.similarity(distance),
            }
        )

    # -- results -------------------------------------------------------------------------
    def segments_frame(
        self, matrix: LocalMatrix, *, id_column: str, labels: dict[str, str | None]
    ) -> pl.DataFrame:
        coordinates = {f"pc_{j + 1}": matrix.values[:, j] for j in range(matrix.values.shape[1])}
        return pl.DataFrame(
            {
                id_column: matrix.ids,
                "segment": _labels(matrix),
                "distance": matrix.distances,
                **coordinates,
            }
        ).with_columns(pl.lit(value, pl.String).alias(name) for name, value in labels.items())

    def scores_frame(self, matrix: LocalMatrix, *, id_column: str) -> pl.DataFrame:
        return pl.DataFrame(
            {
                id_column: matrix.ids,
                "segment": _labels(matrix),
                "distance": matrix.distances,
                "confidence": kernels.confidence(matrix.distances, matrix.runner_up),
            }
        )

    def top_k_against(
        self,
        reference: pl.DataFrame,
        matrix: LocalMatrix,
        *,
        id_column: str,
        k: int,
        kernel: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    ) -> pl.DataFrame:
        coordinates = [f"pc_{j + 1}" for j in range(matrix.values.shape[1])]
        labels = _labels(matrix)
        parts = []
        for segment in np.unique(labels):
            members = np.flatnonzero(labels == segment)
            pool = reference.filter(pl.col("segment") == int(segment))
            if pool.height == 0:
                continue
            neighbours, distance = kernel(
                pool.select(coordinates).to_numpy(), matrix.values[members], k
            )
            width = neighbours.shape[1]
            parts.append(
                pl.DataFrame(
                    {
                        id_column: matrix.ids.gather(np.repeat(members, width)),
                        "segment": np.full(len(members) * width, segment, dtype=labels.dtype),
                        "match_id": pool.get_column(id_column).gather(neighbours.ravel()),
                        "rank": np.tile(np.arange(1, width + 1, dtype=np.int16), len(members)),
                        "distance": distance.ravel(),
                        "similarity": kernels.similarity(distance.ravel()),
                    }
                )
            )
        return pl.concat(parts) if parts else pl.DataFrame()

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
            .with_columns(pl.Series("segment", _labels(matrix)))
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

    # -- helpers -------------------------------------------------------------------------
    def _blocks(self, shape: tuple[int, int]) -> list[slice]:
        rows, width = shape
        per_block = max(1024, BLOCK_BYTES // (8 * max(width, 1)))
        return [slice(start, min(start + per_block, rows)) for start in range(0, rows, per_block)]


def _labels(matrix: LocalMatrix) -> np.ndarray:
    if matrix.labels is None:
        raise ValueError("the matrix has no segment labels yet; assign centroids first")
    return matrix.labels


def _kind(dtype: pl.DataType) -> ColumnKind:
    if dtype.is_numeric():
        return "numeric"
    if dtype.is_temporal():
        return "temporal"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype in (pl.String, pl.Categorical, pl.Enum):
        return "string"
    return "other"


def _as_float(name: str, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if dtype == pl.String:
        return column.str.strip_chars().cast(pl.Float64, strict=False)
    return column.cast(pl.Float64)


def _broken(rule: Rule, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(rule.column)
    if rule.kind == "null_id":
        condition = column.is_null()
        if dtype == pl.String:
            condition = condition | (column.str.strip_chars() == "")
    elif rule.kind == "not_null":
        condition = column.is_null()
    elif rule.kind == "numeric":
        text = column.cast(pl.String).str.strip_chars()
        condition = (text != "") & text.cast(pl.Float64, strict=False).is_null()
    elif rule.kind == "finite":
        condition = _as_float(rule.column, dtype).is_infinite()
    else:
        value = _as_float(rule.column, dtype)
        condition = pl.lit(False)
        if rule.low is not None:
            condition = condition | (value < rule.low)
        if rule.high is not None:
            condition = condition | (value > rule.high)
    return condition.fill_null(False)


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
