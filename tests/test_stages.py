"""Each stage on small hand-made data, on every engine."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from helpers import make_config, write_table
from segmatch.api import run_pipeline
from segmatch.config import ClusterConfig
from segmatch.encoding import OTHER_LEVEL
from segmatch.engines.expressions import col
from segmatch.stages import (
    clean,
    cluster,
    features,
    ingest,
    lookalikes,
    reduce,
    scale,
    statistics,
)
from segmatch.stages.features import choose_levels
from segmatch.storage import read_delta


def run_to_features(engine, config):
    raw = ingest.read_input(
        engine, config=config.input, features=config.features, clean=config.clean
    )
    cleaned = clean.clean_rows(engine, config=config.clean, raw=raw)
    return (
        raw,
        cleaned,
        features.build_features(engine, config=config.features, cleaned=cleaned, plan=raw.plan),
    )


def test_ingest_infers_csv_types_from_the_whole_file(engine, tmp_path):
    rows = [{"idcliente": f"c{i}", "limit": 1000 + i, "spend": float(i % 5)} for i in range(3000)]
    rows[2500]["limit"] = 1500.5  # a float far beyond the first rows, as in CC_GENERAL
    data = write_table(rows, tmp_path / "in.csv")
    config = make_config(data, tmp_path / "out")
    raw = ingest.read_input(
        engine, config=config.input, features=config.features, clean=config.clean
    )
    assert raw.rows == 3000
    assert raw.plan.features == ("limit", "spend")
    assert engine.schema(raw.frame)["limit"] == "numeric"


def test_ingest_reads_a_folder_of_parquet_files_and_applies_configured_types(engine, tmp_path):
    write_table({"idcliente": [1, 2], "x": ["1.5", "2"]}, tmp_path / "d" / "a.parquet")
    write_table({"idcliente": [3], "x": ["4"]}, tmp_path / "d" / "b.parquet")
    config = make_config(tmp_path / "d", tmp_path / "out", input={"types": {"x": "float"}})
    raw = ingest.read_input(
        engine, config=config.input, features=config.features, clean=config.clean
    )
    assert raw.rows == 3
    assert engine.schema(raw.frame)["x"] == "numeric"


def test_ingest_keeps_hive_partition_columns_and_reads_nested_folders(engine, tmp_path):
    write_table(
        {"idcliente": ["a", "b"], "x": [1.0, 2.0]}, tmp_path / "h" / "country=BR" / "p.parquet"
    )
    write_table({"idcliente": ["c"], "x": [3.0]}, tmp_path / "h" / "country=PT" / "p.parquet")
    write_table({"idcliente": ["d"], "x": [4.0]}, tmp_path / "n" / "a.parquet")
    write_table({"idcliente": ["e"], "x": [5.0]}, tmp_path / "n" / "2024" / "b.parquet")
    hive = make_config(tmp_path / "h", tmp_path / "o")
    partitioned = ingest.read_input(
        engine, config=hive.input, features=hive.features, clean=hive.clean
    )
    rows = engine.to_arrow(partitioned.frame).sort_by("idcliente").to_pylist()
    assert [(r["idcliente"], r["country"]) for r in rows] == [("a", "BR"), ("b", "BR"), ("c", "PT")]
    nested = make_config(tmp_path / "n", tmp_path / "o")
    raw = ingest.read_input(
        engine, config=nested.input, features=nested.features, clean=nested.clean
    )
    assert raw.rows == 2


def test_clean_quarantines_each_rule_and_keeps_original_values(engine, tmp_path):
    rows = {
        "idcliente": ["a", None, "  ", "d", "e", "f", "g", "h", "ü-ñ"],
        "age": ["30", "31", "32", "abc", "33", "200", "34", None, "35"],
        "spend": [1.0, 2.0, 3.0, 4.0, math.inf, 5.0, math.nan, 6.0, -math.inf],
    }
    data = write_table(rows, tmp_path / "in.parquet")
    config = make_config(
        data,
        tmp_path / "out",
        clean={"ranges": {"age": [0, 120]}, "max_bad_share": 1.0},
        features={"numeric": ["age", "spend"]},
    )
    _, cleaned, _ = run_to_features(engine, config)
    assert cleaned.quarantined == 6
    assert cleaned.quarantined_by_rule == {
        "null_id": 2,
        "not_numeric": 1,
        "not_finite": 2,
        "out_of_range": 1,
    }
    bad = engine.to_arrow(cleaned.quarantine).to_pylist()
    by_id = {r["idcliente"]: r for r in bad}
    assert by_id["d"]["age"] == "abc" and by_id["d"]["quarantine_column"] == "age"
    assert by_id["f"]["quarantine_rule"] == "out_of_range"
    good = engine.to_arrow(cleaned.frame).to_pylist()
    assert sorted(r["idcliente"] for r in good) == ["a", "g", "h"]
    # NaN and null are missing values: imputed with the median of what is present.
    assert cleaned.imputed == {"age": 1, "spend": 1}
    assert {r["idcliente"]: r["spend"] for r in good}["g"] == pytest.approx(3.5)


@pytest.mark.parametrize(("keep", "expected_spend"), [("first", 1.0), ("latest", 3.0)])
def test_clean_resolves_duplicate_ids_by_rule(engine, tmp_path, keep, expected_spend):
    data = write_table(
        {
            "idcliente": ["a", "b", "a", "a"],
            "spend": [1.0, 9.0, 3.0, 2.0],
            "updated": [
                datetime(2024, 1, 1),
                datetime(2024, 1, 1),
                datetime(2024, 3, 1),
                datetime(2024, 2, 1),
            ],
        },
        tmp_path / "in.parquet",
    )
    config = make_config(
        data, tmp_path / "out", clean={"duplicates": {"keep": keep, "order_by": "updated"}}
    )
    _, cleaned, _ = run_to_features(engine, config)
    assert cleaned.duplicates == 2
    rows = {r["idcliente"]: r["spend"] for r in engine.to_arrow(cleaned.frame).to_pylist()}
    assert rows == {"a": expected_spend, "b": 9.0}


def test_choose_levels_folds_rare_levels_into_other():
    counts = {"web": 50, "store": 30, "app": 15, "fax": 1, "mail": 4}
    assert choose_levels(counts, max_levels=3, min_share=0.02) == [
        "web",
        "store",
        "app",
        OTHER_LEVEL,
    ]
    assert choose_levels(counts, max_levels=10, min_share=0.03) == [
        "web",
        "store",
        "app",
        "mail",
        OTHER_LEVEL,
    ]
    assert choose_levels({"a": 1, "b": 1}, max_levels=5, min_share=0.0) == ["a", "b"]


def test_features_log_transform_and_one_hot_with_missing_level(engine, tmp_path):
    data = write_table(
        {
            "idcliente": ["a", "b", "c", "d"],
            "spend": [0.0, math.e - 1, 9.0, 99.0],
            "channel": ["web", "web", None, "store"],
        },
        tmp_path / "in.parquet",
    )
    config = make_config(
        data,
        tmp_path / "out",
        features={"numeric": ["spend"], "log": ["spend"], "categorical": ["channel"]},
    )
    _, _, built = run_to_features(engine, config)
    assert built.names == ["spend", "channel=web", "channel=(missing)", "channel=store"]
    expected = np.column_stack(
        [np.log1p([0.0, math.e - 1, 9.0, 99.0]), [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    # Rows come back in any order on a cluster: compare column sums, squares and products.
    moments = engine.reduce_blocks(
        built.matrix,
        kernel=lambda values, _: np.concatenate([values.sum(0), (values.T @ values).ravel()]),
    )
    np.testing.assert_allclose(moments[:4], expected.sum(0), atol=1e-12)
    np.testing.assert_allclose(moments[4:].reshape(4, 4), expected.T @ expected, atol=1e-12)


def test_features_measure_skewness_and_spread_in_original_units(engine, tmp_path):
    spend = [1.0, 2.0, 3.0, 2.0] * 5 + [500.0]
    visits = [4.0, 5.0, 6.0] * 7
    data = write_table(
        {"idcliente": [f"c{i}" for i in range(21)], "spend": spend, "visits": visits},
        tmp_path / "in.parquet",
    )
    config = make_config(data, tmp_path / "out", features={"numeric": ["spend", "visits"]})
    _, _, built = run_to_features(engine, config)
    assert list(built.skewed) == ["spend"] and built.skewed["spend"] > 2.0
    assert built.log == ("spend",)
    assert built.spread == pytest.approx({"spend": np.std(spend), "visits": np.std(visits)})


def test_scale_standard_and_robust(engine, tmp_path):
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    data = write_table({"idcliente": list("abcde"), "x": values}, tmp_path / "in.parquet")
    config = make_config(data, tmp_path / "out")
    _, _, built = run_to_features(engine, config)
    standard = scale.scale_features(engine, config=config.scale, features=built)
    assert standard.center[0] == pytest.approx(values.mean())
    assert standard.scale[0] == pytest.approx(values.std(ddof=1))
    robust = scale.scale_features(
        engine,
        config=make_config(data, tmp_path, scale={"method": "robust"}).scale,
        features=built,
    )
    assert robust.center[0] == pytest.approx(3.0)
    assert robust.scale[0] == pytest.approx(2.0)


def test_reduce_keeps_a_share_of_variance_or_a_count(engine, customers_path, tmp_path):
    config = make_config(customers_path, tmp_path, clean={"max_bad_share": 0.2})
    _, _, built = run_to_features(engine, config)
    scaled = scale.scale_features(engine, config=config.scale, features=built)
    by_share = reduce.reduce_dimensions(engine, config=config.reduce, scaled=scaled)
    assert by_share.components.explained_ratio.sum() >= 0.9
    assert by_share.components.explained_ratio[:-1].sum() < 0.9
    fixed = reduce.reduce_dimensions(
        engine,
        config=make_config(customers_path, tmp_path, reduce={"components": 2}).reduce,
        scaled=scaled,
    )
    assert fixed.components.axes.shape[0] == 2


def _reduced(engine, data, tmp_path, **sections):
    config = make_config(data, tmp_path, **sections)
    _, _, built = run_to_features(engine, config)
    scaled = scale.scale_features(engine, config=config.scale, features=built)
    return config, reduce.reduce_dimensions(engine, config=config.reduce, scaled=scaled)


def test_cluster_sweep_records_every_candidate_and_picks_the_best_admissible(
    engine, customers_path, tmp_path
):
    config, reduced = _reduced(engine, customers_path, tmp_path, clean={"max_bad_share": 0.2})
    result = cluster.cluster_customers(engine, config=config.cluster, reduced=reduced)
    assert [c.k for c in result.candidates] == [2, 3, 4, 5, 6]
    admissible = [c for c in result.candidates if c.rejected is None]
    assert result.k == max(admissible, key=lambda c: c.silhouette).k
    assert result.sizes.sum() == reduced.rows_out
    assert list(result.sizes) == sorted(result.sizes, reverse=True)
    assert -1 <= result.silhouette <= 1


def test_cluster_rejects_k_with_a_tiny_segment(engine, tmp_path):
    rng = np.random.default_rng(0)
    points = np.vstack(
        [
            rng.normal(0, 1, (150, 2)),
            rng.normal((10, 10), 1, (150, 2)),
            rng.normal((40, 40), 1, (6, 2)),
        ]
    )
    data = write_table(
        {"idcliente": [f"c{i}" for i in range(len(points))], "x": points[:, 0], "y": points[:, 1]},
        tmp_path / "in.parquet",
    )
    config, reduced = _reduced(
        engine,
        data,
        tmp_path,
        cluster={"k_min": 2, "k_max": 3, "min_segment_share": 0.05},
        reduce={"components": 2},
        # The geometry as drawn: logged, the six far points would sit closer to the rest.
        features={"skewed": "keep"},
    )
    result = cluster.cluster_customers(engine, config=config.cluster, reduced=reduced)
    rejected = {c.k: c.rejected for c in result.candidates}
    assert rejected[2] is None
    assert "min_segment_share" in rejected[3]
    assert (
        rejected[3] is not None
        and result.candidates[1].silhouette > result.candidates[0].silhouette
    )
    assert result.k == 2


def test_cluster_fixed_k_is_deterministic(engine, customers_path, tmp_path):
    config, reduced = _reduced(
        engine, customers_path, tmp_path, clean={"max_bad_share": 0.2}, cluster={"k": 4}
    )
    first = cluster.cluster_customers(engine, config=config.cluster, reduced=reduced)
    second = cluster.cluster_customers(engine, config=config.cluster, reduced=reduced)
    assert first.k == 4 and first.candidates == ()
    np.testing.assert_array_equal(first.centroids, second.centroids)
    assert first.silhouette == second.silhouette


def test_match_finds_nearest_customers_within_the_segment_only(engine, tmp_path):
    rng = np.random.default_rng(1)
    points = np.vstack([rng.normal(0, 1, size=(60, 2)), rng.normal(30, 1, size=(40, 2))])
    data = write_table(
        {"idcliente": [f"c{i}" for i in range(100)], "x": points[:, 0], "y": points[:, 1]},
        tmp_path / "in.parquet",
    )
    config, reduced = _reduced(engine, data, tmp_path, cluster={"k": 2}, lookalikes={"top_k": 3})
    clustering = cluster.cluster_customers(engine, config=config.cluster, reduced=reduced)
    found = lookalikes.lookalikes_within_segments(
        engine, config=config.lookalikes, clustering=clustering, id_column="idcliente"
    )
    rows = engine.to_arrow(found.frame).to_pylist()
    assert found.rows_out == 300
    segment_of = {
        r["idcliente"]: r["segment"]
        for r in engine.to_arrow(
            engine.matrix_frame(
                clustering.matrix, id_column="idcliente", columns={"segment": col("segment")}
            )
        ).to_pylist()
    }
    for r in rows:
        assert r["lookalike_id"] != r["idcliente"]
        assert segment_of[r["lookalike_id"]] == r["segment"] == segment_of[r["idcliente"]]
        assert r["similarity"] == pytest.approx(1 / (1 + r["distance"]))
    first = [r for r in rows if r["idcliente"] == "c0"]
    assert [r["rank"] for r in first] == [1, 2, 3]
    assert [r["distance"] for r in first] == sorted(r["distance"] for r in first)


def test_transactions_become_customer_behaviour(engine, tmp_path):
    day = datetime(2024, 1, 1)
    data = write_table(
        {
            "cust": [1, 1, 1, 2, 2, None],
            "ts": [
                day.replace(day=1),
                day.replace(day=11),
                day.replace(day=11),
                day.replace(day=5),
                day.replace(day=6),
                day.replace(day=7),
            ],
            "qty": [2, 1, -1, 5, 1, 1],
            "price": [10.0, 4.0, 4.0, 1.0, 3.0, 1.0],
            "invoice": ["100", "101", "C102", "200", "201", "300"],
            "sku": ["x", "y", "y", "x", "x", "z"],
        },
        tmp_path / "tx.parquet",
    )
    config = make_config(
        data,
        tmp_path / "out",
        input={
            "id_column": "cust",
            "shape": "transactions",
            "transactions": {
                "timestamp": "ts",
                "quantity": "qty",
                "unit_price": "price",
                "invoice": "invoice",
                "category": "sku",
                "cancellation_prefix": "C",
                "as_of": "2024-01-21T00:00:00",
            },
        },
        clean={"max_bad_share": 0.5},
    )
    _, cleaned, built = run_to_features(engine, config)
    assert cleaned.quarantined_by_rule == {"null_id": 1}
    rows = {r["cust"]: r for r in engine.to_arrow(built.customers).to_pylist()}
    one = rows[1]
    assert one["recency_days"] == pytest.approx(10.0)
    assert one["tenure_days"] == pytest.approx(20.0)
    assert one["frequency"] == 2  # the cancellation is not a purchase
    assert one["monetary_total"] == pytest.approx(20.0 + 4.0 - 4.0)  # returns net out
    assert one["monetary_avg"] == pytest.approx(10.0)
    assert one["return_share"] == pytest.approx(1 / 3)
    assert one["distinct_categories"] == 2
    assert rows[2]["monetary_total"] == pytest.approx(8.0)
    assert built.rows_out == 2


def test_export_stages_tables_that_appear_only_on_commit(engine, customers_path, tmp_path):
    out = tmp_path / "out"
    result = run_pipeline(
        make_config(customers_path, out, engine.name, clean={"max_bad_share": 0.2})
    )
    assert set(result.outputs) >= {"segments", "lookalikes", "profiles", "quarantine", "stage_log"}
    assert not any((out / ".staging" / "runs").glob("*"))
    profiles = read_delta(out / "profiles").to_pylist()
    assert sum(p["size"] for p in profiles) == result.customers
    assert sum(p["share"] for p in profiles) == pytest.approx(1.0)
    assert {"age_mean", "age_median", "monetary_median"} <= set(profiles[0])


def test_medians_are_exact_overall_and_per_segment(engine, tmp_path):
    rng = np.random.default_rng(11)
    n = 40_001  # beyond the rank accuracy of Spark's approximate quantiles
    age = rng.integers(18, 90, n)
    spend = rng.lognormal(3.0, 1.0, n).round(1)  # many ties
    missing = set(rng.choice(n, 500, replace=False).tolist())
    data = write_table(
        {
            "idcliente": [f"c{i}" for i in range(n)],
            "age": age,
            "spend": [None if i in missing else float(v) for i, v in enumerate(spend)],
        },
        tmp_path / "in.parquet",
    )
    present = np.array([i not in missing for i in range(n)])
    frame = engine.read(path=data, fmt="parquet", types={}, separator=",")
    stats = statistics.column_stats(
        engine, frame, numeric=["age", "spend"], categorical=[], center="median"
    )
    assert stats.centers == {"age": np.median(age), "spend": np.median(spend[present])}
    assert stats.nulls == {"age": 0, "spend": 500}
    matrix = engine.feature_matrix(frame, id_column="idcliente", numeric=["age"], log=[], levels={})
    labelled = engine.assign(matrix, centroids=np.array([[30.0], [60.0]]))
    rows_of = engine.matrix_frame(
        labelled,
        id_column="idcliente",
        columns={"segment": col("segment")},
        customers=frame,
        customer_columns=["age", "spend"],
    )
    profiles = statistics.segment_profiles(engine, rows_of, columns=["age", "spend"]).to_pylist()
    for profile, members in zip(profiles, (age <= 45, age > 45), strict=True):
        assert profile["size"] == members.sum()
        assert profile["age_median"] == np.median(age[members])
        assert profile["spend_median"] == np.median(spend[members & present])


def test_moments_in_one_pass_match_numpy_even_for_a_large_mean_and_tiny_spread(engine, tmp_path):
    rng = np.random.default_rng(2)
    n = 5000
    columns = {
        "a": rng.normal(5.0, 2.0, n),
        "b": 1e9 + rng.normal(0.0, 0.01, n),  # Σx² − nμ² cancels: recomputed around the mean
        "c": np.full(n, 3.0),
    }
    ids = [f"c{i}" for i in range(n)]
    data = write_table({"idcliente": ids, **columns}, tmp_path / "m.parquet")
    frame = engine.read(path=data, fmt="parquet", types={}, separator=",")
    matrix = engine.feature_matrix(
        frame, id_column="idcliente", numeric=["a", "b", "c"], log=[], levels={}
    )
    rows, mean, covariance = scale.moments(engine, matrix)
    values = np.column_stack(list(columns.values()))
    assert rows == n
    np.testing.assert_allclose(mean, values.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(covariance, np.cov(values, rowvar=False), rtol=1e-6, atol=1e-12)


def test_a_poor_seeding_does_not_flip_the_k_the_sweep_picks(engine, tmp_path):
    """Nine separated groups; with this seed a single k-means++ seeding of k = 9 lands two
    centroids in one group and the sweep picks 10. The best of the default seedings does not."""
    centers = np.array([[x * 5.0, y * 5.0] for x in range(3) for y in range(3)])
    points, _ = make_blobs(n_samples=2700, centers=centers, cluster_std=0.8, random_state=3)
    data = write_table(
        {"idcliente": [f"c{i}" for i in range(len(points))], "x": points[:, 0], "y": points[:, 1]},
        tmp_path / "in.parquet",
    )
    chosen = {}
    for n_init in (1, ClusterConfig().n_init):
        config, reduced = _reduced(
            engine,
            data,
            tmp_path / f"out_{n_init}",
            cluster={"k_min": 2, "k_max": 12, "seed": 10, "n_init": n_init},
            reduce={"components": 2},
        )
        chosen[n_init] = cluster.cluster_customers(engine, config=config.cluster, reduced=reduced)
    single, best = chosen[1], chosen[ClusterConfig().n_init]
    assert single.k == 10  # the poor seeding this test is about
    assert best.k == 9
    nine = {c.k: c for c in single.candidates}[9], {c.k: c for c in best.candidates}[9]
    assert nine[1].inertia < nine[0].inertia and nine[1].silhouette > nine[0].silhouette
