import numpy as np
import pytest
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score

from segmatch import kernels
from segmatch.neighbours import KD_TREE_MAX_DIMENSIONS, top_k_neighbours


def brute_force_silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Squared-Euclidean silhouette by its definition, every pair of points."""
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    scores = []
    for i in range(len(x)):
        own = labels == labels[i]
        if own.sum() == 1:
            scores.append(0.0)
            continue
        a = d[i, own].sum() / (own.sum() - 1)
        b = min(d[i, labels == c].mean() for c in np.unique(labels) if c != labels[i])
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


def silhouette_from_sums(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    sums = kernels.ClusterSums.from_flat(kernels.cluster_sums_kernel(k)(x, labels), k, x.shape[1])
    return float(kernels.silhouette_kernel(sums)(x, labels)[0] / len(x))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_silhouette_from_sums_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(c, 1.0, size=(40, 3)) for c in (0.0, 3.0, 7.0)])
    labels = rng.permutation(np.repeat([0, 1, 2], 40)) if seed == 2 else np.repeat([0, 1, 2], 40)
    exact = silhouette_from_sums(x, labels, 3)
    assert exact == pytest.approx(brute_force_silhouette(x, labels), abs=1e-10)
    assert exact == pytest.approx(silhouette_score(x, labels, metric="sqeuclidean"), abs=1e-10)


def test_silhouette_gives_singleton_clusters_zero():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [9.0, 9.0]])
    labels = np.array([0, 0, 0, 1])
    assert silhouette_from_sums(x, labels, 2) == pytest.approx(brute_force_silhouette(x, labels))


def test_inertia_from_sums_equals_direct_sum():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 4))
    labels = rng.integers(0, 3, size=200)
    sums = kernels.ClusterSums.from_flat(kernels.cluster_sums_kernel(3)(x, labels), 3, 4)
    direct = sum(((x[labels == c] - x[labels == c].mean(axis=0)) ** 2).sum() for c in range(3))
    assert sums.inertia() == pytest.approx(direct)


def test_principal_components_match_scikit_learn_up_to_sign():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5))
    ours = kernels.principal_components(np.cov(x, rowvar=False), components=3, variance=0.9)
    theirs = PCA(n_components=3).fit(x)
    np.testing.assert_allclose(np.abs(ours.axes), np.abs(theirs.components_), atol=1e-8)
    np.testing.assert_allclose(ours.explained_ratio, theirs.explained_variance_ratio_, atol=1e-10)
    assert (ours.axes[np.arange(3), np.abs(ours.axes).argmax(axis=1)] > 0).all()


def test_principal_components_by_variance_share_keep_the_fewest_axes_needed():
    covariance = np.diag([6.0, 3.0, 0.6, 0.4])
    kept = kernels.principal_components(covariance, components=None, variance=0.9)
    assert len(kept.axes) == 2
    assert kept.explained_ratio.sum() == pytest.approx(0.9)


@pytest.mark.parametrize("dimensions", [3, KD_TREE_MAX_DIMENSIONS + 4])
def test_top_k_neighbours_equals_brute_force_and_excludes_self(dimensions):
    rng = np.random.default_rng(6)
    points = rng.normal(size=(300, dimensions))
    indices, distances = top_k_neighbours(points, 5)
    full = np.sqrt(((points[:, None] - points[None]) ** 2).sum(axis=2))
    np.fill_diagonal(full, np.inf)
    expected = np.sort(full, axis=1)[:, :5]
    np.testing.assert_allclose(distances, expected, atol=1e-9)
    assert not (indices == np.arange(300)[:, None]).any()
    np.testing.assert_allclose(full[np.arange(300)[:, None], indices], distances, atol=1e-9)


def test_top_k_neighbours_handles_duplicates_and_tiny_groups():
    points = np.zeros((4, 2))
    indices, distances = top_k_neighbours(points, 10)
    assert indices.shape == (4, 3)
    assert not (indices == np.arange(4)[:, None]).any()
    assert (distances == 0).all()
    single, _ = top_k_neighbours(np.zeros((1, 2)), 3)
    assert single.shape == (1, 0)


def test_nearest_centroids_and_signed_log():
    values = np.array([[0.0, 0.0], [10.0, 10.0]])
    labels, distances, runner_up = kernels.nearest_centroids(
        values, np.array([[9.0, 10.0], [0.0, 1.0]])
    )
    assert labels.tolist() == [1, 0]
    np.testing.assert_allclose(distances, [1.0, 1.0])
    np.testing.assert_allclose(runner_up, [np.hypot(9, 10), np.hypot(10, 9)])
    np.testing.assert_allclose(kernels.confidence(distances, runner_up), 1 - 1 / np.hypot(9, 10))
    np.testing.assert_allclose(kernels.signed_log1p(np.array([-np.e + 1, 0.0])), [-1.0, 0.0])


def test_euclidean_silhouette_equals_scikit_learn():
    rng = np.random.default_rng(8)
    x = np.vstack([rng.normal(c, 1.0, size=(150, 3)) for c in (0.0, 2.5, 6.0)])
    labels = np.repeat([3, 5, 9], 150)
    # Blocks of 100 rows: four whole ones and a part.
    ours = kernels.euclidean_silhouette(x, labels, block_bytes=100 * 8 * len(x))
    assert ours == pytest.approx(silhouette_score(x, labels), abs=1e-10)


@pytest.mark.parametrize(("rows", "k"), [(300, 3), (2240, 2), (2240, 10), (5000, 6)])
def test_kmeans_plus_plus_draws_the_rows_scikit_learn_draws(rows, k):
    rng = np.random.default_rng(rows + k)
    x = rng.normal(size=(rows, 5)) * rng.uniform(0.5, 3.0, size=5)
    weights = rng.uniform(0.1, 2.0, size=rows)
    for seed in range(3):
        expected, _ = kmeans_plusplus(x, n_clusters=k, random_state=seed)
        weighted, _ = kmeans_plusplus(x, n_clusters=k, random_state=seed, sample_weight=weights)
        assert np.array_equal(kernels.kmeans_plus_plus_start(x, k=k, seed=seed), expected)
        drawn = kernels.kmeans_plus_plus_start(x, k=k, seed=seed, weights=weights)
        assert np.array_equal(drawn, weighted)


@pytest.mark.parametrize("tolerance", [0.0, 1e-6, 1e-2])
def test_lloyd_ends_where_scikit_learn_does_from_the_same_start(tolerance):
    rng = np.random.default_rng(4)
    x = np.vstack([rng.normal(c, 1.0, size=(400, 4)) for c in (0.0, 1.5, 3.0, 6.0)])
    start = x[rng.choice(len(x), size=4, replace=False)]
    theirs = KMeans(4, init=start, n_init=1, max_iter=300, tol=tolerance, algorithm="lloyd")
    theirs.fit(x)
    shift = tolerance * float(np.var(x, axis=0).mean())
    centroids, inertia = kernels.lloyd(x, start, max_iter=300, shift_tolerance=shift)
    np.testing.assert_allclose(centroids, theirs.cluster_centers_, atol=1e-9)
    assert inertia == pytest.approx(theirs.inertia_, rel=1e-10)


def test_lloyd_gives_a_centroid_left_without_rows_the_farthest_row():
    rng = np.random.default_rng(5)
    x = np.vstack([rng.normal(size=(100, 2)), [[50.0, 50.0]]])
    start = np.array([[0.0, 0.0], [0.1, 0.0], [100.0, 100.0]])
    centroids, _ = kernels.lloyd(x, start, max_iter=50, shift_tolerance=0.0)
    theirs = KMeans(3, init=start, n_init=1, max_iter=50, tol=0.0, algorithm="lloyd").fit(x)
    np.testing.assert_allclose(centroids, theirs.cluster_centers_, atol=1e-9)
    assert [50.0, 50.0] in centroids.tolist()


def test_adjusted_rand_index_equals_scikit_learn():
    rng = np.random.default_rng(6)
    first = rng.integers(0, 5, size=1000)
    second = np.where(rng.random(1000) < 0.7, first, rng.integers(0, 5, size=1000))
    assert kernels.adjusted_rand_index(first, second) == pytest.approx(
        adjusted_rand_score(first, second), abs=1e-12
    )
    assert kernels.adjusted_rand_index(first, first + 7) == 1.0
    one_group = np.zeros(10, dtype=int)
    assert kernels.adjusted_rand_index(one_group, one_group) == 1.0
    assert kernels.adjusted_rand_index(np.arange(10), one_group) == pytest.approx(
        adjusted_rand_score(np.arange(10), one_group)
    )


def test_each_block_keeps_the_blocks_order():
    blocks = kernels.each_block(lambda block: (block.start, block.stop), 10, 3)
    assert blocks == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert kernels.each_block(lambda block: block, 0, 3) == []


def test_blocks_in_threads_sum_as_one_thread_does(monkeypatch):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(300_000, 5))
    centroids = x[:6].copy()
    kernels._block_threads.cache_clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert kernels._block_threads() is not None
    labels, sums = kernels._labels_and_sums(x, centroids)
    kernels._block_threads.cache_clear()
    # As Spark's Python workers are told: one thread, the blocks in turn.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert kernels._block_threads() is None
    alone, alone_sums = kernels._labels_and_sums(x, centroids)
    kernels._block_threads.cache_clear()
    assert np.array_equal(labels, alone)
    assert np.array_equal(sums.sums, alone_sums.sums)
    assert np.array_equal(sums.squared_norms, alone_sums.squared_norms)


@pytest.mark.timeout(60)
def test_blocks_that_run_blocks_finish():
    # Every pool thread busy with an outer block that waits on inner blocks would never end.
    def outer(block: slice) -> int:
        return sum(kernels.each_block(lambda inner: inner.stop - inner.start, 100, 7))

    assert kernels.each_block(outer, 64, 1) == [100] * 64


def test_hash_sample_takes_each_quota_of_smallest_hashes_in_hash_order():
    generator = np.random.default_rng(5)
    hashes = generator.permutation(10_000).astype(np.uint64)
    labels = generator.integers(0, 3, size=10_000)
    quotas = {0: 40, 1: 7, 2: 5_000}
    chosen = kernels.hash_sample(hashes, quotas, labels)
    assert np.all(np.diff(hashes[chosen].astype(np.int64)) > 0)
    for label, quota in quotas.items():
        members = np.flatnonzero(labels == label)
        expected = np.sort(hashes[members])[:quota]
        assert np.array_equal(np.sort(hashes[chosen[labels[chosen] == label]]), expected)
    first = kernels.hash_sample(hashes, 100)
    assert np.array_equal(hashes[first], np.arange(100, dtype=np.uint64))
    with pytest.raises(ValueError, match="segment labels"):
        kernels.hash_sample(hashes, quotas)
