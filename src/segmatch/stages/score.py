"""score: place new customers in the saved segments and find their existing lookalikes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from segmatch.cells import Cells
from segmatch.config import LookalikesConfig, OutputConfig
from segmatch.engines.base import Engine, Frame, Matrix
from segmatch.engines.expressions import col, lit, when
from segmatch.engines.shaping import lookalike_rows, lookalike_schema
from segmatch.engines.types import DISTANCE, RUNNER_UP, SEGMENT, SegmentRows
from segmatch.errors import ModelError
from segmatch.layout import PART_FILE, write_arrow
from segmatch.locations import join
from segmatch.model import SegmentModel
from segmatch.neighbours import top_k_from
from segmatch.stages.clean import CleanedRows
from segmatch.stages.export import customer_columns, write_quarantine
from segmatch.stages.features import Features
from segmatch.stages.identity import Links
from segmatch.stages.lookalikes import search_cells, segment_sizes
from segmatch.stages.statistics import segment_profiles
from segmatch.staging import StagedOutputs
from segmatch.tables import Table


@dataclass(frozen=True)
class Scored:
    """New customers in PCA space with their segment, distance and confidence."""

    matrix: Matrix
    rows_in: int
    rows_out: int


@dataclass(frozen=True)
class Lookalikes:
    """Each new customer's nearest existing customers in its segment."""

    frame: Frame
    rows_in: int
    rows_out: int


def apply_model(engine: Engine, *, features: Features, model: SegmentModel) -> Scored:
    """The fitted scaling, PCA and centroids applied to new feature rows."""
    if features.names != model.feature_names:
        raise ModelError(
            f"the input's features {features.names} differ from the model's {model.feature_names}"
        )
    fitted = model.fitted()
    scaled = engine.affine(features.matrix, shift=fitted.center, linear=np.diag(1.0 / fitted.scale))
    coordinates = engine.affine(scaled, shift=fitted.pca_mean, linear=fitted.components.T)
    assigned = engine.relabel(
        engine.assign(coordinates, centroids=fitted.centroids), ids=fitted.segment_ids
    )
    return Scored(assigned, features.rows_out, engine.matrix_rows(assigned))


def find_lookalikes(
    engine: Engine,
    *,
    config: LookalikesConfig,
    scored: Scored,
    reference: str,
    reference_version: int | None,
    id_column: str,
    model: SegmentModel,
) -> Lookalikes:
    """Top-k existing customers (from a run's segments table, at ``reference_version``: the one
    its output's lease names, so a run committing there meanwhile is not seen half-done) in
    each new customer's segment."""
    is_delta = engine.has_table(reference)
    segments = engine.read(
        path=reference,
        fmt="delta" if is_delta else "parquet",
        types={},
        separator=",",
        version=reference_version if is_delta else None,
    )
    width = model.fitted().components.shape[0]
    reference_matrix = engine.feature_matrix(
        segments,
        id_column=id_column,
        numeric=[f"pc_{j + 1}" for j in range(width)],
        log=(),
        levels={},
        labels="segment",
    )
    cells = search_cells(
        engine, reference_matrix, config=config, sizes=segment_sizes(engine, reference_matrix)
    )
    frame = top_k_against(
        engine, reference_matrix, scored.matrix, id_column=id_column, k=config.top_k, cells=cells
    )
    return Lookalikes(frame, scored.rows_out, engine.count(frame))


@dataclass(frozen=True)
class ScoresExported:
    """The scoring run's tables, staged; per segment: size, share, mean and median
    confidence, and the share of new customers beyond the training distance."""

    by_segment: pa.Table
    beyond_training_p99: int
    rows_in: int
    rows_out: int


def export_scores(
    engine: Engine,
    *,
    outputs: StagedOutputs,
    cleaned: CleanedRows,
    features: Features,
    scored: Scored,
    found: Lookalikes | None,
    links: Links | None,
    id_column: str,
    model: SegmentModel,
    output: OutputConfig,
) -> ScoresExported:
    """Stage the scores (with each record's entity when new records were linked), the
    lookalikes, the links and the quarantine, and summarise scores by segment."""
    distance, runner_up = col(DISTANCE), col(RUNNER_UP)
    usual = when(
        [(col(SEGMENT).eq(segment), limit) for segment, limit in model.usual_distance.items()],
        lit(None).as_float(),
    )
    scores = engine.matrix_frame(
        scored.matrix,
        id_column=id_column,
        columns={
            "segment": col(SEGMENT),
            "distance": distance,
            # 1 − d₁/d₂: 0 midway between two centroids, 1 on one (as kernels.confidence).
            "confidence": when(
                [
                    (
                        runner_up.gt(0.0).fill_null(False),
                        lit(1.0).minus(distance.divided_by(runner_up)),
                    )
                ],
                lit(0.0),
            ),
            "beyond_training_p99": distance.gt(usual),
        },
        customers=features.customers,
        customer_columns=customer_columns(engine, features, choice=output.segments_columns),
    )
    if links is not None:
        scores = engine.lookup(
            scores, key=id_column, table=links.table.select([id_column, "entity_id"])
        )
        write_arrow(
            links.table, join(outputs.path_for(Table.LINKS), PART_FILE), files=outputs.files
        )
    engine.stage_table(scores, outputs=outputs, table=Table.SCORES)
    by_segment = segment_profiles(
        engine,
        engine.with_columns(scores, {"beyond_training_p99": col("beyond_training_p99").as_float()}),
        columns=["confidence", "beyond_training_p99"],
    )
    rows = scored.rows_out
    if found is not None:
        engine.stage_table(found.frame, outputs=outputs, table="lookalikes")
        rows += found.rows_out
    write_quarantine(engine, cleaned, outputs)
    beyond = sum(
        (row["beyond_training_p99_mean"] or 0.0) * row["size"] for row in by_segment.to_pylist()
    )
    return ScoresExported(by_segment, round(beyond), scored.rows_out, rows + cleaned.quarantined)


def top_k_against(
    engine: Engine,
    reference: Matrix,
    matrix: Matrix,
    *,
    id_column: str,
    k: int,
    cells: Cells | None,
) -> Frame:
    """For each row of ``matrix``, its k nearest rows of ``reference`` (the customers of a
    training run, as a labelled matrix) within the same segment: searched per segment, or per
    search cell of ``cells`` (the cell's new rows against the reference rows copied into it)."""

    def per_group(group: SegmentRows) -> pa.Table:
        assert group.home is not None
        queries, pool = np.flatnonzero(group.home), np.flatnonzero(~group.home)
        if len(queries) == 0 or len(pool) == 0:
            return lookalike_schema(id_column, group.ids.type).empty_table()
        neighbours, distance = top_k_from(group.values[pool], group.values[queries], k, workers=1)
        return lookalike_rows(
            id_column,
            ids=group.ids.take(queries),
            labels=group.labels[queries],
            candidates=group.ids.take(pool),
            neighbours=neighbours,
            distance=distance,
        )

    def schema(id_type: pa.DataType) -> pa.Schema:
        return lookalike_schema(id_column, id_type)

    return engine.map_groups(matrix, per_group, schema=schema, cells=cells, reference=reference)
