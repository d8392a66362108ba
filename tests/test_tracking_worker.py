"""The tracking process: MLflow's calls beside the run, in order, with what they log, warn and
raise brought back; a run's script needs no main guard; an ended process fails its calls."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pytest

from segmatch.errors import TrackingError
from segmatch.tracking.worker import TrackingProcess, worker_for

TESTS = Path(__file__).parent


class RefusedError(Exception):
    """An error whose class takes keyword arguments: it cannot be rebuilt from its pickle."""

    def __init__(self, *, table: str) -> None:
        super().__init__(f"refused {table}")


def refuse(table: str) -> None:
    raise RefusedError(table=table)


def log_and_warn(message: str) -> int:
    logging.getLogger("some.library").warning("logged: %s", message)
    warnings.warn(f"warned: {message}", DeprecationWarning, stacklevel=1)
    return os.getpid()


@pytest.fixture
def process(monkeypatch):
    # The process imports this module to run its functions.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), *sys.path]))
    started = TrackingProcess(quiet_mlflow=True, level=logging.INFO)
    yield started
    started.close()


def test_calls_run_in_another_process_in_order_and_bring_back_what_they_log_and_warn(
    process, caplog
):
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pids = [process.submit(log_and_warn, f"call {n}") for n in range(3)]
        child = {future.result(timeout=60) for future in pids}
    assert child != {os.getpid()} and len(child) == 1
    assert [r.getMessage() for r in caplog.records if r.name == "some.library"] == [
        "logged: call 0",
        "logged: call 1",
        "logged: call 2",
    ]
    assert [str(w.message) for w in caught] == [f"warned: call {n}" for n in range(3)]
    assert {w.category for w in caught} == {DeprecationWarning}


def test_a_warning_this_process_treats_as_an_error_fails_the_call(process):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DeprecationWarning, match="warned: strict"):
            process.submit(log_and_warn, "strict").result(timeout=60)
    assert process.submit(len, "serving").result(timeout=60) == 7


def test_errors_come_back_with_their_type_or_named_and_the_process_traceback(process):
    with pytest.raises(ValueError, match="invalid literal") as raised:
        process.submit(int, "twelve").result(timeout=60)
    assert "in the tracking process" in raised.value.__notes__[-1]
    with pytest.raises(TrackingError, match="RefusedError: refused segments") as named:
        process.submit(refuse, "segments").result(timeout=60)
    assert "in refuse" in named.value.__notes__[-1]
    with pytest.raises(TypeError, match="pickle"):  # a value that cannot travel back
        process.submit(threading.Lock).result(timeout=60)
    assert process.submit(len, "still serving").result(timeout=60) == 13


def test_a_process_that_ends_fails_its_calls_and_the_next_run_gets_a_new_one(process):
    ended = process.submit(os._exit, 3)
    with pytest.raises(TrackingError, match=r"the tracking process ended \(exit code 3\)"):
        ended.result(timeout=60)
    with pytest.raises(TrackingError, match="exit code 3"):
        process.submit(len, "too late").result(timeout=60)
    assert not process.alive()
    shared = worker_for("sqlite:////nowhere/mlflow.db", quiet_mlflow=True)
    assert shared is not process and shared.submit(len, "ab").result(timeout=60) == 2


def test_a_databricks_workspace_tracks_on_a_thread():
    # Its MLflow signs in from the notebook's context, which another process does not have.
    worker = worker_for("databricks", quiet_mlflow=True)
    try:
        assert worker.submit(os.getpid).result(timeout=60) == os.getpid()
    finally:
        worker.shutdown()


@pytest.mark.slow
def test_a_script_without_a_main_guard_runs_tracked_and_never_imports_mlflow_itself(
    customers_path, tmp_path
):
    # A process started by multiprocessing would import the script again and run it twice.
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from segmatch.api import demo_config, run_pipeline
            config = demo_config({str(customers_path)!r}, {str(tmp_path / "out")!r})
            result = run_pipeline(config)
            print(result.mlflow_run_id, result.model_version, "mlflow" in sys.modules)
            """
        )
    )
    done = python_in(tmp_path, str(script))
    assert done.returncode == 0, done.stderr
    mlflow_run_id, version, imported = done.stdout.split()
    assert len(mlflow_run_id) == 32 and version == "1" and imported == "False"
    listed = python_in(tmp_path, "-m", "segmatch", "runs", "--limit", "1")
    assert listed.returncode == 0 and "FINISHED" in listed.stdout


def python_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Python run in ``folder``, tracking to the store there (the default)."""
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
