"""The column plan: what each input column is for — id, feature, ordering, checked, ignored —
and why, decided before any work and checked against the input's schema."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from segmatch.config import CleanConfig, FeaturesConfig, InputConfig, TransactionsConfig
from segmatch.engines.base import Engine, Frame
from segmatch.engines.expressions import col
from segmatch.engines.types import TransactionColumns
from segmatch.errors import (
    ColumnNotFoundError,
    ColumnTypeError,
    ConfigError,
    InputError,
)
from segmatch.stages.column_facts import (
    MOST,
    ColumnFacts,
    TextFacts,
    date_reading,
    name_says_outcome,
    positive_level,
)

#: Customer behaviour computed from a transactions table (see the features stage).
BEHAVIOUR_FEATURES = (
    "recency_days",
    "frequency",
    "monetary_total",
    "monetary_avg",
    "tenure_days",
    "return_share",
)
CATEGORY_FEATURE = "distinct_categories"

#: A text column is a numeric feature with a few bad values only if most values parse.
MIN_PARSED_SHARE = 0.5
#: The id column made from row positions when ``input.id_column`` is null.
ROW_NUMBER_COLUMN = "row_number"
#: A numeric column of at most this many integers counting from 1 may be a code (1 = north…).
MAX_CODE_VALUES = 12


@dataclass(frozen=True)
class ColumnRole:
    """One input column: what the run does with it, and why."""

    column: str
    kind: str
    role: str
    reason: str


@dataclass(frozen=True)
class ColumnPlan:
    """What each input column is for, checked against the input's schema; ``roles`` accounts
    for every column of the input, in its order."""

    id_column: str
    validated_numeric: tuple[str, ...]
    numeric_as_text: tuple[str, ...]
    required: tuple[str, ...]
    features: tuple[str, ...]
    log: tuple[str, ...]
    categorical: tuple[str, ...]
    ranges: dict[str, tuple[float | None, float | None]]
    transactions: TransactionColumns | None
    roles: tuple[ColumnRole, ...] = ()
    #: The input's rows, counted with the column facts.
    rows: int = 0
    outcomes: tuple[Outcome, ...] = ()
    #: Date features: column → how its text reads (``dmy``, ``mdy``, ``ymd``; ``""`` for a
    #: column already read as dates).
    dates: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """How many columns have each role."""
        found: dict[str, int] = {}
        for role in self.roles:
            found[role.role] = found.get(role.role, 0) + 1
        return found


@dataclass(frozen=True)
class Outcome:
    """A column that records what happened to a customer, profiled per segment: its mean
    (numbers, 0/1), the share of its ``level`` (a yes/no text), or its top levels."""

    column: str
    level: str | None = None
    numeric: bool = True

    @property
    def is_levels(self) -> bool:
        """Profiled by its top levels (text of more than two values)."""
        return not self.numeric and self.level is None

    @property
    def profile_column(self) -> str:
        """The profiles table's column for it."""
        if self.numeric:
            return f"{self.column}_mean"
        return f"{self.column}_share" if self.level is not None else f"{self.column}_top"


def plan_columns(
    engine: Engine,
    frame: Frame,
    config: InputConfig,
    *,
    features: FeaturesConfig,
    clean: CleanConfig,
    source: str,
    facts: ColumnFacts,
    separator_note: str | None = None,
) -> ColumnPlan:
    """Match the config's column names to the input's schema, and decide every other column
    from ``facts`` (counted over every row)."""
    schema = engine.schema(frame)
    id_column = config.id_column or ROW_NUMBER_COLUMN
    id_reason = (
        "input.id_column"
        if config.id_column
        else "input.id_column is null: the row's position in the input (1 = first row)"
    )
    if separator_note:
        id_reason += f"; {separator_note}"

    def require(column: str, role: str) -> None:
        if column not in schema:
            raise ColumnNotFoundError(column, schema, source=source, role=role)

    require(id_column, "id")
    for column in clean.ranges:
        require(column, "range (clean.ranges)")
    if clean.duplicates.order_by:
        require(clean.duplicates.order_by, "ordering (clean.duplicates.order_by)")

    if config.transactions is not None:
        return _plan_transactions(
            engine,
            frame,
            config,
            features=features,
            clean=clean,
            schema=schema,
            require=require,
            source=source,
            id_column=id_column,
            id_reason=id_reason,
            facts=facts,
        )

    rows_seen = facts.rows
    named_categorical = list(features.categorical or [])
    date_features = [days_column(c) for c in features.dates]
    named_numeric = [c for c in features.numeric or [] if c not in date_features]
    excluded = {id_column, clean.duplicates.order_by, *named_categorical}
    text = {c: f for c, f in facts.text.items() if c not in excluded}
    as_numbers = {c for c, f in text.items() if f.numeric}
    date_readings = {
        c: reading
        for c, f in text.items()
        if c not in as_numbers
        and (reading := date_reading(f, dayfirst=config.dayfirst, rows=rows_seen)) is not None
    }
    outcomes = _outcomes(features, schema, facts, named=[*named_numeric, *named_categorical])
    for column in features.dates:
        require(column, "date feature (features.dates)")
        if schema[column] != "temporal" and column not in date_readings:
            raise ColumnTypeError(
                f"features.dates names {column!r} of {source!r}, which does not read as dates "
                f"({_not_dates(facts.text.get(column), schema[column])}); set input.types."
                f"{column}: date, or input.dayfirst"
            )
    dates = {c: date_readings[c].order if c in date_readings else "" for c in features.dates}
    left_out = {*excluded, *outcomes, *date_readings, *features.dates}
    if features.numeric is not None:
        numeric = named_numeric
    else:
        if config.decimal is None:
            _stop_on_decimal_commas(text, as_numbers, source)
        numeric = [
            c for c in schema if c not in left_out and (schema[c] == "numeric" or c in as_numbers)
        ]
    auto_categorical = features.categorical is None and features.numeric is None
    categorical = named_categorical or (
        [
            c
            for c, f in text.items()
            if c not in as_numbers and c not in left_out and 2 <= f.distinct <= features.max_levels
        ]
        if auto_categorical
        else []
    )
    if not numeric and not categorical and not date_features:
        raise ColumnTypeError(
            f"input {source!r} has no numeric or categorical column to use as a feature besides "
            f"the id {id_column!r}; name the features in features.numeric or "
            "features.categorical"
        )
    for column in numeric:
        require(column, "numeric feature")
    for column in categorical:
        require(column, "categorical feature")
    check_log_columns(features.log, [*numeric, *date_features])
    as_text = _numeric_stored_as_text(
        engine, frame, facts=facts, columns=numeric, schema=schema, source=source
    )
    named = features.numeric is not None
    uninformative = _uninformative(facts, [c for c in numeric if c not in as_text], rows_seen)
    empty_named = [c for c, why in uninformative.items() if named and why.startswith("all null")]
    if empty_named:
        raise ColumnTypeError(
            f"feature column {empty_named[0]!r} of {source!r} has no values (every cell is "
            "empty); remove it from features.numeric"
        )
    # A column the user named is kept (a model scores with the features it was fitted on);
    # the plan still says it is constant here.
    dropped = {} if named else uninformative
    numeric = [c for c in numeric if c not in dropped]
    codes = _numeric_codes(facts, numeric, rows_seen)
    if not numeric and not categorical and not date_features:
        raise ColumnTypeError(
            f"input {source!r} has no informative feature left: "
            + "; ".join(f"{c} is {why}" for c, why in dropped.items())
        )
    checked = sorted(
        {*numeric, *(c for c in clean.ranges if c not in numeric)}, key=list(schema).index
    )
    profiled = {c: outcome_of(c, schema, facts) for c in outcomes}

    def role_of(column: str, kind: str) -> tuple[str, str]:
        if column == id_column:
            return "id", id_reason
        if column in dropped:
            return "ignored", dropped[column]
        if column in numeric:
            how = "listed in features.numeric" if named else "a numeric column"
            if column in uninformative:
                how += f"; {uninformative[column]}"
            if column in as_text:
                bad = as_text[column]
                how += (
                    f"; stored as text, {bad:,} cell(s) not a number (quarantined as not_numeric)"
                    if bad
                    else "; stored as text, every cell a number"
                )
            if column in codes:
                how += f"; {codes[column]}"
            return "numeric feature", how
        if column in categorical:
            if column in named_categorical:
                return "categorical feature", "listed in features.categorical"
            return "categorical feature", (
                f"text with {text[column].distinct} levels over {rows_seen:,} rows (at most "
                f"features.max_levels={features.max_levels}): one-hot, weighted like one "
                "numeric variable"
            )
        if column in dates:
            reading = date_readings.get(column)
            how = f"{reading.reason}; " if reading else ""
            return "date feature", f"{how}features.dates: days before the as-of date, as " + repr(
                days_column(column)
            )
        if column in profiled:
            return "outcome", outcomes[column]
        if column == clean.duplicates.order_by:
            return "ordering", "clean.duplicates.order_by: picks the latest duplicate"
        if column in clean.ranges:
            return "checked", "clean.ranges: rows outside the range are quarantined"
        if column in date_readings:
            return "ignored", (
                f"{date_readings[column].reason}; list it under features.dates for the days "
                "before the as-of date"
            )
        return "ignored", _ignored_because(
            kind, facts.text.get(column), auto_categorical, features, rows_seen
        )

    roles = tuple(ColumnRole(c, kind, *role_of(c, kind)) for c, kind in schema.items())
    return ColumnPlan(
        id_column=id_column,
        validated_numeric=tuple(checked),
        numeric_as_text=tuple(as_text),
        required=(),
        features=(*numeric, *date_features),
        log=tuple(c for c in features.log if c in numeric or c in date_features),
        categorical=tuple(categorical),
        ranges=dict(clean.ranges),
        transactions=None,
        roles=roles,
        rows=rows_seen,
        outcomes=tuple(profiled.values()),
        dates=dates,
    )


def days_column(column: str) -> str:
    """The feature a date column becomes: days before the as-of date."""
    return f"{column}_days"


def _not_dates(facts: TextFacts | None, kind: str) -> str:
    if facts is None:
        return f"it reads as {kind}"
    return (
        f"{max(facts.year_first, facts.year_last):,} of {facts.present:,} values are dates; "
        f"e.g. {facts.lowest!r}"
    )


def _outcomes(
    features: FeaturesConfig, schema: Mapping[str, str], facts: ColumnFacts, *, named: list[str]
) -> dict[str, str]:
    """Outcome columns (not named as features), each with the plan's reason."""
    if features.outcomes is not None:
        for column in features.outcomes:
            if column not in schema:
                raise ColumnNotFoundError(
                    column, list(schema), source="the input", role="outcome (features.outcomes)"
                )
        found = {c: "listed in features.outcomes" for c in features.outcomes}
    else:
        # A measure with fractions named y or target (a coordinate, a revenue) is a feature;
        # an outcome so named is a flag, a count or a label.
        found = {
            c: "its name says it is an outcome (features.outcomes: [] to use it as a feature)"
            for c in schema
            if name_says_outcome(c)
            and not (c in facts.numbers and c not in facts.text and facts.numbers[c].fractions)
        }
    return {
        column: f"{why}: left out of the features, {_profiled_as(column, schema, facts)}"
        for column, why in found.items()
        if column not in named
    }


def _profiled_as(column: str, schema: Mapping[str, str], facts: ColumnFacts) -> str:
    outcome = outcome_of(column, schema, facts)
    if outcome.numeric:
        return "its mean profiled per segment"
    if outcome.level is not None:
        return f"the share of {outcome.level!r} profiled per segment"
    return "its top levels profiled per segment"


def outcome_of(column: str, schema: Mapping[str, str], facts: ColumnFacts) -> Outcome:
    """How an outcome column is profiled, from its kind and its values."""
    text = facts.text.get(column)
    if schema[column] in ("numeric", "boolean") or (text is not None and text.numeric):
        return Outcome(column)
    level = positive_level(text) if text is not None else None
    return Outcome(column, level=level, numeric=False)


def _plan_transactions(
    engine, frame, config, *, features, clean, schema, require, source, id_column, id_reason, facts
) -> ColumnPlan:
    t = config.transactions
    require(t.timestamp, "timestamp (input.transactions.timestamp)")
    if schema[t.timestamp] != "temporal":
        raise ColumnTypeError(
            f"timestamp column {t.timestamp!r} of {source!r} is not a date or time "
            f"(it reads as {schema[t.timestamp]}); set input.types.{t.timestamp}: datetime"
        )
    money = [c for c in (t.amount, t.quantity, t.unit_price) if c]
    for column in money:
        require(column, "amount (input.transactions)")
    for column in (t.invoice, t.category):
        if column:
            require(column, "transactions")
    if features.categorical:
        raise ConfigError(
            "features.categorical is not supported with shape: transactions (the features are "
            f"the behaviour columns {', '.join(BEHAVIOUR_FEATURES)})"
        )
    available = [*BEHAVIOUR_FEATURES, *([CATEGORY_FEATURE] if t.category else [])]
    chosen = list(features.numeric) if features.numeric is not None else available
    for column in chosen:
        if column not in available:
            raise ColumnNotFoundError(
                column,
                available,
                source="the behaviour built from transactions",
                role="numeric feature",
            )
    check_log_columns(features.log, chosen)
    as_text = _numeric_stored_as_text(
        engine, frame, facts=facts, columns=money, schema=schema, source=source
    )
    used = {
        id_column: ("id", id_reason),
        t.timestamp: ("transaction", "input.transactions.timestamp: recency and tenure"),
        **{c: ("transaction", "input.transactions: spend per customer") for c in money},
        **({t.invoice: ("transaction", "input.transactions.invoice: orders")} if t.invoice else {}),
        **(
            {t.category: ("transaction", "input.transactions.category: distinct categories")}
            if t.category
            else {}
        ),
    }
    if clean.duplicates.order_by:
        used.setdefault(clean.duplicates.order_by, ("ordering", "clean.duplicates.order_by"))
    derived = {
        "recency_days": "days before the as-of date since the customer's last purchase",
        "frequency": "purchases (distinct invoices, else lines)",
        "monetary_total": "spend, returns netted out (or dropped)",
        "monetary_avg": "spend per purchase",
        "tenure_days": "days before the as-of date since the first purchase",
        "return_share": "the share of lines that are returns",
        CATEGORY_FEATURE: "distinct categories bought",
    }
    roles = tuple(
        ColumnRole(c, kind, *used.get(c, ("ignored", "not a column of input.transactions")))
        for c, kind in schema.items()
    ) + tuple(
        ColumnRole(c, "numeric", "derived feature", f"from the transactions: {derived[c]}")
        for c in chosen
    )
    return ColumnPlan(
        id_column=id_column,
        validated_numeric=tuple(dict.fromkeys([*money, *clean.ranges])),
        numeric_as_text=tuple(as_text),
        required=(t.timestamp, *money),
        features=tuple(chosen),
        log=tuple(features.log),
        categorical=(),
        ranges=dict(clean.ranges),
        transactions=transaction_columns(t, id_column=id_column),
        roles=roles,
        rows=facts.rows,
    )


def transaction_columns(config: TransactionsConfig, *, id_column: str) -> TransactionColumns:
    """The aggregation plan of a transactions table (``input.transactions``)."""
    return TransactionColumns(
        id_column=id_column,
        timestamp=config.timestamp,
        amount=config.amount,
        quantity=config.quantity,
        unit_price=config.unit_price,
        invoice=config.invoice,
        category=config.category,
        cancellation_prefix=config.cancellation_prefix,
        drop_returns=config.returns == "drop",
        as_of=config.as_of,
    )


def _uninformative(facts: ColumnFacts, columns: list[str], rows: int) -> dict[str, str]:
    """Numeric columns that cannot tell customers apart, with why: all null, or constant."""
    found = {}
    for column in columns:
        number = facts.numbers[column]
        if number.present == 0:
            found[column] = f"all null: every cell of {rows:,} rows is empty"
        elif number.low == number.high:
            found[column] = (
                f"constant: every value of {rows:,} rows is {number.low:g}, so it tells no "
                "customer apart"
            )
    return found


def _ignored_because(
    kind: str, facts: TextFacts | None, auto_categorical: bool, features: FeaturesConfig, rows: int
) -> str:
    if kind == "numeric":
        return "not listed in features.numeric"
    if kind == "string" and facts is not None and auto_categorical:
        if facts.distinct == 0:
            return f"all null: every cell of {rows:,} rows is empty"
        if facts.distinct == 1:
            return (
                f"constant text: one value ({facts.lowest!r}) over {rows:,} rows, so it tells "
                "no customer apart"
            )
        if facts.distinct == facts.present:
            return f"id-like: a different value on each of {facts.present:,} rows"
        return (
            f"text with {facts.distinct:,} levels over {rows:,} rows, more than "
            f"features.max_levels={features.max_levels}; list it under features.categorical "
            "to use its most frequent levels"
        )
    if kind == "string":
        return "text: list it under features.categorical to use its levels"
    if kind == "temporal":
        return "a date or time: list it under features.dates for the days before the as-of date"
    return f"a {kind} column: not a feature"


def _stop_on_decimal_commas(text: dict[str, TextFacts], as_numbers: set[str], source: str) -> None:
    """A column of numbers with a decimal comma would be dropped as text: stop and say why."""
    for column, facts in text.items():
        if column in as_numbers or not facts.present:
            continue
        if facts.comma_numbers + facts.numbers >= MOST * facts.present and facts.comma_numbers:
            raise InputError(
                f"column {column!r} of {source!r} holds numbers written with a comma (e.g. "
                f"{facts.comma_example!r}, {facts.comma_numbers:,} of {facts.present:,} "
                "values): set input.decimal: ',' if the comma marks decimals, or "
                "input.thousands: ',' if it separates thousands (or leave the column out by "
                "naming the features in features.numeric)"
            )


def _numeric_codes(facts: ColumnFacts, columns: list[str], rows: int) -> dict[str, str]:
    """Numeric columns whose values look like codes (a few small positive whole numbers)."""
    found = {}
    for column in columns:
        number = facts.numbers[column]
        if number.present == 0 or number.fractions or number.low is None or number.high is None:
            continue
        # Codes count from 1 (Region 1, 2, 3); a count or a measure (tenure 6–12) need not.
        if number.low == 1 and 1 < number.high <= MAX_CODE_VALUES:
            found[column] = (
                f"looks like a numeric code (whole numbers 1 to {number.high:g} over {rows:,} "
                "rows): used as a magnitude; list it under features.categorical if it is a code"
            )
    return found


def check_log_columns(log: list[str], numeric: list[str]) -> None:
    for column in log:
        if column not in numeric:
            raise ConfigError(
                f"features.log names {column!r}, which is not a numeric feature "
                f"(numeric features: {', '.join(numeric)})"
            )


def _numeric_stored_as_text(
    engine: Engine,
    frame: Frame,
    *,
    facts: ColumnFacts,
    columns: list[str],
    schema: Mapping[str, str],
    source: str,
) -> dict[str, int]:
    """Feature columns stored as text, with how many of their cells are not numbers."""
    as_text = {}
    for column in columns:
        kind = schema[column]
        if kind == "numeric":
            continue
        if kind == "other" and _holds_no_value(engine, frame, column):
            raise ColumnTypeError(
                f"feature column {column!r} of {source!r} has no values (every cell is "
                "empty); remove it from the features"
            )
        if kind != "string":
            raise ColumnTypeError(
                f"feature column {column!r} of {source!r} is not numeric (it reads as {kind})"
            )
        text = facts.text[column]
        failed = text.present - text.numbers
        if text.present == 0 or failed > (1 - MIN_PARSED_SHARE) * text.present:
            example = text.not_number
            shown = f"; e.g. value {example!r}" if example is not None else ""
            if text.comma_numbers:
                shown += " (a decimal comma? set input.decimal: ',')"
            raise ColumnTypeError(
                f"feature column {column!r} of {source!r} is not numeric: {failed:,} of "
                f"{text.present:,} values are not numbers{shown}"
            )
        as_text[column] = failed
    return as_text


def _holds_no_value(engine: Engine, frame: Frame, column: str) -> bool:
    """Whether a column of a type no reader inferred (a Parquet column of nulls) is empty."""
    counted = engine.aggregate(frame, {"values": col(column).is_null().not_().as_float().sum()})
    return not engine.to_arrow(counted).to_pylist()[0]["values"]
