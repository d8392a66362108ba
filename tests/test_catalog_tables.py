"""Tables named in a catalog (catalog.schema.table, as in Unity Catalog) on the Spark engine:
written with Delta's writer through saveAsTable and MERGE, with history, restore, idempotent
reruns and scoring against the named segments table."""

from __future__ import annotations

import pytest
import yaml

from helpers import make_config
from segmatch.api import restore_table, run_pipeline, score_customers, table_history
from segmatch.config_loading import load_config
from segmatch.errors import ConfigError, InputError

CATALOG = "spark_catalog"


@pytest.fixture(scope="module")
def schema(spark_session, tmp_path_factory):
    """A schema of the session's catalog whose managed tables live in a temporary folder."""
    name = "segmatch_catalog_tests"
    location = tmp_path_factory.mktemp("warehouse")
    spark_session.sql(f"CREATE SCHEMA IF NOT EXISTS {CATALOG}.{name} LOCATION '{location}'")
    yield name
    spark_session.sql(f"DROP SCHEMA IF EXISTS {CATALOG}.{name} CASCADE")


def named_config(data, out, schema, *, k=4, modes=None):
    return make_config(
        data,
        out,
        "spark",
        clean={"max_bad_share": 0.2},
        cluster={"k": k},
        output={"catalog": CATALOG, "schema": schema, "modes": modes or {}},
    )


def test_spark_names_every_table_in_the_catalog_with_history_and_restore(
    spark_session, schema, customers_path, tmp_path
):
    config = named_config(customers_path, tmp_path / "out", schema, modes={"segments": "merge"})
    first = run_pipeline(config, spark=spark_session)
    segments = f"{CATALOG}.{schema}.segments"
    assert first.outputs["segments"] == segments
    assert spark_session.table(segments).count() == first.customers
    assert spark_session.table(f"{CATALOG}.{schema}.lookalikes").count() == 10 * first.customers
    assert not (tmp_path / "out" / "segments").exists()  # the folder holds no tables
    assert (tmp_path / "out" / "model.json").exists()
    assert (tmp_path / "out" / "runs" / first.run_id / "report.html").exists()

    again = run_pipeline(config, spark=spark_session)  # the same batch: nothing new committed
    assert again.table_versions == first.table_versions
    history = table_history(segments, spark=spark_session)
    assert [h["run_id"] for h in history] == [first.run_id]
    assert history[0]["rows_written"] == first.customers

    changed = named_config(
        customers_path,
        tmp_path / "out",
        schema,
        k=3,
        modes={"segments": "merge"},
    )
    run_pipeline(changed, spark=spark_session)
    latest = table_history(segments, spark=spark_session)[0]
    assert (latest["operation"], latest["run_id"] != first.run_id) == ("MERGE", True)
    restored = restore_table(segments, 0, spark=spark_session)
    assert restored == 2
    assert set(spark_session.table(segments).select("run_id").distinct().toPandas()["run_id"]) == {
        first.run_id
    }
    with pytest.raises(InputError, match="already at version"):
        restore_table(segments, 2, spark=spark_session)

    scored = score_customers(
        tmp_path / "out" / "model.json", customers_path, tmp_path / "scores", engine="spark"
    )
    assert scored.customers == first.customers
    assert scored.outputs["lookalikes"].endswith("lookalikes")


def test_spark_reads_a_catalog_table_as_input_at_any_version(
    spark_session, schema, customers_path, tmp_path
):
    customers = f"{CATALOG}.{schema}.customers"
    source = spark_session.read.parquet(str(customers_path))
    source.write.format("delta").saveAsTable(customers)
    source.limit(500).write.format("delta").mode("append").saveAsTable(customers)
    raw = {
        "engine": "spark",
        "input": {"path": customers, "id_column": "idcliente", "version": 0},
        "output": {"path": str(tmp_path / "out")},
        "clean": {"max_bad_share": 0.2},
        "cluster": {"k": 3},
        "tracking": {"enabled": False},
        "lookalikes": {"enabled": False},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "job.yaml")
    assert config.input.path == customers  # a name, not resolved against the config's folder
    first = run_pipeline(config, spark=spark_session)
    assert first.rows_in == source.count()
    latest = run_pipeline(
        load_config(tmp_path / "job.yaml", {"input.version": None}), spark=spark_session
    )
    assert latest.rows_in == source.count() + 500
    assert latest.input_digest != first.input_digest
    with pytest.raises(ConfigError, match="only the spark engine reads"):
        load_config(tmp_path / "job.yaml", {"engine": "local"})


def test_a_missing_schema_is_named_in_the_error(spark_session, customers_path, tmp_path):
    config = named_config(customers_path, tmp_path / "out", "no_such_schema")
    with pytest.raises(ConfigError, match="no_such_schema"):
        run_pipeline(config, spark=spark_session)


def test_history_of_a_missing_catalog_table_says_so(spark_session, schema):
    with pytest.raises(InputError, match="no table"):
        table_history(f"{CATALOG}.{schema}.nothing_here", spark=spark_session)
