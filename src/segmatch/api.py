"""The Python face of segmatch: run the job, make demo data, describe a demo config.

Example:
    >>> from segmatch.api import run_pipeline
    >>> result = run_pipeline("examples/mixed_customers.yaml")  # doctest: +SKIP
    >>> result.k  # doctest: +SKIP
    4
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from segmatch import linkage, storage
from segmatch.config import Config, TrackingConfig
from segmatch.config_loading import Overrides, apply_overrides, build_config, load_config
from segmatch.engines import make_engine
from segmatch.engines.base import Engine
from segmatch.errors import ConfigError, ModelError, TrackingUnavailableError
from segmatch.layout import MODEL_FILE, SUMMARY_FILE, OutputLayout, run_folder
from segmatch.lease import OutputLease
from segmatch.locations import Files, is_table_name, is_uri, join
from segmatch.model import SegmentModel
from segmatch.pipeline import Pipeline, StageHook
from segmatch.plans.dedupe import DEDUPE
from segmatch.plans.scoring import SCORING
from segmatch.report import REPORT_FILE, build_report
from segmatch.results import DedupeResult, RunResult, ScoringResult
from segmatch.stages import ingest
from segmatch.synthetic import customer_table, generate_customers
from segmatch.synthetic_people import PERSON_ROLES, with_people
from segmatch.tables import Table

logger = logging.getLogger(__name__)

__all__ = [
    "Config",
    "RunResult",
    "build_report",
    "demo_config",
    "generate_customers",
    "load_config",
    "rebuild_report",
    "recent_runs",
    "restore_table",
    "run_pipeline",
    "score_customers",
    "table_history",
]


def run_pipeline(
    config: Config | str | Path,
    *,
    overrides: Overrides | None = None,
    hooks: tuple[StageHook, ...] = (),
    run_id: str | None = None,
    spark: Any | None = None,
) -> RunResult:
    """Run the whole job described by ``config`` (a Config or a YAML path).

    ``overrides`` sets dotted keys on top of a YAML file, e.g. ``{"engine": "local"}``;
    ``spark`` is an existing SparkSession (a Databricks notebook's) for ``engine: spark``.
    ``run_id`` names the run (a new UUID when omitted); with tracking, the MLflow run carries it
    as its name and its ``segmatch.run_id`` tag.
    """
    if not isinstance(config, Config):
        config = load_config(config, overrides)
    elif overrides:
        config = build_config(
            apply_overrides(config.model_dump(mode="json"), overrides), source="overrides"
        )
    run_id = run_id or uuid.uuid4().hex
    tracker, untracked_because = _tracker(config)
    try:
        engine = engine_for(config, session=spark)
        check_input(engine, config)
        check_output_is_this_data_sets(config)
        if config.identity.enabled:
            linkage.check_installed()
    except BaseException as error:
        if tracker is not None:
            try:
                tracker.after_run(run_id=run_id, result=None, error=error)
            finally:
                tracker.close()
        raise
    if tracker is None:
        result = Pipeline(config, engine, hooks=hooks, run_id=run_id).run()
        if untracked_because is not None:
            result.notes.append(untracked_because)
        if config.output.report:
            result.outputs["report"] = report_run(result)
        return result
    try:
        tracker.start(config, run_id=run_id)
        result = Pipeline(
            config, engine, hooks=(*hooks, tracker), run_id=run_id, registry=tracker
        ).run()
        if config.output.report:
            result.outputs["report"] = report_run(result, attach=tracker.attach_text)
        return result
    finally:
        tracker.close()


def engine_for(config: Config, *, session: Any | None = None) -> Engine:
    """The config's engine (on ``session`` when given); a Spark session it starts itself is
    sized to the input's stored bytes."""
    started_here = config.engine == "spark" and session is None
    return make_engine(
        config.engine,
        spark=config.spark,
        session=session,
        storage_options=config.storage_options,
        input_bytes=stored_bytes(config) if started_here else None,
    )


def stored_bytes(config: Config) -> int | None:
    """The bytes the input's files occupy; None for a catalog table, or an input that is not
    there (which the input check then names)."""
    path = str(config.input.path)
    files = Files(config.storage_options)
    if is_table_name(path) or not files.exists(path):
        return None
    return files.stored_bytes(path)


def dedupe(
    config: Config | str | Path,
    *,
    overrides: Overrides | None = None,
    run_id: str | None = None,
    spark: Any | None = None,
) -> DedupeResult:
    """Resolve the input's records into entities alone (no segmentation): the ``entities``
    and ``pairs`` tables, committed under the output's lease like any run's.

    Example:
        >>> dedupe("people.yaml").entities  # doctest: +SKIP
        4512
    """
    if not isinstance(config, Config):
        config = load_config(config, overrides)
    elif overrides:
        config = build_config(
            apply_overrides(config.model_dump(mode="json"), overrides), source="overrides"
        )
    engine = engine_for(config, session=spark)
    ingest.open_input(engine, config.input)
    linkage.check_installed()
    return Pipeline(config, engine, plan=DEDUPE, run_id=run_id).run()


def check_output_is_this_data_sets(config: Config) -> None:
    """Stop when the output already holds another data set's tables (another id column, or
    another registered model name): this run's segments would replace or merge into them."""
    files = Files(config.storage_options)
    location = OutputLayout(config.output.path).model
    if not files.exists(location):
        return
    previous = SegmentModel.from_json(files.read_text(location), source=location)
    trained = previous.config_
    id_column = config.input.id_column or ingest.ROW_NUMBER_COLUMN
    name = trained.get("tracking", {}).get("model_name")
    if previous.id_column == id_column and (name is None or name == config.tracking.model_name):
        return
    raise ConfigError(
        f"output {config.output.path!r} holds the tables of another data set (model {name!r}, "
        f"id column {previous.id_column!r}, from {trained.get('input', {}).get('path')!r}); this "
        f"run is {config.tracking.model_name!r} with id column {id_column!r}: give it an "
        "output of its own (--out, or output.path)"
    )


def _tracker(config: Config) -> tuple[Any, str | None]:
    """The run's MLflow hook once its store answered (None when tracking is off), and why a
    run that wanted tracking goes untracked (``tracking.required: false`` and no store)."""
    if not config.tracking.enabled:
        return None, None
    from segmatch.tracking.hook import MlflowTracking  # noqa: PLC0415 -- keeps mlflow optional
    from segmatch.tracking.store import check_store  # noqa: PLC0415

    try:
        check_store(config.tracking)
    except TrackingUnavailableError as error:
        if config.tracking.required:
            raise
        reason = (
            f"this run is not tracked: {error.reason}; no model version was registered or "
            "promoted, and segment ids follow the output's model.json"
        )
        logger.warning("warning: %s", reason)
        return None, reason
    # MLflow's import overlaps the engine's start and the checks; its run is created only
    # once the config and the input are known to be good.
    tracker = MlflowTracking(config.tracking)
    tracker.warm_up()
    return tracker, None


def check_input(engine: Engine, config: Config, *, named_by: str = "the config names") -> list[str]:
    """Check that the input is there, readable, and has every column the config names (all
    problems in one error); return its columns."""
    return ingest.check_input(
        engine,
        config=config.input,
        features=config.features,
        clean=config.clean,
        named_by=named_by,
    )


def validate(
    config: str | Path | Config, *, overrides: Overrides | None = None
) -> tuple[Config, list[str]]:
    """Everything a run checks before it starts, and nothing else: the config, the input and
    the columns it names. Returns the config and the input's columns."""
    if not isinstance(config, Config):
        config = load_config(config, overrides)
    if config.tracking.enabled and config.tracking.required:
        from segmatch.tracking.store import check_store  # noqa: PLC0415 -- mlflow stays unloaded

        check_store(config.tracking)
    return config, check_input(engine_for(config), config)


def rebuild_report(
    run_id: str, *, output: str | Path | None = None, tracking_uri: str | None = None
) -> str:
    """Rebuild a run's report. ``run_id`` is segmatch's id of the run or MLflow's; without
    ``output`` (or when the id is MLflow's), MLflow says where the run wrote."""
    files = Files()
    if output is None or not files.exists(join(run_folder(output, run_id), SUMMARY_FILE)):
        from segmatch.tracking.queries import locate_run  # noqa: PLC0415 -- mlflow is heavy

        try:
            run_id, tracked_output = locate_run(run_id, TrackingConfig(uri=tracking_uri))
        except ModelError:
            if output is None:
                raise
        else:
            output = output or tracked_output
    return build_report(output, run_id)


def report_run(result: RunResult, *, attach: Callable[[str, str], None] | None = None) -> str:
    """Build the run's HTML report; ``attach`` (the tracking hook's) attaches it to the run's
    MLflow run."""
    options = result.config.storage_options
    location = build_report(result.config.output.path, result.run_id, storage_options=options)
    if attach is not None and result.mlflow_run_id:
        attach(Files(options).read_text(location), REPORT_FILE)
    return location


def generate_demo_customers(path: Path, *, rows: int, seed: int, duplicates: float = 0.0) -> Path:
    """The demo's synthetic customers; with ``duplicates``, that share of them written again
    under other ids with a person's identity columns (the truth beside, ``*_truth.parquet``)."""
    if not duplicates:
        return generate_customers(path, rows=rows, seed=seed)
    table, truth = with_people(
        customer_table(rows=rows, seed=seed),
        id_column="idcliente",
        duplicates=duplicates,
        seed=seed,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    pq.write_table(truth, path.with_name(f"{path.stem}_truth.parquet"))
    return path


def demo_config(
    data: Path,
    out: Path,
    *,
    seed: int = 42,
    engine: str = "local",
    tracking: bool = True,
    categorical: tuple[str, ...] = ("channel", "region"),
    identity: bool = False,
) -> Config:
    """The config the demo runs on the synthetic customer base (``categorical=()``: numeric
    features only, as the benchmark's baseline pipeline uses; ``identity``: records resolved
    into entities first, by the identity columns of :func:`generate_demo_customers`)."""
    return build_config(
        {
            "engine": engine,
            "input": {"path": str(data), "id_column": "idcliente"},
            "clean": {
                "duplicates": {"keep": "latest", "order_by": "updated_at"},
                "ranges": {"age": [16, 110], "income": [0, None]},
            },
            "features": {
                "numeric": [
                    "age",
                    "income",
                    "recency_days",
                    "frequency",
                    "monetary",
                    "tenure_days",
                ],
                "log": ["income", "recency_days", "frequency", "monetary"],
                "categorical": list(categorical),
            },
            "reduce": {"variance": 0.9},
            "cluster": {"k_min": 2, "k_max": 10, "seed": seed},
            "identity": {"enabled": True, "columns": PERSON_ROLES} if identity else {},
            "output": {"path": str(out)},
            "tracking": {"enabled": tracking, "model_name": "segmatch-demo"},
        },
        source="the demo",
    )


def recent_runs(*, uri: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The latest tracked runs (newest first), as plain dicts."""
    from segmatch.tracking.queries import recent_runs as tracked_runs  # noqa: PLC0415 -- mlflow is heavy

    return tracked_runs(TrackingConfig(uri=uri), limit=limit)


@dataclass(frozen=True)
class LoadedModel:
    """A fitted model and where it came from: what ``segmatch score`` prints first."""

    model: SegmentModel
    reference: str
    #: The registered model's name and version (None for a model.json).
    name: str | None
    version: str | None
    #: segmatch's id of the run that trained it.
    run_id: str | None

    def describe(self) -> str:
        registered = f"{self.name} version {self.version}" if self.name else self.reference
        trained = self.model.config_.get("input", {}).get("path", "?")
        features = len(self.model.numeric_columns) + len(self.model.categorical_levels)
        return (
            f"model {registered}: {self.model.n_segments} segments on {features} feature(s), "
            f"trained by run {self.run_id or '?'} on {trained}"
        )


def load_model(reference: str | Path | None, *, tracking_uri: str | None = None) -> LoadedModel:
    """A model from an MLflow URI (``models:/segmatch-demo@champion``, ``runs:/…/model``), a
    ``model.json`` file, or a run's output folder. With no reference: the champion of the only
    registered model (several: an error that lists them)."""
    tracking = TrackingConfig(uri=tracking_uri)
    if reference is None:
        from segmatch.tracking.queries import registered_models  # noqa: PLC0415 -- mlflow is heavy

        names = registered_models(tracking)
        if len(names) != 1:
            raise ModelError(
                "name the model to score with, e.g. --model models:/NAME@champion; registered "
                f"models with a champion: {', '.join(names) or 'none'}"
            )
        reference = f"models:/{names[0]}@champion"
    text = str(reference)
    if text.startswith(("models:/", "runs:/")):
        from segmatch.tracking.queries import (  # noqa: PLC0415 -- mlflow is heavy
            load_segment_model,
            registered_version,
        )

        known = registered_version(text, tracking=tracking) or {}
        return LoadedModel(
            load_segment_model(text, tracking=tracking),
            text,
            known.get("name"),
            known.get("version"),
            known.get("run_id"),
        )
    files = Files()
    location = join(text, MODEL_FILE) if files.is_dir(text) else text
    if not files.exists(location):
        raise ModelError(f"no segmatch model at {text!r} (expected an MLflow URI or {MODEL_FILE})")
    content = files.read_text(location)
    model = SegmentModel.from_json(content, source=location)
    run_id = json.loads(content).get("metadata", {}).get("run_id")
    return LoadedModel(model, location, None, None, run_id)


def _trained_table(output: dict[str, Any], table: Table) -> str:
    """A table a training run's output section placed or named."""
    if output.get("catalog"):
        return f"{output['catalog']}.{output['schema']}.{table}"
    return join(output["path"], table)


def current_version(
    table: str, *, storage_options: dict[str, str] | None = None
) -> tuple[int, str] | None:
    """The version of an output table the output's lease names as current, and the run that
    committed it (None for a catalog name or a table no segmatch run committed under a lease)."""
    if is_table_name(table):
        return None
    location = os.fspath(table).rstrip("/")
    root, _, name = location.rpartition("/")
    recorded = OutputLease(root or ".", storage_options=storage_options).current().tables.get(name)
    return (recorded.version, recorded.run_id) if recorded else None


def table_history(
    table: str, *, spark: Any | None = None, storage_options: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """A Delta table's versions, newest first: time, operation, rows written, run id.

    ``table`` is a folder or URI (read with delta-rs), or a catalog name
    ``catalog.schema.table`` (read through ``spark``, or a session segmatch starts).
    """
    if is_table_name(table):
        return make_engine("spark", session=spark).table_history(table)
    return storage.table_history(table, storage_options=storage_options)


def restore_table(
    table: str,
    version: int,
    *,
    spark: Any | None = None,
    storage_options: dict[str, str] | None = None,
) -> int:
    """Roll a Delta table (folder, URI or catalog name) back to ``version``, recorded as a
    new version; return the new version."""
    if is_table_name(table):
        return make_engine("spark", session=spark).restore_table(table, version)
    return storage.restore_table(table, version, storage_options=storage_options)


def score_customers(
    model: str | Path | LoadedModel | None,
    data: str | Path,
    out: str | Path,
    *,
    segments: str | Path | None = None,
    engine: str | None = None,
    tracking_uri: str | None = None,
) -> ScoringResult:
    """Assign new customers to the saved segments, with the same ingest/clean/features code.

    ``model`` is a reference :func:`load_model` takes, or what it returned. ``segments`` is the
    segments table whose customers are offered as lookalikes; by default the one in the
    training run's output folder, when it is there.
    """
    loaded = (
        model if isinstance(model, LoadedModel) else load_model(model, tracking_uri=tracking_uri)
    )
    fitted = loaded.model
    model = loaded.reference
    if not fitted.config_:
        raise ModelError(f"model {str(model)!r} carries no training config; retrain it")
    if fitted.identity_:
        linkage.check_installed()
    raw = fitted.config_
    raw = {
        **raw,
        "engine": engine or raw["engine"],
        "input": {**raw["input"], "path": str(data), "format": "auto"},
        "features": {
            **raw["features"],
            "numeric": fitted.numeric_columns,
            "categorical": list(fitted.categorical_levels),
            # The columns the training run logged, skewed ones included, and no others.
            "log": fitted.log_columns,
            "skewed": "keep",
            # The training run's outcomes are not needed to score.
            "outcomes": [],
        },
        "output": {"path": str(out) if is_uri(str(out)) else str(Path(out).resolve())},
        "tracking": {**raw["tracking"], "enabled": False},
    }
    config = build_config(raw, source=f"the training config of model {str(model)!r}")
    _refuse_a_training_output(config)
    trained_output = fitted.config_["output"]
    reference = str(segments) if segments else _trained_table(trained_output, Table.SEGMENTS)
    runner = engine_for(config)
    config = _scored_as_customers_when_derived(runner, config, fitted)
    check_input(runner, config, named_by=f"that {loaded.describe()} needs")
    known = runner.has_table(reference) or (
        not is_table_name(reference) and Files(config.storage_options).exists(reference)
    )
    version = None
    if not segments and not is_table_name(trained_output["path"]):
        current = OutputLease(trained_output["path"], storage_options=config.storage_options)
        recorded = current.current().tables.get("segments")
        version = recorded.version if recorded else None
    run = Pipeline(
        config,
        runner,
        plan=SCORING,
        provided={
            "model": fitted,
            "reference": reference if known else None,
            "reference_version": version,
            "known_entities": _known_entities(runner, fitted, trained_output),
        },
    )
    return run.run()


def _known_entities(engine: Engine, model: SegmentModel, output: dict[str, Any]) -> str | None:
    """The training run's entities table, when its model resolved identities; a model that did
    but whose entities table is gone cannot link, and says so."""
    if not model.identity_:
        return None
    location = _trained_table(output, Table.ENTITIES)
    if not engine.has_table(location):
        raise ModelError(
            f"the model resolved identities, but its training run's entities table "
            f"{location!r} is not there: new records cannot be linked to known customers "
            "(rerun the training, or restore that table)"
        )
    return location


def _scored_as_customers_when_derived(
    engine: Engine, config: Config, model: SegmentModel
) -> Config:
    """A model trained on transactions scores transactions (aggregated as in training), or a
    customer table that already holds the derived columns and no transaction timestamp."""
    source = config.input
    if source.transactions is None:
        return config
    columns = engine.schema(ingest.open_input(engine, source).frame)
    if source.transactions.timestamp in columns or not all(
        c in columns for c in model.numeric_columns
    ):
        return config
    return config.model_copy(
        update={"input": source.model_copy(update={"shape": "customers", "transactions": None})}
    )


def _refuse_a_training_output(config: Config) -> None:
    """Scoring writes tables of its own (``scores``, ``lookalikes``): into a training run's
    output they would replace that run's lookalikes."""
    out = config.output.path
    files = Files(config.storage_options)
    layout = OutputLayout(out)
    if files.exists(layout.model) or storage.is_delta_table(join(out, Table.SEGMENTS), files=files):
        raise ConfigError(
            f"output {out!r} holds a training run's tables (segments, lookalikes, model.json); "
            "a scoring run writes its own lookalikes table and would replace that run's: give "
            "--out another folder"
        )
