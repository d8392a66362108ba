"""The runs segmatch knows, declared as plans of steps: training and scoring.

A :class:`Step` names the function that computes it, the values it needs (earlier steps'
results, or the run's own: ``run_id``, ``outputs``, ``previous_model`` …) and the config
sections it reads. The runner in :mod:`segmatch.pipeline` runs any plan: it derives each
step's checkpoint key from what the step needs and reads, and calls the hooks around it.

Example:
    >>> [step.name for step in TRAINING.stages]
    ['ingest', 'clean', 'features', 'scale', 'reduce', 'cluster', 'match', 'export']
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from segmatch import kernels
from segmatch._version import __version__
from segmatch.config import Config, config_digest
from segmatch.engines.base import Engine
from segmatch.errors import DataQualityError
from segmatch.lease import OutputLease, TableState
from segmatch.locations import Files, join
from segmatch.model import SegmentModel
from segmatch.results import RunResult, ScoringResult, StageRecord
from segmatch.stages import clean, cluster, export, features, ingest, match, reduce, scale, score
from segmatch.storage import (
    COLUMN_PLAN_FILE,
    MATCH_SAMPLE_FILE,
    PART_FILE,
    PROFILES_FILE,
    SCATTER_POINTS,
    SCATTER_SAMPLE_FILE,
    SUMMARY_FILE,
    StagedOutputs,
    TableCommit,
    run_folder,
    write_arrow,
    write_json,
)
from segmatch.tables import TABLES

MODEL_FILE = "model.json"

#: A section name that hands a step the whole config.
WHOLE_CONFIG = "*"


@dataclass(frozen=True)
class Step:
    """One step of a plan.

    ``compute(engine, **config_sections, **needs)`` makes the value called ``produces``.
    ``needs`` maps each keyword to a value: an earlier step's result or one of the run's own,
    optionally followed by attributes (``"raw.plan"``). ``sections`` maps keywords to config
    sections. A ``stage`` is timed, logged and recorded; a ``checkpoint`` stage's result may be
    saved and reused by a rerun whose key matches. ``key_of`` fingerprints the result itself
    when the inputs alone do not identify it (ids taken from a previous model). ``prepare``
    starts, at the run's start and without waiting, what the step will need (a slow import).
    """

    name: str
    produces: str
    compute: Callable[..., Any]
    needs: Mapping[str, str] = field(default_factory=dict)
    sections: Mapping[str, str] = field(default_factory=dict)
    stage: bool = True
    checkpoint: bool = False
    when: Callable[[Config, Mapping[str, Any]], bool] | None = None
    key_of: Callable[[Any], Any] | None = None
    keyed_by: tuple[str, ...] = ()
    prepare: Callable[[], None] | None = None

    @property
    def roots(self) -> list[str]:
        """The values whose keys make this step's key: those it reads (without the attributes
        it takes from them), then ``keyed_by``, values that decide its result unread (the
        input's digest)."""
        return [*(path.split(".", 1)[0] for path in self.needs.values()), *self.keyed_by]


class ModelRegistry(Protocol):
    """Where models live: the one new segment ids are matched to, and where a fitted one goes.

    ``register`` runs before the outputs are written, so they can name the model's version.
    """

    def previous(self) -> SegmentModel | None: ...

    def register(
        self, *, run_id: str, model_json: str, model: SegmentModel, input_digest: str | None
    ) -> str | None:
        """Register the model and return its version; the version of an identical earlier
        run (same config, same input) is returned instead of a new one."""

    def promote(self, *, version: str, silhouette: float) -> None:
        """Make a registered version the one new runs and scoring start from (``champion``);
        called while the run holds its output's lease, so it follows the tables' order."""


class FolderRegistry:
    """Untracked runs: the previous model is the output folder's; nothing gets a version."""

    def __init__(self, out: str, files: Files) -> None:
        self.out = out
        self.files = files

    def previous(self) -> SegmentModel | None:
        saved = join(self.out, MODEL_FILE)
        if not self.files.exists(saved):
            return None
        return SegmentModel.from_json(self.files.read_text(saved), source=saved)

    def register(
        self, *, run_id: str, model_json: str, model: SegmentModel, input_digest: str | None
    ) -> str | None:
        return None

    def promote(self, *, version: str, silhouette: float) -> None:
        """Nothing to do: the output folder's model.json is the previous model."""


@dataclass
class RunContext:
    """What a run has besides its steps' results: identity, staging area, registry, records."""

    run_id: str
    config: Config
    engine: Engine
    outputs: StagedOutputs
    registry: ModelRegistry
    input_digest: str | None
    stage_records: list[StageRecord] = field(default_factory=list)
    stage_log_path: str | None = None


@dataclass(frozen=True)
class Plan:
    """Steps in order, what to do with their results, and what a data-quality stop commits."""

    name: str
    steps: tuple[Step, ...]
    finish: Callable[[RunContext, Mapping[str, Any]], Any]

    @property
    def stages(self) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.stage)

    @property
    def checkpointed(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps if step.checkpoint)


@dataclass(frozen=True)
class RegisteredModel:
    """The fitted model staged as a file, and its registry version (None when untracked)."""

    path: str
    version: str | None


# -- steps that are not stages: the run's own bookkeeping ----------------------------------


def quality_gate(
    engine: Engine, *, config: Any, cleaned: clean.CleanedRows, source: str
) -> clean.CleanedRows:
    """The cleaned rows, once the share of bad rows is known to be acceptable."""
    clean.check_quality(engine, config=config, cleaned=cleaned, source=source)
    return cleaned


def fitted_model(
    engine: Engine,
    *,
    config: Config,
    plan: ingest.ColumnPlan,
    cleaned: clean.CleanedRows,
    built: features.Features,
    scaled: scale.Scaled,
    reduced: reduce.Reduced,
    clustering: cluster.Clustering,
) -> SegmentModel:
    """The engine-neutral model of a training run's results."""
    return SegmentModel(
        id_column=plan.id_column,
        numeric_columns=list(built.numeric),
        log_columns=list(built.log),
        categorical_levels=built.levels,
        fill_values_=cleaned.fill_values,
        center_=scaled.center,
        scale_=scaled.scale,
        components_=reduced.components.axes,
        explained_variance_ratio_=reduced.components.explained_ratio,
        pca_mean_=reduced.mean,
        centroids_=clustering.centroids,
        segment_ids_=clustering.segment_ids,
        distance_p99_=_distance_p99(engine, clustering),
        config_=config.model_dump(mode="json"),
    )


def _distance_p99(engine: Engine, clustering: cluster.Clustering) -> np.ndarray:
    quantiles = engine.distance_quantiles(clustering.matrix, q=0.99)
    return np.array([quantiles.get(int(s), np.nan) for s in clustering.segment_ids])


def registered_model(
    engine: Engine,
    *,
    model: SegmentModel,
    outputs: StagedOutputs,
    run_id: str,
    registry: ModelRegistry,
    input_digest: str | None,
) -> RegisteredModel:
    """Stage the model file and register it, so the output rows can name its version."""
    text = model.to_json(run_id=run_id, segmatch_version=__version__)
    staged = join(outputs.staging, MODEL_FILE)
    outputs.files.write_text(staged, text)
    version = registry.register(
        run_id=run_id, model_json=text, model=model, input_digest=input_digest
    )
    return RegisteredModel(staged, version)


# -- finishing a run: commit every staged table as one batch -------------------------------


def commit_tables(
    context: RunContext,
    *,
    id_column: str,
    model_version: str | None,
    model: tuple[str, str] | None = None,
    silhouette: float | None = None,
) -> dict[str, TableCommit]:
    """Commit the staged tables (and move the staged ``model`` file into place) as one unit
    under the output's lease.

    A run that holds the lease is the only one committing to the output. If it fails
    part-way, the tables it committed are put back to the versions the lease records, so the
    output still holds one run's tables and model; a training run that succeeds becomes the
    current run. Tables a run that died holding the lease had committed are put back first.
    The batch (config + input) the output already holds is not committed again.
    """
    outputs = context.outputs
    batch = (
        hashlib.sha256(
            f"{config_digest(context.config)}:{context.input_digest}".encode()
        ).hexdigest()[:24]
        if context.input_digest
        else None
    )
    lease = OutputLease(outputs.root, storage_options=context.engine.storage_options)
    claim = lease.acquire(context.run_id, timeout=context.config.output.lease_timeout)
    tables = dict(claim.previous.tables)
    if claim.interrupted is not None:
        tables = _put_back(context, tables)
    staged = outputs.staged_tables
    if batch is not None and all(
        name in tables
        and tables[name].batch == batch
        and context.engine.table_version(outputs.table_path(name)) == tables[name].version
        for name in staged
    ):
        lease.release(claim, current_run=claim.previous.current_run, tables=tables)
        return {
            name: TableCommit(
                name, outputs.table_path(name), tables[name].version, "skipped", 0, True
            )
            for name in staged
        }
    try:
        commits = outputs.commit(
            context.engine.commit_table,
            modes={name: context.config.output.mode(name) for name in TABLES},
            keys={name: spec.key_for(id_column) for name, spec in TABLES.items()},
            # Unique per commit: a batch the output held before another one is committed again.
            batch_id=f"{batch}-{claim.version}" if batch else None,
            metadata={"segmatch.model_version": model_version} if model_version else {},
            concurrency=context.engine.commit_concurrency,
        )
        if model is not None:
            outputs.files.move(*model)
            if model_version is not None and silhouette is not None:
                context.registry.promote(version=model_version, silhouette=silhouette)
    except BaseException:
        lease.release(
            claim, current_run=claim.previous.current_run, tables=_put_back(context, tables)
        )
        raise
    tables |= {
        name: TableState(commit.version, context.run_id, batch) for name, commit in commits.items()
    }
    lease.release(
        claim,
        current_run=context.run_id if model is not None else claim.previous.current_run,
        tables=tables,
    )
    return commits


def _put_back(context: RunContext, tables: Mapping[str, TableState]) -> dict[str, TableState]:
    """Restore every table that moved past the version the lease records for it."""
    restored = dict(tables)
    for name, table in tables.items():
        location = context.outputs.table_path(name)
        if context.engine.table_version(location) not in (None, table.version):
            version = context.engine.restore_table(location, table.version)
            restored[name] = TableState(version, table.run_id, table.batch)
    return restored


def commit_quarantine(context: RunContext, values: Mapping[str, Any], error: DataQualityError):
    """A run stopped for data quality commits its quarantine, and says where it is."""
    export.write_quarantine(context.engine, values["cleaned"], context.outputs)
    placed = commit_tables(context, id_column=values["raw"].plan.id_column, model_version=None)
    return DataQualityError(
        f"{error} The quarantined rows, each with the rule it broke, are in the Delta "
        f"table {str(placed['quarantine'].path)!r}."
    )


def finish_training(context: RunContext, values: Mapping[str, Any]) -> RunResult:
    """Commit the tables, put the model beside them, and record the run's summary."""
    outputs, registered = context.outputs, values["registered"]
    stage_log = pa.Table.from_pylist([asdict(record) for record in context.stage_records])
    write_arrow(stage_log, join(outputs.path_for("stage_log"), PART_FILE), files=outputs.files)
    id_column = values["raw"].plan.id_column
    model_path = join(outputs.root, MODEL_FILE)
    commits = commit_tables(
        context,
        id_column=id_column,
        model_version=registered.version,
        model=(registered.path, model_path),
        silhouette=values["labelled"].silhouette,
    )
    result = RunResult.from_outputs(
        run_id=context.run_id,
        config=context.config,
        values=values,
        stages=list(context.stage_records),
        outputs={
            **{name: c.path for name, c in commits.items()},
            "model": model_path,
            "stage_log_jsonl": context.stage_log_path,
        },
        table_versions={name: c.version for name, c in commits.items()},
        input_digest=context.input_digest,
        partition_plan=context.engine.partition_plan(),
        model_version=registered.version,
    )
    folder = run_folder(outputs.root, context.run_id)
    if values.get("matches") is not None:
        sample = export.lookalike_sample(
            context.engine, values["matches"], values["features"], id_column=id_column
        )
        write_arrow(sample, join(folder, MATCH_SAMPLE_FILE), files=outputs.files)
    values_sample, labels_sample = context.engine.stratified_sample(
        values["labelled"].matrix, rows=SCATTER_POINTS, seed=context.config.cluster.seed
    )
    scatter = {f"pc_{j + 1}": values_sample[:, j] for j in range(min(2, values_sample.shape[1]))}
    scatter["segment"] = labels_sample
    write_arrow(pa.table(scatter), join(folder, SCATTER_SAMPLE_FILE), files=outputs.files)
    write_arrow(result.profiles, join(folder, PROFILES_FILE), files=outputs.files)
    write_json(result.column_plan, join(folder, COLUMN_PLAN_FILE), files=outputs.files)
    write_json(
        result.summary(engine=context.engine.name),
        join(folder, SUMMARY_FILE),
        files=outputs.files,
    )
    return result


def finish_scoring(context: RunContext, values: Mapping[str, Any]) -> ScoringResult:
    """Stage the scores, lookalikes and quarantine, then commit them."""
    engine, outputs = context.engine, context.outputs
    id_column = values["raw"].plan.id_column
    features = values["features"]
    scores = engine.scores_frame(
        values["scored"].matrix,
        id_column=id_column,
        usual_distance=values["model"].usual_distance,
        customers=features.customers,
        columns=export.customer_columns(
            engine, features, choice=context.config.output.segments_columns
        ),
    )
    engine.stage_table(scores, outputs=outputs, table="scores")
    by_segment = engine.segment_profiles(
        engine.cast_to_float(scores, columns=["beyond_training_p99"]),
        values["scored"].matrix,
        columns=["confidence", "beyond_training_p99"],
    )
    if values.get("lookalikes") is not None:
        engine.stage_table(values["lookalikes"].frame, outputs=outputs, table="lookalikes")
    export.write_quarantine(engine, values["cleaned"], outputs)
    commits = commit_tables(context, id_column=id_column, model_version=None)
    return ScoringResult(
        run_id=context.run_id,
        customers=values["scored"].rows_out,
        quarantined=values["cleaned"].quarantined,
        beyond_training_p99=round(
            sum(
                (row["beyond_training_p99_mean"] or 0.0) * row["size"]
                for row in by_segment.to_pylist()
            )
        ),
        outputs={name: c.path for name, c in commits.items()},
        stages=list(context.stage_records),
        segments=by_segment,
        table_versions={name: c.version for name, c in commits.items()},
    )


# -- the plans ---------------------------------------------------------------------------


def _needs_matches(config: Config, values: Mapping[str, Any]) -> bool:
    return config.match.enabled


def _has_reference(config: Config, values: Mapping[str, Any]) -> bool:
    return values.get("reference") is not None


def _segment_ids(clustering: cluster.Clustering) -> list[int]:
    return clustering.segment_ids.tolist()


INGEST = Step(
    "ingest",
    "raw",
    ingest.read_input,
    keyed_by=("input_digest",),
    sections={"config": "input", "features": "features", "clean": "clean"},
)
QUALITY = Step(
    "quality",
    "checked",
    quality_gate,
    needs={"cleaned": "cleaned", "source": "raw.source"},
    sections={"config": "clean"},
    stage=False,
)

TRAINING = Plan(
    "training",
    (
        INGEST,
        Step(
            "clean",
            "cleaned",
            clean.clean_rows,
            needs={"raw": "raw"},
            sections={"config": "clean"},
            checkpoint=True,
        ),
        QUALITY,
        Step(
            "features",
            "features",
            features.build_features,
            needs={"cleaned": "checked", "plan": "raw.plan"},
            sections={"config": "features"},
        ),
        Step(
            "scale",
            "scaled",
            scale.scale_features,
            needs={"features": "features"},
            sections={"config": "scale"},
        ),
        Step(
            "reduce",
            "reduced",
            reduce.reduce_dimensions,
            needs={"scaled": "scaled"},
            sections={"config": "reduce"},
        ),
        Step(
            "cluster",
            "clustering",
            cluster.cluster_customers,
            needs={"reduced": "reduced"},
            sections={"config": "cluster"},
            checkpoint=True,
            prepare=kernels.import_kmeans_ahead,
        ),
        Step(
            "stable_ids",
            "labelled",
            cluster.keep_previous_ids,
            needs={
                "clustering": "clustering",
                "previous": "previous_model",
                "reduced": "reduced",
                "scaled": "scaled",
                "feature_names": "features.names",
            },
            stage=False,
            key_of=_segment_ids,
        ),
        Step(
            "model",
            "model",
            fitted_model,
            needs={
                "plan": "raw.plan",
                "cleaned": "cleaned",
                "built": "features",
                "scaled": "scaled",
                "reduced": "reduced",
                "clustering": "labelled",
            },
            sections={"config": WHOLE_CONFIG},
            stage=False,
        ),
        Step(
            "match",
            "matches",
            match.match_lookalikes,
            needs={"clustering": "labelled", "id_column": "raw.plan.id_column"},
            sections={"config": "match"},
            checkpoint=True,
            when=_needs_matches,
        ),
        Step(
            "register",
            "registered",
            registered_model,
            needs={
                "model": "model",
                "outputs": "outputs",
                "run_id": "run_id",
                "registry": "registry",
                "input_digest": "input_digest",
            },
            stage=False,
        ),
        Step(
            "export",
            "exported",
            export.export_results,
            needs={
                "outputs": "outputs",
                "cleaned": "cleaned",
                "features": "features",
                "clustering": "labelled",
                "matches": "matches",
                "id_column": "raw.plan.id_column",
                "model_version": "registered.version",
            },
            sections={"output": "output"},
        ),
    ),
    finish=finish_training,
)


def clean_rows_for_model(
    engine: Engine, *, config: Any, raw: ingest.RawInput, model: SegmentModel
) -> clean.CleanedRows:
    """New customers cleaned with the imputation values the model learned."""
    return clean.clean_rows(engine, config=config, raw=raw, fill_values=model.fill_values_)


def features_for_model(
    engine: Engine,
    *,
    config: Any,
    cleaned: clean.CleanedRows,
    plan: ingest.ColumnPlan,
    model: SegmentModel,
) -> features.Features:
    """New customers' features with the model's one-hot levels."""
    return features.build_features(
        engine, config=config, cleaned=cleaned, plan=plan, levels=model.categorical_levels
    )


SCORING = Plan(
    "scoring",
    (
        INGEST,
        Step(
            "clean",
            "cleaned",
            clean_rows_for_model,
            needs={"raw": "raw", "model": "model"},
            sections={"config": "clean"},
        ),
        QUALITY,
        Step(
            "features",
            "features",
            features_for_model,
            needs={"cleaned": "checked", "plan": "raw.plan", "model": "model"},
            sections={"config": "features"},
        ),
        Step(
            "score",
            "scored",
            score.apply_model,
            needs={"features": "features", "model": "model"},
        ),
        Step(
            "match",
            "lookalikes",
            score.find_lookalikes,
            needs={
                "scored": "scored",
                "reference": "reference",
                "reference_version": "reference_version",
                "id_column": "raw.plan.id_column",
                "model": "model",
            },
            sections={"config": "match"},
            when=_has_reference,
        ),
    ),
    finish=finish_scoring,
)
