"""What a run checks of its input before it starts: a separator that splits nothing, a file
with a header and no rows. Nothing is created for an input that fails these checks."""

from __future__ import annotations

import mlflow
import pytest
from click.testing import CliRunner

from helpers import make_config
from segmatch.api import check_input, run_pipeline
from segmatch.cli import app
from segmatch.errors import InputError


@pytest.mark.parametrize(("separator", "shown"), [("\t", r"'\\t'"), ("|", r"'\|'"), (";", "';'")])
def test_a_header_that_splits_on_another_separator_names_it(engine, tmp_path, separator, shown):
    path = tmp_path / "people.csv"
    path.write_text(
        separator.join(["ID", "Year_Birth", "Income"])
        + "\n1"
        + separator
        + "1970"
        + separator
        + "500\n"
    )
    config = make_config(path, tmp_path / "out", input={"id_column": "ID"})
    with pytest.raises(
        InputError, match=f"splits into 3 columns on {shown}: set input.csv_separator"
    ):
        check_input(engine, config)
    fixed = make_config(
        path, tmp_path / "out", input={"id_column": "ID", "csv_separator": separator}
    )
    assert check_input(engine, fixed) == ["ID", "Year_Birth", "Income"]


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
