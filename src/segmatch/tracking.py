"""MLflow tracking as a hook around the run, and the fitted model as a registered pyfunc.

Nothing here runs inside a stage. ``mlflow`` is imported only when a tracked run starts, with
telemetry switched off. Every MLflow call of a run goes, in order, through one worker thread:
importing MLflow, opening its store and fetching the champion take seconds of mostly Python
work, which then overlap with the engine's start and the first stages instead of preceding them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from segmatch import model as segmatch_model
from segmatch._version import __version__
from segmatch.config import Config, TrackingConfig, config_digest
from segmatch.errors import ConfigError, ModelError, first_line
from segmatch.locations import name_of
from segmatch.model import SegmentModel
from segmatch.progress import library_log
from segmatch.results import RunResult, StageRecord

CHAMPION = "champion"
RUN_ID_TAG = "segmatch.run_id"
INPUT_TAG = "segmatch.input"
MODEL_ARTIFACT = "segment_model"
PARAM_BATCH = 100

Value = TypeVar("Value")


def import_mlflow() -> Any:
    """Import MLflow with its usage telemetry off."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    import mlflow  # noqa: PLC0415 -- heavy (~2.5 s): only when tracking is on

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
def _store_setup_lock(uri: str) -> Iterator[None]:
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


def _pyfunc_class() -> type:
    mlflow = import_mlflow()
    import pandas as pd  # noqa: PLC0415 -- pandas comes with mlflow

    def load_context(self: Any, context: Any) -> None:
        self.model = SegmentModel.load(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        # The signature takes any type (CSV integers, decimals, text digits): numbers are
        # converted here, and a value that is not one is an error naming the column.
        columns: dict[str, Any] = {name: frame[name].to_numpy() for name in frame.columns}
        for name in self.model.numeric_columns:
            if name in frame.columns:
                try:
                    columns[name] = pd.to_numeric(frame[name]).to_numpy(dtype=np.float64)
                except (TypeError, ValueError) as exc:
                    message = f"column {name!r} holds a value that is not a number: {exc}"
                    raise ValueError(message) from None
        segment, distance, confidence = self.model.score(self.model.features_from_columns(columns))
        return pd.DataFrame({"segment": segment, "distance": distance, "confidence": confidence})

    # MLflow reads predict's input type hint when the class is created: a DataFrame means a
    # table checked against the logged signature. It is set as a type object because this
    # module's annotations are strings that MLflow could not resolve (pandas is imported here).
    predict.__annotations__ = {"model_input": pd.DataFrame}
    return type(
        "SegmentModelPyfunc",
        (mlflow.pyfunc.PythonModel,),
        {
            "__doc__": "Scores raw customer columns: segment, distance to centroid, confidence.",
            "load_context": load_context,
            "predict": predict,
        },
    )


class MlflowTracking:
    """Opens one MLflow run per pipeline run and records what the run did.

    It is both a stage hook and the pipeline's model registry. ``start`` queues the run's
    opening and the champion's download on the worker thread and returns at once.
    """

    def __init__(self, config: TrackingConfig) -> None:
        check_model_name(config)
        self.config = config
        self.records: list[StageRecord] = []
        self.mlflow_run_id: str | None = None
        self.config_digest: str | None = None
        #: The model version this run registered, withdrawn again if the run fails.
        self.registered_version: str | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segmatch-mlflow")
        self._opened: Future[str] | None = None
        self._champion: Future[SegmentModel | None] | None = None

    def warm_up(self) -> None:
        """Queue MLflow's import (seconds of Python) before anything is known; returns at once."""
        self._worker.submit(import_mlflow)

    def start(self, config: Config, *, run_id: str) -> None:
        """Queue the run's opening, the champion's download (the cluster stage's ids need it)
        and the imports that logging a model needs; returns at once."""
        self.config_digest = config_digest(config)
        self._opened = self._worker.submit(self.open_run, config, run_id=run_id)
        self._champion = self._worker.submit(champion_model, self.config)
        self._worker.submit(_warm_model_logging)

    def previous(self) -> SegmentModel | None:
        if self._champion is None:
            self._champion = self._worker.submit(champion_model, self.config)
        return self._champion.result()

    def open_run(self, config: Config, *, run_id: str) -> str:
        """Create the MLflow run, named after the pipeline's run id; return MLflow's id.

        MLflow draws its own run ids, and waiting for one would hold every stage back by the
        seconds MLflow takes to import and open its store; the pipeline's id is the run's name
        and its ``segmatch.run_id`` tag instead.
        """
        mlflow = import_mlflow()
        uri = tracking_uri(self.config)
        mlflow.set_tracking_uri(uri)
        with _store_setup_lock(uri):
            # Runs started together on a new store would both create its tables and the
            # experiment: MLflow's migrations and its unique names make one of them fail.
            client = mlflow.MlflowClient(uri)
            experiment = client.get_experiment_by_name(experiment_name(self.config))
            if experiment is None:
                location = None
                if uri.startswith("sqlite:///"):
                    folder = Path(uri.removeprefix("sqlite:///")).parent
                    location = (folder / "mlartifacts").as_uri()
                experiment_id = client.create_experiment(
                    experiment_name(self.config), artifact_location=location
                )
            else:
                experiment_id = experiment.experiment_id
        run = client.create_run(
            experiment_id,
            run_name=run_id,
            tags={
                RUN_ID_TAG: run_id,
                INPUT_TAG: str(config.input.path),
                "config_hash": config_digest(config),
                "segmatch_version": __version__,
                **({"git_commit": commit} if (commit := _git_commit()) else {}),
            },
        )
        self.mlflow_run_id = run.info.run_id
        return self.mlflow_run_id

    def before_run(self, *, run_id: str, config: Config) -> None:
        if self._opened is None:
            self.start(config, run_id=run_id)

    def register(
        self, *, run_id: str, model_json: str, model: SegmentModel, input_digest: str | None
    ) -> str | None:
        """Log the model as a pyfunc of this run and register it; return its version.

        A rerun of the latest version's run (same config digest, same input digest) fits the
        same model: its version is returned and nothing new is registered.
        """
        return self._on_worker(lambda: self._register(model_json, model, input_digest))

    def promote(self, *, version: str, silhouette: float) -> None:
        """Move ``champion`` to the version (unless the silhouette dropped too far)."""

        def move_alias() -> None:
            client = import_mlflow().MlflowClient(tracking_uri(self.config))
            if self._should_promote(client, silhouette):
                client.set_registered_model_alias(self.config.model_name, CHAMPION, version)

        self._on_worker(move_alias)

    def after_stage(self, *, record: StageRecord, error: BaseException | None) -> None:
        self.records.append(record)

    def after_run(
        self, *, run_id: str, result: RunResult | None, error: BaseException | None
    ) -> None:
        try:
            # A run that fails early may end before the worker has opened its MLflow run.
            if self._opened is not None and self._opened.exception() is None:
                self._on_worker(lambda: self._finish(result, error))
        finally:
            self._worker.shutdown(wait=True, cancel_futures=True)

    def _on_worker(self, task: Callable[[], Value]) -> Value:
        """Run ``task`` after everything queued before it; fails if the run could not open."""
        if self._opened is not None:
            self._opened.result()
        return self._worker.submit(task).result()

    def _register(self, model_json: str, model: SegmentModel, input_digest: str | None) -> str:
        mlflow = import_mlflow()
        client = mlflow.MlflowClient(tracking_uri(self.config))
        same = self._identical_version(client, input_digest)
        if same is not None:
            client.set_tag(self.mlflow_run_id, "reused_model_version", same)
            return same
        with tempfile.TemporaryDirectory(prefix="segmatch-model-") as folder:
            model_path = Path(folder) / "model.json"
            model_path.write_text(model_json, encoding="utf-8")
            with mlflow.start_run(run_id=self.mlflow_run_id):
                self.registered_version = self._log_model(mlflow, model_path, model)
                return self.registered_version

    def _identical_version(self, client: Any, input_digest: str | None) -> str | None:
        """The latest registered version, when its run had this run's config and input."""
        if input_digest is None or self.config_digest is None:
            return None
        try:
            latest = client.search_model_versions(
                f"name='{self.config.model_name}'", max_results=1, order_by=["version_number DESC"]
            )
        except Exception:  # no such model yet
            return None
        if not latest:
            return None
        tags = client.get_run(latest[0].run_id).data.tags
        same_config = tags.get("config_hash") == self.config_digest
        return (
            str(latest[0].version)
            if same_config and tags.get("input_digest") == input_digest
            else None
        )

    def _finish(self, result: RunResult | None, error: BaseException | None) -> None:
        mlflow = import_mlflow()
        client = mlflow.MlflowClient(tracking_uri(self.config))
        if error is not None or result is None:
            client.set_tag(self.mlflow_run_id, "error", str(error)[:5000])
            if self.registered_version is not None:
                # A failed run's outputs were never committed: its model must not be found
                # in the registry as if they had been.
                client.delete_model_version(self.config.model_name, self.registered_version)
                client.set_tag(
                    self.mlflow_run_id, "withdrawn_model_version", self.registered_version
                )
            self._log_stage_metrics(client)
            client.set_terminated(self.mlflow_run_id, status="FAILED")
            return
        try:
            with mlflow.start_run(run_id=self.mlflow_run_id):
                self._log_run(mlflow, client, result)
        except BaseException:
            client.set_terminated(self.mlflow_run_id, status="FAILED")
            raise
        result.mlflow_run_id = self.mlflow_run_id

    # -- what a finished run records -----------------------------------------------------
    def _log_run(self, mlflow: Any, client: Any, result: RunResult) -> None:
        config = result.config
        params = {
            **flatten(config.model_dump(mode="json")),
            "engine": config.engine,
            "input_path": str(config.input.path),
            "rows_in": result.rows_in,
            "k_range": f"{config.cluster.k_min}-{config.cluster.k_max}"
            if config.cluster.k is None
            else str(config.cluster.k),
            "seed": config.cluster.seed,
            "partitions": max((r.partitions for r in result.stages), default=1),
            **{f"partition_plan.{k}": v for k, v in result.partition_plan.items()},
            "segmatch_version": __version__,
        }
        items = [(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), PARAM_BATCH):
            mlflow.log_params(dict(items[start : start + PARAM_BATCH]))
        mlflow.log_metrics(
            {
                "silhouette": result.silhouette,
                "silhouette_euclidean_sample": result.sample_silhouette,
                "k": result.k,
                "inertia": result.inertia,
                "smallest_segment_share": min(result.sizes) / max(sum(result.sizes), 1),
                "rows_in": result.rows_in,
                "customers": result.customers,
                "rows_quarantined": result.quarantined,
                "duplicates_resolved": result.duplicates,
                "total_seconds": result.total_seconds,
                "customers_moved": result.moved_customers,
                **{
                    f"match_{name}": value
                    for name, value in (
                        ("cells", result.matching.get("cells")),
                        ("largest_cell", result.matching.get("largest_cell")),
                        ("recall_at_k", result.matching.get("recall_at_k")),
                    )
                    if value is not None
                },
            }
        )
        self._log_stage_metrics(client)
        for candidate in result.candidates:
            mlflow.log_metrics(
                {
                    "sweep_silhouette": candidate.silhouette,
                    "sweep_inertia": candidate.inertia,
                    "sweep_smallest_share": candidate.smallest_share,
                },
                step=candidate.k,
            )
        self._log_input(mlflow, config, result.input_digest)
        self._log_artifacts(mlflow, result)
        if result.model_version is not None:
            mlflow.log_param("model_version", result.model_version)
        mlflow.set_tags(
            {
                "input_digest": result.input_digest or "",
                **{f"table_version.{t}": str(v) for t, v in result.table_versions.items()},
            }
        )
        mlflow.log_params({f"table_version.{t}": v for t, v in result.table_versions.items()})

    def _log_stage_metrics(self, client: Any) -> None:
        metrics = {}
        for record in self.records:
            metrics[f"stage_{record.stage}_seconds"] = record.seconds
            metrics[f"stage_{record.stage}_rows_in"] = record.rows_in
            metrics[f"stage_{record.stage}_rows_out"] = record.rows_out
        for name, value in metrics.items():
            client.log_metric(self.mlflow_run_id, name, value)

    def _log_input(self, mlflow: Any, config: Config, digest: str | None) -> None:
        from mlflow.data.dataset_source_registry import resolve_dataset_source  # noqa: PLC0415
        from mlflow.data.meta_dataset import MetaDataset  # noqa: PLC0415

        path = config.input.path
        with warnings.catch_warnings():
            # MLflow registers its local-file source class twice and warns that a path "can be
            # interpreted in multiple ways" (both of them the same class): nothing to act on.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(path))
        dataset = MetaDataset(
            source=source,
            name=name_of(path),
            digest=(digest or "unknown")[:32],
        )
        mlflow.log_input(dataset, context="training")

    def _log_artifacts(self, mlflow: Any, result: RunResult) -> None:
        mlflow.log_dict(result.config.model_dump(mode="json"), "config.json")
        mlflow.log_dict(result.column_plan, "column_plan.json")
        mlflow.log_text(
            "\n".join(json.dumps(r.__dict__) for r in self.records) + "\n", "stage_log.jsonl"
        )
        mlflow.log_text(result.profiles.to_pandas().to_csv(index=False), "profiles.csv")
        if result.transitions is not None:
            mlflow.log_table(result.transitions.to_pandas(), "segment_transitions.json")
        mlflow.log_dict(
            {
                "rows_in": result.rows_in,
                "quarantined": result.quarantined,
                "quarantined_by_rule": result.quarantined_by_rule,
                "duplicates_resolved": result.duplicates,
                "imputed": result.imputed,
            },
            "quarantine_summary.json",
        )

    def _log_model(self, mlflow: Any, model_path: Path, model: SegmentModel) -> str:
        import pandas as pd  # noqa: PLC0415 -- pandas comes with mlflow

        example = pd.DataFrame(model.example_rows())
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_pyfunc_class()(),
            artifacts={MODEL_ARTIFACT: str(model_path)},
            signature=_signature(mlflow, model),
            input_example=example,
            registered_model_name=self.config.model_name,
            # The model carries the segmatch code it runs, so it loads and serves where
            # segmatch is not installed (a serving endpoint, a colleague's notebook).
            code_paths=[str(Path(segmatch_model.__file__).parent)],
            pip_requirements=[
                f"numpy>={np.__version__.split('.')[0]}",
                "scipy",
                "pyarrow",
                "pandas",
                f"mlflow>={mlflow.__version__.split('.')[0]}",
            ],
        )
        return str(info.registered_model_version)

    def _should_promote(self, client: Any, silhouette: float) -> bool:
        if self.config.max_silhouette_drop is None:
            return True
        previous = champion_silhouette(client, self.config.model_name)
        return previous is None or silhouette >= previous - self.config.max_silhouette_drop


def _signature(mlflow: Any, model: SegmentModel) -> Any:
    """Every feature column by name, of any type: MLflow then takes the columns in any order
    and names the missing ones, and refuses no integer (a CSV's ``Age``) a double would hold;
    the model converts them itself."""
    from mlflow.types.schema import AnyType, ColSpec, Schema  # noqa: PLC0415

    names = [*model.numeric_columns, *model.categorical_levels]
    outputs = [ColSpec("long", "segment"), ColSpec("double", "distance")]
    return mlflow.models.ModelSignature(
        inputs=Schema([ColSpec(AnyType(), name) for name in names]),
        outputs=Schema([*outputs, ColSpec("double", "confidence")]),
    )


def _warm_model_logging() -> None:
    """Import what logging a pyfunc needs while the stages run."""
    import mlflow.models  # noqa: PLC0415
    import mlflow.pyfunc  # noqa: PLC0415, F401
    import pandas  # noqa: PLC0415, F401


def champion_silhouette(client: Any, model_name: str) -> float | None:
    """The silhouette of the run behind the current champion, if there is one."""
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except Exception:
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
        try:
            runs = [client.get_run(run_id)]
        except Exception as exc:
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
    try:
        client.get_model_version_by_alias(config.model_name, CHAMPION)
    except Exception:
        return None
    return load_segment_model(f"models:/{config.model_name}@{CHAMPION}", tracking=config)


def load_segment_model(model_uri: str, *, tracking: TrackingConfig) -> SegmentModel:
    """The SegmentModel behind an MLflow model URI (e.g. ``models:/segmatch@champion``)."""
    mlflow = import_mlflow()
    mlflow.set_tracking_uri(tracking_uri(tracking))
    try:
        return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().model
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
    except Exception as exc:
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


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _git_commit() -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None if completed.returncode == 0 else None
