"""Every kind of bad input: a clear message naming the culprit, non-zero exit, no output."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from helpers import make_config, write_table
from segmatch.api import run_pipeline
from segmatch.cli import EXIT_USER_ERROR, app
from segmatch.config_loading import load_config
from segmatch.errors import (
    ClusteringError,
    ColumnNotFoundError,
    ColumnTypeError,
    ConfigError,
    DataQualityError,
    InputError,
)
from segmatch.storage import open_table

OUTPUT_TABLES = ("segments", "lookalikes", "profiles", "stage_log")


def assert_no_output(out: Path) -> None:
    for table in OUTPUT_TABLES:
        assert not (out / table).exists(), table
    assert not any((out / ".staging" / "runs").glob("*"))  # checkpoints may stay, for resume


def good_rows(n: int = 50) -> dict[str, list]:
    return {
        "idcliente": [f"c{i}" for i in range(n)],
        "spend": [float(i % 7) for i in range(n)],
        "visits": [float(i % 5) for i in range(n)],
    }


def test_missing_input_file(engine, tmp_path):
    with pytest.raises(InputError, match=r"input '.*nowhere\.csv' does not exist"):
        run_pipeline(make_config(tmp_path / "nowhere.csv", tmp_path / "out", engine.name))
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("name", ["broken.parquet", "broken.csv"])
def test_corrupted_input_file(engine, tmp_path, name):
    data = tmp_path / name
    data.write_bytes(
        b"PAR1\x00\x01garbage" if name.endswith("parquet") else b'a,b\n"1,2\n\xff\xfe"'
    )
    with pytest.raises(InputError, match=rf"(cannot read .* '{data}')|(column 'idcliente')"):
        run_pipeline(make_config(data, tmp_path / "out", engine.name))
    assert_no_output(tmp_path / "out")


def test_unknown_config_key_suggests_the_closest(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"input": {"path": "x.csv"}, "cluster": {"k_mx": 5}}))
    with pytest.raises(ConfigError, match=r"unknown key 'cluster\.k_mx'\. Did you mean 'k_max'\?"):
        load_config(path)


def test_mistyped_config_value_names_the_key(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"input": {"path": "x.csv"}, "cluster": {"k": "six"}}))
    with pytest.raises(ConfigError, match=r"cluster\.k: .*\(got 'six'\)"):
        load_config(path)


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_id_column_missing_lists_the_columns(engine, tmp_path):
    data = write_table(good_rows(), tmp_path / "in.parquet")
    config = make_config(data, tmp_path / "out", engine.name, input={"id_column": "idclient"})
    with pytest.raises(
        ColumnNotFoundError,
        match=r"id column 'idclient' not found\. Did you mean 'idcliente'\?\nColumns present: "
        r"'idcliente', 'spend', 'visits'",
    ):
        run_pipeline(config)
    assert_no_output(tmp_path / "out")


def test_feature_column_missing(engine, tmp_path):
    data = write_table(good_rows(), tmp_path / "in.parquet")
    config = make_config(
        data, tmp_path / "out", engine.name, features={"numeric": ["spend", "vists"]}
    )
    with pytest.raises(
        ColumnNotFoundError, match=r"numeric feature column 'vists' not found\. .*'visits'"
    ):
        run_pipeline(config)
    assert_no_output(tmp_path / "out")


def test_feature_column_that_is_not_numeric(engine, tmp_path):
    rows = good_rows()
    rows["city"] = ["Lisboa", "Porto"] * 25
    data = write_table(rows, tmp_path / "in.csv")
    config = make_config(
        data, tmp_path / "out", engine.name, features={"numeric": ["spend", "city"]}
    )
    with pytest.raises(
        ColumnTypeError, match=r"feature column 'city' .* is not numeric: .*'Lisboa'"
    ):
        run_pipeline(config)
    assert_no_output(tmp_path / "out")


def test_empty_input(engine, tmp_path):
    data = tmp_path / "empty.csv"
    data.write_text("idcliente,spend\n")
    with pytest.raises(InputError, match=r"input '.*empty\.csv' is empty"):
        run_pipeline(make_config(data, tmp_path / "out", engine.name))
    assert_no_output(tmp_path / "out")


def test_fewer_customers_than_clusters(engine, tmp_path):
    data = write_table(good_rows(4), tmp_path / "in.parquet")
    config = make_config(data, tmp_path / "out", engine.name, cluster={"k": 5})
    with pytest.raises(ClusteringError, match=r"n_samples=4 should be > n_clusters=5"):
        run_pipeline(config)
    assert_no_output(tmp_path / "out")


def test_every_k_rejected_names_the_shares(engine, tmp_path):
    rng = np.random.default_rng(2)
    centres = np.repeat([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]], [120, 50, 30], axis=0)
    points = centres + rng.normal(0, 0.5, size=centres.shape)
    data = write_table(
        {"idcliente": [f"c{i}" for i in range(200)], "spend": points[:, 0], "visits": points[:, 1]},
        tmp_path / "in.parquet",
    )
    config = make_config(
        data,
        tmp_path / "out",
        engine.name,
        cluster={"k_min": 2, "k_max": 3, "min_segment_share": 0.45},
    )
    with pytest.raises(ClusteringError, match=r"every k in \[2, 3\] .*k=2: "):
        run_pipeline(config)
    assert_no_output(tmp_path / "out")


def test_every_row_quarantined(engine, tmp_path):
    data = write_table(
        {"idcliente": [None, " ", ""], "spend": [1.0, 2.0, 3.0]}, tmp_path / "in.parquet"
    )
    config = make_config(data, tmp_path / "out", engine.name, clean={"max_bad_share": 1.0})
    with pytest.raises(
        DataQualityError, match=r"every row of .* \(3\) was quarantined \(null_id: 3\)"
    ):
        run_pipeline(config)
    assert_no_output(tmp_path / "out")
    assert (tmp_path / "out" / "quarantine").exists()


def test_quarantine_limit_stops_the_run_and_keeps_previous_outputs(engine, tmp_path):
    out = tmp_path / "out"
    data = write_table(good_rows(), tmp_path / "in.parquet")
    first = run_pipeline(make_config(data, out, engine.name))
    before = open_table(out / "segments").version()
    rows = good_rows()
    rows["spend"][:10] = [math.inf] * 10
    dirty = write_table(rows, tmp_path / "dirty.parquet")
    with pytest.raises(
        DataQualityError, match=r"10 of 50 rows .*\(20\.0%\) .*not_finite: 10.*5\.0%"
    ):
        run_pipeline(make_config(dirty, out, engine.name))
    assert open_table(out / "segments").version() == before
    assert open_table(out / "quarantine").version() == 1  # only the quarantine moved on
    assert first.quarantined == 0


def test_cli_reports_bad_input_with_a_non_zero_exit(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"input": {"path": "missing.csv"}, "output": {"path": "out"}}))
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == EXIT_USER_ERROR
    assert "missing.csv" in result.output and "does not exist" in result.output
    assert not (tmp_path / "out" / "segments").exists()
    bad_key = CliRunner().invoke(app, ["run", str(config), "--set", "cluster.kk=3"])
    assert bad_key.exit_code == EXIT_USER_ERROR
    assert "unknown key 'cluster.kk'" in bad_key.output


def test_repeated_column_names_stop_the_run_naming_them(engine, tmp_path):
    data = tmp_path / "in.csv"
    rows = "\n".join(f"c{i},{i % 7},{i % 3},{i % 5}" for i in range(50))
    data.write_text(f"idcliente,spend,spend,visits\n{rows}\n")
    with pytest.raises(InputError, match=r"repeats the column name\(s\) 'spend'"):
        run_pipeline(make_config(data, tmp_path / "out", engine.name))
    assert_no_output(tmp_path / "out")


def test_a_named_feature_with_no_values_stops_the_run_naming_it(engine, tmp_path):
    rows = good_rows()
    rows["legacy"] = [None] * len(rows["spend"])
    data = write_table(rows, tmp_path / "in.parquet")
    config = make_config(
        data, tmp_path / "out", engine.name, features={"numeric": ["spend", "legacy"]}
    )
    with pytest.raises(ColumnTypeError, match=r"feature column 'legacy' .* has no values"):
        run_pipeline(config)
    assert_no_output(tmp_path / "out")


def test_only_constant_features_stop_the_run_saying_why(engine, tmp_path):
    data = write_table(
        {"idcliente": [f"c{i}" for i in range(30)], "fee": [5.0] * 30}, tmp_path / "in.parquet"
    )
    with pytest.raises(ColumnTypeError, match=r"no informative feature left: fee is constant"):
        run_pipeline(make_config(data, tmp_path / "out", engine.name))
    assert_no_output(tmp_path / "out")
