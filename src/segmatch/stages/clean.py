"""validate / clean: quarantine rows that break a rule, resolve duplicates, impute gaps."""

from __future__ import annotations

from dataclasses import dataclass

from segmatch.config import CleanConfig
from segmatch.engines.base import Engine, Frame
from segmatch.engines.types import QUARANTINE_RULE, Rule
from segmatch.errors import DataQualityError
from segmatch.stages.ingest import RawInput

#: The largest magnitude a feature value may have (its square must stay finite, summed).
MAX_MAGNITUDE = 1e150


@dataclass(frozen=True)
class CleanedRows:
    """Valid rows (deduplicated and imputed), the quarantine, and what happened to each."""

    frame: Frame
    quarantine: Frame
    rows_in: int
    rows_out: int
    quarantined: int
    quarantined_by_rule: dict[str, int]
    duplicates: int
    imputed: dict[str, int]
    fill_values: dict[str, float]
    ids_trimmed: int = 0

    @property
    def quarantined_share(self) -> float:
        return self.quarantined / self.rows_in if self.rows_in else 0.0


def validation_rules(raw: RawInput) -> list[Rule]:
    """The rules for this input, in the order a row is checked against them."""
    plan = raw.plan
    rules = [Rule("null_id", plan.id_column, "null_id")]
    rules += [Rule("missing_value", column, "not_null") for column in plan.required]
    rules += [Rule("not_numeric", column, "numeric") for column in plan.numeric_as_text]
    rules += [Rule("not_finite", column, "finite") for column in plan.validated_numeric]
    # Past this magnitude a value's square overflows the moments that scaling and PCA sum.
    rules += [
        Rule("too_large", column, "range", low=-MAX_MAGNITUDE, high=MAX_MAGNITUDE)
        for column in plan.features
        if column in plan.validated_numeric
    ]
    rules += [
        Rule("out_of_range", column, "range", low=low, high=high)
        for column, (low, high) in plan.ranges.items()
    ]
    return rules


def clean_rows(
    engine: Engine,
    *,
    config: CleanConfig,
    raw: RawInput,
    fill_values: dict[str, float] | None = None,
) -> CleanedRows:
    """Split off bad rows, then deduplicate and impute what is left.

    Missing numeric values (null, blank, NaN) are imputed with the column's median (or mean);
    missing categories become their own level. Duplicate ids are resolved only for a customer
    table: in a transactions table an id repeats by nature. ``fill_values`` (a fitted model's)
    replace the values learned from these rows, as when scoring new customers.
    """
    plan = raw.plan
    frame, ids_trimmed = raw.frame, 0
    if config.trim_ids:
        frame, ids_trimmed = engine.trim_text(frame, column=plan.id_column)
    valid, quarantine = engine.split_quarantine(frame, rules=validation_rules(raw))
    by_rule = engine.column_stats(
        quarantine, numeric=[], categorical=[QUARANTINE_RULE], center="median"
    ).levels[QUARANTINE_RULE]
    quarantined = sum(by_rule.values())
    rows_out = raw.rows - quarantined
    valid = engine.cast_to_float(valid, columns=plan.validated_numeric)
    duplicates = 0
    if plan.transactions is None and rows_out:
        valid, kept = engine.deduplicate(
            valid,
            id_column=plan.id_column,
            keep=config.duplicates.keep,
            order_by=config.duplicates.order_by,
        )
        duplicates, rows_out = rows_out - kept, kept
    imputed: dict[str, int] = {}
    if plan.transactions is None:
        stats = engine.column_stats(
            valid, numeric=plan.features, categorical=plan.categorical, center=config.impute
        )
        imputed = {column: n for column, n in stats.nulls.items() if n}
        fill_values = stats.centers if fill_values is None else fill_values
        valid = engine.fill_missing(valid, numeric=fill_values, categorical=plan.categorical)
    return CleanedRows(
        frame=valid,
        quarantine=quarantine,
        rows_in=raw.rows,
        rows_out=rows_out,
        quarantined=quarantined,
        quarantined_by_rule=by_rule,
        duplicates=duplicates,
        imputed=imputed,
        fill_values=fill_values or {},
        ids_trimmed=ids_trimmed,
    )


def check_quality(
    engine: Engine, *, config: CleanConfig, cleaned: CleanedRows, source: str
) -> None:
    """Stop the run when too many rows were quarantined."""
    summary = ", ".join(f"{rule}: {n:,}" for rule, n in sorted(cleaned.quarantined_by_rule.items()))
    if cleaned.rows_out == 0:
        raise DataQualityError(
            f"every row of {source!r} ({cleaned.rows_in:,}) was quarantined ({summary}); "
            "nothing is left to segment"
        )
    if cleaned.quarantined_share > config.max_bad_share:
        raise DataQualityError(
            f"{cleaned.quarantined:,} of {cleaned.rows_in:,} rows of {source!r} "
            f"({cleaned.quarantined_share:.1%}) broke a validation rule ({summary}), more than "
            f"clean.max_bad_share={config.max_bad_share:.1%}; no segment output was written"
        )
