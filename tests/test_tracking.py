"""MLflow tracking against a temporary SQLite store: what a run records, and the model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from segmatch.api import demo_config, rebuild_report, recent_runs, run_pipeline
from segmatch.cli import app
from segmatch.errors import (
    ColumnNotFoundError,
    DataQualityError,
    InputError,
    ModelError,
    RunFailedError,
)
from segmatch.model import SegmentModel
from segmatch.pipeline import STAGES
from segmatch.storage import read_delta
from segmatch.synthetic import generate_customers
from segmatch.tracking.queries import load_segment_model

LOAD_WITHOUT_SEGMATCH = textwrap.dedent(
    """
    import importlib.util, json, sys
    from pathlib import Path
    sys.path = [p for p in sys.path if not (Path(p) / "segmatch").is_dir()]
    assert importlib.util.find_spec("segmatch") is None, "segmatch is still importable"
    import mlflow
    import pandas as pd
    model = mlflow.pyfunc.load_model(sys.argv[1])
    print(json.dumps(model.predict(pd.read_parquet(sys.argv[2]))["segment"].tolist()))
    """
)


@pytest.fixture
def tracked(tracking_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store)
    mlflow.set_tracking_uri(tracking_store)
    yield mlflow.MlflowClient(tracking_store)
    assert mlflow.active_run() is None, "a test left an MLflow run open"


def tracked_config(data, out, model_name):
    config = demo_config(data, out, seed=5)
    return config.model_copy(
        update={"tracking": config.tracking.model_copy(update={"model_name": model_name})}
    )


def test_a_run_records_params_metrics_tags_inputs_and_artifacts(tracked, customers_path, tmp_path):
    result = run_pipeline(tracked_config(customers_path, tmp_path / "out", "t-record"))
    run = tracked.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["cluster.k_max"] == "10" and params["engine"] == "local"
    assert params["rows_in"] == str(result.rows_in) and params["partitions"] == "1"
    assert params["model_version"] == result.model_version
    assert metrics["silhouette"] == pytest.approx(result.silhouette)
    assert metrics["silhouette_euclidean_sample"] == pytest.approx(result.sample_silhouette)
    assert result.sample_silhouette < result.silhouette  # Euclidean reads lower than squared
    assert metrics["k"] == result.k and metrics["rows_quarantined"] == result.quarantined
    for stage in STAGES:
        assert f"stage_{stage}_seconds" in metrics and f"stage_{stage}_rows_out" in metrics
    sweep = tracked.get_metric_history(result.mlflow_run_id, "sweep_silhouette")
    assert sorted(m.step for m in sweep) == list(range(2, 11))
    assert {"config_hash", "input_digest", "table_version.segments"} <= set(tags)
    # The run id of the tables names the MLflow run and is its tag: one search away.
    assert run.info.run_name == result.run_id and tags["segmatch.run_id"] == result.run_id
    segment_rows = read_delta(result.outputs["segments"])
    assert set(segment_rows["run_id"].to_pylist()) == {result.run_id}
    for table, version in result.table_versions.items():
        assert params[f"table_version.{table}"] == str(version)
    dataset = run.inputs.dataset_inputs[0].dataset
    assert tags["input_digest"].startswith(dataset.digest)
    artifacts = {a.path for a in tracked.list_artifacts(result.mlflow_run_id)}
    assert {
        "config.json",
        "stage_log.jsonl",
        "profiles.csv",
        "quarantine_summary.json",
        "report.html",
    } <= artifacts


@pytest.mark.slow
def test_the_registered_model_scores_like_the_run(tracked, customers_path, tmp_path):
    out = tmp_path / "out"
    result = run_pipeline(tracked_config(customers_path, out, "t-roundtrip"))
    version = tracked.get_model_version_by_alias("t-roundtrip", "champion")
    assert str(version.version) == result.model_version
    loaded = mlflow.pyfunc.load_model("models:/t-roundtrip@champion")
    customers = pq.read_table(customers_path).to_pandas()
    segments = read_delta(out / "segments").to_pandas()
    rows = customers.drop_duplicates("idcliente", keep="last").merge(
        segments[["idcliente", "segment"]], on="idcliente"
    )
    numeric, categorical = result.model.numeric_columns, list(result.model.categorical_levels)
    inputs_frame = rows[numeric + categorical].astype(dict.fromkeys(numeric, "float64"))
    predicted = loaded.predict(inputs_frame)
    np.testing.assert_array_equal(predicted["segment"].to_numpy(), rows["segment"].to_numpy())
    assert ((predicted["confidence"] >= 0) & (predicted["confidence"] <= 1)).all()
    # Where segmatch is not installed, the model loads with the code it carries.
    inputs = tmp_path / "rows.parquet"
    inputs_frame.to_parquet(inputs)
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_SEGMATCH, "models:/t-roundtrip@champion", str(inputs)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.splitlines()[-1]) == rows["segment"].tolist()
    assert isinstance(
        load_segment_model("models:/t-roundtrip@champion", tracking=result.config.tracking),
        SegmentModel,
    )


def test_an_invalid_input_creates_no_mlflow_run(tracked, customers_path, tmp_path):
    config = tracked_config(tmp_path / "missing.csv", tmp_path / "out", "t-invalid")
    before = tracked.search_runs([tracked.get_experiment_by_name("segmatch").experiment_id])
    with pytest.raises(InputError, match="does not exist"):
        run_pipeline(config)
    misnamed = tracked_config(customers_path, tmp_path / "out", "t-invalid")
    misnamed = misnamed.model_copy(
        update={"features": misnamed.features.model_copy(update={"numeric": ["age", "incom"]})}
    )
    with pytest.raises(ColumnNotFoundError, match="numeric feature column 'incom' not found"):
        run_pipeline(misnamed)
    after = tracked.search_runs([tracked.get_experiment_by_name("segmatch").experiment_id])
    assert len(after) == len(before)


def test_a_run_failing_after_it_started_is_marked_failed_with_its_reason(
    tracked, customers_path, tmp_path, tracking_store
):
    config = tracked_config(customers_path, tmp_path / "out", "t-failed")
    strict = config.model_copy(
        update={"clean": config.clean.model_copy(update={"max_bad_share": 0.0})}
    )
    with pytest.raises(DataQualityError):
        run_pipeline(strict)
    runs = tracked.search_runs(
        [tracked.get_experiment_by_name("segmatch").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs[0].info.status == "FAILED" and "quarantine" in runs[0].data.tags["error"]
    latest = recent_runs(uri=tracking_store, limit=1)[0]
    assert latest["input"] == str(customers_path) and "quarantine" in latest["error"]
    listed = CliRunner().invoke(app, ["runs", "--uri", tracking_store, "--limit", "1"])
    assert "FAILED: " in listed.output


class FailingExport:
    """A hook that stops the run as its export starts: after the model was registered."""

    def before_stage(self, *, run_id: str, stage: str) -> None:
        if stage == "export":
            raise RuntimeError("the disk filled up")


def test_a_run_that_fails_after_registering_withdraws_its_model_version(
    tracked, customers_path, tmp_path
):
    config = tracked_config(customers_path, tmp_path / "out", "withdrawn")
    with pytest.raises(RunFailedError, match="RuntimeError: the disk filled up"):
        run_pipeline(config, hooks=(FailingExport(),))
    assert tracked.search_model_versions("name='withdrawn'") == []
    runs = tracked.search_runs(
        [tracked.get_experiment_by_name("segmatch").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs[0].info.status == "FAILED"
    assert runs[0].data.tags["withdrawn_model_version"] == "1"
    assert not (tmp_path / "out" / "segments").exists()
    assert not (tmp_path / "out" / "model.json").exists()


def test_bad_model_uri_and_missing_feature_column_get_clear_errors(
    tracked, customers_path, tmp_path
):
    result = run_pipeline(tracked_config(customers_path, tmp_path / "out", "t-errors"))
    with pytest.raises(
        ModelError, match=r"cannot load a segmatch model from 'models:/nope@champion'"
    ):
        load_segment_model("models:/nope@champion", tracking=result.config.tracking)
    with pytest.raises(ModelError, match=r"input lacks feature column\(s\) 'income'"):
        result.model.features_from_columns({"age": [30.0]})


@pytest.mark.slow
def test_tracking_off_never_imports_mlflow(customers_path, tmp_path):
    code = (
        "import sys; from segmatch.api import run_pipeline, demo_config;"
        f"run_pipeline(demo_config({str(customers_path)!r}, {str(tmp_path)!r}, tracking=False));"
        "print('mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_runs_lists_recent_runs(tracked, customers_path, tmp_path, tracking_store):
    result = run_pipeline(tracked_config(customers_path, tmp_path / "out", "t-runs"))
    listed = CliRunner().invoke(app, ["runs", "--uri", tracking_store, "--limit", "5"])
    assert listed.exit_code == 0, listed.output
    assert result.run_id in listed.output and "FINISHED" in listed.output


def test_a_report_is_found_by_the_run_id_of_the_tables(
    tracked, customers_path, tmp_path, tracking_store
):
    result = run_pipeline(tracked_config(customers_path, tmp_path / "out", "t-report-id"))
    (tmp_path / "out" / "runs" / result.run_id / "report.html").unlink()
    rebuilt = rebuild_report(result.run_id, tracking_uri=tracking_store)
    assert rebuilt == str(tmp_path / "out" / "runs" / result.run_id / "report.html")
    assert Path(rebuilt).exists()


def readme_block(after: str) -> str:
    """The README's first ``python`` block after the line containing ``after``."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("```python", text.index(after)) + len("```python")
    return text[start : text.index("```", start)]


def test_the_readme_model_example_runs_on_an_ordinary_csv(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    data = generate_customers(tmp_path / "customers.parquet", rows=3000, seed=3)
    result = run_pipeline(demo_config(data, tmp_path / "out", seed=3))
    assert result.config.tracking.model_name == "segmatch-demo"
    generate_customers(tmp_path / "new_customers.csv", rows=1000, seed=9)
    new = pd.read_csv(tmp_path / "new_customers.csv")
    assert new["age"].dtype == "int64"  # what trips a model with a signature of doubles
    namespace: dict = {}
    exec(readme_block("The registered model takes an ordinary DataFrame"), namespace)
    loaded = namespace["model"]
    predicted = loaded.predict(new)
    expected = result.model.predict(result.model.features_from_columns(new))
    np.testing.assert_array_equal(predicted["segment"].to_numpy(), expected)
    # Columns in another order, as text digits, extra ones: the same answer.
    shuffled = new[list(reversed(new.columns))].assign(age=new["age"].astype(str), extra=1)
    np.testing.assert_array_equal(loaded.predict(shuffled)["segment"].to_numpy(), expected)
    with pytest.raises(Exception, match="income") as missing:
        loaded.predict(new.drop(columns=["income", "region"]))
    assert "region" in str(missing.value)
