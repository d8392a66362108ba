"""The dedupe run (``segmatch dedupe``): read the records, resolve them into entities, commit
the ``entities`` and ``pairs`` tables; no segmentation."""

from __future__ import annotations

from segmatch.engines.base import Engine
from segmatch.errors import DataQualityError
from segmatch.layout import run_folder, write_json
from segmatch.locations import join
from segmatch.plans.commit import commit_tables
from segmatch.plans.context import RunContext
from segmatch.plans.language import OUTPUTS, RUN_ID, Plan, Step, Values
from segmatch.results import DedupeResult
from segmatch.stages import identity
from segmatch.staging import StagedOutputs

#: The fitted identity model (Splink's settings with m and u), beside the run's summary.
IDENTITY_MODEL_FILE = "identity_model.json"


def staged_identity(
    engine: Engine, *, resolved: identity.Identity, outputs: StagedOutputs
) -> identity.Identity:
    """The entities and pairs staged for the commit."""
    identity.stage_identity(outputs, resolved)
    return resolved


RECORDS = Step(
    "records",
    identity.read_records,
    sections={"config": "input", "identity": "identity", "clean": "clean"},
)
IDENTITY = Step(
    "identity",
    identity.resolve_entities,
    needs={"records": RECORDS.result, "outputs": OUTPUTS, "run_id": RUN_ID},
    sections={"config": "identity"},
)
EXPORT = Step("export", staged_identity, needs={"resolved": IDENTITY.result, "outputs": OUTPUTS})


def finish_dedupe(context: RunContext, values: Values) -> DedupeResult:
    """Commit the entities and pairs, and write the identity model beside the run's summary."""
    records, resolved = values.of(RECORDS), values.of(IDENTITY)
    commits = commit_tables(context, id_column=records.id_column, model_version=None)
    folder = run_folder(context.outputs.root, context.run_id)
    write_json(resolved.model, join(folder, IDENTITY_MODEL_FILE), files=context.outputs.files)
    result = DedupeResult.from_identity(
        run_id=context.run_id,
        records=records,
        resolved=resolved,
        outputs={name: c.path for name, c in commits.items()},
        table_versions={name: c.version for name, c in commits.items()},
        stages=list(context.stage_records),
    )
    write_json(result.summary(), join(folder, "summary.json"), files=context.outputs.files)
    return result


def no_quality_gate(
    context: RunContext, values: Values, error: DataQualityError
) -> DataQualityError:
    """A dedupe run has no quality gate: its error is raised as it is."""
    return error


DEDUPE = Plan(
    "dedupe",
    (RECORDS, IDENTITY, EXPORT),
    finish=finish_dedupe,
    stop_for_quality=no_quality_gate,
)
