"""What the API and the CLI ask the tracking store: runs, registered versions, champions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segmatch.config import TrackingConfig
from segmatch.errors import ModelError, first_line
from segmatch.model import SegmentModel
from segmatch.tracking.store import experiment_name, import_mlflow, is_missing, tracking_uri

CHAMPION = "champion"
RUN_ID_TAG = "segmatch.run_id"
INPUT_TAG = "segmatch.input"


def champion_version(client: Any, model_name: str) -> Any | None:
    """The model version holding the ``champion`` alias (None: no such model, or no alias)."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        registered = client.get_registered_model(model_name)
    except MlflowException as error:
        if is_missing(error):
            return None
        raise
    if CHAMPION not in (registered.aliases or {}):
        return None
    return client.get_model_version_by_alias(model_name, CHAMPION)


def champion_silhouette(client: Any, model_name: str) -> float | None:
    """The silhouette of the run behind the current champion, if there is one."""
    version = champion_version(client, model_name)
    if version is None:
        return None
    run = client.get_run(version.run_id)
    return run.data.metrics.get("silhouette")


def log_text(config: TrackingConfig, run_id: str, text: str, name: str) -> None:
    """Attach a text file (the run's report) to a finished MLflow run."""
    mlflow = import_mlflow()
    mlflow.MlflowClient(tracking_uri(config)).log_text(run_id, text, name)


def locate_run(run_id: str, config: TrackingConfig) -> tuple[str, str]:
    """segmatch's id of a tracked run and the output folder it wrote to.

    ``run_id`` is either of the run's ids: segmatch's (in the tables, the run folder and the
    MLflow run's name) or MLflow's own.
    """
    uri = tracking_uri(config)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise ModelError(f"no run {run_id!r}: there is no MLflow store at {uri}")
    mlflow = import_mlflow()
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name(config))
    runs = (
        client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'",
            max_results=1,
        )
        if experiment is not None and run_id.isalnum()
        else []
    )
    if not runs:
        from mlflow.exceptions import MlflowException  # noqa: PLC0415

        try:
            runs = [client.get_run(run_id)]
        except MlflowException as exc:
            raise ModelError(f"no MLflow run {run_id!r} in {tracking_uri(config)}: {exc}") from exc
    run = runs[0]
    output = run.data.params.get("output.path")
    if output is None:
        raise ModelError(f"MLflow run {run_id!r} never finished: it recorded no output folder")
    return run.data.tags.get(RUN_ID_TAG, run.info.run_id), output


def champion_model(config: TrackingConfig) -> SegmentModel | None:
    """The current champion's SegmentModel, or None when no version holds the alias."""
    mlflow = import_mlflow()
    client = mlflow.MlflowClient(tracking_uri(config))
    if config.model_name is None or champion_version(client, config.model_name) is None:
        return None
    return load_segment_model(f"models:/{config.model_name}@{CHAMPION}", tracking=config)


def load_segment_model(model_uri: str, *, tracking: TrackingConfig) -> SegmentModel:
    """The SegmentModel behind an MLflow model URI (e.g. ``models:/segmatch@champion``)."""
    mlflow = import_mlflow()
    mlflow.set_tracking_uri(tracking_uri(tracking))
    try:
        # segmatch reads the model with its own code, not in the pyfunc's environment: MLflow's
        # check of that environment's requirements scans every installed package (~0.5 s).
        loaded = mlflow.pyfunc.load_model(model_uri, suppress_warnings=True)
        return loaded.unwrap_python_model().model
    except Exception as exc:
        raise ModelError(f"cannot load a segmatch model from {model_uri!r}: {exc}") from exc


def registered_version(model_uri: str, *, tracking: TrackingConfig) -> dict[str, str] | None:
    """Name, version and training run (segmatch's id) of ``models:/NAME@ALIAS`` or
    ``models:/NAME/VERSION``; None for other URIs."""
    if not model_uri.startswith("models:/"):
        return None
    name, _, which = model_uri.removeprefix("models:/").rpartition("@")
    mlflow = import_mlflow()
    client = mlflow.MlflowClient(tracking_uri(tracking))
    try:
        if name:
            version = client.get_model_version_by_alias(name, which)
        else:
            name, _, number = model_uri.removeprefix("models:/").rpartition("/")
            version = client.get_model_version(name, number)
        run = client.get_run(version.run_id)
    except mlflow.exceptions.MlflowException as exc:
        known = sorted(m.name for m in client.search_registered_models())
        raise ModelError(
            f"no model {model_uri!r} in {tracking_uri(tracking)}: {first_line(exc)}; registered "
            f"models: {', '.join(known) or 'none'}"
        ) from exc
    return {
        "name": name,
        "version": str(version.version),
        "run_id": run.data.tags.get(RUN_ID_TAG, run.info.run_id),
    }


def registered_models(tracking: TrackingConfig) -> list[str]:
    """Names of the registered models that have a champion."""
    mlflow = import_mlflow()
    client = mlflow.MlflowClient(tracking_uri(tracking))
    return sorted(m.name for m in client.search_registered_models() if CHAMPION in m.aliases)


def recent_runs(config: TrackingConfig, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs of the experiment: id, date, rows, k, silhouette, seconds, model version."""
    mlflow = import_mlflow()
    client = mlflow.MlflowClient(tracking_uri(config))
    experiment = client.get_experiment_by_name(experiment_name(config))
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit
    )
    return [
        {
            "run_id": run.data.tags.get(RUN_ID_TAG, run.info.run_id),
            "mlflow_run_id": run.info.run_id,
            "started": run.info.start_time,
            "status": run.info.status,
            "rows": run.data.params.get("rows_in"),
            "k": run.data.metrics.get("k"),
            "silhouette": run.data.metrics.get("silhouette"),
            "seconds": run.data.metrics.get("total_seconds"),
            "model_version": run.data.params.get("model_version"),
            "input": run.data.tags.get(INPUT_TAG) or run.data.params.get("input_path"),
            "error": run.data.tags.get("error"),
        }
        for run in runs
    ]
