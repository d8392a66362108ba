"""The tracking store: which URI a run logs to, MLflow's import, and whether the store answers.

A run checks its store before its first stage (:func:`check_store`), so an outage stops it
in seconds with one line naming the URI instead of after every stage, in MLflow's retries.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from segmatch import heap
from segmatch.config import TrackingConfig
from segmatch.errors import ConfigError, TrackingUnavailableError, first_line
from segmatch.progress import library_log

logger = logging.getLogger(__name__)

#: How long a reachability probe waits for the store, and how often it tries.
PROBE_TIMEOUT_SECONDS = 4.0
PROBE_ATTEMPTS = 2
#: MLflow's HTTP retries, unless the environment sets them: an outage in the middle of a run
#: then fails within about a minute instead of MLflow's default of several.
HTTP_RETRIES = "2"
HTTP_TIMEOUT_SECONDS = "30"


def import_mlflow() -> Any:
    """Import MLflow with its usage telemetry off and its HTTP retries bounded."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_RETRIES)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_SECONDS)
    loaded = "mlflow" in sys.modules
    import mlflow  # noqa: PLC0415 -- heavy (~2.5 s): only when tracking is on

    if not loaded:
        heap.settle()

    captured = library_log()
    if captured is not None and not captured.on_terminal:
        # MLflow prints some notices ("Successfully registered model …") straight to
        # standard error rather than through logging; the terminal shows segmatch's lines.
        from mlflow.utils.logging_utils import disable_logging  # noqa: PLC0415

        disable_logging()
    return mlflow


def on_databricks() -> bool:
    """Whether this process runs on a Databricks cluster (its runtime sets the variable)."""
    return bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))


def tracking_uri(config: TrackingConfig) -> str:
    """The config's URI, else ``MLFLOW_TRACKING_URI``, else the workspace's own tracking on
    Databricks, else SQLite in the working folder."""
    if config.uri or os.environ.get("MLFLOW_TRACKING_URI"):
        return config.uri or os.environ["MLFLOW_TRACKING_URI"]
    if on_databricks():
        return "databricks"
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


@contextlib.contextmanager
def store_setup_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store (other stores set themselves up)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def experiment_name(config: TrackingConfig) -> str:
    """The experiment to log to: on Databricks a workspace path (``/Shared/segmatch`` for the
    default name ``segmatch``), elsewhere the name as configured."""
    name = config.experiment
    return f"/Shared/{name}" if on_databricks() and not name.startswith("/") else name


def check_model_name(config: TrackingConfig) -> None:
    """On Databricks models register in Unity Catalog, under three-part names."""
    if on_databricks() and (config.model_name or "").count(".") != 2:
        raise ConfigError(
            f"tracking.model_name={config.model_name!r}: on Databricks, models register in "
            "Unity Catalog as catalog.schema.model (e.g. main.crm.segmatch_customers)"
        )


def check_store(config: TrackingConfig) -> str:
    """The run's tracking URI, once its store is known to answer.

    A SQLite store must be a file this process can create or write; an HTTP server must
    answer (any HTTP status: it is there); other stores (Databricks, a database) are asked
    for one experiment through MLflow with its retries off. Raises
    :class:`TrackingUnavailableError` naming the URI after at most ``PROBE_ATTEMPTS`` tries.
    """
    uri = tracking_uri(config)
    scheme = urlsplit(uri).scheme
    if scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in ("http", "https"):
        _check_http(uri)
    elif scheme not in ("", "file"):
        _check_through_mlflow(uri)
    return uri


def _unavailable(uri: str, reason: str) -> TrackingUnavailableError:
    return TrackingUnavailableError(
        f"the MLflow tracking store {uri} cannot be reached ({reason}); nothing was run. "
        "Start it, point MLFLOW_TRACKING_URI or tracking.uri at one that answers, or set "
        "tracking.required: false to run untracked",
        uri=uri,
        reason=reason,
    )


def _check_sqlite(uri: str) -> None:
    location = uri.removeprefix("sqlite:///")
    if location in ("", ":memory:"):
        return
    path = Path(location)
    if path.exists():
        if not (path.is_file() and os.access(path, os.R_OK | os.W_OK)):
            raise _unavailable(uri, f"{path} is not a database file this process can write")
        return
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise _unavailable(uri, f"{folder} is not a folder this process can write")


def _check_http(uri: str) -> None:
    probe = uri.rstrip("/") + "/health"
    reason = ""
    for attempt in range(PROBE_ATTEMPTS):
        try:
            with urllib.request.urlopen(probe, timeout=PROBE_TIMEOUT_SECONDS):
                return
        except urllib.error.HTTPError:
            return  # it answered; whether it serves MLflow at that path is MLflow's to say
        except (urllib.error.URLError, OSError) as error:
            cause = getattr(error, "reason", error)
            reason = first_line(cause) if isinstance(cause, BaseException) else str(cause)
            logger.debug("tracking store %s: attempt %d failed: %s", uri, attempt + 1, reason)
        if attempt + 1 < PROBE_ATTEMPTS:
            time.sleep(0.5)
    raise _unavailable(uri, reason)


def _check_through_mlflow(uri: str) -> None:
    mlflow = import_mlflow()
    saved = {
        name: os.environ.get(name)
        for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    }
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(PROBE_TIMEOUT_SECONDS))
    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # every failure means the same: the store did not answer
        raise _unavailable(uri, f"{type(error).__name__}: {first_line(error)}") from error
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_missing(error: BaseException) -> bool:
    """Whether an MLflow error says the model or version asked for does not exist."""
    return getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"
