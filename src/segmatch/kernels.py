"""Engine-neutral NumPy kernels: the math every engine shares.

Engines run these over blocks (local) or partitions (Spark) and sum the small results, so both
engines compute the same figures with the same code.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@cache
def _native_pools() -> Any:
    """The native thread pools (NumPy's BLAS) loaded in this process."""
    from threadpoolctl import ThreadpoolController  # noqa: PLC0415

    return ThreadpoolController()


T = TypeVar("T")

#: Rows of one block of the kernels' own passes over in-memory rows (Lloyd's, id hashing): a
#: block and its few temporaries stay in the processor's cache.
BLOCK_ROWS = 65_536


@cache
def _block_threads() -> ThreadPoolExecutor | None:
    """Threads for the blocks of a pass: one per core this process may run on, or as many as
    ``OMP_NUM_THREADS`` says (Spark sets it to a task's cores in its Python workers, whose
    tasks already fill the executor's cores); None for one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    told = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(told) if told.isdigit() and int(told) > 0 else (cores or 1)
    if threads == 1:
        return None
    return ThreadPoolExecutor(
        max_workers=threads, thread_name_prefix="segmatch-blocks", initializer=_mark_block_thread
    )


#: Set in the block threads: a block that runs blocks of its own runs them in its own thread,
#: never waiting on the pool it holds a thread of.
_in_block_thread = threading.local()


def _mark_block_thread() -> None:
    _in_block_thread.active = True


def each_block(function: Callable[[slice], T], rows: int, block_rows: int) -> list[T]:
    """``function`` of each block of ``rows`` rows, in the blocks' order, the blocks spread
    over the process's cores.

    NumPy releases the interpreter lock inside its loops and products, so the blocks run side
    by side (each on one BLAS thread, see :func:`one_native_thread`): five Lloyd passes over
    1M × 5 rows took 0.21 s in one thread and 0.13 s in two on 2 cores; 0.19 s in two against
    0.21 s with a busy process beside them. Results keep the blocks' order, so sums over them
    are the same, bit for bit, as in one thread.
    """
    blocks = [slice(start, min(start + block_rows, rows)) for start in range(0, rows, block_rows)]
    threads = _block_threads()
    if threads is None or len(blocks) <= 1 or getattr(_in_block_thread, "active", False):
        return [function(block) for block in blocks]
    # BLAS threads of their own in each block's thread would outnumber the cores and wait on
    # each other: 5M × 6 rows times a 6 × 5 matrix took 0.9 s so, 0.06 s on one each.
    with one_native_thread():
        return list(threads.map(function, blocks))


def reduce_in_blocks(
    values: np.ndarray,
    labels: np.ndarray | None,
    *,
    kernel: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray],
    block_rows: int,
) -> np.ndarray:
    """``kernel`` of each block of rows held in memory (with their labels), combined in the
    blocks' order: an engine's pass over rows it holds."""

    def block_result(block: slice) -> np.ndarray:
        part = kernel(values[block], None if labels is None else labels[block])
        return np.asarray(part, dtype=np.float64)

    parts = each_block(block_result, len(values), block_rows)
    if not parts:
        raise ValueError("a pass over no rows")
    return functools.reduce(combine, parts)


def affine_in_blocks(
    values: np.ndarray, *, shift: np.ndarray, linear: np.ndarray, block_rows: int
) -> np.ndarray:
    """``(values − shift) · linear``, block by block into one array."""
    mapped = np.empty((len(values), linear.shape[1]), dtype=np.float64)

    def map_block(block: slice) -> None:
        np.matmul(values[block] - shift, linear, out=mapped[block])

    each_block(map_block, len(values), block_rows)
    return mapped


def nearest_in_blocks(
    values: np.ndarray, centroids: np.ndarray, *, block_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`nearest_centroids` of every row, block by block into three arrays."""
    n = len(values)
    labels = np.empty(n, dtype=np.int32)
    distances = np.empty(n, dtype=np.float64)
    runner_up = np.empty(n, dtype=np.float64)

    def assign_block(block: slice) -> None:
        labels[block], distances[block], runner_up[block] = nearest_centroids(
            values[block], centroids
        )

    each_block(assign_block, n, block_rows)
    return labels, distances, runner_up


def one_native_thread() -> AbstractContextManager[Any]:
    """NumPy's BLAS held to one thread while the block runs.

    The kernels' products are thin (rows × a few columns times a few centroids): a second
    thread halves no work, and with another process busy on the second core (the tracking
    process, a neighbour) BLAS threads wait on each other. Measured on 2 cores at 1M × 5 rows:
    five Lloyd passes 0.21–0.22 s on one thread or two when quiet, 0.52–0.55 s on two and
    0.22 s on one beside a busy process; the 10,000-row sample silhouette 0.23 s on two and
    0.27 s on one when quiet, 0.71–0.75 s and 0.26 s beside a busy process.
    """
    return _native_pools().limit(limits=1)


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """``sign(x) · log(1 + |x|)``: a log transform that accepts zero and negative values."""
    return np.sign(values) * np.log1p(np.abs(values))


@dataclass(frozen=True)
class ClusterSums:
    """Per-cluster count, Σx and Σ‖x‖²: enough for centroids, inertia and silhouette."""

    counts: np.ndarray
    sums: np.ndarray
    squared_norms: np.ndarray

    @classmethod
    def from_flat(cls, flat: np.ndarray, k: int, d: int) -> ClusterSums:
        return cls(flat[:k], flat[k : k + k * d].reshape(k, d), flat[k + k * d :])

    @property
    def shares(self) -> np.ndarray:
        return self.counts / self.counts.sum()

    def inertia(self) -> float:
        """Σ‖x − μ_c‖² over all points, from the sums alone."""
        safe = np.maximum(self.counts, 1)
        return float(np.sum(self.squared_norms - np.sum(self.sums**2, axis=1) / safe))


def cluster_sums_kernel(k: int):
    """Kernel giving the flattened :class:`ClusterSums` of one block."""

    def kernel(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
        d = values.shape[1]
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        # A weighted count per column: the same sums, in the same order, as ``np.add.at``,
        # in a third of its time.
        sums = np.stack(
            [np.bincount(labels, weights=values[:, j], minlength=k) for j in range(d)], axis=1
        )
        squared = np.bincount(labels, weights=np.einsum("ij,ij->i", values, values), minlength=k)
        return np.concatenate([counts, sums.ravel(), squared])

    return kernel


def silhouette_kernel(stats: ClusterSums):
    """Kernel giving the sum of exact squared-Euclidean silhouettes over one block.

    For a point x and cluster c, the mean squared distance to c's members is
    ``‖x‖² − 2·x·Σ_c/n_c + S_c/n_c``. A point's own cluster excludes the point itself
    (scale by n/(n−1)); singleton clusters score 0. This is what Spark's ClusteringEvaluator
    computes, in O(N·k·d).
    """
    counts = stats.counts
    safe = np.maximum(counts, 1.0)
    means = stats.sums / safe[:, None]
    mean_squared = stats.squared_norms / safe
    present = counts > 0

    def kernel(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
        norms = np.einsum("ij,ij->i", values, values)
        dissimilarity = norms[:, None] - 2.0 * values @ means.T + mean_squared[None, :]
        dissimilarity[:, ~present] = np.inf
        rows = np.arange(len(labels))
        own_count = counts[labels]
        own = dissimilarity[rows, labels] * own_count / np.maximum(own_count - 1.0, 1.0)
        dissimilarity[rows, labels] = np.inf
        nearest_other = dissimilarity.min(axis=1)
        scores = np.where(
            own < nearest_other,
            1.0 - own / np.where(nearest_other == 0, 1.0, nearest_other),
            np.where(own > nearest_other, nearest_other / np.where(own == 0, 1, own) - 1.0, 0.0),
        )
        scores[own_count <= 1] = 0.0
        return np.array([scores.sum()])

    return kernel


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def id_hashes(ids: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each id's text (FNV-1a, then a SplitMix64 finish).

    The same on every engine, so a sample of the smallest hashes picks the same customers, in
    the same order, whichever engine draws it: k-means then starts from the same rows.
    """
    text = pc.cast(ids, pa.large_string())
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    n = len(text)
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + n + 1]
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8) if n else np.empty(0, np.uint8)
    hashes = np.empty(n, dtype=np.uint64)
    first = _FNV_OFFSET ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF)

    def hash_block(block: slice) -> None:
        starts, lengths = offsets[block], np.diff(offsets[block.start : block.stop + 1])
        part = np.full(len(starts), first, dtype=np.uint64)
        for position in range(int(lengths.max())):
            rows = np.flatnonzero(lengths > position)
            part[rows] = (part[rows] ^ data[starts[rows] + position]) * _FNV_PRIME
        part ^= part >> np.uint64(30)
        part *= np.uint64(0xBF58476D1CE4E5B9)
        part ^= part >> np.uint64(27)
        part *= np.uint64(0x94D049BB133111EB)
        part ^= part >> np.uint64(31)
        hashes[block] = part

    # In blocks that stay in the processor's cache, side by side: 5M ids took 0.9-1.1 s at once.
    each_block(hash_block, n, BLOCK_ROWS)
    return hashes


def hash_sample(
    hashes: np.ndarray, rows: int | Mapping[int, int], labels: np.ndarray | None = None
) -> np.ndarray:
    """Positions of a seeded sample, in the order of the ids' hashes: the ``rows`` smallest
    hashes, or with a quota per label, each label's quota of its smallest. Both engines draw
    with it, so they take the same customers in the same order."""
    if isinstance(rows, int):
        return _smallest(hashes, np.arange(len(hashes)), rows)
    if labels is None:
        raise ValueError("a sample with a quota per segment needs the rows' segment labels")
    picked = [
        _smallest(hashes, np.flatnonzero(labels == label), count) for label, count in rows.items()
    ]
    members = np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)
    return members[np.argsort(hashes[members], kind="stable")]


def _smallest(hashes: np.ndarray, positions: np.ndarray, count: int) -> np.ndarray:
    """Of ``positions``, the ``count`` with the smallest hashes, in hash order."""
    among = hashes[positions]
    if count < len(positions):
        chosen = np.argpartition(among, count - 1)[:count]
        return positions[chosen[np.argsort(among[chosen], kind="stable")]]
    return positions[np.argsort(among, kind="stable")]


#: A block of the sample silhouette's distances (rows × every point): small enough to stay in
#: the processor's cache through the five element-wise steps it takes. At 10,000 points, 4 MiB
#: blocks took 0.21 s where 156 MiB blocks took 0.32 s (1.0 s and 1.3 s at 20,000).
SILHOUETTE_BLOCK_BYTES = 4 * 2**20
#: Rows each seeding of k-means converges on before the best one is refined on every row: enough
#: to tell a good start from a poor one, few enough that eight seedings cost about one full fit.
SEEDING_ROWS = 5_000
#: Oversampling rounds of a k-means|| seeding, 2·k candidates each (MLlib's defaults are 2·k
#: and 2 steps; more rounds cost little on a subsample and cover small segments better).
PARALLEL_SEEDING_ROUNDS = 3


def kmeans(
    values: np.ndarray,
    *,
    k: int,
    seed: int,
    max_iter: int,
    n_init: int,
    shift_tolerance: float,
    init: np.ndarray | None = None,
) -> np.ndarray:
    """Centroids (k × d) of in-memory rows by Lloyd iterations from the best of ``n_init``
    seedings (or from ``init``).

    The seedings alternate k-means++ and k-means|| (oversampled candidates, then k-means++ on
    them weighted by the rows they hold); each converges on the same seeded subsample of at
    most :data:`SEEDING_ROWS` rows, and the one with the lowest inertia there is refined on
    every row. Lowest inertia, not highest silhouette: on the synthetic base the optimum with
    the higher silhouette is a worse k-means optimum and farther from the latent segments.
    Iterations stop once the summed squared centroid shift is at most ``shift_tolerance``.
    """
    if init is not None:
        return lloyd(values, init, max_iter=max_iter, shift_tolerance=shift_tolerance)[0]
    rng = np.random.default_rng(seed)
    subsample = (
        values
        if len(values) <= SEEDING_ROWS
        else values[np.sort(rng.choice(len(values), size=SEEDING_ROWS, replace=False))]
    )
    best, lowest = None, np.inf
    for attempt in range(n_init):
        seeding = kmeans_plus_plus_start if attempt % 2 == 0 else kmeans_parallel_start
        start = seeding(subsample, k=k, seed=seed + attempt)
        centroids, inertia = lloyd(
            subsample, start, max_iter=max_iter, shift_tolerance=shift_tolerance
        )
        if inertia < lowest:
            best, lowest = centroids, inertia
    assert best is not None
    if len(subsample) == len(values):
        return best
    return lloyd(values, best, max_iter=max_iter, shift_tolerance=shift_tolerance)[0]


def kmeans_plus_plus_start(
    values: np.ndarray, *, k: int, seed: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """k rows drawn by greedy k-means++: each draw takes, of ``2 + ⌊ln k⌋`` rows drawn with odds
    ∝ (weight ×) squared distance to those already chosen, the one that lowers the weighted
    squared distances most.

    The draws follow scikit-learn's ``kmeans_plusplus`` (the same random stream for a seed, so
    the same rows), without importing scikit-learn: its import alone took 0.9 s of a run.
    """
    n = len(values)
    weights = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    random = np.random.RandomState(seed)
    trials = 2 + int(np.log(k))
    norms = np.einsum("ij,ij->i", values, values)
    first = random.choice(n, p=weights / weights.sum())
    chosen = [first]
    closest = _squared_distances(values[[first]], values, norms)[0]
    potential = float(closest @ weights)
    for _ in range(1, k):
        drawn = random.uniform(size=trials) * potential
        candidates = np.searchsorted(np.cumsum(weights * closest), drawn)
        np.clip(candidates, None, n - 1, out=candidates)
        distances = np.minimum(closest, _squared_distances(values[candidates], values, norms))
        potentials = distances @ weights
        best = int(np.argmin(potentials))
        potential, closest = float(potentials[best]), distances[best]
        chosen.append(int(candidates[best]))
    return values[chosen].copy()


def _squared_distances(points: np.ndarray, values: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of each of ``points`` to every row (``norms``: the rows'
    squared norms), never below 0."""
    squared = points @ values.T
    squared *= -2.0
    squared += np.einsum("ij,ij->i", points, points)[:, None]
    squared += norms[None, :]
    return np.maximum(squared, 0.0, out=squared)


def kmeans_parallel_start(values: np.ndarray, *, k: int, seed: int) -> np.ndarray:
    """k-means|| (scalable k-means++): rounds that each draw about 2·k rows with odds ∝ their
    squared distance to the candidates so far, then k-means++ on the candidates, each weighted
    by the rows nearest to it."""
    rng = np.random.default_rng(seed)
    candidates = values[[int(rng.integers(len(values)))]]
    for _ in range(PARALLEL_SEEDING_ROUNDS):
        _, nearest, _ = nearest_centroids(values, candidates)
        cost = float(np.sum(nearest**2))
        if cost == 0.0:
            break
        drawn = rng.random(len(values)) < 2 * k * nearest**2 / cost
        candidates = np.vstack([candidates, values[drawn]])
    if len(candidates) < k:
        extra = rng.choice(len(values), size=k - len(candidates), replace=False)
        candidates = np.vstack([candidates, values[extra]])
    labels, _, _ = nearest_centroids(values, candidates)
    weights = np.bincount(labels, minlength=len(candidates)).astype(np.float64)
    return kmeans_plus_plus_start(candidates, k=k, seed=seed, weights=weights + 1e-9)


def lloyd(
    values: np.ndarray, start: np.ndarray, *, max_iter: int, shift_tolerance: float
) -> tuple[np.ndarray, float]:
    """Lloyd iterations from ``start``; the centroids and their inertia.

    Stops, as scikit-learn's k-means does, when an iteration leaves every label as it was or
    moves the centroids by at most ``shift_tolerance`` (summed squared shift); a centroid left
    without rows moves to the row farthest from its own centroid.
    """
    centroids = np.array(start, dtype=np.float64)
    previous: np.ndarray | None = None
    for _ in range(max_iter):
        labels, sums = _labels_and_sums(values, centroids)
        if previous is not None and np.array_equal(labels, previous):
            return centroids, _inertia(sums, centroids)
        moved = _means(sums, values, labels, centroids)
        shift = float(np.sum((moved - centroids) ** 2))
        centroids, previous = moved, labels
        if shift <= shift_tolerance:
            break
    return centroids, _inertia(_labels_and_sums(values, centroids)[1], centroids)


def _labels_and_sums(values: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, ClusterSums]:
    """Each row's nearest centroid, and the per-centroid sums of those rows."""
    k, d = centroids.shape
    labels = np.empty(len(values), dtype=np.int32)
    sums = cluster_sums_kernel(k)

    def block_sums(block: slice) -> np.ndarray:
        labels[block] = nearest_labels(values[block], centroids)
        return sums(values[block], labels[block])

    flat = np.zeros(k + k * d + k)
    for part in each_block(block_sums, len(values), BLOCK_ROWS):
        flat += part
    return labels, ClusterSums.from_flat(flat, k, d)


def _means(
    sums: ClusterSums, values: np.ndarray, labels: np.ndarray, centroids: np.ndarray
) -> np.ndarray:
    """Each centroid's rows' mean. A centroid without rows takes, alone, the row farthest from
    the centroid it was labelled with (the farthest rows first, one per empty centroid)."""
    counts, totals = sums.counts.copy(), sums.sums.copy()
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        offsets = values - centroids[labels]
        distances = np.einsum("ij,ij->i", offsets, offsets)
        farthest = np.argsort(distances, kind="stable")[::-1][: len(empty)]
        for centroid, row in zip(empty, farthest, strict=False):
            owner = labels[row]
            counts[owner] -= 1
            totals[owner] -= values[row]
            counts[centroid], totals[centroid] = 1, values[row]
    return totals / np.maximum(counts, 1.0)[:, None]


def _inertia(sums: ClusterSums, centroids: np.ndarray) -> float:
    """Σ‖x − c‖² of every row to its labelled centroid ``c``, from the per-centroid sums."""
    return float(
        np.sum(
            sums.squared_norms
            - 2.0 * np.einsum("ij,ij->i", sums.sums, centroids)
            + sums.counts * np.einsum("ij,ij->i", centroids, centroids)
        )
    )


def score_centroids(values: np.ndarray, centroids: np.ndarray) -> tuple[ClusterSums, float]:
    """Per-cluster sums and mean exact silhouette of in-memory rows' nearest-centroid labels."""
    k, d = centroids.shape
    labels, _, _ = nearest_centroids(values, centroids)
    sums = ClusterSums.from_flat(cluster_sums_kernel(k)(values, labels), k, d)
    return sums, float(silhouette_kernel(sums)(values, labels)[0] / max(len(values), 1))


def calinski_harabasz(values: np.ndarray, sums: ClusterSums) -> float:
    """Between-segment over within-segment dispersion, each per degree of freedom (higher is
    better; the Calinski–Harabasz index, from the per-cluster sums)."""
    n, k = len(values), len(sums.counts)
    total = float(((values - values.mean(axis=0)) ** 2).sum())
    within = sums.inertia()
    if k < 2 or n <= k or within <= 0:
        return float("nan")
    return ((total - within) / (k - 1)) / (within / (n - k))


#: Rows the stability of a partition is measured on (two fits on halves of them).
STABILITY_ROWS = 4000


def stability(values: np.ndarray, *, k: int, seed: int, shift_tolerance: float) -> float:
    """How much a k-means partition survives a change of data: k-means fitted on two disjoint
    random halves of (at most :data:`STABILITY_ROWS` of) the rows, every one of those rows
    labelled by both, and the adjusted Rand index of the two labellings (1: the same)."""
    rng = np.random.default_rng(seed)
    rows = values[rng.permutation(len(values))[:STABILITY_ROWS]]
    half = len(rows) // 2
    if half <= k:
        return float("nan")
    labels = []
    for part in (rows[:half], rows[half:]):
        centroids = kmeans(
            part, k=k, seed=seed, max_iter=100, n_init=2, shift_tolerance=shift_tolerance
        )
        labels.append(nearest_centroids(rows, centroids)[0])
    return adjusted_rand_index(labels[0], labels[1])


def adjusted_rand_index(first: np.ndarray, second: np.ndarray) -> float:
    """Agreement of two labellings of the same rows, corrected for chance (1: the same
    partition, about 0: as alike as random ones)."""
    _, a = np.unique(first, return_inverse=True)
    _, b = np.unique(second, return_inverse=True)
    both = _pairs(np.bincount(a * (int(b.max(initial=0)) + 1) + b))
    in_first, in_second = _pairs(np.bincount(a)), _pairs(np.bincount(b))
    total = len(a) * (len(a) - 1) / 2
    expected = in_first * in_second / total if total else 0.0
    most = (in_first + in_second) / 2
    if most == expected:
        return 1.0
    return (both - expected) / (most - expected)


def _pairs(counts: np.ndarray) -> float:
    """Pairs of rows that share a group, over groups of ``counts`` rows."""
    counts = counts.astype(np.float64)
    return float(np.sum(counts * (counts - 1)) / 2)


def nearest_then(centroids: np.ndarray, kernel):
    """A kernel that first labels each row with its nearest centroid, then applies ``kernel``.

    Scoring candidate centroids this way needs no stored assignment: one pass per figure.
    """

    def labelled(values: np.ndarray, _labels: np.ndarray | None) -> np.ndarray:
        return kernel(values, nearest_labels(values, centroids))

    return labelled


def raw_moments_kernel(values: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """Row count, Σx and Σxxᵀ of one block, flattened (mean and covariance in one pass)."""
    return np.concatenate([[values.shape[0]], values.sum(axis=0), (values.T @ values).ravel()])


def centered_products_kernel(mean: np.ndarray):
    """Kernel giving Σ(x−μ)(x−μ)ᵀ of one block, flattened (for a stable covariance)."""

    def kernel(values: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        centered = values - mean
        return (centered.T @ centered).ravel()

    return kernel


def euclidean_silhouette(
    points: np.ndarray, labels: np.ndarray, block_bytes: int = SILHOUETTE_BLOCK_BYTES
) -> float:
    """Mean silhouette with plain Euclidean distances (as scikit-learn's), in row blocks.

    Meant for a sample: it costs O(n²·d). Points alone in their cluster score 0. Distances come
    from one matrix product per block and are summed per cluster by a second one (against the
    one-hot labels), so no block is ever copied column by column.
    """
    block_rows = max(16, block_bytes // (8 * max(len(points), 1)))
    clusters, inverse = np.unique(labels, return_inverse=True)
    if len(clusters) < 2:
        return 0.0
    counts = np.bincount(inverse).astype(np.float64)
    members = np.zeros((len(points), len(clusters)))
    members[np.arange(len(points)), inverse] = 1.0
    norms = np.einsum("ij,ij->i", points, points)
    scores = np.empty(len(points))

    def score_block(block: slice) -> None:
        own = inverse[block]
        distances = points[block] @ points.T
        distances *= -2.0
        distances += norms[block, None]
        distances += norms[None, :]
        np.maximum(distances, 0.0, out=distances)
        np.sqrt(distances, out=distances)
        per_cluster = distances @ members
        rows = np.arange(len(own))
        own_count = counts[own]
        a = per_cluster[rows, own] / np.maximum(own_count - 1.0, 1.0)
        means = per_cluster / counts[None, :]
        means[rows, own] = np.inf
        b = means.min(axis=1)
        score = (b - a) / np.maximum(np.maximum(a, b), 1e-300)
        score[own_count <= 1] = 0.0
        scores[block] = score

    each_block(score_block, len(points), block_rows)
    return float(scores.mean())


@dataclass(frozen=True)
class Components:
    """Principal axes (rows of ``axes``) and the variance each explains."""

    axes: np.ndarray
    explained_variance: np.ndarray
    explained_ratio: np.ndarray


def principal_components(
    covariance: np.ndarray, *, components: int | None, variance: float
) -> Components:
    """Eigendecomposition of a covariance matrix, keeping a count or a share of variance.

    Axes are signed so their largest-magnitude coordinate is positive, which makes the result
    identical whichever engine or library produced the covariance.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    axes = eigenvectors[:, order].T
    flip = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(flip == 0, 1.0, flip)[:, None]
    total = eigenvalues.sum()
    ratio = eigenvalues / total if total > 0 else np.zeros_like(eigenvalues)
    if components is None:
        components = int(np.searchsorted(np.cumsum(ratio), variance - 1e-12) + 1)
    components = min(components, len(eigenvalues))
    return Components(axes[:components], eigenvalues[:components], ratio[:components])


def to_feature_space(
    points: np.ndarray,
    *,
    axes: np.ndarray,
    pca_mean: np.ndarray,
    scale: np.ndarray,
    center: np.ndarray,
) -> np.ndarray:
    """PCA coordinates back to the feature space before scaling (undoes reduce, then scale)."""
    return (points @ axes + pca_mean) * scale + center


def nearest_labels(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each row's nearest centroid, the first of equally near ones: the labels of
    :func:`nearest_centroids`, without the distances."""
    return _centroid_offsets(values, centroids).argmin(axis=1).astype(np.int32)


def _centroid_offsets(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``‖c‖² − 2·x·c`` for each row x and centroid c: its squared distances less ``‖x‖²``,
    which is the same to every centroid and decides nothing."""
    offsets = values @ (-2.0 * centroids.T)
    offsets += np.einsum("ij,ij->i", centroids, centroids)[None, :]
    return offsets


def nearest_centroids(
    values: np.ndarray, centroids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's nearest centroid (label), its distance, and the distance to the runner-up."""
    offsets = _centroid_offsets(values, centroids)
    norms = np.einsum("ij,ij->i", values, values)
    labels = offsets.argmin(axis=1)
    rows = np.arange(len(values))
    nearest = offsets[rows, labels] + norms
    offsets[rows, labels] = np.inf
    runner_up = (
        offsets.min(axis=1) + norms if centroids.shape[0] > 1 else np.full(len(values), np.inf)
    )
    return (
        labels.astype(np.int32),
        np.sqrt(np.maximum(nearest, 0.0)),
        np.sqrt(np.maximum(runner_up, 0.0)),
    )


def confidence(nearest: np.ndarray, runner_up: np.ndarray) -> np.ndarray:
    """``1 − d₁/d₂``: 0 midway between two centroids, 1 on the centroid."""
    safe = np.where(runner_up > 0, runner_up, 1.0)
    return np.where(runner_up > 0, 1.0 - nearest / safe, 0.0)
