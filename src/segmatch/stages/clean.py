"""validate / clean: quarantine rows that break a rule, resolve duplicates, impute gaps."""

from __future__ import annotations

from dataclasses import dataclass

from segmatch.config import CleanConfig
from segmatch.encoding import MISSING_LEVEL
from segmatch.engines.base import Engine, Frame
from segmatch.engines.expressions import any_of, col, lit, rows, when
from segmatch.engines.types import QUARANTINE_COLUMN, QUARANTINE_RULE, Rule
from segmatch.errors import DataQualityError
from segmatch.stages.ingest import RawInput
from segmatch.stages.statistics import column_stats

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


def validation_rules(raw: RawInput, *, impute_junk: bool = False) -> list[Rule]:
    """The rules for this input, in the order a row is checked against them (``impute_junk``:
    a cell that is not a number is imputed, not quarantined)."""
    plan = raw.plan
    rules = [Rule("null_id", plan.id_column, "null_id")]
    rules += [Rule("missing_value", column, "not_null") for column in plan.required]
    if not impute_junk:
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
    impute_junk: bool = False,
) -> CleanedRows:
    """Split off bad rows, then deduplicate and impute what is left.

    Missing numeric values (null, blank, NaN) are imputed with the column's median (or mean);
    missing categories become their own level. Duplicate ids are resolved only for a customer
    table: in a transactions table an id repeats by nature. ``fill_values`` (a fitted model's)
    replace the values learned from these rows, as when scoring new customers; with
    ``impute_junk`` a number column's cells that are not numbers are imputed like blanks (and
    counted with them) instead of quarantined.
    """
    plan = raw.plan
    frame, ids_trimmed = raw.frame, 0
    if config.trim_ids and engine.schema(frame)[plan.id_column] == "string":
        # Counted by the ingest's pass over every row.
        frame = engine.with_columns(frame, {plan.id_column: col(plan.id_column).strip()})
        ids_trimmed = raw.ids_to_trim
    valid, quarantine = split_quarantine(
        engine, frame, validation_rules(raw, impute_junk=impute_junk)
    )
    counts = engine.aggregate(quarantine, {"rows": rows()}, by=[QUARANTINE_RULE])
    by_rule = {
        row[QUARANTINE_RULE]: row["rows"]
        for row in engine.to_arrow(counts, columns=[QUARANTINE_RULE, "rows"]).to_pylist()
    }
    quarantined = sum(by_rule.values())
    rows_out = raw.rows - quarantined
    valid = engine.with_columns(
        valid, {c: col(c).as_number().nan_to_null() for c in plan.validated_numeric}
    )
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
        stats = column_stats(
            engine, valid, numeric=plan.features, categorical=plan.categorical, center=config.impute
        )
        imputed = {column: n for column, n in stats.nulls.items() if n}
        fill_values = stats.centers if fill_values is None else fill_values
        filled = {c: col(c).fill_null(value) for c, value in fill_values.items()}
        filled |= {c: col(c).as_text().fill_null(MISSING_LEVEL) for c in plan.categorical}
        # Not held: the fill is a projection over the deduplicated rows, and the two passes
        # that read it (scaling, then the reduced matrix) cost less than holding it again.
        valid = engine.with_columns(valid, filled)
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


def split_quarantine(engine: Engine, frame: Frame, rules: list[Rule]) -> tuple[Frame, Frame]:
    """(rows breaking no rule, rows breaking one, marked with its first rule's name and
    column). The quarantine's rows are held, then marked: they are a few, which its counts and
    the commit both read, and which would otherwise test every rule on every row again. Marked
    after holding, not before: on Spark, the filter and the two marks (each a choice among
    every rule) generated as one step made a method of 10 KB, past the 8,000 bytes the JVM
    compiles, which it then ran in its bytecode interpreter (5M rows: 5.5 s against 1.0-1.6 s)."""
    kinds = engine.schema(frame)
    broken = [(rule, rule.broken(kinds)) for rule in rules]
    any_broken = any_of([condition for _, condition in broken])
    marks = {
        QUARANTINE_RULE: when([(c, rule.name) for rule, c in broken], lit(None).as_text()),
        QUARANTINE_COLUMN: when([(c, rule.column) for rule, c in broken], lit(None).as_text()),
    }
    valid = engine.filter(frame, any_broken.not_())
    return valid, engine.with_columns(engine.hold(engine.filter(frame, any_broken)), marks)
