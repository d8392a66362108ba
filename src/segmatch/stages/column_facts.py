"""Whole-column facts: what the column plan decides from, counted over every row (never from the
first rows of a file that may be sorted).

Per text column: values present, distinct values, how many read as numbers (in the input's
notation, and with a decimal comma), the first that does not, its lowest and highest value, and
how many read as dates (and which field of theirs goes past 12). Per numeric column: values
present, lowest, highest, and how many are not whole numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from segmatch.engines.base import Engine, Frame
from segmatch.engines.expressions import DateOrder, Expr, col, rows, when

#: A date's optional time, and the end of the text.
TIME_TEXT = r"([ T]\d{1,2}:\d{2}(:\d{2}([.,]\d+)?)?)?\s*$"
#: A date whose year comes first (2013-08-21).
YEAR_FIRST = r"^\s*\d{4}[-/.]\d{1,2}[-/.]\d{1,2}" + TIME_TEXT
#: A date whose year comes last (21/08/2013, 08-21-2013).
YEAR_LAST = r"^\s*\d{1,2}[-/.]\d{1,2}[-/.]\d{4}" + TIME_TEXT
#: Such a date whose first field, or whose second, goes past 12 (so it is a day).
FIRST_OVER_12 = r"^\s*(1[3-9]|[2-9]\d)[-/.]\d{1,2}[-/.]\d{4}" + TIME_TEXT
SECOND_OVER_12 = r"^\s*\d{1,2}[-/.](1[3-9]|[2-9]\d)[-/.]\d{4}" + TIME_TEXT
#: Of a column's present values, the share that must read one way for the column to be that.
MOST = 0.95
#: A text column with at most this many distinct values is judged from its value counts.
COUNTED_VALUES = 10_000


@dataclass(frozen=True)
class TextFacts:
    """A text column over every row (blank cells count as missing)."""

    present: int
    distinct: int
    numbers: int
    comma_numbers: int
    not_number: str | None
    comma_example: str | None
    lowest: str | None
    highest: str | None
    year_first: int
    year_last: int
    first_over_12: int
    second_over_12: int

    @property
    def numeric(self) -> bool:
        """Nearly every present value reads as a number."""
        return self.present > 0 and self.numbers >= MOST * self.present

    @property
    def dates(self) -> bool:
        """Nearly every present value reads as a date."""
        return self.present > 0 and max(self.year_first, self.year_last) >= MOST * self.present


@dataclass(frozen=True)
class NumberFacts:
    """A numeric column (or a text column's numbers) over every row; NaN counts as missing."""

    present: int
    low: float | None
    high: float | None
    fractions: int


@dataclass(frozen=True)
class ColumnFacts:
    """The rows of a frame, and the facts of its columns."""

    rows: int
    text: dict[str, TextFacts]
    numbers: dict[str, NumberFacts]
    #: The caller's own counts, summed in the same aggregation.
    counted: dict[str, int]


@dataclass(frozen=True)
class DateReading:
    """How a text column of dates is read, and why."""

    order: DateOrder
    reason: str


def column_facts(
    engine: Engine,
    frame: Frame,
    *,
    text: list[str],
    numeric: list[str],
    decimal: str = ".",
    thousands: str | None = None,
    sums: Mapping[str, Expr] | None = None,
) -> ColumnFacts:
    """The facts of ``text`` and ``numeric`` columns and the count of rows. A text column's
    numbers are read in the input's notation (``decimal``, ``thousands``), and their range is
    counted too. ``sums``, the caller's own sums over every row, ride on the aggregation.

    One aggregation counts rows and each numeric column's values and range; one grouping
    counts each text column's values. A text column of at most :data:`COUNTED_VALUES` values
    is then judged from its value counts (the checks run once per value), any other by an
    aggregation that checks every row."""
    first: dict[str, Expr] = {"rows": rows()}
    first |= {f"counted_{name}": total for name, total in (sums or {}).items()}
    for i, column in enumerate(numeric):
        first |= _number_aggregations(f"n{i}", col(column).as_number().nan_to_null())
    row = engine.to_arrow(engine.aggregate(frame, first)).to_pylist()[0]
    numbers = {column: _number_facts(row, f"n{i}") for i, column in enumerate(numeric)}
    facts_of_text: dict[str, TextFacts] = {}
    many: dict[str, int] = {}
    for column, levels in engine.text_levels(frame, text, most=COUNTED_VALUES).items():
        if isinstance(levels, int):
            many[column] = levels
        else:
            facts_of_text[column], numbers[column] = _facts_from_counts(
                levels, decimal=decimal, thousands=thousands
            )
    if many:
        found_text, found_numbers = _facts_over_rows(
            engine, frame, many, decimal=decimal, thousands=thousands
        )
        facts_of_text |= found_text
        numbers |= found_numbers
    return ColumnFacts(
        rows=int(row["rows"] or 0),
        text={c: facts_of_text[c] for c in text},
        numbers=numbers,
        counted={name: int(row[f"counted_{name}"] or 0) for name in sums or {}},
    )


def _facts_from_counts(
    merged: dict[str, int], *, decimal: str, thousands: str | None
) -> tuple[TextFacts, NumberFacts]:
    """A text column's facts from how many rows hold each of its values (present, without
    the spaces around them)."""
    parsed = {v: _as_number(_in_notation_text(v, decimal, thousands)) for v in merged}
    numbers = {v: x for v, x in parsed.items() if x is not None}
    commas = {v for v in merged if "," in v and _as_number(v.replace(",", ".")) is not None}
    # The most frequent value first, so an example is a value the user will recognise.
    by_count = sorted(merged, key=lambda v: (-merged[v], v))

    def rows_matching(pattern: str) -> int:
        compiled = re.compile(pattern)
        return sum(n for v, n in merged.items() if compiled.search(v))

    finite = [x for x in numbers.values() if math.isfinite(x)]
    text = TextFacts(
        present=sum(merged.values()),
        distinct=len(merged),
        numbers=sum(merged[v] for v in numbers),
        comma_numbers=sum(merged[v] for v in commas),
        not_number=next((v for v in by_count if v not in numbers), None),
        comma_example=next((v for v in by_count if v in commas), None),
        lowest=min(merged) if merged else None,
        highest=max(merged) if merged else None,
        year_first=rows_matching(YEAR_FIRST),
        year_last=rows_matching(YEAR_LAST),
        first_over_12=rows_matching(FIRST_OVER_12),
        second_over_12=rows_matching(SECOND_OVER_12),
    )
    number = NumberFacts(
        present=sum(merged[v] for v, x in numbers.items() if not math.isnan(x)),
        low=min(finite) if finite else None,
        high=max(finite) if finite else None,
        fractions=sum(merged[v] for v, x in numbers.items() if math.isfinite(x) and x % 1),
    )
    return text, number


#: A number as both engines read text: digits with an optional point and exponent, or one of
#: the names of infinity and not-a-number.
NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
SPECIAL_NUMBERS = {"inf": math.inf, "infinity": math.inf, "nan": math.nan}


def _as_number(text: str) -> float | None:
    if NUMBER_TEXT.fullmatch(text):
        return float(text)
    sign, name = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.lstrip("+"))
    special = SPECIAL_NUMBERS.get(name.casefold())
    return None if special is None else sign * special


def _in_notation_text(value: str, decimal: str, thousands: str | None) -> str:
    if thousands is not None:
        value = value.replace(thousands, "")
    return value.replace(decimal, ".") if decimal != "." else value


def _facts_over_rows(
    engine: Engine,
    frame: Frame,
    distinct: Mapping[str, int],
    *,
    decimal: str,
    thousands: str | None,
) -> tuple[dict[str, TextFacts], dict[str, NumberFacts]]:
    """Text columns' facts by expressions over every row (columns of many values, with how
    many values each has)."""
    text = list(distinct)
    aggregations: dict[str, Expr] = {}
    for i, column in enumerate(text):
        value = col(column).as_text().strip()
        present = value.ne("").fill_null(False)
        number = _in_notation(value, decimal, thousands).as_number()
        is_number = present.and_(number.is_null().not_())
        comma_number = present.and_(value.matches(",")).and_(
            value.replace(",", ".").as_number().is_null().not_()
        )
        kept = when([(present, value)])
        aggregations |= {
            f"t{i}_present": present.as_float().sum(),
            f"t{i}_numbers": is_number.as_float().sum(),
            f"t{i}_comma": comma_number.as_float().sum(),
            f"t{i}_not_number": when([(present.and_(is_number.not_()), value)]).first(),
            f"t{i}_comma_example": when([(comma_number, value)]).first(),
            f"t{i}_lowest": kept.min(),
            f"t{i}_highest": kept.max(),
            f"t{i}_year_first": _count(value.matches(YEAR_FIRST)),
            f"t{i}_year_last": _count(value.matches(YEAR_LAST)),
            f"t{i}_first_12": _count(value.matches(FIRST_OVER_12)),
            f"t{i}_second_12": _count(value.matches(SECOND_OVER_12)),
        }
        aggregations |= _number_aggregations(f"t{i}", when([(is_number, number)]))
    row = engine.to_arrow(engine.aggregate(frame, aggregations)).to_pylist()[0]
    facts = {
        column: TextFacts(
            present=int(row[f"t{i}_present"] or 0),
            distinct=distinct[column],
            numbers=int(row[f"t{i}_numbers"] or 0),
            comma_numbers=int(row[f"t{i}_comma"] or 0),
            not_number=row[f"t{i}_not_number"],
            comma_example=row[f"t{i}_comma_example"],
            lowest=row[f"t{i}_lowest"],
            highest=row[f"t{i}_highest"],
            year_first=int(row[f"t{i}_year_first"] or 0),
            year_last=int(row[f"t{i}_year_last"] or 0),
            first_over_12=int(row[f"t{i}_first_12"] or 0),
            second_over_12=int(row[f"t{i}_second_12"] or 0),
        )
        for i, column in enumerate(text)
    }
    return facts, {column: _number_facts(row, f"t{i}") for i, column in enumerate(text)}


def _count(condition: Expr) -> Expr:
    return condition.fill_null(False).as_float().sum()


def _in_notation(value: Expr, decimal: str, thousands: str | None) -> Expr:
    if thousands is not None:
        value = value.replace(thousands, "")
    return value.replace(decimal, ".") if decimal != "." else value


def _number_aggregations(prefix: str, value: Expr) -> dict[str, Expr]:
    return {
        f"{prefix}_count": value.count(),
        f"{prefix}_low": value.min(),
        f"{prefix}_high": value.max(),
        f"{prefix}_fractions": value.ne(value.floor()).fill_null(False).as_float().sum(),
    }


def _number_facts(row: dict, prefix: str) -> NumberFacts:
    return NumberFacts(
        present=int(row[f"{prefix}_count"] or 0),
        low=row[f"{prefix}_low"],
        high=row[f"{prefix}_high"],
        fractions=int(row[f"{prefix}_fractions"] or 0),
    )


def date_reading(facts: TextFacts, *, dayfirst: bool | None, rows: int) -> DateReading | None:
    """How a column of dates is read (None: it is not one): year first as written; day or month
    first from the whole column (a first field over 12 is a day), or from ``input.dayfirst``."""
    if not facts.dates:
        return None
    if facts.year_first >= facts.year_last:
        return DateReading("ymd", f"dates, year first (yyyy-mm-dd) over {rows:,} rows")
    if dayfirst is not None:
        order: DateOrder = "dmy" if dayfirst else "mdy"
        return DateReading(order, f"dates, {_named(order)} as input.dayfirst says")
    if facts.first_over_12 and facts.second_over_12:
        return None
    if facts.second_over_12:
        return DateReading(
            "mdy",
            f"dates, month first: {facts.second_over_12:,} of {rows:,} rows have a second "
            "field over 12",
        )
    if facts.first_over_12:
        return DateReading(
            "dmy",
            f"dates, day first: {facts.first_over_12:,} of {rows:,} rows have a first field "
            "over 12",
        )
    return DateReading(
        "dmy",
        f"dates, read day first: no value of {rows:,} rows has a field over 12 to decide "
        "(set input.dayfirst: false for month first)",
    )


def _named(order: DateOrder) -> str:
    return {"dmy": "day first", "mdy": "month first", "ymd": "year first"}[order]


#: Names that say a column is an outcome of the customer (anywhere among a name's words).
OUTCOME_WORDS = frozenset(
    {
        "churn",
        "churned",
        "churner",
        "attrition",
        "attrited",
        "default",
        "defaulted",
        "converted",
        "conversion",
        "subscribed",
        "exited",
        "fraud",
        "fraudulent",
        "cancelou",
        "cancelamento",
        "inadimplente",
        "inadimplencia",
        "inadimplência",
        "evadiu",
        "evasao",
        "evasão",
        "converteu",
    }
)
#: Names that say so only as the whole name (``class`` alone, not ``customer_class``).
OUTCOME_NAMES = frozenset(
    {
        "y",
        "target",
        "label",
        "response",
        "responded",
        "outcome",
        "class",
        "alvo",
        "resposta",
        "rotulo",
        "rótulo",
        "cancelado",
        "comprou",
    }
)


def name_says_outcome(column: str) -> bool:
    """Whether a column's name says it records an outcome (churn, target, ``y``, cancelou…)."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", column)
    words = [w for w in re.split(r"[^0-9a-zà-ÿ]+", spaced.casefold()) if w]
    if not words:
        return False
    return "_".join(words) in OUTCOME_NAMES or any(w in OUTCOME_WORDS for w in words)


#: Text that marks the positive side of a yes/no outcome.
POSITIVE = frozenset({"yes", "y", "true", "t", "1", "sim", "s", "churned", "churn", "exited"})


def positive_level(facts: TextFacts) -> str | None:
    """Of a two-valued text outcome, the value that means "it happened" (yes, true, sim, 1…,
    else the later one in order); None when the column has not exactly two values."""
    if facts.distinct != 2 or facts.lowest is None or facts.highest is None:
        return None
    for level in (facts.highest, facts.lowest):
        if level.casefold() in POSITIVE:
            return level
    return facts.highest
