"""How categories become features: the one-hot rule and the feature names, defined once.

Both engines and the fitted model encode a categorical column the same way: one column per
kept level (1 where the value equals it), plus ``(other)`` for every value that is none of the
named levels; a missing value is the level ``(missing)``.

Example:
    >>> [c.name for c in one_hot_columns({"channel": ["web", OTHER_LEVEL]})]
    ['channel=web', 'channel=(other)']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MISSING_LEVEL = "(missing)"
OTHER_LEVEL = "(other)"


@dataclass(frozen=True)
class OneHot:
    """One indicator column: ``column == level``, or, for ``(other)``, not any of ``named``."""

    column: str
    level: str
    named: tuple[str, ...]

    @property
    def is_other(self) -> bool:
        return self.level == OTHER_LEVEL

    @property
    def name(self) -> str:
        return f"{self.column}={self.level}"


def one_hot_columns(levels: Mapping[str, Sequence[str]]) -> list[OneHot]:
    """The indicator columns of every categorical column, in feature order."""
    columns = []
    for column, column_levels in levels.items():
        named = tuple(level for level in column_levels if level != OTHER_LEVEL)
        columns += [OneHot(column, level, named) for level in column_levels]
    return columns


def feature_names(numeric: Sequence[str], levels: Mapping[str, Sequence[str]]) -> list[str]:
    """Names of the feature matrix's columns: numeric columns, then one-hot levels."""
    return [*numeric, *(c.name for c in one_hot_columns(levels))]
