"""lookalikes: each customer's most similar customers within its own segment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from segmatch import cells as search_cells_module
from segmatch.cells import Cells, top_k_in_cell
from segmatch.config import LookalikesConfig
from segmatch.engines.base import Engine, Frame, Matrix
from segmatch.engines.expressions import col
from segmatch.engines.shaping import lookalike_rows, lookalike_schema
from segmatch.engines.types import SegmentRows
from segmatch.neighbours import keep_smallest, nearest_distances_kernel, top_k_neighbours
from segmatch.stages.cluster import Clustering

#: Seeds the customers that place the cells and those whose recall is measured.
SAMPLE_SEED = 20_240_917


@dataclass(frozen=True)
class Lookalikes:
    """Rows (id, segment, lookalike_id, rank, distance, similarity), ``top_k`` per customer, and
    how the search went: its cells, the largest one, and the recall@k measured on a sample."""

    frame: Frame
    rows_in: int
    rows_out: int
    cells: int
    largest_cell: int
    recall_at_k: float | None


def lookalikes_within_segments(
    engine: Engine, *, config: LookalikesConfig, clustering: Clustering, id_column: str
) -> Lookalikes:
    """Top-k nearest neighbours in PCA space, per segment, self excluded.

    A segment larger than the cell cap is searched in cells (see :mod:`segmatch.cells`), each
    one task; smaller ones are searched whole and exactly. Similarity is ``1 / (1 + distance)``:
    1 for identical profiles. A customer in a segment of n members gets min(top_k, n − 1)
    lookalikes.
    """
    matrix = clustering.matrix
    sizes = dict(zip(clustering.segment_ids.tolist(), clustering.sizes.tolist(), strict=True))
    cells = search_cells(engine, matrix, config=config, sizes=sizes)
    frame = top_k_within_segments(engine, matrix, id_column=id_column, k=config.top_k, cells=cells)
    cell_sizes = list(sizes.values()) if cells is None else _cell_sizes(engine, matrix, cells)
    return Lookalikes(
        frame,
        clustering.rows_out,
        engine.count(frame),
        cells=len(cell_sizes),
        largest_cell=int(max(cell_sizes)),
        recall_at_k=measure_recall(
            engine,
            matrix,
            frame,
            id_column=id_column,
            k=config.top_k,
            sizes=sizes,
            queries=config.recall_sample,
        ),
    )


def search_cells(
    engine: Engine, matrix: Matrix, *, config: LookalikesConfig, sizes: dict[int, int]
) -> search_cells_module.Cells | None:
    """Cells for the segments larger than the cap (None: every segment is searched whole)."""
    cap = config.max_cell_size or engine.default_max_cell_size
    if cap is None or not sizes or max(sizes.values()) <= cap:
        return None
    sample = engine.sample_rows(
        matrix,
        rows=search_cells_module.sample_rows_needed(sizes, max_cell_size=cap),
        seed=SAMPLE_SEED,
    )
    return search_cells_module.plan_cells(
        sample.values, sample.segments, sizes, max_cell_size=cap, probes=config.probes
    )


def segment_sizes(engine: Engine, matrix: Matrix) -> dict[int, int]:
    """Customers per segment of a labelled matrix, in one pass."""

    def kernel(_values: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        assert labels is not None
        found, counts = np.unique(labels, return_counts=True)
        return np.stack([found, counts]).astype(np.float64).T.ravel()

    pairs = engine.reduce_blocks(matrix, kernel=kernel, combine=_merge_counts).reshape(-1, 2)
    return {int(segment): int(count) for segment, count in pairs}


def _merge_counts(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two blocks' (segment, count) pairs as one list of pairs."""
    merged: dict[float, float] = {}
    for segment, count in np.concatenate([first, second]).reshape(-1, 2):
        merged[segment] = merged.get(segment, 0.0) + count
    return np.array(sorted(merged.items()), dtype=np.float64).ravel()


def _cell_sizes(engine: Engine, matrix: Matrix, cells: search_cells_module.Cells) -> np.ndarray:
    """Customers whose home is each cell, counted in one pass."""

    def kernel(values: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        assert labels is not None
        homes = cells.homes(values, labels)
        return np.bincount(homes, minlength=cells.count).astype(np.float64)

    return engine.reduce_blocks(matrix, kernel=kernel).astype(np.int64)


def measure_recall(
    engine: Engine,
    matrix: Matrix,
    frame: Frame,
    *,
    id_column: str,
    k: int,
    sizes: dict[int, int],
    queries: int,
) -> float | None:
    """recall@k of the lookalikes of ``queries`` sampled customers against exact search: the
    share of their true k nearest that the answer holds (ties at the k-th distance count)."""
    if queries == 0:
        return None
    sample = engine.sample_rows(matrix, rows=queries, seed=SAMPLE_SEED + 1)
    wanted = np.array([min(k, sizes[int(label)] - 1) for label in sample.segments])
    if wanted.sum() == 0:
        return None
    # Each customer's own row is its nearest (distance 0): k + 1 distances, the first dropped.
    exact = engine.reduce_blocks(
        matrix,
        kernel=nearest_distances_kernel(sample.values, sample.segments, k + 1),
        combine=keep_smallest(k + 1),
    ).reshape(-1, k + 1)
    threshold = exact[np.arange(len(wanted)), wanted]
    found = engine.to_arrow(
        engine.filter(frame, col(id_column).is_in(sample.ids.to_pylist())),
        columns=[id_column, "distance"],
    )
    position = {value: i for i, value in enumerate(sample.ids.to_pylist())}
    hits = np.zeros(len(wanted))
    for found_id, distance in zip(
        found.column(id_column).to_pylist(), found.column("distance").to_pylist(), strict=True
    ):
        i = position[found_id]
        hits[i] += distance <= threshold[i] * (1 + 1e-9) + 1e-12
    return float(np.minimum(hits, wanted).sum() / wanted.sum())


def top_k_within_segments(
    engine: Engine, matrix: Matrix, *, id_column: str, k: int, cells: Cells | None
) -> Frame:
    """Lookalike rows (the ``lookalikes`` table): exact search within each segment, or within
    each search cell of ``cells`` (its own rows against its rows and copies)."""

    def schema(id_type: pa.DataType) -> pa.Schema:
        return lookalike_schema(id_column, id_type)

    def per_segment(segment: SegmentRows) -> pa.Table:
        neighbours, distance = top_k_neighbours(segment.values, k)
        return lookalike_rows(
            id_column,
            ids=segment.ids,
            labels=segment.labels,
            candidates=segment.ids,
            neighbours=neighbours,
            distance=distance,
        )

    def per_cell(cell: SegmentRows) -> pa.Table:
        assert cell.home is not None
        queries, neighbours, distance = top_k_in_cell(cell.values, cell.home, k)
        return lookalike_rows(
            id_column,
            ids=cell.ids.take(queries),
            labels=cell.labels[queries],
            candidates=cell.ids,
            neighbours=neighbours,
            distance=distance,
        )

    if cells is None:
        return engine.map_groups(matrix, per_segment, schema=schema)
    return engine.map_groups(matrix, per_cell, schema=schema, cells=cells)
