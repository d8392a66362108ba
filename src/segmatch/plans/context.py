"""What a run has besides its steps' values: its identity, staging area, registry, records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from segmatch.config import Config
from segmatch.engines.base import Engine
from segmatch.layout import OutputLayout
from segmatch.locations import Files
from segmatch.model import SegmentModel
from segmatch.results import StageRecord
from segmatch.staging import StagedOutputs


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
        saved = OutputLayout(self.out).model
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
    """What a run has besides its steps' values."""

    run_id: str
    config: Config
    engine: Engine
    outputs: StagedOutputs
    registry: ModelRegistry
    input_digest: str | None
    stage_records: list[StageRecord] = field(default_factory=list)
    stage_log_path: str | None = None
