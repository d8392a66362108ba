"""Scoring new customers with a saved model: same code path as a run, same answers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from helpers import ENGINES, make_config, write_table
from segmatch.api import demo_config, run_pipeline, score_customers
from segmatch.cli import app
from segmatch.errors import ColumnNotFoundError, ConfigError, ModelError
from segmatch.storage import read_delta


def segments_by_id(path: Path) -> dict[str, int]:
    table = read_delta(path)
    return dict(zip(table["idcliente"].to_pylist(), table["segment"].to_pylist(), strict=True))


@pytest.fixture(scope="module", params=ENGINES)
def trained(request, customers_path, tmp_path_factory):
    """One training run per engine, shared by the scoring tests (none of them changes it)."""
    if request.param == "spark":
        request.getfixturevalue("spark_session")
    out = tmp_path_factory.mktemp("run")
    result = run_pipeline(demo_config(customers_path, out, engine=request.param, tracking=False))
    return result, out


def test_scoring_the_training_data_gives_the_runs_segments(trained, customers_path, tmp_path):
    result, out = trained
    scored = score_customers(out, customers_path, tmp_path / "scores")
    assert scored.customers == result.customers
    assert segments_by_id(scored.outputs["scores"]) == segments_by_id(out / "segments")
    scores = read_delta(scored.outputs["scores"]).to_pylist()
    assert all(0.0 <= r["confidence"] <= 1.0 for r in scores)
    # Scored again, the training customers are beyond their segment's 99th percentile 1% of
    # the time (less where a segment's count does not divide evenly).
    flagged = sum(r["beyond_training_p99"] for r in scores)
    assert flagged == scored.beyond_training_p99
    assert 0.005 * len(scores) < flagged <= 0.01 * len(scores) + result.k
    lookalikes = read_delta(scored.outputs["lookalikes"]).to_pylist()
    assert len(lookalikes) == 10 * result.customers
    first = [r for r in lookalikes if r["idcliente"] == scores[0]["idcliente"]]
    # A customer that was in the training data is its own nearest existing customer.
    assert first[0]["lookalike_id"] == first[0]["idcliente"]
    assert first[0]["distance"] == pytest.approx(0, abs=1e-9)
    assert {r["segment"] for r in first} == {scores[0]["segment"]}


def test_scoring_new_customers_through_the_cli(trained, tmp_path):
    _, out = trained
    new = write_table(
        {
            "idcliente": ["n1", "n2", "odd"],
            "age": [30.0, 70.0, 94.0],
            "income": [30000.0, None, 9_000_000.0],
            "recency_days": [10.0, 300.0, 0.0],
            "frequency": [25, 1, 900],
            "monetary": [1200.0, 40.0, 5_000_000.0],
            "tenure_days": [600.0, 4000.0, 20000.0],
            "channel": ["web", "store", "phone"],
            "region": ["north", None, "islands"],
            "updated_at": [None, None, None],
        },
        tmp_path / "new.csv",
    )
    outcome = CliRunner().invoke(
        app,
        [
            "score",
            "--model",
            str(out / "model.json"),
            "--input",
            str(new),
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    scores = {r["idcliente"]: r for r in read_delta(tmp_path / "s" / "scores").to_pylist()}
    assert len(scores) == 3 and scores["odd"]["beyond_training_p99"] is True
    assert "farther from their segment's centre than 99% of its training" in outcome.output


def test_scoring_input_missing_a_feature_column(trained, tmp_path):
    _, out = trained
    new = write_table({"idcliente": ["n1"], "age": [30.0]}, tmp_path / "new.parquet")
    with pytest.raises(ColumnNotFoundError) as raised:
        score_customers(out, new, tmp_path / "s")
    message = str(raised.value)
    # Every missing column at once, and the model that needs them.
    assert "lacks 8 column(s) that model " in message and "5 segments" in message
    for column in ("income", "recency_days", "monetary", "channel", "region"):
        assert f"column {column!r} not found" in message
    assert message.endswith("Columns present: 'idcliente', 'age'")
    assert not (tmp_path / "s" / "scores").exists()


def test_a_missing_model_gets_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match=r"no segmatch model at"):
        score_customers(tmp_path / "nothing", tmp_path / "x.csv", tmp_path / "s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_scoring_request(
    tracking_store, customers_path, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store)
    config = demo_config(customers_path, tmp_path / "run", seed=5)
    config = config.model_copy(
        update={"tracking": config.tracking.model_copy(update={"model_name": "t-serve"})}
    )
    result = run_pipeline(config)
    from_uri = score_customers("models:/t-serve@champion", customers_path, tmp_path / "s")
    assert segments_by_id(from_uri.outputs["scores"]) == segments_by_id(
        tmp_path / "run" / "segments"
    )

    port = free_port()
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    env = {
        **os.environ,
        "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": tracking_store,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    server = subprocess.Popen(
        [
            str(mlflow_cli),
            "models",
            "serve",
            "-m",
            "models:/t-serve@champion",
            "--env-manager",
            "local",
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log = server.stdout.read().decode()[-2000:]
                    pytest.fail(f"mlflow models serve did not start: {log}")
                time.sleep(0.5)
        customers = read_delta(tmp_path / "run" / "segments").slice(0, 5)["idcliente"].to_pylist()
        rows = pq.read_table(customers_path).to_pandas().drop_duplicates("idcliente", keep="last")
        numeric = result.model.numeric_columns
        rows = (
            rows.set_index("idcliente")
            .loc[customers, [*numeric, *result.model.categorical_levels]]
            .astype(dict.fromkeys(numeric, "float64"))
        )
        body = json.dumps(
            {"dataframe_split": rows.reset_index(drop=True).to_dict(orient="split")}
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        segments = [p["segment"] for p in answer["predictions"]]
        expected = segments_by_id(tmp_path / "run" / "segments")
        assert segments == [expected[c] for c in customers]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert mlflow.active_run() is None


def test_scoring_refuses_a_training_runs_output(customers_path, tmp_path):
    out = tmp_path / "out"
    run_pipeline(make_config(customers_path, out, cluster={"k": 3}))
    with pytest.raises(ConfigError, match="holds a training run's tables"):
        score_customers(out, customers_path, out)
