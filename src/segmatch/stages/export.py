"""export: segments, lookalikes, profiles and quarantine, staged for an all-or-nothing commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from segmatch.config import OutputConfig
from segmatch.engines.base import Engine
from segmatch.engines.expressions import col, lit
from segmatch.engines.types import DISTANCE, SEGMENT, vector_column
from segmatch.layout import IDENTITY_SAMPLE_FILE, PART_FILE, run_folder, write_arrow
from segmatch.locations import join
from segmatch.stages import statistics
from segmatch.stages.clean import CleanedRows
from segmatch.stages.cluster import Clustering
from segmatch.stages.features import Features
from segmatch.stages.identity import ENTITY_COLUMNS, Identity, pairs_sample, stage_identity
from segmatch.stages.lookalikes import Lookalikes
from segmatch.staging import StagedOutputs


@dataclass(frozen=True)
class Exported:
    """The segment profiles (also written) and the tables staged."""

    profiles: pa.Table
    transitions: pa.Table | None
    tables: tuple[str, ...]
    rows_in: int
    rows_out: int
    #: Each numeric feature's standard deviation over the customers (what the report's
    #: profile heatmap measures segments in).
    spread: dict[str, float]


def customer_columns(
    engine: Engine, features: Features, *, choice: Literal["features", "all", "none"]
) -> list[str]:
    """The input columns a segments (or scores) table carries (``output.segments_columns``),
    in original units; the engine leaves out a name the table already uses (segment…)."""
    if choice == "none":
        return []
    if choice == "features":
        present = engine.schema(features.customers)
        return [*features.numeric, *features.levels, *(c for c in ENTITY_COLUMNS if c in present)]
    return list(engine.schema(features.customers))


def segment_profiles(engine: Engine, features: Features, clustering: Clustering) -> pa.Table:
    """Size, share, mean and median of every numeric feature in original units, the top
    levels of every categorical one, and how often each outcome happened, per segment."""
    labelled = engine.matrix_frame(
        clustering.matrix,
        id_column=features.id_column,
        columns={SEGMENT: col(SEGMENT)},
        customers=features.customers,
        customer_columns=[
            *features.numeric,
            *features.levels,
            *(o.column for o in features.outcomes),
        ],
    )
    return statistics.segment_profiles(
        engine,
        labelled,
        columns=list(features.numeric),
        categorical=list(features.levels),
        outcomes=features.outcomes,
    )


def lookalike_sample(
    engine: Engine,
    lookalikes: Lookalikes,
    features: Features,
    *,
    id_column: str,
    customers: int = 3,
) -> pa.Table:
    """A few customers beside their top lookalikes, in original units (for the report).

    Rows: ``customer``, ``rank`` (0 for the customer itself), ``lookalike_id``, ``similarity``, and
    every numeric and categorical feature.
    """
    head = engine.to_arrow(lookalikes.frame, limit=customers * 50).to_pylist()
    chosen = list(dict.fromkeys(r[id_column] for r in head))[:customers]
    pairs = [r for r in head if r[id_column] in chosen]
    ids = {*chosen, *(r["lookalike_id"] for r in pairs)}
    values = engine.to_arrow(
        engine.filter(features.customers, col(id_column).is_in(list(ids))),
        columns=[id_column, *features.numeric, *features.levels],
    ).to_pylist()
    by_id = {row[id_column]: row for row in values}
    rows = []
    for customer in chosen:
        rows.append({"customer": customer, "rank": 0, "lookalike_id": customer, "similarity": 1.0})
        rows += [
            {
                "customer": customer,
                "rank": r["rank"],
                "lookalike_id": r["lookalike_id"],
                "similarity": r["similarity"],
            }
            for r in sorted((p for p in pairs if p[id_column] == customer), key=lambda p: p["rank"])
        ]
    for row in rows:
        found = by_id.get(row["lookalike_id"], {})
        row.update({f: found.get(f) for f in [*features.numeric, *features.levels]})
    return pa.Table.from_pylist(rows)


def write_quarantine(engine: Engine, cleaned: CleanedRows, outputs: StagedOutputs) -> None:
    """Stage the quarantined rows, with the rule each one broke."""
    engine.stage_table(cleaned.quarantine, outputs=outputs, table="quarantine")


def export_results(
    engine: Engine,
    *,
    outputs: StagedOutputs,
    cleaned: CleanedRows,
    features: Features,
    clustering: Clustering,
    lookalikes: Lookalikes | None,
    id_column: str,
    model_version: str | None,
    output: OutputConfig,
    resolved: Identity | None = None,
) -> Exported:
    """Stage every output table of the run; compare segments with the previous run's.

    Segment rows carry the run id and the model version, so a row leads to the run and model
    that placed it.
    """
    previous = outputs.table_path("segments")
    transitions = (
        engine.segment_transitions(
            engine.read(
                path=previous, fmt="delta", types={}, separator=",", columns=[id_column, "segment"]
            ),
            clustering.matrix,
            id_column=id_column,
        )
        if engine.has_table(previous)
        else None
    )
    width = clustering.centroids.shape[1]
    segments = engine.matrix_frame(
        clustering.matrix,
        id_column=id_column,
        columns={
            "segment": col(SEGMENT),
            "distance": col(DISTANCE),
            **{f"pc_{j + 1}": col(vector_column(j)) for j in range(width)},
            "run_id": lit(outputs.run_id).as_text(),
            "model_version": lit(model_version).as_text(),
        },
        customers=features.customers,
        customer_columns=customer_columns(engine, features, choice=output.segments_columns),
    )
    engine.stage_table(segments, outputs=outputs, table="segments")
    # One row per customer of the matrix: counting the joined frame would be a pass of its own.
    rows = clustering.rows_out
    if lookalikes is not None:
        engine.stage_table(lookalikes.frame, outputs=outputs, table="lookalikes")
        rows += lookalikes.rows_out
    profiles = segment_profiles(engine, features, clustering)
    write_arrow(profiles, join(outputs.path_for("profiles"), PART_FILE), files=outputs.files)
    write_quarantine(engine, cleaned, outputs)
    if resolved is not None:
        stage_identity(outputs, resolved)
        write_arrow(
            pairs_sample(resolved),
            join(run_folder(outputs.root, outputs.run_id), IDENTITY_SAMPLE_FILE),
            files=outputs.files,
        )
    tables = (
        "segments",
        *(("lookalikes",) if lookalikes is not None else ()),
        "profiles",
        "quarantine",
        *(("entities", "pairs") if resolved is not None else ()),
    )
    return Exported(
        profiles,
        transitions,
        tables,
        clustering.rows_out,
        rows + cleaned.quarantined,
        spread=features.spread,
    )
