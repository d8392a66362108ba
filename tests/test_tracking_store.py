"""The tracking store is checked before the first stage: an outage stops a run at once, or
runs it untracked when the config says tracking is not required."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import mlflow
import pytest
from click.testing import CliRunner

from helpers import make_config
from segmatch.api import run_pipeline, validate
from segmatch.cli import app
from segmatch.config import TrackingConfig
from segmatch.errors import TrackingUnavailableError
from segmatch.tracking.queries import champion_model, champion_version
from segmatch.tracking.store import check_store


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unreachable(monkeypatch) -> str:
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_an_unreachable_store_stops_the_demo_before_any_stage(unreachable, tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--rows", "2000", "--out", str(out)])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and unreachable in errors[0] and "tracking.required" in errors[0]
    assert "stage '" not in result.output
    assert not (out / "output").exists(), "an output was written for a run that never started"


def test_tracking_not_required_runs_untracked_with_a_warning(unreachable, tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["demo", "--rows", "2000", "--out", str(out), "--set", "tracking.required=false"]
    )
    assert result.exit_code == 0, result.output
    assert f"warning: this run is not tracked: the MLflow tracking store {unreachable}" in (
        result.output
    )
    assert (out / "output" / "segments" / "_delta_log").is_dir()
    assert (out / "output" / "model.json").is_file()


def test_an_untracked_rerun_keeps_segment_ids_from_the_output_model(
    unreachable, customers_path, tmp_path
):
    config = make_config(
        customers_path,
        tmp_path / "out",
        tracking={"enabled": True, "required": False},
        cluster={"k": 4, "seed": 3},
    )
    first = run_pipeline(config)
    second = run_pipeline(config)
    assert first.mlflow_run_id is None and first.model_version is None
    assert any(unreachable in note for note in second.notes)
    assert second.transitions is not None and second.moved_customers == 0


def test_validate_checks_the_store(unreachable, customers_path, tmp_path):
    config = make_config(customers_path, tmp_path / "out", tracking={"enabled": True})
    with pytest.raises(TrackingUnavailableError, match=unreachable.replace(".", r"\.")):
        validate(config)


class _Answers500(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_a_server_that_answers_is_reachable_whatever_its_status():
    server = HTTPServer(("127.0.0.1", 0), _Answers500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_port}"
        assert check_store(TrackingConfig(uri=uri)) == uri
    finally:
        server.shutdown()
        server.server_close()


def test_a_sqlite_store_under_a_file_is_unreachable(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    uri = f"sqlite:///{blocker / 'mlflow.db'}"
    with pytest.raises(TrackingUnavailableError, match="not a folder this process can write"):
        check_store(TrackingConfig(uri=uri))
    assert check_store(TrackingConfig(uri=f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"))


def test_no_champion_is_none_and_other_errors_are_raised(tracking_store):
    client = mlflow.MlflowClient(tracking_store)
    assert champion_version(client, "segmatch-never-registered") is None
    client.create_registered_model("segmatch-without-alias")
    assert champion_version(client, "segmatch-without-alias") is None
    assert (
        champion_model(TrackingConfig(uri=tracking_store, model_name="segmatch-without-alias"))
        is None
    )
    with pytest.raises(mlflow.exceptions.MlflowException):
        champion_version(client, "")
