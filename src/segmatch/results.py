"""What a run produced: the per-stage records and the run's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from segmatch.config import Config
from segmatch.model import SegmentModel
from segmatch.stages.cluster import Candidate


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
    outputs: dict[str, Path]
    rows_in: int
    customers: int
    quarantined: int
    quarantined_by_rule: dict[str, int]
    duplicates: int
    imputed: dict[str, int]
    model: SegmentModel
    transitions: pa.Table | None = None
    table_versions: dict[str, int] = field(default_factory=dict)
    input_digest: str | None = None
    partition_plan: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    model_version: str | None = None

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
