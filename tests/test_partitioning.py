"""The partition planner across volumes (1 thousand to 1 billion rows) and 1 to 1,000 cores,
and what the Spark engine collects as volumes grow."""

from __future__ import annotations

import time

import pytest

from helpers import make_config
from segmatch.api import run_pipeline
from segmatch.partitioning import plan_partitions
from segmatch.synthetic import generate_customers

ROW_BYTES = 100
MB = 2**20


@pytest.mark.parametrize(
    ("rows", "cores", "expected"),
    [
        (1_000, 1, 2),  # the floor: two partitions per core
        (100_000, 8, 16),
        (1_000_000, 64, 128),
        (100_000_000, 2, 75),  # 10 GB in 128 MB partitions: 74.5, rounded up
        (100_000_000, 64, 128),  # the floor again, above the volume's 75
        (1_000_000_000, 8, 746),  # 100 GB: 745.1, rounded up
        (1_000_000_000, 1000, 2000),
        (1_000, 1000, 1000),  # never more partitions than rows
    ],
)
def test_partitions_follow_volume_within_floor_and_ceiling(rows, cores, expected):
    plan = plan_partitions(
        input_bytes=rows * ROW_BYTES, rows=rows, cores=cores, target_bytes=128 * MB, ceiling=20_000
    )
    assert plan.partitions == expected
    assert plan.as_dict()["input_bytes"] == rows * ROW_BYTES


@pytest.mark.parametrize("rows", [1_000, 100_000, 1_000_000, 100_000_000, 1_000_000_000])
@pytest.mark.parametrize("cores", [1, 2, 8, 64, 1000])
def test_partitions_stay_between_one_and_the_row_count(rows, cores):
    plan = plan_partitions(
        input_bytes=rows * ROW_BYTES, rows=rows, cores=cores, target_bytes=128 * MB, ceiling=20_000
    )
    assert 1 <= plan.partitions <= min(rows, 20_000)


def test_more_data_never_means_fewer_partitions():
    sizes = [10**k for k in range(3, 13)]
    counts = [
        plan_partitions(input_bytes=s, cores=8, target_bytes=64 * MB).partitions for s in sizes
    ]
    assert counts == sorted(counts)
    assert counts[0] == 16 and counts[-1] == 2000  # the floor, then the ceiling


def test_reasons_and_explicit_settings():
    assert plan_partitions(input_bytes=1, cores=4, target_bytes=MB).reason.startswith("floor")
    big = plan_partitions(input_bytes=10**15, cores=4, target_bytes=MB, ceiling=500)
    assert (big.partitions, big.reason) == (500, "ceiling 500")
    fixed = plan_partitions(input_bytes=10**9, cores=4, target_bytes=MB, fixed=200)
    assert (fixed.partitions, fixed.reason) == (200, "fixed by config")
    tiny = plan_partitions(input_bytes=10**6, cores=64, target_bytes=MB, rows=10)
    assert (tiny.partitions, tiny.reason) == (10, "no more partitions than rows")
    assert plan_partitions(input_bytes=10**9, cores=4, target_bytes=MB, floor=1).floor == 1
    with pytest.raises(ValueError, match="cores=0"):
        plan_partitions(input_bytes=1, cores=0, target_bytes=MB)


def test_what_the_driver_collects_does_not_grow_with_the_customers(
    spark_session, tmp_path, monkeypatch
):
    """Every row the Spark engine brings to the driver, counted at N and 4N customers: models,
    per-cluster sums, bounded samples and summaries may reach it, never the data itself."""
    from pyspark.sql.classic.dataframe import DataFrame  # noqa: PLC0415 -- Spark tests only

    from segmatch.engines.spark import quantiles  # noqa: PLC0415 -- Spark tests only

    collected: list[int] = []
    collect, to_arrow = DataFrame.collect, DataFrame.toArrow

    def counted_collect(self):
        rows = collect(self)
        collected.append(len(rows))
        return rows

    def counted_arrow(self):
        table = to_arrow(self)
        collected.append(table.num_rows)
        return table

    monkeypatch.setattr(DataFrame, "collect", counted_collect)
    monkeypatch.setattr(DataFrame, "toArrow", counted_arrow)
    # Exact quantiles collect the values of the buckets around the wanted rank, up to caps
    # that these sizes do not reach; lowered, both sizes narrow first, as from ~1M rows on.
    monkeypatch.setattr(quantiles, "MAX_VALUES_COLLECTED", 100)
    monkeypatch.setattr(quantiles, "MAX_VALUES_IN_ALL", 100)
    totals = {}
    for rows in (6_000, 24_000):
        data = generate_customers(tmp_path / f"customers-{rows}.parquet", rows=rows, seed=11)
        collected.clear()
        run_pipeline(
            make_config(
                data,
                tmp_path / f"out-{rows}",
                "spark",
                clean={"max_bad_share": 0.2},
                cluster={
                    "k": 4,
                    "sweep_sample_size": 1000,
                    "fit_sample_mb": 0.01,
                    "silhouette_sample_size": 100,
                },
                spark={"fixed_partitions": 4},
            ),
            spark=spark_session,
        )
        totals[rows] = sum(collected)
    # Bounded figures still vary with the data: the exact quantiles' histograms collect up to a
    # fixed number of buckets, more of them filled at 4N (2,644 → 3,089 rows on one run).
    # Rows that grew with the customers would make it about 4×.
    assert totals[24_000] <= 1.25 * totals[6_000], totals


def test_spark_medians_narrow_a_wide_range_before_collecting_values(spark_session, monkeypatch):
    """With a tiny cap on collected values, histograms narrow each range first: the medians
    stay exact (ties, even counts, groups) and what the last pass collects stays under the cap."""
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415

    from segmatch.engines.spark import quantiles  # noqa: PLC0415 -- Spark tests only

    rng = np.random.default_rng(4)
    rows = 200_000
    group = rng.integers(0, 3, rows).astype(np.int32)
    smooth = rng.normal(size=rows) * 100
    ties = rng.integers(0, 40, rows).astype(np.float64)
    frame = spark_session.createDataFrame(
        pa.table({"g": group, "smooth": smooth, "ties": ties})
    ).repartition(4)
    collected = []
    counted = quantiles._counted

    def recording(source, group_column, cells):
        found = counted(source, group_column, cells)
        collected.append(len(found))
        return found

    monkeypatch.setattr(quantiles, "_counted", recording)
    overall = quantiles.exact_medians(frame, ["smooth", "ties"], max_values=20)
    assert overall[None] == {"smooth": np.median(smooth), "ties": np.median(ties)}
    assert collected[-1] <= 2 * (20 + 1)
    grouped = quantiles.exact_medians(frame, ["smooth", "ties"], group="g", max_values=20)
    for g in range(3):
        members = group == g
        assert grouped[g] == {
            "smooth": np.median(smooth[members]),
            "ties": np.median(ties[members]),
        }
    assert collected[-1] <= 3 * 2 * (20 + 1)
    # 50,000 distinct values in one bucket of the first pass: fewer than MAX_VALUES_IN_ALL, so
    # they are collected as they are, without a narrowing pass over every row; capped lower,
    # a narrowing pass comes first. The median is the same either way.
    dense = rng.uniform(1000.0, 1001.0, 50_000)
    one_bucket = spark_session.createDataFrame(pa.table({"dense": dense})).repartition(4)
    narrowed = []
    histograms = quantiles._histograms
    monkeypatch.setattr(
        quantiles, "_histograms", lambda *args: narrowed.append(1) or histograms(*args)
    )
    assert quantiles.exact_medians(one_bucket, ["dense"]) == {None: {"dense": np.median(dense)}}
    assert narrowed == [] and collected[-1] == 50_000
    capped = quantiles.exact_medians(one_bucket, ["dense"], max_values=1000)
    assert capped == {None: {"dense": np.median(dense)}}
    assert narrowed and collected[-1] <= 1000


def test_spark_quantiles_are_numpys_bit_for_bit_on_awkward_columns(spark_session):
    """Quantiles per group as ``np.quantile`` gives them, on a heavy tail, a gap the wanted
    ranks straddle, a constant, outliers far beyond the rest, and infinities."""
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415

    from segmatch.engines.spark import quantiles  # noqa: PLC0415 -- Spark tests only

    rng = np.random.default_rng(9)
    rows = 60_000
    order = np.arange(rows)
    group = (order // 2 % 2).astype(np.int32)
    # Each group's lower half near 0, its upper half near 1e6: the medians straddle the gap.
    gap = np.where(order % 2 == 0, 0.0, 1e6) + rng.normal(size=rows)
    columns = {
        "heavy": rng.lognormal(3.0, 2.5, rows),
        "gap": gap,
        "constant": np.full(rows, 7.5),
        "outliers": np.concatenate([rng.normal(size=rows - 3), [1e300, -1e300, 1e300]]),
        "infinite": np.concatenate([rng.normal(size=rows - 100), np.full(100, np.inf)]),
    }
    frame = spark_session.createDataFrame(pa.table({"g": group, **columns})).repartition(3)
    for q in (0.99, 0.5, 0.25):
        found = quantiles.exact_quantiles(frame, list(columns), group="g", q=q)
        for g in range(2):
            members = group == g
            expected = {
                name: float(np.median(v[members]) if q == 0.5 else np.quantile(v[members], q))
                for name, v in columns.items()
            }
            assert found[g] == expected, (q, g)
    # Groups named by text: each range is looked up by the group's name.
    from pyspark.sql import functions as F  # noqa: N812, PLC0415 -- the PySpark convention

    named = frame.withColumn("g", F.concat(F.lit("segment "), F.col("g").cast("string")))
    assert quantiles.exact_quantiles(named, ["heavy", "gap"], group="g", q=0.5) == {
        f"segment {g}": {
            name: float(np.median(columns[name][group == g])) for name in ("heavy", "gap")
        }
        for g in range(2)
    }
    # Where the wanted ranks hold infinities (NumPy's interpolation gives NaN there).
    assert quantiles.exact_quantiles(frame, ["infinite"], q=0.999)[None] == {"infinite": np.inf}


def test_a_spark_run_releases_what_it_cached(spark_session, tmp_path):
    """A notebook's session runs segmatch again and again: each run's cached rows (the input,
    the deduplicated rows, the matrices) are released when it ends, committed or not."""
    storage = spark_session.sparkContext._jsc.sc()

    def cached_blocks() -> int:
        return len(storage.getRDDStorageInfo())

    before = cached_blocks()
    data = generate_customers(tmp_path / "customers.parquet", rows=3_000, seed=4)
    run_pipeline(
        make_config(data, tmp_path / "out", "spark", cluster={"k": 3}), spark=spark_session
    )
    # Released without blocking the run's end: wait for Spark to drop them.
    deadline = time.monotonic() + 60
    while cached_blocks() > before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cached_blocks() <= before
