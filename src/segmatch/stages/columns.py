"""The column plan: what each input column is for — id, feature, ordering, checked, ignored —
and why, decided before any work and checked against the input's schema."""

from __future__ import annotations

import math
from dataclasses import dataclass

from segmatch.config import CleanConfig, FeaturesConfig, InputConfig
from segmatch.engines.base import Engine, Frame
from segmatch.engines.expressions import Expr, col, when
from segmatch.engines.types import TransactionColumns
from segmatch.errors import (
    ColumnNotFoundError,
    ColumnTypeError,
    ConfigError,
    InputError,
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

#: Values of each text column looked at to tell a column of numbers stored as text.
NUMBER_SAMPLE = 1000
NUMBER_SHARE = 0.95
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

    def counts(self) -> dict[str, int]:
        """How many columns have each role."""
        found: dict[str, int] = {}
        for role in self.roles:
            found[role.role] = found.get(role.role, 0) + 1
        return found


def plan_columns(
    engine: Engine,
    frame: Frame,
    config: InputConfig,
    *,
    features: FeaturesConfig,
    clean: CleanConfig,
    source: str,
) -> ColumnPlan:
    """Match the config's column names to the input's schema."""
    schema = engine.schema(frame)
    id_column = config.id_column or ROW_NUMBER_COLUMN
    id_reason = (
        "input.id_column"
        if config.id_column
        else "input.id_column is null: the row's position in the input (1 = first row)"
    )

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
        )

    named_categorical = list(features.categorical or [])
    excluded = {id_column, clean.duplicates.order_by, *named_categorical}
    sample = head_values(engine, frame, [c for c in schema if c not in excluded])
    text = {c: values for c, values in sample.items() if schema[c] == "string"}
    as_numbers = {c for c, values in text.items() if share_parsed(values) >= NUMBER_SHARE}
    if features.numeric is not None:
        numeric = list(features.numeric)
    else:
        if config.decimal is None:
            _stop_on_decimal_commas(text, as_numbers, source)
        numeric = [
            c for c in schema if c not in excluded and (schema[c] == "numeric" or c in as_numbers)
        ]
    levels_seen = {c: _distinct(values) for c, values in text.items() if c not in as_numbers}
    auto_categorical = features.categorical is None and features.numeric is None
    categorical = named_categorical or (
        [c for c, seen in levels_seen.items() if 2 <= seen <= features.max_levels]
        if auto_categorical
        else []
    )
    if not numeric and not categorical:
        raise ColumnTypeError(
            f"input {source!r} has no numeric or categorical column to use as a feature besides "
            f"the id {id_column!r}; name the features in features.numeric or "
            "features.categorical"
        )
    for column in numeric:
        require(column, "numeric feature")
    for column in categorical:
        require(column, "categorical feature")
    check_log_columns(features.log, numeric)
    as_text = _numeric_stored_as_text(engine, frame, numeric, schema, source)
    named = features.numeric is not None
    uninformative = _uninformative(engine, frame, [c for c in numeric if c not in as_text])
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
    codes = _numeric_codes(sample, numeric)
    if not numeric and not categorical:
        raise ColumnTypeError(
            f"input {source!r} has no informative feature left: "
            + "; ".join(f"{c} is {why}" for c, why in dropped.items())
        )
    checked = sorted(
        {*numeric, *(c for c in clean.ranges if c not in numeric)}, key=list(schema).index
    )

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
                f"text with {levels_seen[column]} levels (at most features.max_levels="
                f"{features.max_levels}): one-hot, weighted like one numeric variable"
            )
        if column == clean.duplicates.order_by:
            return "ordering", "clean.duplicates.order_by: picks the latest duplicate"
        if column in clean.ranges:
            return "checked", "clean.ranges: rows outside the range are quarantined"
        return "ignored", _ignored_because(kind, sample.get(column), auto_categorical, features)

    roles = tuple(ColumnRole(c, kind, *role_of(c, kind)) for c, kind in schema.items())
    return ColumnPlan(
        id_column=id_column,
        validated_numeric=tuple(checked),
        numeric_as_text=tuple(as_text),
        required=(),
        features=tuple(numeric),
        log=tuple(c for c in features.log if c in numeric),
        categorical=tuple(categorical),
        ranges=dict(clean.ranges),
        transactions=None,
        roles=roles,
    )


def _plan_transactions(
    engine, frame, config, *, features, clean, schema, require, source, id_column, id_reason
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
    as_text = _numeric_stored_as_text(engine, frame, money, schema, source)
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
    roles = tuple(
        ColumnRole(c, kind, *used.get(c, ("ignored", "not a column of input.transactions")))
        for c, kind in schema.items()
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
        transactions=TransactionColumns(
            id_column=id_column,
            timestamp=t.timestamp,
            amount=t.amount,
            quantity=t.quantity,
            unit_price=t.unit_price,
            invoice=t.invoice,
            category=t.category,
            cancellation_prefix=t.cancellation_prefix,
            drop_returns=t.returns == "drop",
            as_of=t.as_of,
        ),
        roles=roles,
    )


def _uninformative(engine: Engine, frame: Frame, columns: list[str]) -> dict[str, str]:
    """Numeric columns that cannot tell customers apart, with why: all null, or constant."""
    found = {}
    for column, (values, low, high) in value_ranges(engine, frame, columns).items():
        if values == 0:
            found[column] = "all null: every cell is empty"
        elif low == high:
            found[column] = f"constant: every value is {low:g}, so it tells no customer apart"
    return found


def _ignored_because(
    kind: str, values: list | None, auto_categorical: bool, features: FeaturesConfig
) -> str:
    if kind == "numeric":
        return "not listed in features.numeric"
    if kind == "string" and values is not None and auto_categorical:
        present = [v for v in values if v is not None and str(v).strip()]
        seen = _distinct(values)
        if seen == 0:
            return "all null: every cell is empty"
        if seen == 1:
            return "constant text: one value, so it tells no customer apart"
        if seen == len(present):
            return f"id-like: a different value on each of the first {len(present):,} rows"
        return (
            f"text with more than features.max_levels={features.max_levels} levels; list it "
            "under features.categorical to use its most frequent levels"
        )
    if kind == "string":
        return "text: list it under features.categorical to use its levels"
    if kind == "temporal":
        return "a date or time: not a feature (transactions derive recency from one)"
    return f"a {kind} column: not a feature"


def head_values(engine: Engine, frame: Frame, columns: list[str]) -> dict[str, list]:
    """The first values of each column (a cheap look, whatever the input's size)."""
    if not columns:
        return {}
    return engine.to_arrow(frame, limit=NUMBER_SAMPLE).select(columns).to_pydict()


def _present(values: list) -> list[str]:
    return [v.strip() for v in values if v is not None and v.strip()]


def _distinct(values: list) -> int:
    return len({v.strip() if isinstance(v, str) else v for v in values if v is not None} - {""})


def share_parsed(values: list, *, decimal: str = ".", thousands: str | None = None) -> float:
    """The share of a text column's present values that read as numbers (0 with none)."""
    present = _present(values)
    if not present:
        return 0.0
    return sum(_is_number(v, decimal=decimal, thousands=thousands) for v in present) / len(present)


def _is_number(text: str, *, decimal: str = ".", thousands: str | None = None) -> bool:
    if thousands is not None:
        text = text.replace(thousands, "")
    try:
        float(text.replace(decimal, ".") if decimal != "." else text)
    except ValueError:
        return False
    return True


def _stop_on_decimal_commas(text: dict[str, list], as_numbers: set[str], source: str) -> None:
    """A column of numbers with a decimal comma would be dropped as text: stop and say why."""
    for column, values in text.items():
        if column not in as_numbers and share_parsed(values, decimal=",") >= NUMBER_SHARE:
            example = next(v for v in _present(values) if "," in v)
            raise InputError(
                f"column {column!r} of {source!r} holds numbers written with a comma (e.g. "
                f"{example!r}): set input.decimal: ',' if the comma marks decimals, or "
                "input.thousands: ',' if it separates thousands (or leave the column out by "
                "naming the features in features.numeric)"
            )


def _numeric_codes(sample: dict[str, list], columns: list[str]) -> dict[str, str]:
    """Numeric columns whose values look like codes (a few small positive integers)."""
    found = {}
    for column in columns:
        numbers = (
            float(v)
            for v in sample.get(column, [])
            if v is not None and (not isinstance(v, str) or _is_number(v))
        )
        values = {v for v in numbers if not math.isnan(v)}
        if not values or not all(v.is_integer() for v in values):
            continue
        # Codes count from 1 (Region 1, 2, 3); a count or a measure (tenure 6–12) need not.
        if len(values) >= 2 and min(values) == 1 and max(values) <= MAX_CODE_VALUES:
            shown = ", ".join(f"{v:g}" for v in sorted(values))
            found[column] = (
                f"looks like a numeric code (values {shown}): used as a magnitude; list it "
                "under features.categorical if it is a code"
            )
    return found


def check_log_columns(log: list[str], numeric: list[str]) -> None:
    for column in log:
        if column not in numeric:
            raise ConfigError(
                f"features.log names {column!r}, which is not a numeric feature "
                f"(numeric features: {', '.join(numeric)})"
            )


def _numeric_stored_as_text(engine, frame, columns, schema, source) -> dict[str, int]:
    """Feature columns stored as text, with how many of their cells are not numbers."""
    as_text = {}
    for column in columns:
        kind = schema[column]
        if kind == "numeric":
            continue
        if kind != "string":
            if kind == "other" and value_ranges(engine, frame, [column])[column][0] == 0:
                raise ColumnTypeError(
                    f"feature column {column!r} of {source!r} has no values (every cell is "
                    "empty); remove it from the features"
                )
            raise ColumnTypeError(
                f"feature column {column!r} of {source!r} is not numeric (it reads as {kind})"
            )
        present, failed, example = numbers_in_text(engine, frame, column)
        if present == 0 or failed > (1 - MIN_PARSED_SHARE) * present:
            shown = f"; e.g. value {example!r}" if example is not None else ""
            if example is not None and _is_number(example, decimal=","):
                shown += " (a decimal comma? set input.decimal: ',')"
            raise ColumnTypeError(
                f"feature column {column!r} of {source!r} is not numeric: {failed:,} of "
                f"{present:,} values are not numbers{shown}"
            )
        as_text[column] = failed
    return as_text


def value_ranges(
    engine: Engine, frame: Frame, columns: list[str]
) -> dict[str, tuple[int, float | None, float | None]]:
    """Per numeric column, in one pass: its count of values (null and NaN left out), its
    smallest and its largest."""
    if not columns:
        return {}
    aggregations: dict[str, Expr] = {}
    for i, column in enumerate(columns):
        value = col(column).as_number().nan_to_null()
        aggregations |= {f"n{i}": value.count(), f"lo{i}": value.min(), f"hi{i}": value.max()}
    row = engine.to_arrow(engine.aggregate(frame, aggregations)).to_pylist()[0]
    return {c: (row[f"n{i}"], row[f"lo{i}"], row[f"hi{i}"]) for i, c in enumerate(columns)}


def numbers_in_text(engine: Engine, frame: Frame, column: str) -> tuple[int, int, str | None]:
    """Of a text column's non-blank values: how many there are, how many do not parse as a
    number, and the first of those in input order."""
    text = col(column).as_text().strip()
    present = text.ne("").fill_null(False)
    failed = present.and_(text.as_number().is_null())
    counts = engine.aggregate(
        frame,
        {
            "present": present.as_float().sum(),
            "failed": failed.as_float().sum(),
            "example": when([(failed, text)]).first(),
        },
    )
    row = engine.to_arrow(counts).to_pylist()[0]
    return int(row["present"] or 0), int(row["failed"] or 0), row["example"]
