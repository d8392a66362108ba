"""The training run: from the input to segments, lookalikes and a registered model.

Example:
    >>> [step.name for step in TRAINING.stages]
    ['ingest', 'clean', 'identity', 'features', 'scale', 'reduce', 'cluster', 'lookalikes', \
'export', 'samples']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

from segmatch._version import __version__
from segmatch.config import CleanConfig, ClusterConfig, Config
from segmatch.engines.base import Engine
from segmatch.errors import DataQualityError
from segmatch.layout import (
    COLUMN_PLAN_FILE,
    LOOKALIKE_SAMPLE_FILE,
    MODEL_FILE,
    PART_FILE,
    PROFILES_FILE,
    SCATTER_POINTS,
    SCATTER_SAMPLE_FILE,
    SUMMARY_FILE,
    OutputLayout,
    run_folder,
    write_arrow,
    write_json,
)
from segmatch.locations import join
from segmatch.model import SegmentModel
from segmatch.plans.commit import commit_quarantine, commit_tables
from segmatch.plans.context import ModelRegistry, RunContext
from segmatch.plans.language import (
    INPUT_DIGEST,
    OUTPUTS,
    PREVIOUS_MODEL,
    REGISTRY,
    RUN_ID,
    WHOLE_CONFIG,
    Plan,
    Step,
    Values,
)
from segmatch.results import RunResult
from segmatch.stages import (
    clean,
    cluster,
    export,
    features,
    identity,
    ingest,
    lookalikes,
    reduce,
    scale,
)
from segmatch.staging import StagedOutputs


@dataclass(frozen=True)
class RegisteredModel:
    """The fitted model staged as a file, and its registry version (None when untracked)."""

    path: str
    version: str | None


@dataclass(frozen=True)
class Samples:
    """What the run's report draws from: written to the run's folder, counted here."""

    rows_out: int


def quality_gate(
    engine: Engine, *, config: CleanConfig, cleaned: clean.CleanedRows, source: str
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
    as_of: datetime | None,
    resolved: identity.Identity | None,
) -> SegmentModel:
    """The engine-neutral model of a training run's results. Its config carries what new rows
    are read with: the as-of date that date features count to, and how their dates read."""
    distance_p99 = engine.distance_quantiles(clustering.matrix, id_column=plan.id_column, q=0.99)
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
        distance_p99_=np.array([distance_p99.get(int(s), np.nan) for s in clustering.segment_ids]),
        config_=_as_trained(config, plan, as_of).model_dump(mode="json"),
        identity_=resolved.trained() if resolved is not None else {},
    )


def _as_trained(config: Config, plan: ingest.ColumnPlan, as_of: datetime | None) -> Config:
    """The config with the date readings the run decided fixed, so scoring reads as it did."""
    if as_of is None:
        return config
    orders = {order for order in plan.dates.values() if order in ("dmy", "mdy")}
    dayfirst = config.input.dayfirst
    if dayfirst is None and len(orders) == 1:
        dayfirst = orders == {"dmy"}
    return config.model_copy(
        update={
            "features": config.features.model_copy(update={"as_of": as_of}),
            "input": config.input.model_copy(update={"dayfirst": dayfirst}),
        }
    )


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


def report_samples(
    engine: Engine,
    *,
    outputs: StagedOutputs,
    built: features.Features,
    clustering: cluster.Clustering,
    found: lookalikes.Lookalikes | None,
    id_column: str,
    cluster_config: ClusterConfig,
) -> Samples:
    """Write what the report draws: a few customers beside their lookalikes, and a sample of
    customers in the first two principal components, stratified by segment."""
    folder = run_folder(outputs.root, outputs.run_id)
    rows = 0
    if found is not None:
        sample = export.lookalike_sample(engine, found, built, id_column=id_column)
        write_arrow(sample, join(folder, LOOKALIKE_SAMPLE_FILE), files=outputs.files)
        rows += sample.num_rows
    values, labels = cluster.stratified_sample(
        engine,
        clustering.matrix,
        sizes=dict(zip(_segment_ids(clustering), clustering.sizes.tolist(), strict=True)),
        rows=SCATTER_POINTS,
        seed=cluster_config.seed,
    )
    scatter = {f"pc_{j + 1}": values[:, j] for j in range(min(2, values.shape[1]))}
    scatter["segment"] = labels
    write_arrow(pa.table(scatter), join(folder, SCATTER_SAMPLE_FILE), files=outputs.files)
    return Samples(rows + len(labels))


def _segment_ids(clustering: cluster.Clustering) -> list[int]:
    return [int(segment) for segment in clustering.segment_ids]


def _lookalikes_wanted(config: Config, values: Values) -> bool:
    return config.lookalikes.enabled


INGEST = Step(
    "ingest",
    ingest.read_input,
    keyed_by=(INPUT_DIGEST,),
    sections={"config": "input", "features": "features", "clean": "clean"},
)
CLEAN = Step(
    "clean",
    clean.clean_rows,
    needs={"raw": INGEST.result},
    sections={"config": "clean"},
    checkpoint=True,
)
QUALITY = Step(
    "quality",
    quality_gate,
    needs={"cleaned": CLEAN.result, "source": INGEST.result.source},
    sections={"config": "clean"},
    stage=False,
)


def _identity_wanted(config: Config, values: Values) -> bool:
    return config.identity.enabled


IDENTITY = Step(
    "identity",
    identity.resolve_customers,
    needs={
        "cleaned": QUALITY.result,
        "id_column": INGEST.result.plan.id_column,
        "source": INGEST.result.source,
        "outputs": OUTPUTS,
        "run_id": RUN_ID,
    },
    sections={"config": "identity", "clean": "clean"},
    when=_identity_wanted,
)
#: One row per entity when identity is on (the cleaned rows otherwise).
ENTITY_ROWS = Step(
    "entity_rows",
    identity.entity_rows,
    needs={
        "cleaned": QUALITY.result,
        "resolved": IDENTITY.result,
        "id_column": INGEST.result.plan.id_column,
    },
    stage=False,
)
FEATURES = Step(
    "features",
    features.build_features,
    needs={"cleaned": ENTITY_ROWS.result, "plan": INGEST.result.plan},
    sections={"config": "features"},
)
SCALE = Step(
    "scale",
    scale.scale_features,
    needs={"features": FEATURES.result},
    sections={"config": "scale", "cluster": "cluster"},
)
REDUCE = Step(
    "reduce",
    reduce.reduce_dimensions,
    needs={"scaled": SCALE.result},
    sections={"config": "reduce"},
)
CLUSTER = Step(
    "cluster",
    cluster.cluster_customers,
    needs={"reduced": REDUCE.result},
    sections={"config": "cluster"},
    checkpoint=True,
)
#: The clustering with each segment keeping the id of the previous model's it continues.
STABLE_IDS = Step(
    "stable_ids",
    cluster.keep_previous_ids,
    needs={
        "clustering": CLUSTER.result,
        "previous": PREVIOUS_MODEL,
        "reduced": REDUCE.result,
        "scaled": SCALE.result,
        "feature_names": FEATURES.result.names,
    },
    stage=False,
    key_of=_segment_ids,
)
MODEL = Step(
    "model",
    fitted_model,
    needs={
        "plan": INGEST.result.plan,
        "cleaned": CLEAN.result,
        "built": FEATURES.result,
        "scaled": SCALE.result,
        "reduced": REDUCE.result,
        "clustering": STABLE_IDS.result,
        "as_of": INGEST.result.as_of,
        "resolved": IDENTITY.result,
    },
    sections={"config": WHOLE_CONFIG},
    stage=False,
)
LOOKALIKES = Step(
    "lookalikes",
    lookalikes.lookalikes_within_segments,
    needs={"clustering": STABLE_IDS.result, "id_column": INGEST.result.plan.id_column},
    sections={"config": "lookalikes"},
    checkpoint=True,
    when=_lookalikes_wanted,
)
REGISTER = Step(
    "register",
    registered_model,
    needs={
        "model": MODEL.result,
        "outputs": OUTPUTS,
        "run_id": RUN_ID,
        "registry": REGISTRY,
        "input_digest": INPUT_DIGEST,
    },
    stage=False,
)
EXPORT = Step(
    "export",
    export.export_results,
    needs={
        "outputs": OUTPUTS,
        "cleaned": CLEAN.result,
        "features": FEATURES.result,
        "clustering": STABLE_IDS.result,
        "lookalikes": LOOKALIKES.result,
        "id_column": INGEST.result.plan.id_column,
        "model_version": REGISTER.result.version,
        "resolved": IDENTITY.result,
    },
    sections={"output": "output"},
)
SAMPLES = Step(
    "samples",
    report_samples,
    needs={
        "outputs": OUTPUTS,
        "built": FEATURES.result,
        "clustering": STABLE_IDS.result,
        "found": LOOKALIKES.result,
        "id_column": INGEST.result.plan.id_column,
    },
    sections={"cluster_config": "cluster"},
)


def finish_training(context: RunContext, values: Values) -> RunResult:
    """Commit the tables, put the model beside them, and record the run's summary."""
    outputs, registered = context.outputs, values.of(REGISTER)
    stage_log = pa.Table.from_pylist([asdict(record) for record in context.stage_records])
    write_arrow(stage_log, join(outputs.path_for("stage_log"), PART_FILE), files=outputs.files)
    raw, clustering = values.of(INGEST), values.of(STABLE_IDS)
    model_path = OutputLayout(outputs.root).model
    commits = commit_tables(
        context,
        id_column=raw.plan.id_column,
        model_version=registered.version,
        model=(registered.path, model_path),
        silhouette=clustering.silhouette,
    )
    result = RunResult.from_outputs(
        run_id=context.run_id,
        config=context.config,
        raw=raw,
        cleaned=values.of(CLEAN),
        built=values.of(FEATURES),
        reduced=values.of(REDUCE),
        clustering=clustering,
        model=values.of(MODEL),
        found=values.of(LOOKALIKES),
        exported=values.of(EXPORT),
        resolved=values.of(IDENTITY),
        stages=list(context.stage_records),
        outputs={
            **{name: c.path for name, c in commits.items()},
            "model": model_path,
            **({"stage_log_jsonl": context.stage_log_path} if context.stage_log_path else {}),
        },
        table_versions={name: c.version for name, c in commits.items()},
        input_digest=context.input_digest,
        partition_plan=context.engine.partition_plan(),
        model_version=registered.version,
    )
    folder = run_folder(outputs.root, context.run_id)
    write_arrow(result.profiles, join(folder, PROFILES_FILE), files=outputs.files)
    write_json(result.column_plan, join(folder, COLUMN_PLAN_FILE), files=outputs.files)
    write_json(
        result.summary(engine=context.engine.name),
        join(folder, SUMMARY_FILE),
        files=outputs.files,
    )
    return result


def stop_for_quality(
    context: RunContext, values: Values, error: DataQualityError
) -> DataQualityError:
    """A run stopped for data quality commits its quarantine, and says where it is."""
    return commit_quarantine(context, raw=values.of(INGEST), cleaned=values.of(CLEAN), error=error)


TRAINING = Plan(
    "training",
    (
        INGEST,
        CLEAN,
        QUALITY,
        IDENTITY,
        ENTITY_ROWS,
        FEATURES,
        SCALE,
        REDUCE,
        CLUSTER,
        STABLE_IDS,
        MODEL,
        LOOKALIKES,
        REGISTER,
        EXPORT,
        SAMPLES,
    ),
    finish=finish_training,
    stop_for_quality=stop_for_quality,
)
