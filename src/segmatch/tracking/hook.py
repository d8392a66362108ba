"""MLflow tracking as a hook around the run, and the pipeline's model registry.

Nothing here runs inside a stage. Every MLflow call of a run goes, in order, through the
tracking worker (a process beside the run, :mod:`~segmatch.tracking.worker`): importing MLflow,
opening its store and fetching the champion take seconds of mostly Python work, which then
overlap with the engine's start and the first stages instead of preceding them. The store's
reachability was checked before (:func:`store.check_store`).
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from segmatch import model as segmatch_model
from segmatch._version import __version__
from segmatch.config import Config, TrackingConfig, config_digest
from segmatch.locations import name_of
from segmatch.model import SegmentModel
from segmatch.progress import library_log
from segmatch.results import RunResult, StageRecord, stage_log_lines
from segmatch.tracking.pyfunc import MODEL_ARTIFACT, pyfunc_class, signature, warm_model_logging
from segmatch.tracking.queries import (
    CHAMPION,
    INPUT_TAG,
    RUN_ID_TAG,
    champion_model,
    champion_silhouette,
    log_text,
)
from segmatch.tracking.store import (
    check_model_name,
    experiment_name,
    import_mlflow,
    store_setup_lock,
    tracking_uri,
)
from segmatch.tracking.worker import worker_for

logger = logging.getLogger(__name__)

#: The identity step's figures logged as metrics (``identity_<name>``).
IDENTITY_METRICS = (
    "records",
    "entities",
    "linked_pairs",
    "threshold",
    "expected_precision",
    "expected_recall",
    "estimated_blocking_recall",
    "refused_links",
)

Value = TypeVar("Value")


def log_in_batches(
    client: Any,
    run_id: str | None,
    *,
    metrics: Sequence[tuple[str, Any, int]] = (),
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Metrics (name, value, step), params and tags in as few ``log_batch`` calls as MLflow's
    limits allow: each call is one transaction of the tracking store."""
    from mlflow.entities import Metric, Param, RunTag  # noqa: PLC0415
    from mlflow.utils.validation import (  # noqa: PLC0415
        MAX_ENTITIES_PER_BATCH,
        MAX_METRICS_PER_BATCH,
        MAX_PARAMS_TAGS_PER_BATCH,
    )

    assert run_id is not None
    now = int(time.time() * 1000)
    pending_metrics = [
        Metric(name, float("nan") if value is None else float(value), now, step)
        for name, value, step in metrics
    ]
    pending_params = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
    pending_tags = [RunTag(k, v) for k, v in (tags or {}).items()]
    while pending_metrics or pending_params or pending_tags:
        batch_params = pending_params[:MAX_PARAMS_TAGS_PER_BATCH]
        batch_tags = pending_tags[:MAX_PARAMS_TAGS_PER_BATCH]
        room = MAX_ENTITIES_PER_BATCH - len(batch_params) - len(batch_tags)
        batch_metrics = pending_metrics[: min(MAX_METRICS_PER_BATCH, room)]
        client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags)
        pending_params = pending_params[len(batch_params) :]
        pending_tags = pending_tags[len(batch_tags) :]
        pending_metrics = pending_metrics[len(batch_metrics) :]


class MlflowTracking:
    """Opens one MLflow run per pipeline run and records what the run did.

    It is both a stage hook and the pipeline's model registry. Its MLflow calls are the
    :class:`RunRecorder`'s, run in order by the tracking worker (a process of its own, see
    :mod:`~segmatch.tracking.worker`); ``start`` queues the run's opening and the champion's
    download there and returns at once.
    """

    def __init__(self, config: TrackingConfig) -> None:
        check_model_name(config)
        # Resolved here: the worker may have started in another working folder.
        uri = tracking_uri(config)
        self.config = config.model_copy(update={"uri": uri})
        self.recorder = RunRecorder(self.config)
        captured = library_log()
        self._worker = worker_for(
            uri, quiet_mlflow=captured is not None and not captured.on_terminal
        )
        self._opened: Future[str] | None = None
        self._champion: Future[SegmentModel | None] | None = None

    def warm_up(self) -> None:
        """Queue MLflow's import (seconds of Python) before anything is known; returns at once."""
        self._worker.submit(load_mlflow)

    def start(self, config: Config, *, run_id: str) -> None:
        """Queue the run's opening, the champion's download (the cluster stage's ids need it)
        and the imports that logging a model needs; returns at once."""
        self.recorder.config_digest = config_digest(config)
        self._opened = self._worker.submit(self.recorder.open_run, config, run_id)
        self._champion = self._worker.submit(champion_model, self.config)
        self._worker.submit(warm_model_logging)

    def previous(self) -> SegmentModel | None:
        if self._champion is None:
            self._champion = self._worker.submit(champion_model, self.config)
        return self._champion.result()

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
        version, registered = self._on_worker(
            self.recorder.register, model_json, model, input_digest
        )
        if registered:
            self.recorder.registered_version = version
        return version

    def promote(self, *, version: str, silhouette: float) -> None:
        """Move ``champion`` to the version (unless the silhouette dropped too far)."""
        self._on_worker(self.recorder.promote, version, silhouette)

    def after_stage(self, *, record: StageRecord, error: BaseException | None) -> None:
        self.recorder.records.append(record)

    def after_run(
        self, *, run_id: str, result: RunResult | None, error: BaseException | None
    ) -> None:
        # A run that fails early may end before the worker has opened its MLflow run.
        if self._opened is not None and self._opened.exception() is None:
            self._on_worker(self.recorder.finish, result, None if error is None else str(error))
            if error is None and result is not None:
                result.mlflow_run_id = self.recorder.mlflow_run_id

    def attach_text(self, text: str, name: str) -> None:
        """Attach a text file (the run's report) to the finished MLflow run."""
        self._on_worker(log_text, self.config, self.recorder.mlflow_run_id, text, name)

    def close(self) -> None:
        """Done with the worker (after the run, and the report attached)."""
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _on_worker(self, function: Callable[..., Value], *args: Any) -> Value:
        """Run ``function`` after everything queued before it; fails if the run could not
        open."""
        if self._opened is not None:
            self.recorder.mlflow_run_id = self._opened.result()
        return self._worker.submit(function, *args).result()


def load_mlflow() -> None:
    """Import MLflow where the worker runs (the module itself cannot travel back)."""
    import_mlflow()


@dataclass
class RunRecorder:
    """The MLflow calls of one run, with what they need to know of it. Picklable: the worker
    runs them on a copy, so what they learn comes back as their return value."""

    config: TrackingConfig
    config_digest: str | None = None
    mlflow_run_id: str | None = None
    #: The model version this run registered, withdrawn again if the run fails.
    registered_version: str | None = None
    records: list[StageRecord] = field(default_factory=list)

    def open_run(self, config: Config, run_id: str) -> str:
        """Create the MLflow run, named after the pipeline's run id; return MLflow's id.

        MLflow draws its own run ids, and waiting for one would hold every stage back by the
        seconds MLflow takes to import and open its store; the pipeline's id is the run's name
        and its ``segmatch.run_id`` tag instead.
        """
        mlflow = import_mlflow()
        uri = tracking_uri(self.config)
        mlflow.set_tracking_uri(uri)
        with store_setup_lock(uri):
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
        return str(run.info.run_id)

    def register(
        self, model_json: str, model: SegmentModel, input_digest: str | None
    ) -> tuple[str, bool]:
        """The model's version, and whether this call registered it (or found this run's
        config and input in the latest version)."""
        mlflow = import_mlflow()
        client = mlflow.MlflowClient(tracking_uri(self.config))
        same = self._identical_version(client, input_digest)
        if same is not None:
            client.set_tag(self.mlflow_run_id, "reused_model_version", same)
            return same, False
        with tempfile.TemporaryDirectory(prefix="segmatch-model-") as folder:
            model_path = Path(folder) / "model.json"
            model_path.write_text(model_json, encoding="utf-8")
            with mlflow.start_run(run_id=self.mlflow_run_id):
                return self._log_model(mlflow, model_path, model), True

    def promote(self, version: str, silhouette: float) -> None:
        client = import_mlflow().MlflowClient(tracking_uri(self.config))
        if self._should_promote(client, silhouette):
            client.set_registered_model_alias(self.config.registered_name, CHAMPION, version)

    def _identical_version(self, client: Any, input_digest: str | None) -> str | None:
        """The latest registered version, when its run had this run's config and input."""
        if input_digest is None or self.config_digest is None:
            return None
        latest = client.search_model_versions(
            f"name='{self.config.registered_name}'", max_results=1, order_by=["version_number DESC"]
        )
        if not latest:
            return None
        tags = client.get_run(latest[0].run_id).data.tags
        same_config = tags.get("config_hash") == self.config_digest
        return (
            str(latest[0].version)
            if same_config and tags.get("input_digest") == input_digest
            else None
        )

    def finish(self, result: RunResult | None, error: str | None) -> None:
        """Record how the run ended: everything a finished run did, or a failed run's error
        (its model version withdrawn)."""
        mlflow = import_mlflow()
        client = mlflow.MlflowClient(tracking_uri(self.config))
        if error is not None or result is None:
            client.set_tag(self.mlflow_run_id, "error", (error or "")[:5000])
            if self.registered_version is not None:
                # A failed run's outputs were never committed: its model must not be found
                # in the registry as if they had been.
                client.delete_model_version(self.config.registered_name, self.registered_version)
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

    # -- what a finished run records -----------------------------------------------------
    def _log_run(self, mlflow: Any, client: Any, result: RunResult) -> None:
        """Everything a finished run records: its params, metrics and tags in as few batches
        as MLflow takes (one on a run of this size), its input, and its artifacts in one
        upload."""
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
            **({"model_version": result.model_version} if result.model_version else {}),
            **{f"table_version.{t}": v for t, v in result.table_versions.items()},
        }
        metrics: dict[str, Any] = {
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
                f"lookalikes_{name}": value
                for name, value in (
                    ("cells", result.lookalikes.get("cells")),
                    ("largest_cell", result.lookalikes.get("largest_cell")),
                    ("recall_at_k", result.lookalikes.get("recall_at_k")),
                )
                if value is not None
            },
            **self._stage_metrics(),
        }
        if result.identity:
            metrics |= {f"identity_{name}": result.identity[name] for name in IDENTITY_METRICS}
        # The sweep's figures, one step per k.
        steps = [
            (f"sweep_{name}", value, candidate.k)
            for candidate in result.candidates
            for name, value in (
                ("silhouette", candidate.silhouette),
                ("inertia", candidate.inertia),
                ("smallest_share", candidate.smallest_share),
                ("calinski_harabasz", candidate.calinski_harabasz),
                ("stability", candidate.stability),
            )
        ]
        tags = {
            "input_digest": result.input_digest or "",
            **{f"table_version.{t}": str(v) for t, v in result.table_versions.items()},
        }
        log_in_batches(
            client,
            self.mlflow_run_id,
            metrics=[(name, value, 0) for name, value in metrics.items()] + steps,
            params=params,
            tags=tags,
        )
        self._log_input(mlflow, config, result.input_digest)
        self._log_artifacts(mlflow, result)

    def _stage_metrics(self) -> dict[str, float]:
        metrics = {}
        for record in self.records:
            metrics[f"stage_{record.stage}_seconds"] = record.seconds
            metrics[f"stage_{record.stage}_rows_in"] = record.rows_in
            metrics[f"stage_{record.stage}_rows_out"] = record.rows_out
        return metrics

    def _log_stage_metrics(self, client: Any) -> None:
        metrics = [(name, value, 0) for name, value in self._stage_metrics().items()]
        log_in_batches(client, self.mlflow_run_id, metrics=metrics)

    def _log_input(self, mlflow: Any, config: Config, digest: str | None) -> None:
        from mlflow.data.dataset_source_registry import resolve_dataset_source  # noqa: PLC0415
        from mlflow.data.meta_dataset import MetaDataset  # noqa: PLC0415

        path = config.input.path
        with warnings.catch_warnings():
            # MLflow registers its local-file source class twice and warns that a path "can be
            # interpreted in multiple ways" (both of them the same class): nothing to act on.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(path))
        # MLflow declares ``profile`` abstract on its Dataset base but implements it here.
        dataset = MetaDataset(  # type: ignore[abstract]
            source=source,
            name=name_of(path),
            digest=(digest or "unknown")[:32],
        )
        mlflow.log_input(dataset, context="training")

    def _log_artifacts(self, mlflow: Any, result: RunResult) -> None:
        """The run's config, column plan, stage log, profiles, quarantine summary (and the
        identity model and segment transitions when there are some), uploaded in one call."""
        files: dict[str, str] = {
            "config.json": json.dumps(result.config.model_dump(mode="json"), indent=2),
            "column_plan.json": json.dumps(result.column_plan, indent=2, default=str),
            "stage_log.jsonl": stage_log_lines(self.records),
            "profiles.csv": result.profiles.to_pandas().to_csv(index=False),
            "quarantine_summary.json": json.dumps(
                {
                    "rows_in": result.rows_in,
                    "quarantined": result.quarantined,
                    "quarantined_by_rule": result.quarantined_by_rule,
                    "duplicates_resolved": result.duplicates,
                    "imputed": result.imputed,
                },
                indent=2,
            ),
        }
        if result.identity:
            # The fitted identity model (m and u probabilities), blocking and entity sizes.
            files["identity_model.json"] = json.dumps(result.identity, indent=2, default=str)
        if result.transitions is not None:
            # The shape MLflow's log_table writes, which its UI shows as a table.
            files["segment_transitions.json"] = result.transitions.to_pandas().to_json(
                orient="split", index=False
            )
        with tempfile.TemporaryDirectory(prefix="segmatch-artifacts-") as folder:
            for name, text in files.items():
                (Path(folder) / name).write_text(text, encoding="utf-8")
            mlflow.log_artifacts(folder)

    def _log_model(self, mlflow: Any, model_path: Path, model: SegmentModel) -> str:
        import pandas as pd  # noqa: PLC0415 -- pandas comes with mlflow

        example = pd.DataFrame(model.example_rows())
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=pyfunc_class()(),
            artifacts={MODEL_ARTIFACT: str(model_path)},
            signature=signature(mlflow, model),
            input_example=example,
            registered_model_name=self.config.registered_name,
            # The model carries the segmatch code it runs, so it loads and serves where
            # segmatch is not installed (a serving endpoint, a colleague's notebook).
            code_paths=[str(Path(segmatch_model.__file__).parent)],
            pip_requirements=[
                f"numpy>={np.__version__.split('.')[0]}",
                "scipy",
                "pyarrow",
                "pandas",
                # A model trained on transactions aggregates new ones with the local engine.
                "polars",
                "pydantic",
                f"mlflow>={mlflow.__version__.split('.')[0]}",
            ],
        )
        return str(info.registered_model_version)

    def _should_promote(self, client: Any, silhouette: float) -> bool:
        if self.config.max_silhouette_drop is None:
            return True
        previous = champion_silhouette(client, self.config.registered_name)
        return previous is None or silhouette >= previous - self.config.max_silhouette_drop


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
