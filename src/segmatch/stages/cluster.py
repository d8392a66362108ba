"""cluster: k-means, with k chosen by the exact silhouette over a range of candidates."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from segmatch import kernels
from segmatch.config import ClusterConfig
from segmatch.engines.base import Engine, Matrix
from segmatch.errors import ClusteringError
from segmatch.model import SegmentModel
from segmatch.progress import progress
from segmatch.stages.reduce import Reduced
from segmatch.stages.scale import Scaled


@dataclass(frozen=True)
class Candidate:
    """One k of the sweep and how it scored; ``rejected`` says why it could not be chosen."""

    k: int
    silhouette: float
    inertia: float
    smallest_share: float
    rejected: str | None = None
    #: Calinski–Harabasz index (between- over within-segment dispersion; higher is better).
    calinski_harabasz: float = float("nan")
    #: Adjusted Rand index of two fits on halves of the sweep's rows (1: the same partition).
    stability: float = float("nan")


@dataclass(frozen=True)
class Clustering:
    """Every customer's segment, the centroids, and the sweep that chose k.

    Without a previous model, segment ids run from 0 (the largest segment) to k − 1; with one,
    each segment takes the id of the previous segment it matches. ``sizes`` and ``centroids``
    are in the order of ``segment_ids``; the matrix's labels are the ids.
    """

    matrix: Matrix
    centroids: np.ndarray
    segment_ids: np.ndarray
    k: int
    silhouette: float
    sample_silhouette: float
    inertia: float
    sizes: np.ndarray
    candidates: tuple[Candidate, ...]
    sweep_rows: int
    rows_in: int
    rows_out: int

    @property
    def shares(self) -> np.ndarray:
        return self.sizes / self.sizes.sum()


def cluster_sums(engine: Engine, matrix: Matrix, centroids: np.ndarray) -> kernels.ClusterSums:
    """One pass: count, Σx and Σ‖x‖² of each centroid's nearest rows."""
    k, d = centroids.shape
    flat = engine.reduce_blocks(
        matrix, kernel=kernels.nearest_then(centroids, kernels.cluster_sums_kernel(k))
    )
    return kernels.ClusterSums.from_flat(flat, k, d)


def silhouette_of(engine: Engine, assigned: Matrix, sums: kernels.ClusterSums) -> float:
    """One pass over an assigned matrix: the mean exact squared-Euclidean silhouette, given
    the per-cluster sums of the same assignment."""
    total = engine.reduce_blocks(assigned, kernel=kernels.silhouette_kernel(sums))
    return float(total[0] / sums.counts.sum())


def cluster_customers(engine: Engine, *, config: ClusterConfig, reduced: Reduced) -> Clustering:
    """Fit k-means for the fixed k, or sweep the range and keep the best admissible k.

    k-means runs first on a seeded sample of ``sweep_sample_size`` rows held in memory (all
    rows when fewer), where the sweep scores every candidate k; the chosen centroids are then
    refined in memory on a larger sample (``fit_sample_mb``), then by Lloyd iterations
    over every row, and the silhouette is computed exactly on every row. Segment ids run from
    0 (the largest segment) to k − 1; see :func:`keep_previous_ids` for ids that stay stable
    across retrains.
    """
    with kernels.one_native_thread():
        return _cluster(engine, config, reduced)


def _cluster(engine: Engine, config: ClusterConfig, reduced: Reduced) -> Clustering:
    n = reduced.rows_out
    candidates = _feasible_candidates(config, n)
    matrix = reduced.matrix
    # The PCA coordinates' variances are the kept components' explained variances.
    shift_tolerance = config.tol * float(np.mean(reduced.components.explained_variance))
    sweep_rows = min(n, config.sweep_sample_size or n)
    width = max(len(reduced.components.explained_variance), 1)
    # Every row up to cluster.fit_sample_mb of the reduced matrix, a sample of that many
    # beyond: the passes over every row that follow (one each on Spark) then start from
    # centroids close to where they end (at 1M rows the sweep's 200,000 left six on Spark).
    fit_rows = min(n, max(sweep_rows, int(config.fit_sample_mb * 2**20) // (8 * width)))
    # Hash order: the sweep's sample is the first rows of the fit's.
    fit_sample = engine.sample_rows(matrix, rows=fit_rows, seed=config.seed, sizes=n).values
    sample = fit_sample[:sweep_rows]
    if len(candidates) == 1:
        k = candidates[0]
        centroids = kernels.kmeans(
            sample,
            k=k,
            seed=config.seed,
            max_iter=config.max_iter,
            n_init=config.n_init,
            shift_tolerance=shift_tolerance,
        )
        sweep: tuple[Candidate, ...] = ()
    else:
        sweep, fitted = _sweep(sample, candidates, config, shift_tolerance)
        k = _choose(sweep, config).k
        centroids = fitted[k]
    if len(fit_sample) > len(sample):
        centroids = kernels.kmeans(
            fit_sample,
            k=k,
            seed=config.seed,
            max_iter=config.max_iter,
            n_init=1,
            shift_tolerance=shift_tolerance,
            init=centroids,
        )
    if len(fit_sample) < n:
        centroids = engine.refine_centroids(
            matrix, centroids=centroids, max_iter=config.max_iter, shift_tolerance=shift_tolerance
        )
    sums = cluster_sums(engine, matrix, centroids)
    order = np.lexsort((np.arange(k), -sums.counts))  # segment 0 is the largest
    centroids = centroids[order]
    sums = kernels.ClusterSums(sums.counts[order], sums.sums[order], sums.squared_norms[order])
    assigned = engine.assign(matrix, centroids=centroids)
    # After the assignment, not before: the pass reads the stored labels, and on Spark it is
    # the pass that caches the assigned rows (one pass over every row fewer).
    silhouette = silhouette_of(engine, assigned, sums)
    return Clustering(
        matrix=assigned,
        centroids=centroids,
        segment_ids=np.arange(k),
        k=k,
        silhouette=silhouette,
        sample_silhouette=kernels.euclidean_silhouette(
            *stratified_sample(
                engine,
                assigned,
                sizes=dict(enumerate(sums.counts.astype(int).tolist())),
                rows=config.silhouette_sample_size,
                seed=config.seed,
            )
        ),
        inertia=sums.inertia(),
        sizes=sums.counts.astype(np.int64),
        candidates=sweep,
        sweep_rows=len(sample) if sweep else 0,
        rows_in=n,
        rows_out=int(sums.counts.sum()),
    )


def keep_previous_ids(
    engine: Engine,
    *,
    clustering: Clustering,
    previous: SegmentModel | None,
    reduced: Reduced,
    scaled: Scaled,
    feature_names: list[str],
) -> Clustering:
    """Give each segment the id of the previous model's segment it matches.

    Matching is in feature space (see :meth:`SegmentModel.matched_ids`); unmatched segments get
    fresh ids. Without a previous model, or one trained on other features, ids stay 0 … k − 1.
    Kept apart from the fit so the fit (and its checkpoint) need not wait for the registry.
    """
    if previous is None:
        return clustering
    in_features = kernels.to_feature_space(
        clustering.centroids,
        axes=reduced.components.axes,
        pca_mean=reduced.mean,
        scale=scaled.scale,
        center=scaled.center,
    )
    matched = previous.matched_ids(in_features, feature_names)
    if matched is None:
        return clustering
    return replace(
        clustering, matrix=engine.relabel(clustering.matrix, ids=matched), segment_ids=matched
    )


def _feasible_candidates(config: ClusterConfig, n: int) -> list[int]:
    wanted = config.candidates
    feasible = [k for k in wanted if k < n]
    if not feasible:
        raise ClusteringError(
            f"n_samples={n} should be > n_clusters={min(wanted)}: there are fewer customers "
            f"than clusters asked for (cluster.k / cluster.k_min)"
        )
    return feasible


def _sweep(
    sample: np.ndarray, candidates: list[int], config: ClusterConfig, shift_tolerance: float
) -> tuple[tuple[Candidate, ...], dict[int, np.ndarray]]:
    scored: list[Candidate] = []
    fitted: dict[int, np.ndarray] = {}
    with progress("choosing k", total=len(candidates)) as task:
        for k in candidates:
            centroids = kernels.kmeans(
                sample,
                k=k,
                seed=config.seed,
                max_iter=config.max_iter,
                n_init=config.n_init,
                shift_tolerance=shift_tolerance,
            )
            sums, silhouette = kernels.score_centroids(sample, centroids)
            smallest = float(sums.shares.min())
            rejected = (
                f"smallest segment holds {smallest:.2%} < min_segment_share "
                f"{config.min_segment_share:.2%}"
                if smallest < config.min_segment_share
                else None
            )
            scored.append(
                Candidate(
                    k,
                    silhouette,
                    sums.inertia(),
                    smallest,
                    rejected,
                    calinski_harabasz=kernels.calinski_harabasz(sample, sums),
                    stability=kernels.stability(
                        sample, k=k, seed=config.seed, shift_tolerance=shift_tolerance
                    ),
                )
            )
            fitted[k] = centroids
            task.advance()
    return tuple(scored), fitted


def _choose(sweep: tuple[Candidate, ...], config: ClusterConfig) -> Candidate:
    admissible = [c for c in sweep if c.rejected is None]
    if not admissible:
        detail = "; ".join(f"k={c.k}: {c.smallest_share:.2%}" for c in sweep)
        raise ClusteringError(
            f"every k in [{config.k_min}, {config.k_max}] leaves a segment under "
            f"cluster.min_segment_share={config.min_segment_share:.2%} (smallest share by k: "
            f"{detail}); lower min_segment_share or the k range"
        )
    return max(admissible, key=lambda c: (c.silhouette, -c.k))


def stratified_sample(
    engine: Engine, matrix: Matrix, *, sizes: dict[int, int], rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """About ``rows`` customers (values, labels) of a labelled matrix, each segment drawn in
    proportion to its size (at least two of each), seeded: the same customers on every
    engine."""
    total = sum(sizes.values())
    quotas = (
        sizes
        if rows >= total
        else {s: min(n, max(2, round(rows * n / total))) for s, n in sizes.items()}
    )
    sample = engine.sample_rows(matrix, rows=quotas, seed=seed, sizes=sizes)
    return sample.values, sample.segments
