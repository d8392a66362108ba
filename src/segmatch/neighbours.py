"""Engine-neutral nearest-neighbour kernels: the lookalike searches both engines run per
segment or per search cell, and the exact search recall is measured against."""

from __future__ import annotations

import numpy as np

#: Above this many dimensions a kd-tree loses to blocked brute force.
KD_TREE_MAX_DIMENSIONS = 12
#: Rows compared with every query at once when measuring recall (bounds the memory).
NEAREST_BLOCK_ROWS = 20_000


def top_k_neighbours(
    points: np.ndarray, k: int, *, workers: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every point among the others (self excluded).

    Returns (indices, distances), each n × min(k, n−1), nearest first.
    """
    return top_k_among(points, len(points), k, workers=workers)


def top_k_among(
    points: np.ndarray, queries: int, k: int, *, workers: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of the first ``queries`` points among all the others.

    Returns (indices, distances), each queries × min(k, n−1), nearest first.
    A kd-tree in few dimensions, blocked brute force with BLAS in many.
    """
    n = len(points)
    k = min(k, n - 1)
    if k <= 0:
        return np.empty((queries, 0), dtype=np.int64), np.empty((queries, 0))
    if points.shape[1] <= KD_TREE_MAX_DIMENSIONS:
        from scipy.spatial import cKDTree  # noqa: PLC0415 -- 0.15 s to import

        tree = cKDTree(points, leafsize=32)
        # Queried in the tree's own order, consecutive queries walk the same nodes: measured
        # 2.2x faster than in input order on 300k points in 5 dimensions, same answers.
        spatial = tree.indices[tree.indices < queries]
        distances = np.empty((queries, k + 1))
        indices = np.empty((queries, k + 1), dtype=np.int64)
        distances[spatial], indices[spatial] = tree.query(points[spatial], k=k + 1, workers=workers)
        return _drop_self(indices, distances, k)
    return _brute_force_top_k(points, queries, k)


def _drop_self(indices: np.ndarray, distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    own = np.arange(len(indices))[:, None]
    keep = indices != own
    keep[keep.sum(axis=1) > k, -1] = False
    return indices[keep].reshape(-1, k), distances[keep].reshape(-1, k)


def _brute_force_top_k(
    points: np.ndarray, queries: int, k: int, block_rows: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    norms = np.einsum("ij,ij->i", points, points)
    indices = np.empty((queries, k), dtype=np.int64)
    distances = np.empty((queries, k))
    for start in range(0, queries, block_rows):
        block = points[start : min(start + block_rows, queries)]
        squared = norms[start : start + len(block), None] - 2.0 * block @ points.T + norms[None, :]
        squared[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        nearest = np.argpartition(squared, k - 1, axis=1)[:, :k]
        nearest_squared = np.take_along_axis(squared, nearest, axis=1)
        order = np.lexsort((nearest, nearest_squared), axis=1)
        indices[start : start + len(block)] = np.take_along_axis(nearest, order, axis=1)
        distances[start : start + len(block)] = np.sqrt(
            np.maximum(np.take_along_axis(nearest_squared, order, axis=1), 0.0)
        )
    return indices, distances


def nearest_distances_kernel(queries: np.ndarray, query_labels: np.ndarray, count: int):
    """A block kernel: for each query, the ``count`` smallest distances to the block's rows of
    its own segment (∞ where the block has fewer), flattened. Merge blocks with
    :func:`keep_smallest`."""

    def kernel(values: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        assert labels is not None
        out = np.full((len(queries), count), np.inf)
        for segment in np.unique(query_labels):
            asking = np.flatnonzero(query_labels == segment)
            rows = values[labels == segment]
            for start in range(0, len(rows), NEAREST_BLOCK_ROWS):
                part = _nearest_in(queries[asking], rows[start : start + NEAREST_BLOCK_ROWS], count)
                out[asking] = _smallest(np.concatenate([out[asking], part], axis=1), count)
        return out.ravel()

    return kernel


def keep_smallest(count: int):
    """Merges two results of :func:`nearest_distances_kernel`."""

    def combine(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        both = np.concatenate([first.reshape(-1, count), second.reshape(-1, count)], axis=1)
        return _smallest(both, count).ravel()

    return combine


def _nearest_in(queries: np.ndarray, rows: np.ndarray, count: int) -> np.ndarray:
    """Distances from each query to its ``count`` nearest rows: found with one matrix
    product, then measured directly (the product's rounding would blur ties and zeros)."""
    squared = (
        np.einsum("ij,ij->i", rows, rows)[None, :]
        - 2.0 * queries @ rows.T
        + np.einsum("ij,ij->i", queries, queries)[:, None]
    )
    nearest = (
        np.argpartition(squared, count - 1, axis=1)[:, :count]
        if rows.shape[0] > count
        else np.broadcast_to(np.arange(rows.shape[0]), squared.shape)
    )
    return np.sqrt(((rows[nearest] - queries[:, None, :]) ** 2).sum(axis=2))


def _smallest(distances: np.ndarray, count: int) -> np.ndarray:
    if distances.shape[1] > count:
        distances = np.partition(distances, count - 1, axis=1)[:, :count]
    return np.sort(distances, axis=1)


def similarity(distances: np.ndarray) -> np.ndarray:
    """Similarity in (0, 1]: 1 for identical profiles, falling with PCA-space distance."""
    return 1.0 / (1.0 + distances)


def top_k_from(
    reference: np.ndarray, queries: np.ndarray, k: int, *, workers: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest reference points of each query point (indices into ``reference``)."""
    k = min(k, len(reference))
    if k == 0:
        return np.empty((len(queries), 0), dtype=np.int64), np.empty((len(queries), 0))
    if reference.shape[1] <= KD_TREE_MAX_DIMENSIONS:
        from scipy.spatial import cKDTree  # noqa: PLC0415 -- 0.15 s to import

        distances, indices = cKDTree(reference).query(queries, k=k, workers=workers)
        return indices.reshape(len(queries), k), distances.reshape(len(queries), k)
    squared = (
        np.einsum("ij,ij->i", queries, queries)[:, None]
        - 2.0 * queries @ reference.T
        + np.einsum("ij,ij->i", reference, reference)[None, :]
    )
    nearest = np.argpartition(squared, k - 1, axis=1)[:, :k]
    nearest_squared = np.take_along_axis(squared, nearest, axis=1)
    order = np.argsort(nearest_squared, axis=1, kind="stable")
    return (
        np.take_along_axis(nearest, order, axis=1),
        np.sqrt(np.maximum(np.take_along_axis(nearest_squared, order, axis=1), 0.0)),
    )
