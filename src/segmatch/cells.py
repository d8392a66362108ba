"""Search cells: each segment cut into boxes of bounded size, for matching on many workers.

A segment too large for one task is cut into boxes by median splits of a sample of its rows
(a kd-tree's top levels, cut at the quantiles that give every leaf the same share), so each box
holds about the same number of customers. Every customer is searched for in its home box,
against the customers whose ``probes`` nearest boxes include that box: the inverted-file idea
of faiss, with the copies made of the reference points so that each customer is answered by one
task and nothing needs merging. Distances to a box are exact lower bounds, so the nearest boxes
are the ones most likely to hold a customer's neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segmatch.neighbours import top_k_among

#: Boxes are sized from a sample to this share of the cap, leaving room for the sample's error:
#: with ``SAMPLE_PER_CELL`` rows per box, a box's true size is within a few percent of its
#: estimate, far from the cap.
FILL = 0.75
SAMPLE_PER_CELL = 128
#: The sample reaching the driver stays under this many rows however many cells there are
#: (past ~2,000 cells, fewer rows per box: still ≥ 40 at a billion customers and a 50,000 cap).
MAX_SAMPLE_ROWS = 2**18
#: Rows × boxes × width handled at once when ranking boxes, to bound the memory of a batch.
RANK_BLOCK_VALUES = 4_000_000


@dataclass(frozen=True)
class Cells:
    """Boxes ``[low, high]`` in PCA space, each belonging to one segment, and how many of a
    segment's boxes each reference point is copied to."""

    segment: np.ndarray
    low: np.ndarray
    high: np.ndarray
    probes: int

    @property
    def count(self) -> int:
        return len(self.segment)

    def homes(self, values: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The box each row belongs to."""
        return self.nearest(values, labels)[:, 0]

    def nearest(self, values: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """For each row, its segment's ``probes`` nearest boxes (home first); −1 where the
        segment has fewer boxes."""
        out = np.full((len(values), self.probes), -1, dtype=np.int32)
        for segment in np.unique(labels):
            rows = np.flatnonzero(labels == segment)
            boxes = np.flatnonzero(self.segment == segment)
            if len(boxes) == 0:
                raise ValueError(f"segment {segment} has no search cells")
            take = min(self.probes, len(boxes))
            step = max(1, RANK_BLOCK_VALUES // (len(boxes) * max(values.shape[1], 1)))
            for start in range(0, len(rows), step):
                block = rows[start : start + step]
                gap = _box_distances(values[block], self.low[boxes], self.high[boxes])
                out[block, :take] = boxes[np.argsort(gap, axis=1, kind="stable")[:, :take]]
        return out


def plan_cells(
    sample: np.ndarray,
    sample_labels: np.ndarray,
    sizes: dict[int, int],
    *,
    max_cell_size: int,
    probes: int,
) -> Cells:
    """Boxes for every segment of ``sizes`` (segment → customers): one unbounded box where the
    segment fits in a cell, otherwise enough boxes that each holds about ``FILL`` of the cap."""
    width = sample.shape[1]
    segment_of, lows, highs = [], [], []
    for segment, size in sorted(sizes.items()):
        boxes = 1 if size <= max_cell_size else math.ceil(size / (FILL * max_cell_size))
        points = sample[sample_labels == segment]
        for low, high in _split(points, boxes, np.full(width, -np.inf), np.full(width, np.inf)):
            segment_of.append(segment)
            lows.append(low)
            highs.append(high)
    return Cells(
        np.asarray(segment_of, dtype=np.int32),
        np.asarray(lows, dtype=np.float64).reshape(-1, width),
        np.asarray(highs, dtype=np.float64).reshape(-1, width),
        probes,
    )


def sample_rows_needed(sizes: dict[int, int], *, max_cell_size: int) -> int:
    """How many sampled rows place the boxes of every segment well."""
    boxes = sum(
        1 if size <= max_cell_size else math.ceil(size / (FILL * max_cell_size))
        for size in sizes.values()
    )
    return min(boxes * SAMPLE_PER_CELL, MAX_SAMPLE_ROWS)


def _split(
    points: np.ndarray, boxes: int, low: np.ndarray, high: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    if boxes == 1 or len(points) < 2:
        # A sample too thin to cut gives one box where more were planned: a larger cell
        # rather than boxes placed blind.
        return [(low, high)]
    left = boxes // 2
    axis = int(np.argmax(points.var(axis=0)))
    cut = float(np.quantile(points[:, axis], left / boxes))
    below = points[:, axis] <= cut
    left_high, right_low = high.copy(), low.copy()
    left_high[axis], right_low[axis] = cut, cut
    return _split(points[below], left, low, left_high) + _split(
        points[~below], boxes - left, right_low, high
    )


def _box_distances(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Squared distance from each row to each box (0 inside it)."""
    gap = np.maximum(low[None] - values[:, None], 0.0) + np.maximum(
        values[:, None] - high[None], 0.0
    )
    return np.einsum("ncd,ncd->nc", gap, gap)


def top_k_in_cell(
    values: np.ndarray, home: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of the cell's home rows among all its rows (copies included),
    self excluded. Returns (home row positions, neighbour positions, distances)."""
    order = np.concatenate([np.flatnonzero(home), np.flatnonzero(~home)])
    queries = int(home.sum())
    indices, distances = top_k_among(values[order], queries, k, workers=1)
    return order[:queries], order[indices], distances
