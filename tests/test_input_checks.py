"""What a run checks of its input before it starts: a separator that splits nothing, a file
with a header and no rows. Nothing is created for an input that fails these checks."""

from __future__ import annotations

import re

import mlflow
import pytest
from click.testing import CliRunner

from helpers import make_config
from segmatch.api import check_input, run_pipeline
from segmatch.cli import app
from segmatch.errors import InputError
from segmatch.stages.ingest import read_input


@pytest.mark.parametrize(("separator", "shown"), [("\t", r"'\\t'"), ("|", r"'\|'"), (";", "';'")])
def test_a_header_that_splits_on_another_separator_is_read_with_it(
    engine, tmp_path, separator, shown
):
    path = tmp_path / "people.csv"
    lines = [["ID", "Year_Birth", "Income"], ["1", "1970", "500"], ["2", "1985", "730"]]
    path.write_text("".join(separator.join(line) + "\n" for line in lines))
    detected = make_config(path, tmp_path / "out", input={"id_column": "ID"})
    assert check_input(engine, detected) == ["ID", "Year_Birth", "Income"]
    raw = read_input(
        engine, config=detected.input, features=detected.features, clean=detected.clean
    )
    assert re.search(
        f"read with separator {shown}: the header splits into 3 columns", raw.plan.roles[0].reason
    )
    named_wrong = make_config(
        path, tmp_path / "out", input={"id_column": "ID", "csv_separator": ","}
    )
    with pytest.raises(
        InputError, match=f"splits into 3 columns on {shown}: set input.csv_separator"
    ):
        check_input(engine, named_wrong)


def test_a_header_without_rows_fails_validation(engine, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("idcliente,age,income\n")
    with pytest.raises(InputError, match="is empty: it has a header but no rows"):
        check_input(engine, make_config(path, tmp_path / "out"))


def test_nothing_is_created_for_an_input_that_fails_before_the_first_stage(
    tracking_store, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store)
    path = tmp_path / "empty.csv"
    path.write_text("idcliente,age,income\n")
    config = make_config(
        path, tmp_path / "out", tracking={"enabled": True, "experiment": "segmatch-empty-input"}
    )
    with pytest.raises(InputError, match="is empty"):
        run_pipeline(config)
    assert not (tmp_path / "out").exists()
    assert (
        mlflow.MlflowClient(tracking_store).get_experiment_by_name("segmatch-empty-input") is None
    )
    result = CliRunner().invoke(app, ["validate", str(_config_file(tmp_path, path))])
    assert result.exit_code != 0 and "is empty: it has a header but no rows" in result.output


def _config_file(folder, data):
    config = folder / "job.yaml"
    config.write_text(f"input: {{path: {data}}}\ntracking: {{enabled: false}}\n")
    return config
