"""What a run produced: the per-stage records and the run's result."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from segmatch.config import Config
from segmatch.model import SegmentModel
from segmatch.stages.clean import CleanedRows
from segmatch.stages.cluster import Candidate, Clustering
from segmatch.stages.export import Exported
from segmatch.stages.features import Features
from segmatch.stages.identity import Identity, Records
from segmatch.stages.ingest import RawInput
from segmatch.stages.lookalikes import Lookalikes
from segmatch.stages.reduce import Reduced


@dataclass(frozen=True)
class StageRecord:
    """What one stage did: the structured record behind each stage line."""

    run_id: str
    stage: str
    started_at: str
    seconds: float
    rows_in: int
    rows_out: int
    partitions: int
    peak_memory_mb: float
    reused: bool = False

    def line(self) -> str:
        how = "reused from its checkpoint" if self.reused else "finished"
        return (
            f"⏱️ stage '{self.stage}' {how} in {self.seconds:.2f} s "
            f"({self.rows_in:,} rows in, {self.rows_out:,} out)"
        )


def stage_log_lines(records: Sequence[StageRecord]) -> str:
    """A run's stage records as JSON lines (its ``stage_log.jsonl``)."""
    return "".join(json.dumps(asdict(record), default=str) + "\n" for record in records)


@dataclass
class RunResult:
    """Everything a finished run produced, for the summary and for callers."""

    run_id: str
    config: Config
    k: int
    silhouette: float
    sample_silhouette: float
    inertia: float
    sizes: list[int]
    candidates: tuple[Candidate, ...]
    sweep_rows: int
    explained_variance: list[float]
    profiles: pa.Table
    stages: list[StageRecord]
    outputs: dict[str, str]
    rows_in: int
    customers: int
    quarantined: int
    quarantined_by_rule: dict[str, int]
    duplicates: int
    imputed: dict[str, int]
    model: SegmentModel
    ids_trimmed: int = 0
    transitions: pa.Table | None = None
    table_versions: dict[str, int] = field(default_factory=dict)
    input_digest: str | None = None
    partition_plan: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    model_version: str | None = None
    #: How lookalikes were searched: cells, the largest one, recall@k on a sample.
    lookalikes: dict[str, Any] = field(default_factory=dict)
    #: Every input column with its role and the reason for it.
    column_plan: list[dict[str, str]] = field(default_factory=list)
    #: What the run did differently from its config (untracked for want of a store).
    notes: list[str] = field(default_factory=list)
    #: Outcome columns profiled per segment: column, profiles column, level counted.
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    #: Each numeric feature's standard deviation over the customers.
    spread: dict[str, float] = field(default_factory=dict)
    #: With identity on: records, entities, linked pairs, the threshold and what the model
    #: expects of it.
    identity: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_outputs(
        cls,
        *,
        run_id: str,
        config: Config,
        raw: RawInput,
        cleaned: CleanedRows,
        built: Features,
        reduced: Reduced,
        clustering: Clustering,
        model: SegmentModel,
        found: Lookalikes | None,
        exported: Exported,
        stages: list[StageRecord],
        resolved: Identity | None = None,
        outputs: dict[str, str],
        table_versions: dict[str, int],
        input_digest: str | None,
        partition_plan: dict[str, Any],
        model_version: str | None,
    ) -> RunResult:
        """The result of a training run from its steps' values."""
        return cls(
            run_id=run_id,
            config=config,
            k=clustering.k,
            silhouette=clustering.silhouette,
            sample_silhouette=clustering.sample_silhouette,
            inertia=clustering.inertia,
            sizes=clustering.sizes.tolist(),
            candidates=clustering.candidates,
            sweep_rows=clustering.sweep_rows,
            explained_variance=reduced.components.explained_ratio.tolist(),
            profiles=exported.profiles,
            stages=stages,
            outputs=outputs,
            table_versions=table_versions,
            input_digest=input_digest,
            partition_plan=partition_plan,
            model_version=model_version,
            rows_in=raw.rows,
            customers=built.rows_out,
            quarantined=cleaned.quarantined,
            quarantined_by_rule=cleaned.quarantined_by_rule,
            duplicates=cleaned.duplicates,
            imputed=cleaned.imputed,
            ids_trimmed=cleaned.ids_trimmed,
            model=model,
            transitions=exported.transitions,
            column_plan=[
                _with_identity(_with_skew(asdict(role), built.skewed), resolved)
                for role in raw.plan.roles
            ],
            spread=exported.spread,
            identity={} if resolved is None else resolved.summary(),
            outcomes=[
                {"column": o.column, "profile_column": o.profile_column, "level": o.level}
                for o in built.outcomes
            ],
            lookalikes={}
            if found is None
            else {
                "cells": found.cells,
                "largest_cell": found.largest_cell,
                "recall_at_k": found.recall_at_k,
                "top_k": config.lookalikes.top_k,
            },
        )

    def summary(self, *, engine: str) -> dict[str, Any]:
        """Everything a report needs about the run, as JSON-compatible data."""
        return {
            "run_id": self.run_id,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "engine": engine,
            "input_path": str(self.config.input.path),
            "config": self.config.model_dump(mode="json"),
            "k": self.k,
            "silhouette": self.silhouette,
            "sample_silhouette": self.sample_silhouette,
            "inertia": self.inertia,
            "sizes": self.sizes,
            "candidates": [asdict(c) for c in self.candidates],
            "sweep_rows": self.sweep_rows,
            "explained_variance": self.explained_variance,
            "rows_in": self.rows_in,
            "customers": self.customers,
            "quarantined": self.quarantined,
            "quarantined_by_rule": self.quarantined_by_rule,
            "duplicates": self.duplicates,
            "ids_trimmed": self.ids_trimmed,
            "imputed": self.imputed,
            "transitions": self.transitions.to_pylist() if self.transitions is not None else [],
            "table_versions": self.table_versions,
            "model_version": self.model_version,
            "numeric_columns": self.model.numeric_columns,
            "centroids": np.asarray(self.model.centroids_).tolist(),
            "stages": [asdict(r) for r in self.stages],
            "partition_plan": self.partition_plan,
            "lookalikes": self.lookalikes,
            "column_plan": self.column_plan,
            "outcomes": self.outcomes,
            "spread": self.spread,
            "identity": self.identity,
            "warnings": self.warnings,
        }

    @property
    def warnings(self) -> list[str]:
        """What a user should look at before trusting the segmentation."""
        found = list(self.notes)
        sweep = self.config.cluster
        if sweep.k is None and sweep.k_min < sweep.k_max and self.k == sweep.k_max:
            found.append(
                f"k = {self.k} is at the top of the range {sweep.k_min}–{sweep.k_max}: widen "
                "cluster.k_max to see whether a larger k scores better"
            )
        elif sweep.k is None and sweep.k_min < sweep.k_max and self.k == sweep.k_min:
            found.append(
                f"k = {self.k} is at the bottom of the range {sweep.k_min}–{sweep.k_max}: the "
                "silhouette favours the coarsest split; compare the sweep's other figures, or "
                "set cluster.k (or raise cluster.k_min) for finer segments"
            )
        smallest = min(self.sizes) / max(sum(self.sizes), 1)
        if sweep.min_segment_share and smallest < 1.5 * sweep.min_segment_share:
            found.append(
                f"the smallest segment holds {smallest:.1%} of the customers, near "
                f"cluster.min_segment_share ({sweep.min_segment_share:.1%})"
            )
        left_out = [
            f"{entry['column']} ({entry['reason'].split(':')[0]})"
            for entry in self.column_plan
            if entry["role"] == "ignored"
            and entry["reason"].startswith(("constant", "all null", "dates", "a date"))
        ]
        if left_out:
            found.append(f"columns left out of the features: {', '.join(left_out)}")
        if self.outcomes:
            found.append(
                "outcomes profiled per segment, not clustered: "
                + ", ".join(o["column"] for o in self.outcomes)
                + " (features.outcomes to change)"
            )
        codes = [
            entry["column"]
            for entry in self.column_plan
            if entry["role"] == "numeric feature" and "looks like a numeric code" in entry["reason"]
        ]
        if codes:
            found.append(
                f"{', '.join(codes)} look(s) like numeric codes but are used as magnitudes; list "
                "them under features.categorical if they are codes"
            )
        return found

    @property
    def moved_customers(self) -> int:
        """Customers of the previous run whose segment changed (0 without a previous run)."""
        if self.transitions is None:
            return 0
        return sum(
            row["customers"]
            for row in self.transitions.to_pylist()
            if row["from_segment"] != row["to_segment"]
        )

    @property
    def total_seconds(self) -> float:
        return sum(r.seconds for r in self.stages)


@dataclass(frozen=True)
class ScoringResult:
    """What scoring wrote."""

    run_id: str
    customers: int
    quarantined: int
    #: New customers farther from their segment's centroid than 99% of its training customers.
    beyond_training_p99: int
    outputs: dict[str, str]
    stages: list[StageRecord]
    #: Per segment: size, share, mean and median confidence, and the share of new customers
    #: beyond the training distance (``beyond_training_p99_mean``).
    segments: pa.Table
    table_versions: dict[str, int]
    #: Per number column, the cells imputed with the training medians (blanks and junk).
    imputed: dict[str, int] = field(default_factory=dict)
    #: With a model that resolved identities: new records joined to a known entity, and the
    #: new entities opened for the others (the ``links`` table says which and why).
    linked_records: int = 0
    opened_entities: int = 0


def _with_identity(entry: dict[str, str], resolved: Identity | None) -> dict[str, str]:
    """A column plan entry, saying when the identity step compares the column, and why."""
    if resolved is None or entry["column"] not in resolved.roles:
        return entry
    column = entry["column"]
    return {
        **entry,
        "reason": f"{entry['reason']}; identity compares it as {resolved.roles[column]} "
        f"({resolved.role_reasons.get(column, 'identity.columns')})",
    }


def _with_skew(entry: dict[str, str], skewed: dict[str, float]) -> dict[str, str]:
    """A column plan entry, saying when the feature was logged for its skew."""
    if entry["column"] not in skewed:
        return entry
    return {
        **entry,
        "reason": f"{entry['reason']}; skewed (skewness {skewed[entry['column']]:.1f} over every "
        "customer): its signed log is used (features.skewed: keep to use it raw)",
    }


#: Words of a column name that say its numbers are years (printed 1971, not 1,971).
YEAR_WORDS = frozenset({"year", "years", "yr", "ano", "anos", "birth", "nascimento"})


def plain_number_columns(column_plan: list[dict[str, str]]) -> set[str]:
    """Numeric features whose values read without thousands separators: years and codes."""
    found = set()
    for entry in column_plan:
        spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", entry["column"])
        words = set(re.split(r"[^0-9a-z]+", spaced.casefold()))
        if "looks like a numeric code" in entry["reason"] or words & YEAR_WORDS:
            found.add(entry["column"])
    return found


@dataclass(frozen=True)
class DedupeResult:
    """What a dedupe run found and wrote."""

    run_id: str
    records: int
    missing_ids: int
    entities: int
    linked_pairs: int
    scored_pairs: int
    threshold: float
    threshold_chosen_by: str
    expected_precision: float
    expected_recall: float
    estimated_blocking_recall: float
    refused_links: int
    blocking: list[dict[str, Any]]
    roles: list[dict[str, str]]
    events: list[dict[str, Any]]
    size_histogram: dict[str, int]
    kept_ids: int
    opened_ids: int
    outputs: dict[str, str]
    table_versions: dict[str, int]
    stages: list[StageRecord]

    @classmethod
    def from_identity(
        cls,
        *,
        run_id: str,
        records: Records,
        resolved: Identity,
        outputs: dict[str, str],
        table_versions: dict[str, int],
        stages: list[StageRecord],
    ) -> DedupeResult:
        return cls(
            run_id=run_id,
            records=records.rows_out,
            missing_ids=records.missing_ids,
            entities=resolved.entity_count,
            linked_pairs=resolved.linked_pairs,
            scored_pairs=resolved.pairs.num_rows,
            threshold=resolved.threshold.threshold,
            threshold_chosen_by=resolved.threshold.chosen_by,
            expected_precision=resolved.threshold.precision,
            expected_recall=resolved.threshold.recall,
            estimated_blocking_recall=resolved.estimated_blocking_recall,
            refused_links=resolved.refused_links,
            blocking=resolved.summary()["blocking"],
            roles=[
                {"column": c, "role": role, "reason": records.chosen_by[c]}
                for c, role in resolved.roles.items()
            ],
            events=list(resolved.events),
            size_histogram=dict(resolved.size_histogram),
            kept_ids=resolved.kept_ids,
            opened_ids=resolved.opened_ids,
            outputs=outputs,
            table_versions=table_versions,
            stages=stages,
        )

    def summary(self) -> dict[str, Any]:
        """The run as JSON-compatible data."""
        return {**asdict(self), "stages": [asdict(r) for r in self.stages]}
