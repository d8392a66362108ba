"""Runs a plan's steps in order; timing, logging, checkpoints and tracking happen around them.

The runner knows no stage: :mod:`segmatch.plans` declares what a training or a scoring run
does. For each step it gathers the values the step needs, derives the step's checkpoint key
from theirs and from its config sections, reuses a checkpoint whose key matches, and calls the
hooks before and after every stage.

Example:
    >>> from segmatch.engines import make_engine
    >>> result = Pipeline(config, make_engine("local")).run()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import resource
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from segmatch.checkpoints import Checkpoints
from segmatch.config import Config
from segmatch.engines.base import Engine
from segmatch.errors import (
    DataQualityError,
    PlanError,
    RunFailedError,
    SegmatchError,
    StageError,
)
from segmatch.layout import (
    ERROR_LOG_FILE,
    RUN_LOG_FILE,
    STAGE_LOG_FILE,
    OutputLayout,
    run_folder,
)
from segmatch.locations import Files, is_table_name, join
from segmatch.plans.context import FolderRegistry, ModelRegistry, RunContext
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
from segmatch.plans.training import IDENTITY, TRAINING
from segmatch.progress import library_log
from segmatch.results import StageRecord, stage_log_lines
from segmatch.staging import StagedOutputs
from segmatch.storage import input_digest, table_digest

logger = logging.getLogger("segmatch")

#: The stages of a training run with the default config: identity, off by default, left out.
STAGES = tuple(step.name for step in TRAINING.stages if step is not IDENTITY)
CHECKPOINTED = TRAINING.checkpointed


class StageHook(Protocol):
    """What a hook may implement; the runner calls only the methods a hook defines.

    ``after_stage`` gets the stage's record and, when the stage failed, its error.
    """

    def before_run(self, *, run_id: str, config: Config) -> None: ...

    def before_stage(self, *, run_id: str, stage: str) -> None: ...

    def after_stage(self, *, record: StageRecord, error: BaseException | None) -> None: ...

    def after_run(self, *, run_id: str, result: Any, error: BaseException | None) -> None: ...


class StageLog:
    """Logs each stage's line and keeps the run's JSON records in its own ``stage_log.jsonl``,
    written whole after each stage (one writer per file: object storage cannot append)."""

    def __init__(self, path: str, files: Files) -> None:
        self.path = path
        self.files = files
        self.records: list[StageRecord] = []

    def before_run(self, *, run_id: str, config: Config) -> None:
        logger.info("run %s started (engine %s)", run_id, config.engine)

    def after_stage(self, *, record: StageRecord, error: BaseException | None) -> None:
        if error is not None:
            return
        self.records.append(record)
        logger.info(record.line())
        self.files.write_text(self.path, stage_log_lines(self.records))


class Pipeline:
    """One run of a plan (training by default) on one engine.

    ``provided`` adds values a plan's steps may need besides the run's own (scoring: the
    fitted ``model`` and the ``reference`` segments table).
    """

    def __init__(
        self,
        config: Config,
        engine: Engine,
        *,
        plan: Plan = TRAINING,
        hooks: Sequence[object] = (),
        run_id: str | None = None,
        registry: ModelRegistry | None = None,
        provided: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.plan = plan
        self.run_id = run_id or uuid.uuid4().hex
        self.out = config.output.path
        self.files = Files(config.storage_options)
        self.registry = registry if registry is not None else FolderRegistry(self.out, self.files)
        self.layout = OutputLayout(self.out)
        self.stage_log = StageLog(
            join(run_folder(self.out, self.run_id), STAGE_LOG_FILE), self.files
        )
        # Any object with some of StageHook's methods: the runner calls those it defines.
        self.hooks: list[object] = [self.stage_log, *hooks]
        self.provided = dict(provided or {})
        if set(self.provided) != plan.provided:
            raise PlanError(
                f"plan {plan.name!r} takes the values {sorted(plan.provided)}; given "
                f"{sorted(self.provided)}"
            )
        self.checkpoints = Checkpoints(
            self.layout.staging,
            engine,
            files=Files(engine.storage_options),
            enabled=config.output.checkpoints,
            keep_runs=config.output.keep_runs,
        )

    def _input_digest(self) -> str | None:
        """What makes this input "the same batch", from metadata (None: no input there)."""
        source, version = self.config.input.path, self.config.input.version
        if is_table_name(source):
            latest = self.engine.table_version(source)
            if latest is None:
                return None
            return table_digest(source, latest if version is None else version)
        if not self.files.exists(source):
            return None
        return input_digest(source, version=version, files=self.files)

    def run(self) -> Any:
        """Run every step, then the plan's finish; on failure only a quarantine is committed."""
        digest = self._input_digest()
        self._call("before_run", run_id=self.run_id, config=self.config)
        self.checkpoints.begin(self.run_id)
        context = RunContext(
            run_id=self.run_id,
            config=self.config,
            engine=self.engine,
            outputs=StagedOutputs(
                self.out, self.run_id, files=self.files, tables_in=self.config.output.tables_in
            ),
            registry=self.registry,
            input_digest=digest,
            stage_records=self.stage_log.records,
            stage_log_path=self.stage_log.path,
        )
        values = self._run_values(context)
        keys: dict[str, str] = {INPUT_DIGEST.root: digest or ""}
        step_name = "starting"
        try:
            with self.engine.run_scope(), self.engine.tagged_jobs(f"segmatch-run-{self.run_id}"):
                try:
                    for step in self.plan.steps:
                        step_name = f"stage {step.name!r}" if step.stage else f"step {step.name!r}"
                        self._run_step(step, values, keys)
                except DataQualityError as error:
                    raise self.plan.stop_for_quality(context, values, error) from None
                step_name = "the commit of its outputs"
                result = self.plan.finish(context, values)
        except BaseException as error:
            self._call("after_run", run_id=self.run_id, result=None, error=error)
            self._write_library_log()
            unexpected = isinstance(error, Exception) and not isinstance(error, SegmatchError)
            if unexpected or isinstance(error, StageError):
                raise RunFailedError(
                    self.run_id, step_name, error, self._write_traceback(error)
                ) from error
            raise
        finally:
            context.outputs.discard()
        self.checkpoints.finish(self.run_id)
        self._call("after_run", run_id=self.run_id, result=result, error=None)
        self._write_library_log()
        return result

    def _write_library_log(self) -> None:
        """What other libraries logged during the run, kept in its folder (the CLI keeps it off
        the terminal)."""
        captured = library_log()
        text = captured.take() if captured is not None else ""
        if not text:
            return
        location = join(run_folder(self.out, self.run_id), RUN_LOG_FILE)
        try:
            self.files.write_text(location, text)
        except Exception:  # the run's own outcome is the one to report
            logger.warning("could not write the library log of run %s to %s", self.run_id, location)

    def _write_traceback(self, error: BaseException) -> str | None:
        """Put the failure's whole traceback in the run's folder; return where (or None)."""
        location = join(run_folder(self.out, self.run_id), ERROR_LOG_FILE)
        try:
            self.files.write_text(location, "".join(traceback.format_exception(error)))
        except Exception:  # the run's own error is the one to report
            logger.warning("could not write the traceback of run %s to %s", self.run_id, location)
            return None
        return location

    def _run_values(self, context: RunContext) -> Values:
        """The values every step may need before any step ran: the run's own."""
        return Values(
            {
                RUN_ID.root: context.run_id,
                OUTPUTS.root: context.outputs,
                REGISTRY.root: context.registry,
                INPUT_DIGEST.root: context.input_digest,
                **self.provided,
            },
            lazy={PREVIOUS_MODEL.root: self.registry.previous},
        )

    def _run_step(self, step: Step[Any], values: Values, keys: dict[str, str]) -> None:
        if step.when is not None and not step.when(self.config, values):
            values[step.name] = None
            return
        arguments = {name: values.resolve(ref) for name, ref in step.needs.items()}
        arguments |= {name: self._section(section) for name, section in step.sections.items()}
        key = Checkpoints.key(
            step.name,
            *(keys.get(root, "") for root in step.roots),
            *(self._section_json(section) for section in step.sections.values()),
        )
        if not step.stage:
            result = step.compute(self.engine, **arguments)
        else:
            result = self._stage(
                step.name,
                lambda: step.compute(self.engine, **arguments),
                key=key if step.checkpoint else None,
            )
        if step.key_of is not None:
            key = Checkpoints.key(
                step.name, *(keys.get(root, "") for root in step.roots), step.key_of(result)
            )
        keys[step.name] = key
        values[step.name] = result

    def _section(self, section: str) -> Any:
        return self.config if section == WHOLE_CONFIG else getattr(self.config, section)

    def _section_json(self, section: str) -> Any:
        return self._section(section).model_dump(mode="json")

    def _stage(self, name: str, compute: Callable[[], Any], *, key: str | None) -> Any:
        """Run one stage (or reuse its checkpoint under ``key``), timed and logged by hooks."""
        with self.engine.tagged_jobs(f"segmatch-{name}"):
            self._call("before_stage", run_id=self.run_id, stage=name)
            started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
            start = time.perf_counter()
            result = self.checkpoints.load(key) if key else None
            reused = result is not None
            if not reused:
                try:
                    result = compute()
                except BaseException as error:
                    record = self._record(name, started_at, start, result=None, reused=False)
                    self._call("after_stage", record=record, error=error)
                    if isinstance(error, SegmatchError) or not isinstance(error, Exception):
                        raise
                    raise StageError(name, error) from error
                elapsed = time.perf_counter() - start
                if key and elapsed >= self.config.output.checkpoint_min_seconds:
                    self.checkpoints.save(key, result)
            record = self._record(name, started_at, start, result=result, reused=reused)
            self._call("after_stage", record=record, error=None)
        return result

    def _record(
        self, name: str, started_at: str, start: float, *, result: Any, reused: bool
    ) -> StageRecord:
        rows_out = getattr(result, "rows_out", 0)
        return StageRecord(
            run_id=self.run_id,
            stage=name,
            started_at=started_at,
            seconds=time.perf_counter() - start,
            rows_in=getattr(result, "rows_in", rows_out),
            rows_out=rows_out,
            partitions=self.engine.partitions,
            peak_memory_mb=peak_memory_mb(),
            reused=reused,
        )

    def _call(self, hook_name: str, **arguments: Any) -> None:
        for hook in self.hooks:
            method = getattr(hook, hook_name, None)
            if method is not None:
                method(**arguments)


def peak_memory_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0
