"""The same config and seed on both engines give the same segmentation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

from helpers import make_config
from segmatch import kernels
from segmatch.api import demo_config, run_pipeline, score_customers
from segmatch.engines import make_engine
from segmatch.stages import clean, features, ingest
from segmatch.storage import TABLE_CONFIGURATION, open_table, read_delta
from segmatch.synthetic import generate_customers


@pytest.fixture(scope="module")
def parity_data(tmp_path_factory):
    return generate_customers(tmp_path_factory.mktemp("parity") / "c.parquet", rows=5000, seed=8)


@pytest.fixture(scope="module")
def both(parity_data, spark_session, tmp_path_factory):
    runs = {}
    for name in ("local", "spark"):
        out = tmp_path_factory.mktemp(f"parity-{name}")
        config = demo_config(parity_data, out, seed=4, engine=name, tracking=False)
        runs[name] = (run_pipeline(config, spark=spark_session), out)
    return runs


def segments(out):
    table = read_delta(out / "segments")
    return dict(zip(table["idcliente"].to_pylist(), table["segment"].to_pylist(), strict=True))


def test_same_k_segments_silhouette_and_counts(both):
    (local, local_out), (spark, spark_out) = both["local"], both["spark"]
    assert local.k == spark.k
    assert abs(local.silhouette - spark.silhouette) <= 0.001  # same sample, same start
    assert (local.quarantined, local.duplicates) == (spark.quarantined, spark.duplicates)
    assert local.quarantined_by_rule == spark.quarantined_by_rule
    assert local.imputed == spark.imputed
    a, b = segments(local_out), segments(spark_out)
    assert a.keys() == b.keys()
    ids = sorted(a)
    assert adjusted_rand_score([a[i] for i in ids], [b[i] for i in ids]) >= 0.99


def test_tables_written_by_either_engine_read_everywhere(both, spark_session):
    for _, out in both.values():
        for table in ("segments", "lookalikes", "profiles", "quarantine", "stage_log"):
            rows = read_delta(out / table).num_rows
            assert pl.read_delta(str(out / table)).height == rows
            spark_rows = make_engine("spark", session=spark_session).read(
                path=out / table, fmt="delta", types={}, separator=","
            )
            assert spark_rows.count() == rows


def test_both_engines_create_the_same_tables_with_statistics_on_their_keys(both):
    for name, (_, out) in both.items():
        for table in ("segments", "lookalikes", "profiles", "quarantine", "stage_log"):
            assert open_table(out / table).metadata().configuration == TABLE_CONFIGURATION, name
    # Spark's writer gathers minimums and maximums: of the id and the segment only.
    files = open_table(both["spark"][1] / "segments").get_add_actions(flatten=True)
    gathered = {c.removeprefix("min.") for c in files.schema.names if c.startswith("min.")}
    assert gathered == {"idcliente", "segment"}


def test_a_model_trained_on_one_engine_scores_on_the_other(both, parity_data, tmp_path):
    for trained, scorer in (("spark", "local"), ("local", "spark")):
        _, out = both[trained]
        scored = score_customers(out, parity_data, tmp_path / f"{trained}-{scorer}", engine=scorer)
        assert segments_of(scored.outputs["scores"]) == segments(out)


def segments_of(path):
    table = read_delta(path)
    return dict(zip(table["idcliente"].to_pylist(), table["segment"].to_pylist(), strict=True))


def test_silhouette_from_sums_equals_mllib_clustering_evaluator(spark_session):
    from pyspark.ml.evaluation import ClusteringEvaluator  # noqa: PLC0415
    from pyspark.ml.linalg import Vectors  # noqa: PLC0415

    rng = np.random.default_rng(3)
    x = np.vstack([rng.normal(c, 1.0, size=(200, 3)) for c in (0.0, 4.0, 9.0)])
    labels = np.repeat([0, 1, 2], 200)
    frame = spark_session.createDataFrame(
        [(Vectors.dense(row), int(label)) for row, label in zip(x, labels, strict=True)],
        ["features", "prediction"],
    )
    mllib = ClusteringEvaluator(distanceMeasure="squaredEuclidean").evaluate(frame)
    sums = kernels.ClusterSums.from_flat(kernels.cluster_sums_kernel(3)(x, labels), 3, 3)
    ours = kernels.silhouette_kernel(sums)(x, labels)[0] / len(x)
    assert ours == pytest.approx(mllib, abs=1e-9)


def test_partition_decision_is_recorded(both):
    spark, _ = both["spark"]
    assert {r.partitions for r in spark.stages} == {spark.partition_plan["partitions"]}
    assert spark.partition_plan["cores"] >= 1 and spark.partition_plan["input_bytes"] > 0
    local, _ = both["local"]
    assert {r.partitions for r in local.stages} == {1}


def test_transactions_give_the_same_behaviour_on_both_engines(spark_session, tmp_path):
    rng = np.random.default_rng(5)
    n = 4000
    data = tmp_path / "tx.parquet"
    pl.DataFrame(
        {
            "cust": rng.integers(1, 400, n),
            "ts": pl.datetime_range(
                pl.datetime(2024, 1, 1), pl.datetime(2024, 12, 1), "1h", eager=True
            ).sample(n, seed=1, with_replacement=True),
            "qty": rng.integers(-2, 10, n),
            "price": rng.uniform(1, 50, n).round(2),
            "invoice": [
                f"{'C' if q < 0 else ''}{i // 3}" for i, q in enumerate(rng.integers(-2, 10, n))
            ],
        }
    ).write_parquet(data)
    section = {
        "id_column": "cust",
        "shape": "transactions",
        "transactions": {
            "timestamp": "ts",
            "quantity": "qty",
            "unit_price": "price",
            "invoice": "invoice",
            "cancellation_prefix": "C",
        },
    }
    config = make_config(data, tmp_path / "out", input=section)
    behaviour = {}
    for name in ("local", "spark"):
        engine = make_engine(name, session=spark_session if name == "spark" else None)
        raw = ingest.read_input(
            engine, config=config.input, features=config.features, clean=config.clean
        )
        cleaned = clean.clean_rows(engine, config=config.clean, raw=raw)
        built = features.build_features(
            engine, config=config.features, cleaned=cleaned, plan=raw.plan
        )
        behaviour[name] = pl.from_arrow(engine.to_arrow(built.customers)).sort("cust")
    local, spark = behaviour["local"], behaviour["spark"].select(behaviour["local"].columns)
    assert local.height == spark.height > 300
    for column in local.columns:
        np.testing.assert_allclose(
            local[column].cast(pl.Float64).to_numpy(),
            spark[column].cast(pl.Float64).to_numpy(),
            rtol=1e-12,
            atol=1e-9,
            err_msg=column,
        )


def test_spark_engine_without_pyspark_says_what_to_install():
    code = (
        "import sys; sys.modules['pyspark'] = None\n"
        "from segmatch.engines import make_engine\n"
        "from segmatch.errors import EngineUnavailableError\n"
        "try:\n    make_engine('spark')\nexcept EngineUnavailableError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'segmatch[spark]'" in out.stdout


def test_both_engines_draw_the_same_seeded_sample_in_the_same_order(spark_session):
    from segmatch.engines.local import LocalMatrix  # noqa: PLC0415 -- engine internals
    from segmatch.engines.spark import SparkMatrix  # noqa: PLC0415

    ids = [f"cust-{i}-ü" for i in range(3000)]
    values = np.arange(6000, dtype=np.float64).reshape(3000, 2)
    local_matrix = LocalMatrix(ids=pl.Series("id", ids), values=values)
    frame = spark_session.createDataFrame(
        [(i, float(a), float(b)) for i, (a, b) in zip(ids, values, strict=True)],
        "id string, x0 double, x1 double",
    ).repartition(3)
    spark_matrix = SparkMatrix(frame=frame, id_column="id", width=2)
    local, spark = make_engine("local"), make_engine("spark", session=spark_session)
    for rows in (500, 5000):
        drawn = local.sample_rows(local_matrix, rows=rows, seed=7).values
        assert len(drawn) == min(rows, 3000)
        np.testing.assert_array_equal(
            drawn, spark.sample_rows(spark_matrix, rows=rows, seed=7).values
        )
    other_seed = local.sample_rows(local_matrix, rows=500, seed=8).values
    assert not np.array_equal(other_seed, local.sample_rows(local_matrix, rows=500, seed=7).values)
