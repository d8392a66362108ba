"""Pieces the report's sections share: tables, numbers, segment colours."""

from __future__ import annotations

import html
from typing import Any

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3",
           "#8C8C8C", "#CCB974", "#64B5CD", "#1F77B4", "#FF7F0E"]  # fmt: skip


def table(
    columns: list[str], rows: list[list[Any]], *, header: bool = True, compact: bool = False
) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    # A compact table (a customer beside its lookalikes, every feature a column) fits a card.
    opening = '<table class="compact">' if compact else "<table>"
    markup = f"{opening}{f'<tr>{head}</tr>' if header else ''}{body}</table>"
    return f'<div class="scroll">{markup}</div>'


def number(value: Any, *, plain: bool = False) -> str:
    """A number for reading: thousands separated, except years and codes (``plain``)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if plain:
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def colour(segment: int) -> str:
    return PALETTE[segment % len(PALETTE)]
