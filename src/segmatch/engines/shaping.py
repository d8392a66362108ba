"""Result rows shaped the same way on every engine: lookalike rows from a neighbour search,
the top levels of a profile."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from segmatch.neighbours import similarity
from segmatch.tables import TABLES


def lookalike_rows(
    id_column: str,
    *,
    ids: pa.Array | pa.ChunkedArray,
    labels: np.ndarray,
    candidates: pa.Array | pa.ChunkedArray,
    neighbours: np.ndarray,
    distance: np.ndarray,
) -> pa.Table:
    """Lookalike rows (the ``lookalikes`` table's columns) from a nearest-neighbour answer.

    Row ``i`` of ``neighbours``/``distance`` holds the candidates (indices into
    ``candidates``) nearest to ``ids[i]``, best first.
    """
    span = neighbours.shape[1]
    rows = len(ids)
    columns = TABLES["lookalikes"].columns_for(id_column)
    return pa.table(
        dict(
            zip(
                columns,
                [
                    ids.take(np.repeat(np.arange(rows), span)),
                    pa.array(np.repeat(np.asarray(labels), span).astype(np.int32)),
                    candidates.take(neighbours.ravel()),
                    pa.array(np.tile(np.arange(1, span + 1, dtype=np.int16), rows)),
                    pa.array(distance.ravel()),
                    pa.array(similarity(distance.ravel())),
                ],
                strict=True,
            )
        )
    )


#: Levels of a categorical feature a profile names per segment, most frequent first.
TOP_LEVELS = 3


def with_top_levels(
    profiles: pa.Table, counts: Mapping[str, Mapping[tuple[Any, str | None], int]]
) -> pa.Table:
    """Profiles with ``<column>_top`` per categorical feature: each segment's most frequent
    levels and their shares within it, e.g. ``web 62%; app 25%; store 10%``."""
    for column, by_segment in counts.items():
        per_segment: dict[Any, list[tuple[str | None, int]]] = {}
        for (segment, level), count in by_segment.items():
            per_segment.setdefault(segment, []).append((level, count))
        described = []
        for segment in profiles.column("segment").to_pylist():
            levels = sorted(
                per_segment.get(segment, []), key=lambda item: (-item[1], item[0] or "")
            )
            total = sum(count for _, count in levels) or 1
            described.append(
                "; ".join(f"{level} {count / total:.0%}" for level, count in levels[:TOP_LEVELS])
            )
        profiles = profiles.append_column(f"{column}_top", pa.array(described, pa.string()))
    return profiles


def customer_columns_beside(own: Sequence[str], columns: Sequence[str]) -> list[str]:
    """The customer columns a result table takes beside its own: a name it uses is left out."""
    taken = set(own)
    return [c for c in columns if c not in taken]


def lookalike_schema(id_column: str, id_type: pa.DataType) -> pa.Schema:
    """The Arrow schema of lookalike rows whose ids have ``id_type``."""
    types = [id_type, pa.int32(), id_type, pa.int16(), pa.float64(), pa.float64()]
    return pa.schema(list(zip(TABLES["lookalikes"].columns_for(id_column), types, strict=True)))
