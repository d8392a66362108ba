"""Column expressions both engines compile: what a stage asks of rows, in no engine's terms.

An :class:`Expr` is a small tree (an operation and its arguments) built with :func:`col`,
:func:`lit`, :func:`when` and the methods below; each engine compiles it to its own column
expression (a Polars ``Expr``, a Spark ``Column``). Row expressions go to
:meth:`Engine.with_columns` and :meth:`Engine.filter`; aggregations (``count``, ``sum``,
``min``, ``max``, ``mean``, ``n_unique``, ``first``, :func:`rows`) to :meth:`Engine.aggregate`.

Comparisons are null where an input is null, as in SQL; a condition that must be true or
false (a filter, a ``when``) says so with ``.fill_null(False)``.

Example:
    >>> text = col("income").as_text().strip()
    >>> bad = text.ne(lit("")).and_(text.as_number().is_null()).fill_null(False)
    >>> bad.op
    'fill_null'
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Kind = Literal["numeric", "string", "temporal", "boolean", "other"]
DateOrder = Literal["dmy", "mdy", "ymd"]
#: The date and time fields (whatever the order) and the separators :meth:`Expr.as_date` reads.
DATE_FIELDS = r"^\s*(\d{1,4})[-/.](\d{1,2})[-/.](\d{1,4})"

#: Operations both engines' column objects implement as Python operators.
OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "gt": operator.gt,
    "and": operator.and_,
    "or": operator.or_,
    "plus": operator.add,
    "minus": operator.sub,
    "times": operator.mul,
    "divided_by": operator.truediv,
}


@dataclass(frozen=True)
class Expr:
    """One operation over columns; see the module's docstring."""

    op: str
    args: tuple[Any, ...] = ()

    # -- rows ------------------------------------------------------------------------------
    def is_null(self) -> Expr:
        return Expr("is_null", (self,))

    def as_text(self) -> Expr:
        """The value as text (numbers as their usual text)."""
        return Expr("as_text", (self,))

    def strip(self) -> Expr:
        """Text without the whitespace around it."""
        return Expr("strip", (self,))

    def replace(self, old: str, new: str) -> Expr:
        """Text with every ``old`` (taken literally) replaced by ``new``."""
        return Expr("replace", (self, old, new))

    def starts_with(self, prefix: str) -> Expr:
        return Expr("starts_with", (self, prefix))

    def as_number(self) -> Expr:
        """A float64: numbers as they are; text stripped and parsed (null where it does not
        parse as a number)."""
        return Expr("as_number", (self,))

    def nan_to_null(self) -> Expr:
        return Expr("nan_to_null", (self,))

    def is_nan(self) -> Expr:
        return Expr("is_nan", (self,))

    def is_infinite(self) -> Expr:
        return Expr("is_infinite", (self,))

    def fill_null(self, value: Any) -> Expr:
        return Expr("fill_null", (self, _expr(value)))

    def is_in(self, values: Sequence[Any]) -> Expr:
        return Expr("is_in", (self, tuple(values)))

    def eq(self, other: Any) -> Expr:
        return Expr("eq", (self, _expr(other)))

    def ne(self, other: Any) -> Expr:
        return Expr("ne", (self, _expr(other)))

    def lt(self, other: Any) -> Expr:
        return Expr("lt", (self, _expr(other)))

    def gt(self, other: Any) -> Expr:
        return Expr("gt", (self, _expr(other)))

    def and_(self, other: Expr) -> Expr:
        return Expr("and", (self, other))

    def or_(self, other: Expr) -> Expr:
        return Expr("or", (self, other))

    def not_(self) -> Expr:
        return Expr("not", (self,))

    def plus(self, other: Any) -> Expr:
        return Expr("plus", (self, _expr(other)))

    def minus(self, other: Any) -> Expr:
        return Expr("minus", (self, _expr(other)))

    def times(self, other: Any) -> Expr:
        return Expr("times", (self, _expr(other)))

    def divided_by(self, other: Any) -> Expr:
        return Expr("divided_by", (self, _expr(other)))

    def larger_of(self, other: Any) -> Expr:
        return Expr("larger_of", (self, _expr(other)))

    def days_until(self, moment: datetime) -> Expr:
        """Days (fractional) from this timestamp to ``moment``."""
        return Expr("days_until", (self, moment))

    def floor(self) -> Expr:
        """The largest whole number not above the value (as a float64)."""
        return Expr("floor", (self,))

    def lower(self) -> Expr:
        """Text in lower case."""
        return Expr("lower", (self,))

    def matches(self, pattern: str) -> Expr:
        """Whether text matches a regular expression (the syntax both engines share: classes,
        repeats, groups and anchors)."""
        return Expr("matches", (self, pattern))

    def extract(self, pattern: str, group: int) -> Expr:
        """A group of the regular expression's match in the text (null where it does not
        match)."""
        return Expr("extract", (self, pattern, group))

    def as_date(self, order: DateOrder) -> Expr:
        """Text written as a date (and time) with its fields in ``order`` — ``"dmy"``
        (21/08/2013), ``"mdy"`` (08/21/2013) or ``"ymd"`` (2013-08-21) — separated by ``/``,
        ``-`` or ``.``, with an optional ``HH:MM[:SS]``: a timestamp (null where it does not
        read as one)."""
        return Expr("as_date", (self, order))

    def as_float(self) -> Expr:
        """A boolean or a number as float64 (no parsing: see :meth:`as_number`)."""
        return Expr("as_float", (self,))

    # -- aggregations ----------------------------------------------------------------------
    def count(self) -> Expr:
        """Values that are not null."""
        return Expr("count", (self,))

    def sum(self) -> Expr:
        return Expr("sum", (self,))

    def min(self) -> Expr:
        return Expr("min", (self,))

    def max(self) -> Expr:
        return Expr("max", (self,))

    def mean(self) -> Expr:
        return Expr("mean", (self,))

    def n_unique(self) -> Expr:
        """Distinct values that are not null."""
        return Expr("n_unique", (self,))

    def first(self) -> Expr:
        """The first value that is not null, in the rows' input order."""
        return Expr("first", (self,))


def col(name: str) -> Expr:
    return Expr("col", (name,))


def lit(value: Any) -> Expr:
    return Expr("lit", (value,))


def rows() -> Expr:
    """The number of rows (of the frame, or of each group)."""
    return Expr("rows")


def row_position() -> Expr:
    """Each row's position in the input as text, ``"1"`` for the first (for a folder of
    files, in the order the engine reads them)."""
    return Expr("row_position")


def when(branches: Sequence[tuple[Expr, Any]], otherwise: Any = None) -> Expr:
    """The value of the first branch whose condition holds, else ``otherwise``."""
    return Expr("when", (tuple((c, _expr(v)) for c, v in branches), _expr(otherwise)))


def any_of(conditions: Sequence[Expr]) -> Expr:
    """True where any condition holds (conditions that are never null)."""
    combined = lit(False)
    for condition in conditions:
        combined = combined.or_(condition)
    return combined


def _expr(value: Any) -> Expr:
    return value if isinstance(value, Expr) else lit(value)


def kind_of(expr: Expr, schema: Mapping[str, Kind]) -> Kind:
    """What an expression yields, from the frame's column kinds (how ``as_number`` parses)."""
    op = expr.op
    if op == "col":
        return schema[expr.args[0]]
    if op == "lit":
        value = expr.args[0]
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, int | float):
            return "numeric"
        return "string" if isinstance(value, str) else "other"
    if op == "as_date":
        return "temporal"
    if op in ("as_text", "strip", "replace", "row_position", "lower", "extract"):
        return "string"
    if op in ("fill_null", "min", "max", "first"):
        return kind_of(expr.args[0], schema)
    if op == "when":
        branches, otherwise = expr.args
        return kind_of(branches[0][1], schema) if branches else kind_of(otherwise, schema)
    if op in ("is_null", "is_nan", "is_infinite", "is_in", "eq", "ne", "lt", "gt", "and"):
        return "boolean"
    if op in ("or", "not", "starts_with", "matches"):
        return "boolean"
    return "numeric"


def columns_used(expr: Expr) -> set[str]:
    """The names of the columns an expression reads."""
    if expr.op == "col":
        return {expr.args[0]}
    found: set[str] = set()
    for arg in expr.args:
        if isinstance(arg, Expr):
            found |= columns_used(arg)
        elif isinstance(arg, tuple):
            for part in arg:
                if isinstance(part, Expr):
                    found |= columns_used(part)
                elif isinstance(part, tuple):
                    found |= set().union(*(columns_used(p) for p in part if isinstance(p, Expr)))
    return found
