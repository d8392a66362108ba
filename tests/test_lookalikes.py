"""Lookalike search: exact per segment, or in cells of bounded size with measured recall."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from helpers import clustering_of, labelled_matrix
from segmatch.config import LookalikesConfig
from segmatch.engines import make_engine
from segmatch.stages.lookalikes import lookalikes_within_segments


def customers(rows: int, segments: int, seed: int = 5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, segments, rows).astype(np.int32)
    points = rng.normal(size=(rows, 5)) * [3.0, 2.0, 1.5, 1.0, 0.5] + labels[:, None] * 6.0
    return [f"c{i:07d}" for i in range(rows)], points, labels


def run_lookalikes(engine, ids, points, labels, folder, **settings):
    matrix = labelled_matrix(engine, ids, points, labels, folder)
    return lookalikes_within_segments(
        engine,
        config=LookalikesConfig(**settings),
        clustering=clustering_of(matrix, labels),
        id_column="customer_id",
    )


def test_segments_under_the_cap_are_searched_whole_and_exactly(tmp_path):
    engine = make_engine("local")
    ids, points, labels = customers(6_000, 3)
    found = run_lookalikes(engine, ids, points, labels, tmp_path, top_k=5)
    assert found.cells == 3
    assert found.largest_cell == np.bincount(labels).max()
    assert found.recall_at_k == 1.0
    assert found.rows_out == 6_000 * 5


def test_cells_bound_the_search_and_recall_is_measured(tmp_path):
    engine = make_engine("local")
    ids, points, labels = customers(30_000, 2)
    found = run_lookalikes(engine, ids, points, labels, tmp_path, max_cell_size=1_000, probes=3)
    assert found.cells >= 30_000 / 1_000
    assert found.largest_cell <= 1_000
    assert 0.95 <= found.recall_at_k < 1.0
    table = found.frame
    assert table.height == 30_000 * 10
    assert table.group_by("customer_id").len()["len"].unique().to_list() == [10]
    assert (table["customer_id"] != table["lookalike_id"]).all()
    one_probe = run_lookalikes(engine, ids, points, labels, tmp_path, max_cell_size=1_000, probes=1)
    assert one_probe.recall_at_k < found.recall_at_k


def test_recall_can_be_left_unmeasured(tmp_path):
    ids, points, labels = customers(2_000, 2)
    assert (
        run_lookalikes(
            make_engine("local"), ids, points, labels, tmp_path, recall_sample=0
        ).recall_at_k
        is None
    )


def test_a_cell_cap_below_a_hundred_is_refused():
    with pytest.raises(ValueError, match="max_cell_size"):
        LookalikesConfig(max_cell_size=10)


def test_spark_and_local_give_the_same_lookalikes_from_the_same_cells(spark_session, tmp_path):
    ids, points, labels = customers(12_000, 3)
    answers = {}
    for name in ("local", "spark"):
        engine = make_engine(name, session=spark_session)
        found = run_lookalikes(engine, ids, points, labels, tmp_path, max_cell_size=800)
        frame = pl.DataFrame(pl.from_arrow(engine.to_arrow(found.frame)))
        answers[name] = (found, frame.sort("customer_id", "rank"))
    (local, local_rows), (spark, spark_rows) = answers["local"], answers["spark"]
    assert (local.cells, local.largest_cell, local.recall_at_k) == (
        spark.cells,
        spark.largest_cell,
        spark.recall_at_k,
    )
    assert local_rows["lookalike_id"].to_list() == spark_rows["lookalike_id"].to_list()
    np.testing.assert_allclose(local_rows["distance"], spark_rows["distance"], atol=1e-9)


def test_spark_finds_lookalikes_of_200k_customers_in_many_bounded_tasks(spark_session, tmp_path):
    """A small cap on 200,000 customers: cells grow with N, each one Spark group, spread over
    many tasks; no cell over the cap; recall@10 against exact search ≥ 0.95."""
    from pyspark.sql import functions as F  # noqa: N812, PLC0415 -- Spark tests only

    ids, points, labels = customers(200_000, 4)
    engine = make_engine("spark", session=spark_session)
    found = run_lookalikes(engine, ids, points, labels, tmp_path, max_cell_size=5_000)
    assert found.cells >= 200_000 / 5_000
    assert found.largest_cell <= 5_000
    assert found.recall_at_k >= 0.95
    assert found.rows_out == 200_000 * 10
    tasks = found.frame.select(F.spark_partition_id().alias("task")).distinct().count()
    assert tasks >= found.cells / 4


def score_against(engine, reference, new, folder, **settings):
    from segmatch.stages.lookalikes import search_cells, segment_sizes  # noqa: PLC0415
    from segmatch.stages.score import top_k_against  # noqa: PLC0415

    (ids, points, labels), (new_ids, new_points, new_labels) = reference, new
    reference = labelled_matrix(engine, ids, points, labels, folder)
    new = labelled_matrix(engine, [f"n{i}" for i in new_ids], new_points, new_labels, folder)
    config = LookalikesConfig(**settings)
    cells = search_cells(engine, reference, config=config, sizes=segment_sizes(engine, reference))
    frame = top_k_against(engine, reference, new, id_column="customer_id", k=10, cells=cells)
    table = pl.DataFrame(pl.from_arrow(engine.to_arrow(frame)))
    return cells, table.sort("customer_id", "rank")


def test_spark_and_local_score_new_customers_in_the_same_cells(spark_session, tmp_path):
    reference, new = customers(20_000, 3), customers(2_000, 3, seed=9)
    answers = {
        name: score_against(
            make_engine(name, session=spark_session),
            reference,
            new,
            tmp_path,
            max_cell_size=1_500,
        )
        for name in ("local", "spark")
    }
    (local_cells, local_rows), (spark_cells, spark_rows) = answers["local"], answers["spark"]
    assert local_cells is not None and local_cells.count >= 20_000 / 1_500
    assert spark_cells is not None and spark_cells.count == local_cells.count
    assert local_rows["lookalike_id"].to_list() == spark_rows["lookalike_id"].to_list()
    _, exact = score_against(make_engine("local"), reference, new, tmp_path)
    assert local_rows.height == exact.height == 2_000 * 10
    threshold = exact.group_by("customer_id").agg(pl.col("distance").max().alias("kth"))
    found = local_rows.join(threshold, on="customer_id")
    recall = (found["distance"] <= found["kth"] + 1e-12).mean()
    assert recall >= 0.95
