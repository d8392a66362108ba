"""The scoring run: new customers placed in a fitted model's segments, with lookalikes among
the customers of its training run."""

from __future__ import annotations

from segmatch.config import CleanConfig, Config, FeaturesConfig
from segmatch.engines.base import Engine
from segmatch.model import SegmentModel
from segmatch.plans.commit import commit_tables
from segmatch.plans.context import RunContext
from segmatch.plans.language import OUTPUTS, Plan, Ref, Step, Values
from segmatch.plans.training import INGEST, QUALITY, stop_for_quality
from segmatch.results import ScoringResult
from segmatch.stages import clean, features, identity, ingest, score

#: What the caller hands a scoring run: the fitted model, the segments table whose customers
#: are offered as lookalikes (None: no lookalikes), and that table's version to read.
FITTED_MODEL = Ref("model")
REFERENCE = Ref("reference")
REFERENCE_VERSION = Ref("reference_version")
#: The entities table of the training run, when its model resolved identities (None: no
#: linking).
KNOWN_ENTITIES = Ref("known_entities")


def clean_rows_for_model(
    engine: Engine, *, config: CleanConfig, raw: ingest.RawInput, model: SegmentModel
) -> clean.CleanedRows:
    """New customers cleaned with the imputation values the model learned: blanks, and cells
    of a number column that are not numbers, take the training medians (and are counted)."""
    return clean.clean_rows(
        engine, config=config, raw=raw, fill_values=model.fill_values_, impute_junk=True
    )


def features_for_model(
    engine: Engine,
    *,
    config: FeaturesConfig,
    cleaned: clean.CleanedRows,
    plan: ingest.ColumnPlan,
    model: SegmentModel,
) -> features.Features:
    """New customers' features with the model's one-hot levels."""
    return features.build_features(
        engine,
        config=config,
        cleaned=cleaned,
        plan=plan,
        levels=model.categorical_levels,
        spread=False,
    )


def _has_reference(config: Config, values: Values) -> bool:
    """Lookalikes are found when there is a segments table to find them in."""
    return values.resolve(REFERENCE) is not None


def _has_known_entities(config: Config, values: Values) -> bool:
    """New records are linked when the model resolved identities and its entities are there."""
    return values.resolve(KNOWN_ENTITIES) is not None


CLEAN = Step(
    "clean",
    clean_rows_for_model,
    needs={"raw": INGEST.result, "model": FITTED_MODEL},
    sections={"config": "clean"},
)
LINK = Step(
    "identity",
    identity.link_new_records,
    needs={
        "cleaned": QUALITY.result,
        "model": FITTED_MODEL,
        "known": KNOWN_ENTITIES,
        "id_column": INGEST.result.plan.id_column,
        "source": INGEST.result.source,
    },
    sections={"config": "identity"},
    when=_has_known_entities,
)
FEATURES = Step(
    "features",
    features_for_model,
    needs={"cleaned": QUALITY.result, "plan": INGEST.result.plan, "model": FITTED_MODEL},
    sections={"config": "features"},
)
SCORE = Step("score", score.apply_model, needs={"features": FEATURES.result, "model": FITTED_MODEL})
LOOKALIKES = Step(
    "lookalikes",
    score.find_lookalikes,
    needs={
        "scored": SCORE.result,
        "reference": REFERENCE,
        "reference_version": REFERENCE_VERSION,
        "id_column": INGEST.result.plan.id_column,
        "model": FITTED_MODEL,
    },
    sections={"config": "lookalikes"},
    when=_has_reference,
)
EXPORT = Step(
    "export",
    score.export_scores,
    needs={
        "outputs": OUTPUTS,
        "cleaned": CLEAN.result,
        "features": FEATURES.result,
        "scored": SCORE.result,
        "found": LOOKALIKES.result,
        "links": LINK.result,
        "id_column": INGEST.result.plan.id_column,
        "model": FITTED_MODEL,
    },
    sections={"output": "output"},
)


def finish_scoring(context: RunContext, values: Values) -> ScoringResult:
    """Commit the scores, lookalikes and quarantine the export staged."""
    exported = values.of(EXPORT)
    commits = commit_tables(context, id_column=values.of(INGEST).plan.id_column, model_version=None)
    return ScoringResult(
        run_id=context.run_id,
        customers=values.of(SCORE).rows_out,
        quarantined=values.of(CLEAN).quarantined,
        imputed=values.of(CLEAN).imputed,
        beyond_training_p99=exported.beyond_training_p99,
        linked_records=links.linked if (links := values.of(LINK)) else 0,
        opened_entities=links.opened if links else 0,
        outputs={name: c.path for name, c in commits.items()},
        stages=list(context.stage_records),
        segments=exported.by_segment,
        table_versions={name: c.version for name, c in commits.items()},
    )


SCORING = Plan(
    "scoring",
    (INGEST, CLEAN, QUALITY, LINK, FEATURES, SCORE, LOOKALIKES, EXPORT),
    finish=finish_scoring,
    stop_for_quality=stop_for_quality,
    provided=frozenset(
        ref.root for ref in (FITTED_MODEL, REFERENCE, REFERENCE_VERSION, KNOWN_ENTITIES)
    ),
)
