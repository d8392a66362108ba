"""identity: records of one person under several ids become one entity (entity resolution).

The records' compared columns come to the driver as Arrow and are linked there by Splink on
DuckDB (:mod:`segmatch.linkage`), on either engine; entities, survivors and stable ids are
engine-neutral (:mod:`segmatch.entities`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segmatch import entities, linkage
from segmatch.config import CleanConfig, IdentityConfig, InputConfig
from segmatch.engines.base import Engine, Frame
from segmatch.engines.expressions import Expr, col, row_position
from segmatch.errors import ColumnNotFoundError, ConfigError, InputError
from segmatch.layout import PART_FILE, write_arrow
from segmatch.locations import join
from segmatch.model import SegmentModel
from segmatch.stages.clean import CleanedRows
from segmatch.stages.columns import ROW_NUMBER_COLUMN
from segmatch.stages.ingest import open_input
from segmatch.staging import StagedOutputs
from segmatch.tables import Table

#: The entities table keeps each record's values as compared (normalised) under this prefix,
#: so scoring links new records to them without the training input.
COMPARED_PREFIX = "compared_"
#: Unlinked pairs kept in the pairs table as near misses, strongest first.
NEAR_MISSES = 10_000


@dataclass(frozen=True)
class Records:
    """The records to resolve, and the role of each compared column (with why)."""

    frame: Frame
    rows_in: int
    rows_out: int
    source: str
    id_column: str
    roles: dict[str, linkage.Role]
    chosen_by: dict[str, str]
    missing_ids: int


def read_records(
    engine: Engine, *, config: InputConfig, identity: IdentityConfig, clean: CleanConfig
) -> Records:
    """The input's records with an id, and the roles of the columns to compare: the config's
    ``identity.columns``, else the ones the columns' names say."""
    frame = open_input(engine, config).frame
    id_column = config.id_column or ROW_NUMBER_COLUMN
    if config.id_column is None:
        frame = engine.with_columns(frame, {ROW_NUMBER_COLUMN: row_position()})
    schema = engine.schema(frame)
    if id_column not in schema:
        raise ColumnNotFoundError(id_column, list(schema), source=config.path, role="id")
    roles, chosen_by = compared_columns(
        engine, frame, identity, id_column=id_column, source=config.path
    )
    ids = col(id_column).as_text()
    if clean.trim_ids:
        ids = ids.strip()
    frame = engine.with_columns(frame, {id_column: ids})
    rows_in = engine.count(frame)
    kept = engine.filter(frame, col(id_column).ne("").fill_null(False))
    rows_out = engine.count(kept)
    if rows_out == 0:
        raise InputError(f"input {config.path!r} has no record with an id ({id_column!r})")
    return Records(
        frame=kept,
        rows_in=rows_in,
        rows_out=rows_out,
        source=config.path,
        id_column=id_column,
        roles=roles,
        chosen_by=chosen_by,
        missing_ids=rows_in - rows_out,
    )


def compared_columns(
    engine: Engine, frame: Frame, identity: IdentityConfig, *, id_column: str, source: str
) -> tuple[dict[str, linkage.Role], dict[str, str]]:
    """The role of each column to compare, and why: ``identity.columns``, else the roles the
    columns' names say, then the roles the values of the other text columns say."""
    schema = engine.schema(frame)
    if identity.columns is not None:
        roles: dict[str, linkage.Role] = dict(identity.columns)
        chosen_by = dict.fromkeys(roles, "identity.columns")
    else:
        unnamed = [c for c in schema if c not in (id_column, identity.source_column)]
        roles = linkage.roles_from_names(unnamed)
        chosen_by = {c: f"its name says {role}" for c, role in roles.items()}
        text = [c for c in unnamed if c not in roles and schema[c] == "string"]
        for column, (role, why) in roles_from_values(engine, frame, text).items():
            roles[column], chosen_by[column] = role, why
    for column in [*roles, *([identity.source_column] if identity.source_column else [])]:
        if column not in schema:
            raise ColumnNotFoundError(column, list(schema), source=source, role="identity")
    if not roles:
        raise ConfigError(
            f"no column of {source!r} has a role to compare by: name them in "
            "identity.columns (e.g. nome: full_name, nascimento: birth_date, cpf: cpf)"
        )
    return roles, chosen_by


#: A role is read from a column's values when this share of its non-empty values has the
#: role's format (over the whole column).
VALUE_SHARE = 0.9
#: Separators a phone number is written with.
PHONE_SEPARATORS = (" ", "(", ")", "-", ".", "+")


#: The roles values can say, in the order they are tried, and what such values are called.
VALUE_ROLES: dict[linkage.Role, str] = {
    "email": "e-mail addresses",
    "cpf": "CPFs with valid check digits",
    "postcode": "CEPs (00000-000)",
    "phone": "phone numbers (10 to 13 digits)",
}


def _value_formats(text: Expr) -> dict[linkage.Role, Expr]:
    """Whether a value has each of :data:`VALUE_ROLES`' formats. Plain 8-digit values are no
    CEP (they read as dates, yyyymmdd), and 11 digits are a CPF only with valid check digits
    (checked after)."""
    digits = text
    for separator in PHONE_SEPARATORS:
        digits = digits.replace(separator, "")
    return {
        "email": text.matches(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"),
        "cpf": text.matches(r"^\d{3}\.?\d{3}\.?\d{3}-?\d{2}$"),
        "postcode": text.matches(r"^\d{5}-\d{3}$"),
        "phone": text.matches(r"^\+?[0-9 ().-]+$").and_(digits.matches(r"^\d{10,13}$")),
    }


def roles_from_values(
    engine: Engine, frame: Frame, columns: list[str]
) -> dict[str, tuple[linkage.Role, str]]:
    """Roles the values of text columns say (e-mail, CPF, CEP, phone), each with why: one
    aggregation counts, over every row, each column's non-empty values and those of each
    format; a CPF-shaped column then has its check digits verified."""
    if not columns:
        return {}
    counts: dict[str, Expr] = {}
    for index, column in enumerate(columns):
        text = col(column).as_text().strip()
        non_empty = text.ne("").fill_null(False)
        counts[f"present_{index}"] = non_empty.as_float().sum()
        for role, matched in _value_formats(text).items():
            counts[f"{role}_{index}"] = non_empty.and_(matched).fill_null(False).as_float().sum()
    row = engine.to_arrow(engine.aggregate(frame, counts)).to_pylist()[0]
    found: dict[str, tuple[linkage.Role, str]] = {}
    for index, column in enumerate(columns):
        present = int(row[f"present_{index}"] or 0)
        if not present:
            continue
        for role, called in VALUE_ROLES.items():
            share = float(row[f"{role}_{index}"] or 0) / present
            if role == "cpf" and share >= VALUE_SHARE:
                share = _valid_cpf_share(engine, frame, column, present)
            if share >= VALUE_SHARE:
                found[column] = (
                    role,
                    f"its values: {share:.0%} of {present:,} non-empty values are {called}",
                )
                break
    return found


def _valid_cpf_share(engine: Engine, frame: Frame, column: str, present: int) -> float:
    values = engine.to_arrow(frame, columns=[column]).column(column).cast(pa.string())
    valid = linkage.valid_cpf(pc.replace_substring_regex(values, pattern="[^0-9]", replacement=""))
    return (len(valid) - valid.null_count) / present


def resolve_customers(
    engine: Engine,
    *,
    config: IdentityConfig,
    clean: CleanConfig,
    cleaned: CleanedRows,
    id_column: str,
    source: str,
    outputs: StagedOutputs,
    run_id: str,
) -> Identity:
    """The identity step of a training run: the cleaned customers (one row per id) resolved
    into entities, before features."""
    roles, chosen_by = compared_columns(
        engine, cleaned.frame, config, id_column=id_column, source=source
    )
    records = Records(
        frame=cleaned.frame,
        rows_in=cleaned.rows_out,
        rows_out=cleaned.rows_out,
        source=source,
        id_column=id_column,
        roles=roles,
        chosen_by=chosen_by,
        missing_ids=0,
    )
    return resolve_entities(
        engine,
        config=config,
        records=records,
        outputs=outputs,
        run_id=run_id,
        order_by=clean.duplicates.order_by,
    )


#: What the rows of a run with identity on carry beside their own columns.
ENTITY_COLUMNS = ("entity_id", "entity_size")


def entity_rows(
    engine: Engine, *, cleaned: CleanedRows, resolved: Identity | None, id_column: str
) -> CleanedRows:
    """One row per entity, its survivor's, with ``entity_id`` and ``entity_size`` (the cleaned
    rows as they are when identity is off)."""
    if resolved is None:
        return cleaned
    chosen = resolved.entities.filter(resolved.entities["survivor"])
    frame = engine.lookup(
        cleaned.frame, key=id_column, table=chosen.select([id_column, *ENTITY_COLUMNS])
    )
    frame = engine.filter(frame, col("entity_id").is_null().not_())
    return replace(cleaned, frame=frame, rows_out=resolved.entity_count)


@dataclass(frozen=True)
class Identity:
    """Entities and scored pairs, the threshold, the blocking and the fitted model."""

    entities: pa.Table
    pairs: pa.Table
    threshold: entities.Threshold
    blocking: tuple[linkage.BlockingRule, ...]
    model: dict[str, Any]
    roles: dict[str, str]
    #: Why each compared column has its role (identity.columns, its name, its values).
    role_reasons: dict[str, str]
    events: list[dict[str, object]]
    entity_count: int
    linked_pairs: int
    refused_links: int
    estimated_blocking_recall: float
    rows_in: int
    rows_out: int
    kept_ids: int = 0
    opened_ids: int = 0
    size_histogram: dict[str, int] = field(default_factory=dict)

    def trained(self) -> dict[str, Any]:
        """What scoring needs to link new records without refitting: the roles, the fitted
        model, the threshold and the blocking rules used."""
        return {
            "roles": self.roles,
            "model": self.model,
            "threshold": self.threshold.threshold,
            "rules": [list(rule.columns) for rule in self.blocking if rule.used],
        }

    def summary(self) -> dict[str, Any]:
        """The step's figures, blocking and fitted model, as JSON-compatible data."""
        return {
            "records": self.rows_in,
            "entities": self.entity_count,
            "linked_pairs": self.linked_pairs,
            "threshold": self.threshold.threshold,
            "expected_precision": self.threshold.precision,
            "expected_recall": self.threshold.recall,
            "estimated_blocking_recall": self.estimated_blocking_recall,
            "refused_links": self.refused_links,
            "size_histogram": self.size_histogram,
            "blocking": [{**asdict(rule), "columns": list(rule.columns)} for rule in self.blocking],
            "model": self.model,
        }


def resolve_entities(
    engine: Engine,
    *,
    config: IdentityConfig,
    records: Records,
    outputs: StagedOutputs,
    run_id: str,
    order_by: str | None = None,
) -> Identity:
    """Link the records, group linked records into entities (keeping the ids of the entities
    the output already holds), and explain every pair."""
    id_column = records.id_column
    wanted = [id_column, *records.roles]
    if config.source_column:
        wanted.append(config.source_column)
    if order_by and order_by not in wanted:
        wanted.append(order_by)
    table = engine.to_arrow(records.frame, columns=wanted)
    linked = linkage.link(
        table,
        id_column=id_column,
        roles=records.roles,
        max_pairs=config.max_pairs,
        max_block=config.max_block,
        seed=config.seed,
        source_column=config.source_column,
        link_only=config.link_only,
    )
    ids = table.column(id_column).to_pylist()
    position = {record: i for i, record in enumerate(ids)}
    pairs = linked.pairs
    probability = pairs.column("match_probability").to_numpy()
    threshold = entities.choose_threshold(probability, fixed=config.threshold)
    linked_mask = probability >= threshold.threshold
    left = np.array(
        [position[r] for r in pairs.column(f"{id_column}_l").to_pylist()], dtype=np.int64
    )
    right = np.array(
        [position[r] for r in pairs.column(f"{id_column}_r").to_pylist()], dtype=np.int64
    )
    grouping = entities.group_records(
        len(ids),
        left[linked_mask],
        right[linked_mask],
        pairs.column("match_weight").to_numpy()[linked_mask],
        max_size=config.max_entity_size,
    )
    compared = linked.records
    completeness = np.sum(
        [compared.column(c).is_valid().to_numpy(zero_copy_only=False) for c in records.roles],
        axis=0,
    )
    order = _order(table, order_by)
    survivor = entities.survivors(grouping.groups, completeness=completeness, order=order, ids=ids)
    previous = _previous_entities(engine, outputs, id_column)
    named = entities.stable_ids(grouping.groups, ids, previous)
    entity_rows = entities.entity_table(
        id_column,
        record_ids=ids,
        groups=grouping.groups,
        ids=named,
        survivor=survivor,
        run_id=run_id,
    )
    for name in compared.column_names:
        if name != id_column and not name.startswith(linkage.BLOCK_KEY_PREFIX):
            entity_rows = entity_rows.append_column(
                f"{COMPARED_PREFIX}{name}", compared.column(name)
            )
    sizes = np.bincount(grouping.groups)
    return Identity(
        entities=entity_rows,
        pairs=_pairs_table(pairs, linked_mask, threshold.threshold),
        threshold=threshold,
        blocking=linked.blocking,
        model=linked.model,
        roles=dict(records.roles),
        role_reasons=dict(records.chosen_by),
        events=named.events,
        entity_count=len(sizes),
        linked_pairs=int(linked_mask.sum()),
        refused_links=grouping.refused,
        estimated_blocking_recall=_blocking_recall(
            compared, pairs, linked_mask, linked.blocking, id_column
        ),
        rows_in=records.rows_out,
        rows_out=len(sizes),
        kept_ids=named.kept,
        opened_ids=named.opened,
        size_histogram={
            str(size): int(n) for size, n in zip(*np.unique(sizes, return_counts=True), strict=True)
        },
    )


def _order(table: pa.Table, order_by: str | None) -> np.ndarray | None:
    if order_by is None:
        return None
    values = table.column(order_by)
    if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
        values = values.cast(pa.int64())
    numbers = (
        pc.cast(values, pa.float64(), safe=False) if not pa.types.is_string(values.type) else None
    )
    if numbers is None:
        ranks = pc.rank(values, sort_keys="ascending", null_placement="at_start")
        return ranks.to_numpy().astype(np.float64)
    return np.nan_to_num(numbers.to_numpy(zero_copy_only=False), nan=-np.inf)


def _previous_entities(engine: Engine, outputs: StagedOutputs, id_column: str) -> dict[str, str]:
    """Record id → entity id of the entities table the output holds (empty: none yet)."""
    location = outputs.table_path(Table.ENTITIES)
    if not engine.has_table(location):
        return {}
    frame = engine.read(path=location, fmt="delta", types={}, separator=",")
    rows = engine.to_arrow(frame, columns=[id_column, "entity_id"])
    return dict(
        zip(rows.column(id_column).to_pylist(), rows.column("entity_id").to_pylist(), strict=True)
    )


def _pairs_table(pairs: pa.Table, linked: np.ndarray, threshold: float) -> pa.Table:
    """Linked pairs and the strongest near misses, each with ``linked`` and, for a near miss,
    the reason it was not linked (its most negative field weight)."""
    weights = [c for c in pairs.column_names if c.startswith("weight_") and c != "weight_prior"]
    probability = pairs.column("match_probability").to_numpy()
    misses = np.flatnonzero(~linked)
    misses = misses[np.argsort(-probability[misses], kind="stable")][:NEAR_MISSES]
    chosen = np.sort(np.concatenate([np.flatnonzero(linked), misses]))
    kept = pairs.take(pa.array(chosen))
    matrix = np.column_stack([kept.column(c).to_numpy() for c in weights]) if weights else None
    reasons: list[str | None] = []
    for row, index in enumerate(chosen.tolist()):
        if linked[index] or matrix is None:
            reasons.append(None)
            continue
        worst = int(np.argmin(matrix[row]))
        reasons.append(
            f"probability {probability[index]:.3f} < threshold {threshold:.2f}; "
            f"{weights[worst].removeprefix('weight_')} weighs {matrix[row, worst]:+.1f}"
        )
    return kept.append_column("linked", pa.array(linked[chosen])).append_column(
        "reason", pa.array(reasons, pa.string())
    )


def _blocking_recall(
    records: pa.Table,
    pairs: pa.Table,
    linked: np.ndarray,
    rules: tuple[linkage.BlockingRule, ...],
    id_column: str,
) -> float:
    """The share of true matches the blocking generates, estimated without labels: each used
    rule's share of the linked pairs it would generate on its own, combined as if rules missed
    matches independently (1 − Π(1 − share))."""
    used = [rule for rule in rules if rule.used]
    if not linked.any() or not used:
        return float("nan")
    index = {r: i for i, r in enumerate(records.column(id_column).to_pylist())}
    left = [
        index[r] for r in pc.filter(pairs.column(f"{id_column}_l"), pa.array(linked)).to_pylist()
    ]
    right = [
        index[r] for r in pc.filter(pairs.column(f"{id_column}_r"), pa.array(linked)).to_pylist()
    ]
    missed = 1.0
    for rule in used:
        keys = records.column(rule.key).to_pylist()
        share = np.mean(
            [keys[a] is not None and keys[a] == keys[b] for a, b in zip(left, right, strict=True)]
        )
        missed *= 1.0 - float(share)
    return 1.0 - missed


#: Pairs of each kind the report shows.
SAMPLE_PAIRS = 5


def pairs_sample(resolved: Identity) -> pa.Table:
    """The weakest links and the strongest near misses, for the report."""
    pairs = resolved.pairs
    by_probability = pc.sort_indices(pairs, sort_keys=[("match_probability", "ascending")])
    ordered = pairs.take(by_probability)
    linked = ordered.filter(ordered["linked"]).slice(0, SAMPLE_PAIRS)
    missed = ordered.filter(pc.invert(ordered["linked"]))
    missed = missed.slice(max(missed.num_rows - SAMPLE_PAIRS, 0))
    return pa.concat_tables([linked, missed])


def stage_identity(outputs: StagedOutputs, identity: Identity) -> None:
    """Stage the entities and pairs tables for the run's commit."""
    for name, table in ((Table.ENTITIES, identity.entities), (Table.PAIRS, identity.pairs)):
        write_arrow(table, join(outputs.path_for(name), PART_FILE), files=outputs.files)


@dataclass(frozen=True)
class Links:
    """New records linked to the entities of a training run: one row per record with its
    entity, the known record it was linked to (or none: a new entity) and why."""

    table: pa.Table
    linked: int
    opened: int
    rows_in: int
    rows_out: int


def link_new_records(
    engine: Engine,
    *,
    config: IdentityConfig,
    cleaned: CleanedRows,
    model: SegmentModel,
    known: str,
    id_column: str,
    source: str,
) -> Links:
    """Each new record joined to a known entity (its id is a known record's, or its strongest
    link to a known record reaches the trained threshold) or to a new one, shared with the new
    records it links to; scored with the trained model, nothing refitted."""
    trained = model.identity_
    roles: dict[str, linkage.Role] = trained["roles"]
    schema = engine.schema(cleaned.frame)
    for column in roles:
        if column not in schema:
            raise ColumnNotFoundError(column, list(schema), source=source, role="identity")
    new = engine.to_arrow(cleaned.frame, columns=[id_column, *roles])
    as_read = new.column(id_column)
    new = new.set_column(0, id_column, as_read.cast(pa.string()))
    entities_frame = engine.read(path=known, fmt="delta", types={}, separator=",")
    values = [c for c in engine.schema(entities_frame) if c.startswith(COMPARED_PREFIX)]
    stored = engine.to_arrow(entities_frame, columns=[id_column, "entity_id", *values])
    entity_of = dict(
        zip(
            stored.column(id_column).to_pylist(),
            stored.column("entity_id").to_pylist(),
            strict=True,
        )
    )
    compared = stored.select([id_column, *values]).rename_columns(
        [id_column, *(c.removeprefix(COMPARED_PREFIX) for c in values)]
    )
    ids = new.column(id_column).to_pylist()
    fresh = new.filter(
        pc.invert(pc.is_in(new.column(id_column), value_set=stored.column(id_column)))
    )
    between, within = linkage.link_new(
        compared,
        fresh,
        id_column=id_column,
        roles=roles,
        model=trained["model"],
        rules=trained["rules"],
        max_block=config.max_block,
    )
    threshold = float(trained["threshold"])
    fresh_ids = fresh.column(id_column).to_pylist()
    position = {record: i for i, record in enumerate(fresh_ids)}
    nearest = _nearest_known(between, id_column)
    joined = within.column("match_probability").to_numpy() >= threshold

    def positions(side: str) -> np.ndarray:
        records = within.column(f"{id_column}_{side}").to_pylist()
        return np.array([position[r] for r in records], np.int64)[joined]

    groups = entities.group_records(
        len(fresh_ids),
        positions("l"),
        positions("r"),
        within.column("match_weight").to_numpy()[joined],
        max_size=config.max_entity_size,
    ).groups
    # Each group's strongest link to a known record, in one pass over the new records.
    strongest: dict[int, dict[str, Any]] = {}
    for record, group in zip(fresh_ids, groups.tolist(), strict=True):
        link = nearest.get(record)
        held = strongest.get(group)
        if link is not None and (
            held is None or link["match_probability"] > held["match_probability"]
        ):
            strongest[group] = link
    next_number = max((entities.entity_number(e) for e in entity_of.values()), default=0) + 1
    group_entity: dict[int, tuple[str, str | None]] = {}
    for group in range(int(groups.max()) + 1 if fresh_ids else 0):
        link = strongest.get(group)
        if link is not None and link["match_probability"] >= threshold:
            group_entity[group] = (entity_of[link["known"]], link["known"])
        else:
            group_entity[group] = (f"{entities.ENTITY_PREFIX}{next_number:09d}", None)
            next_number += 1
    weights = [c for c in between.column_names if c.startswith("weight_")]
    rows: list[dict[str, Any]] = []
    for record in ids:
        row: dict[str, Any] = dict.fromkeys(["match_probability", "match_weight", *weights])
        if record not in position:
            rows.append(
                row
                | {
                    "entity_id": entity_of[record],
                    "new_entity": False,
                    "linked_to": record,
                    "reason": "its id is a known record's",
                }
            )
            continue
        best = nearest.get(record)
        entity, via = group_entity[int(groups[position[record]])]
        if best is not None:
            row |= {k: best[k] for k in ("match_probability", "match_weight", *weights)}
        rows.append(
            row
            | {
                "entity_id": entity,
                "new_entity": via is None,
                "linked_to": via,
                "reason": _link_reason(best, via, threshold, weights),
            }
        )
    table = pa.table(
        {
            id_column: as_read,
            "entity_id": pa.array([r["entity_id"] for r in rows], pa.string()),
            "new_entity": pa.array([r["new_entity"] for r in rows], pa.bool_()),
            "linked_to": pa.array([r["linked_to"] for r in rows], pa.string()),
            **{
                name: pa.array([r[name] for r in rows], pa.float64())
                for name in ("match_probability", "match_weight", *weights)
            },
            "reason": pa.array([r["reason"] for r in rows], pa.string()),
        }
    )
    opened = len({r["entity_id"] for r in rows if r["new_entity"]})
    return Links(
        table=table,
        linked=sum(not r["new_entity"] for r in rows),
        opened=opened,
        rows_in=len(ids),
        rows_out=len(ids),
    )


def _nearest_known(between: pa.Table, id_column: str) -> dict[str, dict[str, Any]]:
    """Each new record's most probable known record, with the pair's weights."""
    order = pc.sort_indices(between, sort_keys=[("match_probability", "descending")])
    nearest: dict[str, dict[str, Any]] = {}
    for pair in between.take(order).to_pylist():
        record = pair[f"{id_column}_r"]
        if record not in nearest:
            nearest[record] = pair | {"known": pair[f"{id_column}_l"]}
    return nearest


def _link_reason(
    best: dict[str, Any] | None, via: str | None, threshold: float, weights: list[str]
) -> str:
    if best is None:
        joined = "" if via is None else f"linked through another new record to {via}; "
        return f"{joined}no known record shares a blocking key"
    fields = sorted(
        ((best[w], w.removeprefix("weight_")) for w in weights if w != "weight_prior"),
        reverse=True,
    )
    probability = best["match_probability"]
    if via is not None and best["known"] == via:
        strongest = ", ".join(f"{name} {weight:+.1f}" for weight, name in fields[:2])
        return f"linked to {via}: probability {probability:.3f} ≥ {threshold:.2f} ({strongest})"
    weakest_weight, weakest = fields[-1]
    below = "<" if probability < threshold else "≥"
    nearest = (
        f"nearest known record {best['known']} at probability {probability:.3f} {below} "
        f"{threshold:.2f}; {weakest} weighs {weakest_weight:+.1f}"
    )
    if via is not None:
        return f"linked through another new record to {via}; {nearest}"
    return f"new entity: {nearest}"
