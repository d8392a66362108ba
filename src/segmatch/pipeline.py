"""Runs the stages in order; timing, logging and tracking are hooks around them.

Example:
    >>> from segmatch.engines import make_engine
    >>> result = Pipeline(config, make_engine("local")).run()  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import pyarrow as pa

from segmatch._version import __version__
from segmatch.checkpoints import Checkpoints
from segmatch.config import DEFAULT_WRITE_MODES, Config, config_digest
from segmatch.engines.base import Engine
from segmatch.errors import DataQualityError, SegmatchError, StageError
from segmatch.model import SegmentModel
from segmatch.results import RunResult, StageRecord
from segmatch.stages import clean, cluster, export, features, ingest, match, reduce, scale, score
from segmatch.storage import (
    MATCH_SAMPLE_FILE,
    STAGING_FOLDER,
    SUMMARY_FILE,
    StagedOutputs,
    TableCommit,
    append_json_line,
    input_digest,
    run_folder,
    write_arrow,
    write_json,
)

logger = logging.getLogger("segmatch")

MODEL_FILE = "model.json"
STAGES = ("ingest", "clean", "features", "scale", "reduce", "cluster", "match", "export")
#: Stages whose results may be checkpointed: those that can cost more to recompute than to write
#: and read back (de-duplication and exact medians, k-means, nearest neighbours), when they took
#: ``output.checkpoint_min_seconds``. The others are single passes over their input, cheaper to
#: redo than to store (on Spark a write is a job).
CHECKPOINTED = ("clean", "cluster", "match")


class StageHook(Protocol):
    """Called around the run and each stage; hooks never change what a stage computes."""

    def before_run(self, *, run_id: str, config: Config) -> None: ...

    def before_stage(self, *, run_id: str, stage: str) -> None: ...

    def after_stage(self, *, record: StageRecord) -> None: ...

    def after_run(
        self, *, run_id: str, result: RunResult | None, error: BaseException | None
    ) -> None: ...


class StageLog:
    """Logs each stage's line and appends its JSON record to ``stage_log.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[StageRecord] = []

    def before_run(self, *, run_id: str, config: Config) -> None:
        logger.info("run %s started (engine %s)", run_id, config.engine)

    def before_stage(self, *, run_id: str, stage: str) -> None:
        return None

    def after_stage(self, *, record: StageRecord) -> None:
        self.records.append(record)
        logger.info(record.line())
        append_json_line(self.path, asdict(record))

    def after_run(
        self, *, run_id: str, result: RunResult | None, error: BaseException | None
    ) -> None:
        if error is not None:
            logger.info("run %s failed: %s", run_id, error)

    def as_arrow(self) -> pa.Table:
        return pa.Table.from_pylist([asdict(r) for r in self.records])


class ModelRegistry(Protocol):
    """Where models live: the one new segment ids are matched to, and where a fitted one goes.

    ``register`` runs before the outputs are written, so they can name the model's version.
    """

    def previous(self) -> SegmentModel | None: ...

    def register(self, *, run_id: str, model_path: Path, model: SegmentModel) -> str | None: ...


class FolderRegistry:
    """Untracked runs: the previous model is the output folder's; nothing gets a version."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def previous(self) -> SegmentModel | None:
        saved = self.out / MODEL_FILE
        return SegmentModel.load(saved) if saved.exists() else None

    def register(self, *, run_id: str, model_path: Path, model: SegmentModel) -> str | None:
        return None


#: The key each output table is merged on (``output.modes: {table: merge}``).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "segments": ("{id}",),
    "matches": ("{id}", "rank"),
    "profiles": ("segment",),
    "stage_log": ("run_id", "stage"),
    "scores": ("{id}",),
    "lookalikes": ("{id}", "rank"),
}

Result = TypeVar("Result")


class Pipeline:
    """One run of the whole job on one engine."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        *,
        hooks: Sequence[StageHook] = (),
        run_id: str | None = None,
        registry: ModelRegistry | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.run_id = run_id or uuid.uuid4().hex
        self.out = Path(config.output.path)
        self.registry = registry if registry is not None else FolderRegistry(self.out)
        self.stage_log = StageLog(self.out / "stage_log.jsonl")
        self.hooks: list[StageHook] = [self.stage_log, *hooks]
        self.checkpoints = Checkpoints(
            self.out / STAGING_FOLDER,
            engine,
            enabled=config.output.checkpoints,
            keep_runs=config.output.keep_runs,
        )

    def run(self) -> RunResult:
        """Run every stage; on failure nothing but the quarantine reaches the output folder."""
        source = Path(self.config.input.path)
        self.input_digest = input_digest(source) if source.exists() else None
        for hook in self.hooks:
            hook.before_run(run_id=self.run_id, config=self.config)
        outputs = StagedOutputs(self.out, self.run_id)
        try:
            result = self._run_stages(outputs)
        except BaseException as error:
            for hook in self.hooks:
                hook.after_run(run_id=self.run_id, result=None, error=error)
            raise
        finally:
            outputs.discard()
        self.checkpoints.finish(self.run_id)
        for hook in self.hooks:
            hook.after_run(run_id=self.run_id, result=result, error=None)
        return result

    def _run_stages(self, outputs: StagedOutputs) -> RunResult:
        cfg, engine = self.config, self.engine
        section = cfg.model_dump(mode="json")
        keys: dict[str, str] = {}
        keys["ingest"] = Checkpoints.key(
            "ingest", self.input_digest, section["input"], section["features"], section["clean"]
        )
        raw = self._stage(
            "ingest",
            lambda: ingest.read_input(engine, cfg.input, features=cfg.features, clean=cfg.clean),
            key=keys["ingest"],
        )
        keys["clean"] = Checkpoints.key("clean", keys["ingest"], section["clean"])
        cleaned = self._stage(
            "clean", lambda: clean.clean_rows(engine, raw, cfg.clean), key=keys["clean"]
        )
        self._check_quality(cleaned, raw, outputs)
        keys["features"] = Checkpoints.key("features", keys["clean"], section["features"])
        built = self._stage(
            "features",
            lambda: features.build_features(engine, cleaned, raw.plan, cfg.features),
            key=keys["features"],
        )
        keys["scale"] = Checkpoints.key("scale", keys["features"], section["scale"])
        scaled = self._stage(
            "scale", lambda: scale.scale_features(engine, built, cfg.scale), key=keys["scale"]
        )
        keys["reduce"] = Checkpoints.key("reduce", keys["scale"], section["reduce"])
        reduced = self._stage(
            "reduce",
            lambda: reduce.reduce_dimensions(engine, scaled, cfg.reduce),
            key=keys["reduce"],
        )
        keys["cluster"] = Checkpoints.key("cluster", keys["reduce"], section["cluster"])
        clustering = self._stage(
            "cluster",
            lambda: cluster.cluster_customers(engine, reduced, cfg.cluster),
            key=keys["cluster"],
        )
        clustering = cluster.keep_previous_ids(
            engine,
            clustering,
            self.registry.previous(),
            reduced=reduced,
            scaled=scaled,
            feature_names=built.names,
        )
        keys["match"] = Checkpoints.key(
            "match", keys["cluster"], section["match"], clustering.segment_ids.tolist()
        )
        model = _fitted_model(
            plan=raw.plan,
            cleaned=cleaned,
            built=built,
            scaled=scaled,
            reduced=reduced,
            clustering=clustering,
            config=cfg,
        )
        staged_model = model.save(
            outputs.staging / MODEL_FILE, run_id=self.run_id, segmatch_version=__version__
        )
        version = self.registry.register(run_id=self.run_id, model_path=staged_model, model=model)
        matches = (
            self._stage(
                "match",
                lambda: match.match_lookalikes(
                    engine, clustering, id_column=raw.plan.id_column, config=cfg.match
                ),
                key=keys["match"],
            )
            if cfg.match.enabled
            else None
        )
        exported = self._stage(
            "export",
            lambda: export.export_results(
                engine,
                outputs,
                cleaned=cleaned,
                features=built,
                clustering=clustering,
                matches=matches,
                id_column=raw.plan.id_column,
                model_version=version,
            ),
        )
        write_arrow(self.stage_log.as_arrow(), outputs.path_for("stage_log") / "part-00000.parquet")
        commits = self._commit(outputs, id_column=raw.plan.id_column, model_version=version)
        model_path = self.out / MODEL_FILE
        os.replace(staged_model, model_path)
        result = RunResult(
            run_id=self.run_id,
            config=cfg,
            k=clustering.k,
            silhouette=clustering.silhouette,
            sample_silhouette=clustering.sample_silhouette,
            inertia=clustering.inertia,
            sizes=clustering.sizes.tolist(),
            candidates=clustering.candidates,
            sweep_rows=clustering.sweep_rows,
            explained_variance=reduced.components.explained_ratio.tolist(),
            profiles=exported.profiles,
            stages=list(self.stage_log.records),
            outputs={
                **{name: c.path for name, c in commits.items()},
                "model": model_path,
                "stage_log_jsonl": self.stage_log.path,
            },
            table_versions={name: c.version for name, c in commits.items()},
            input_digest=self.input_digest,
            partition_plan=self.engine.partition_plan(),
            model_version=version,
            rows_in=raw.rows,
            customers=built.rows_out,
            quarantined=cleaned.quarantined,
            quarantined_by_rule=cleaned.quarantined_by_rule,
            duplicates=cleaned.duplicates,
            imputed=cleaned.imputed,
            model=model,
            transitions=exported.transitions,
        )
        self._record_run(result, matches=matches, built=built)
        return result

    def _record_run(
        self, result: RunResult, *, matches: match.Matches | None, built: features.Features
    ) -> None:
        """Keep the run's summary and a lookalike sample beside the tables, for its report."""
        folder = run_folder(self.out, self.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        if matches is not None:
            sample = export.lookalike_sample(
                self.engine, matches, built, id_column=result.model.id_column
            )
            write_arrow(sample, folder / MATCH_SAMPLE_FILE)
        write_json(run_summary(result, engine=self.engine.name), folder / SUMMARY_FILE)

    def _check_quality(
        self, cleaned: clean.CleanedRows, raw: ingest.RawInput, outputs: StagedOutputs
    ) -> None:
        try:
            clean.check_quality(cleaned, self.config.clean, source=raw.source)
        except DataQualityError as error:
            export.write_quarantine(self.engine, cleaned, outputs)
            placed = self._commit(outputs, id_column=raw.plan.id_column, model_version=None)
            raise DataQualityError(
                f"{error} The quarantined rows, each with the rule it broke, are in the Delta "
                f"table {str(placed['quarantine'].path)!r}."
            ) from None

    def _commit(
        self, outputs: StagedOutputs, *, id_column: str, model_version: str | None
    ) -> dict[str, TableCommit]:
        """Commit the staged tables; the same batch (config + input) is committed only once."""
        keys = {
            table: tuple(part.format(id=id_column) for part in parts)
            for table, parts in MERGE_KEYS.items()
        }
        modes = {table: self.config.output.mode(table) for table in DEFAULT_WRITE_MODES}
        batch = hashlib.sha256(f"{config_digest(self.config)}:{self.input_digest}".encode())
        return outputs.commit(
            modes=modes,
            keys=keys,
            batch_id=batch.hexdigest()[:24] if self.input_digest else None,
            metadata={"segmatch.model_version": model_version} if model_version else {},
        )

    def _stage(self, name: str, compute: Callable[[], Result], *, key: str | None = None) -> Result:
        """Run one stage (or reuse its checkpoint under ``key``), timed and logged by hooks."""
        for hook in self.hooks:
            hook.before_stage(run_id=self.run_id, stage=name)
        started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        start = time.perf_counter()
        if name not in CHECKPOINTED:
            key = None
        result = self.checkpoints.load(key) if key else None
        reused = result is not None
        if not reused:
            try:
                result = compute()
            except SegmatchError:
                raise
            except Exception as error:
                raise StageError(name, error) from error
            if key and time.perf_counter() - start >= self.config.output.checkpoint_min_seconds:
                self.checkpoints.save(key, result)
        record = StageRecord(
            run_id=self.run_id,
            stage=name,
            started_at=started_at,
            seconds=time.perf_counter() - start,
            rows_in=getattr(result, "rows_in", getattr(result, "rows_out", 0)),
            rows_out=result.rows_out,
            partitions=self.engine.partitions,
            peak_memory_mb=peak_memory_mb(),
            reused=reused,
        )
        for hook in self.hooks:
            hook.after_stage(record=record)
        return result


class ScoringRun(Pipeline):
    """New customers through the run's own ingest, clean and features code, then the model."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        model: SegmentModel,
        *,
        segments: Path | None,
        hooks: Sequence[StageHook] = (),
        run_id: str | None = None,
    ) -> None:
        super().__init__(config, engine, hooks=hooks, run_id=run_id)
        self.model = model
        self.segments = segments

    def _run_stages(self, outputs: StagedOutputs) -> ScoringResult:
        cfg, engine, model = self.config, self.engine, self.model
        raw = self._stage(
            "ingest",
            lambda: ingest.read_input(engine, cfg.input, features=cfg.features, clean=cfg.clean),
        )
        cleaned = self._stage(
            "clean",
            lambda: clean.clean_rows(engine, raw, cfg.clean, fill_values=model.fill_values_),
        )
        self._check_quality(cleaned, raw, outputs)
        built = self._stage(
            "features",
            lambda: features.build_features(
                engine, cleaned, raw.plan, cfg.features, levels=model.categorical_levels
            ),
        )
        scored = self._stage("score", lambda: score.apply_model(engine, built, model))
        id_column = raw.plan.id_column
        engine.write_parquet(
            engine.scores_frame(scored.matrix, id_column=id_column),
            folder=outputs.path_for("scores"),
        )
        if self.segments is not None:
            reference = engine.read(
                path=self.segments,
                fmt="delta" if (self.segments / "_delta_log").is_dir() else "parquet",
                types={},
                separator=",",
            )
            lookalikes = self._stage(
                "match",
                lambda: score.find_lookalikes(
                    engine, scored, reference, id_column=id_column, top_k=cfg.match.top_k
                ),
            )
            engine.write_parquet(lookalikes.frame, folder=outputs.path_for("lookalikes"))
        export.write_quarantine(engine, cleaned, outputs)
        return ScoringResult(
            run_id=self.run_id,
            customers=scored.rows_out,
            quarantined=cleaned.quarantined,
            outputs={
                name: c.path
                for name, c in self._commit(
                    outputs, id_column=id_column, model_version=None
                ).items()
            },
            stages=list(self.stage_log.records),
        )


@dataclass(frozen=True)
class ScoringResult:
    """What scoring wrote."""

    run_id: str
    customers: int
    quarantined: int
    outputs: dict[str, Path]
    stages: list[StageRecord]


def run_summary(result: RunResult, *, engine: str) -> dict[str, Any]:
    """Everything a report needs about a run, as JSON-compatible data."""
    return {
        "run_id": result.run_id,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "engine": engine,
        "input_path": str(result.config.input.path),
        "config": result.config.model_dump(mode="json"),
        "k": result.k,
        "silhouette": result.silhouette,
        "sample_silhouette": result.sample_silhouette,
        "inertia": result.inertia,
        "sizes": result.sizes,
        "candidates": [asdict(c) for c in result.candidates],
        "sweep_rows": result.sweep_rows,
        "explained_variance": result.explained_variance,
        "rows_in": result.rows_in,
        "customers": result.customers,
        "quarantined": result.quarantined,
        "quarantined_by_rule": result.quarantined_by_rule,
        "duplicates": result.duplicates,
        "imputed": result.imputed,
        "transitions": result.transitions.to_pylist() if result.transitions is not None else [],
        "table_versions": result.table_versions,
        "model_version": result.model_version,
        "numeric_columns": result.model.numeric_columns,
        "centroids": np.asarray(result.model.centroids_).tolist(),
        "stages": [asdict(r) for r in result.stages],
        "partition_plan": result.partition_plan,
    }


def peak_memory_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def _fitted_model(
    *,
    plan: ingest.ColumnPlan,
    cleaned: clean.CleanedRows,
    built: features.Features,
    scaled: scale.Scaled,
    reduced: reduce.Reduced,
    clustering: cluster.Clustering,
    config: Config,
) -> SegmentModel:
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
        config_=config.model_dump(mode="json"),
    )
