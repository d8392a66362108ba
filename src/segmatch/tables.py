"""The output tables a run can write: one registry of names, merge keys and write modes.

Config validation, staging, commits, scoring and history all read this registry, so a table
name, its key or its default mode is defined here and nowhere else.

Example:
    >>> TABLES["lookalikes"].key_for("idcliente")
    ('idcliente', 'rank')
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

WriteMode = Literal["overwrite", "append", "merge"]


class Table(StrEnum):
    """Every table a run writes. A member is its name: ``Table.SEGMENTS == "segments"``."""

    SEGMENTS = "segments"
    LOOKALIKES = "lookalikes"
    PROFILES = "profiles"
    QUARANTINE = "quarantine"
    STAGE_LOG = "stage_log"
    SCORES = "scores"
    ENTITIES = "entities"
    PAIRS = "pairs"
    LINKS = "links"


#: Stands for the input's id column in a merge key or a column list.
ID = "{id}"

LOOKALIKE_COLUMNS = (ID, "segment", "lookalike_id", "rank", "distance", "similarity")


@dataclass(frozen=True)
class TableSpec:
    """One output table: what a row is, the key a merge upserts on, the default write mode."""

    name: Table
    row: str
    merge_key: tuple[str, ...]
    default_mode: WriteMode
    columns: tuple[str, ...]

    def key_for(self, id_column: str) -> tuple[str, ...]:
        """The merge key with the input's id column in place of ``{id}``."""
        return tuple(id_column if part == ID else part for part in self.merge_key)

    def columns_for(self, id_column: str) -> list[str]:
        """The table's fixed leading columns, with the input's id column in place of ``{id}``."""
        return [id_column if part == ID else part for part in self.columns]

    @property
    def mergeable(self) -> bool:
        return bool(self.merge_key)


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            Table.SEGMENTS,
            "a customer's segment, distance to its centroid and PCA coordinates",
            (ID,),
            "overwrite",
            (ID, "segment", "distance"),
        ),
        TableSpec(
            Table.LOOKALIKES,
            "one customer of the segments table like a customer (training: like another "
            "customer of the segments table; scoring: like a new one), by rank",
            (ID, "rank"),
            "overwrite",
            LOOKALIKE_COLUMNS,
        ),
        TableSpec(
            Table.PROFILES,
            "a segment's size, share, and each feature's mean and median",
            ("segment",),
            "overwrite",
            ("segment", "size", "share"),
        ),
        TableSpec(
            Table.QUARANTINE,
            "an input row that broke a rule, as read, with the rule and column",
            (),
            "overwrite",
            (),
        ),
        TableSpec(
            Table.STAGE_LOG,
            "one stage of one run",
            ("run_id", "stage"),
            "append",
            ("run_id", "stage"),
        ),
        TableSpec(
            Table.SCORES,
            "a new customer's segment, distance and confidence",
            (ID,),
            "overwrite",
            (ID, "segment", "distance", "confidence"),
        ),
        TableSpec(
            Table.ENTITIES,
            "a record's entity (the person it belongs to), the entity's size, whether the "
            "record is its survivor",
            (ID,),
            "overwrite",
            (ID, "entity_id", "entity_size", "survivor", "run_id"),
        ),
        TableSpec(
            Table.PAIRS,
            "two records compared: match probability and weight, each field's weight, linked",
            (),
            "overwrite",
            (),
        ),
        TableSpec(
            Table.LINKS,
            "a scored record's entity: the known record it was linked to (none: a new entity), "
            "the link's probability and field weights, and why",
            (ID,),
            "overwrite",
            (ID, "entity_id", "new_entity", "linked_to"),
        ),
    )
}
