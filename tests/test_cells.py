"""Search cells: balanced boxes, home cells, probes, and the exact search inside a cell."""

from __future__ import annotations

import numpy as np
import pytest

from segmatch import cells
from segmatch.neighbours import keep_smallest, nearest_distances_kernel


def blobs(rows: int, segments: int, dimensions: int = 4, seed: int = 3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, segments, rows).astype(np.int32)
    points = rng.normal(size=(rows, dimensions)) + labels[:, None] * 4.0
    return points, labels


def test_large_segments_are_cut_into_balanced_boxes_and_small_ones_kept_whole():
    points, labels = blobs(40_000, 2)
    labels[labels == 1] = 1
    small = labels == 1
    labels[small] = np.where(np.arange(small.sum()) < 900, 1, 0)
    sizes = {int(s): int((labels == s).sum()) for s in np.unique(labels)}
    plan = cells.plan_cells(points, labels, sizes, max_cell_size=4000, probes=2)
    assert (plan.segment == 1).sum() == 1
    large = plan.segment == 0
    assert large.sum() == int(np.ceil(sizes[0] / (cells.FILL * 4000)))
    homes = plan.homes(points, labels)
    counts = np.bincount(homes, minlength=plan.count)
    assert counts[large].max() <= 4000
    assert counts[large].min() >= 0.8 * counts[large].max()
    assert set(plan.segment[homes[labels == 1]]) == {1}


def test_nearest_boxes_start_with_the_home_box_and_stay_in_the_segment():
    points, labels = blobs(20_000, 3)
    sizes = {int(s): int((labels == s).sum()) for s in np.unique(labels)}
    plan = cells.plan_cells(points, labels, sizes, max_cell_size=1000, probes=3)
    nearest = plan.nearest(points, labels)
    inside = (points[:, None] >= plan.low[nearest[:, 0]][:, None]) & (
        points[:, None] <= plan.high[nearest[:, 0]][:, None]
    )
    assert inside.all()
    assert (plan.segment[nearest] == labels[:, None]).all()
    assert len({tuple(row) for row in np.sort(nearest, axis=1)}) > 1


def test_a_segment_too_thin_to_cut_gets_one_box():
    points, labels = blobs(50, 1)
    plan = cells.plan_cells(points[:1], labels[:1], {0: 10_000}, max_cell_size=100, probes=2)
    assert plan.count == 1
    assert plan.nearest(points, labels)[:, 1].tolist() == [-1] * 50


def test_search_in_a_cell_answers_its_own_rows_exactly_among_all_its_rows():
    rng = np.random.default_rng(9)
    values = rng.normal(size=(500, 3))
    home = rng.random(500) < 0.4
    queries, neighbours, distances = cells.top_k_in_cell(values, home, 5)
    assert sorted(queries.tolist()) == np.flatnonzero(home).tolist()
    full = np.sqrt(((values[queries][:, None] - values[None]) ** 2).sum(axis=2))
    full[np.arange(len(queries)), queries] = np.inf
    np.testing.assert_allclose(distances, np.sort(full, axis=1)[:, :5], atol=1e-9)
    np.testing.assert_allclose(
        full[np.arange(len(queries))[:, None], neighbours], distances, atol=1e-9
    )


@pytest.mark.parametrize("probes, least", [(1, 0.7), (3, 0.97)])
def test_more_probes_find_more_of_the_true_neighbours(probes, least):
    points, labels = blobs(30_000, 2, dimensions=3)
    sizes = {int(s): int((labels == s).sum()) for s in np.unique(labels)}
    plan = cells.plan_cells(points, labels, sizes, max_cell_size=2000, probes=probes)
    nearest = plan.nearest(points, labels)
    queries = np.arange(0, 30_000, 150)
    exact = nearest_distances_kernel(points[queries], labels[queries], 11)(points, labels)
    threshold = exact.reshape(-1, 11)[:, 10]
    hits = 0
    for q, limit in zip(queries, threshold, strict=True):
        home = nearest[q, 0]
        members = np.flatnonzero((nearest == home).any(axis=1))
        gaps = np.sqrt(((points[members] - points[q]) ** 2).sum(axis=1))
        hits += min(10, int((np.sort(gaps)[1:11] <= limit + 1e-12).sum()))
    assert hits / (10 * len(queries)) >= least


def test_nearest_distances_merge_across_blocks_to_the_exact_answer():
    points, labels = blobs(3_000, 2)
    queries, query_labels = points[:40], labels[:40]
    kernel = nearest_distances_kernel(queries, query_labels, 6)
    merged = keep_smallest(6)(
        kernel(points[:1700], labels[:1700]), kernel(points[1700:], labels[1700:])
    )
    full = np.sqrt(((queries[:, None] - points[None]) ** 2).sum(axis=2))
    full[query_labels[:, None] != labels[None]] = np.inf
    np.testing.assert_allclose(merged.reshape(-1, 6), np.sort(full, axis=1)[:, :6], atol=1e-9)
