"""From scored pairs to entities, engine-neutral: the threshold a model's own probabilities
choose, records grouped into entities with a guard against chains, a survivor per entity, and
entity ids that stay stable across runs.

Example:
    >>> choose_threshold(np.array([0.99, 0.98, 0.6, 0.02])).threshold  # doctest: +SKIP
    0.6
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

#: Thresholds tried when the model's own probabilities choose one.
CANDIDATE_THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.01), 2)
ENTITY_PREFIX = "E"


@dataclass(frozen=True)
class Threshold:
    """A match probability threshold and what the model expects of it (no labels used): the
    precision and recall it estimates among the pairs it scored."""

    threshold: float
    precision: float
    recall: float
    chosen_by: str

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


def expected_counts(probabilities: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """Expected true positives, false positives and false negatives at ``threshold`` if the
    model's probabilities are right: a pair of probability p is a match p of the time."""
    linked = probabilities >= threshold
    tp = float(probabilities[linked].sum())
    return tp, float((1 - probabilities[linked]).sum()), float(probabilities[~linked].sum())


def choose_threshold(probabilities: np.ndarray, *, fixed: float | None = None) -> Threshold:
    """The threshold with the best F1 the model expects of itself (or ``fixed``), with its
    expected precision and recall."""

    def at(threshold: float, chosen_by: str) -> Threshold:
        tp, fp, fn = expected_counts(probabilities, threshold)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        return Threshold(float(threshold), precision, recall, chosen_by)

    if fixed is not None:
        return at(fixed, "identity.threshold")
    scored = [at(t, "the best F1 the model expects") for t in CANDIDATE_THRESHOLDS]
    return max(scored, key=lambda t: (round(t.f1, 6), t.threshold))


@dataclass(frozen=True)
class Grouping:
    """Each record's group (its index among the groups) and the links the guard refused."""

    groups: np.ndarray
    refused: int


def group_records(
    count: int, left: np.ndarray, right: np.ndarray, weight: np.ndarray, *, max_size: int
) -> Grouping:
    """Records ``0 … count-1`` grouped by the links ``left[i] – right[i]``, strongest first
    (connected components), except that a link which would join two groups into one of more
    than ``max_size`` records is refused: a chain of plausible links cannot glue clearly
    different people into one entity."""
    parent = np.arange(count)
    size = np.ones(count, dtype=np.int64)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    refused = 0
    for index in np.argsort(-weight, kind="stable"):
        a, b = root(int(left[index])), root(int(right[index]))
        if a == b:
            continue
        if size[a] + size[b] > max_size:
            refused += 1
            continue
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
    roots = np.array([root(i) for i in range(count)])
    _, groups = np.unique(roots, return_inverse=True)
    return Grouping(groups.astype(np.int64), refused)


def survivors(
    groups: np.ndarray, *, completeness: np.ndarray, order: np.ndarray | None, ids: Sequence[str]
) -> np.ndarray:
    """One record per group: the most complete (most compared fields present), then the latest
    by ``order`` (``clean.duplicates.order_by``), then the smallest id."""
    ranked = np.lexsort(
        (
            np.argsort(np.argsort(np.asarray(ids, dtype=object))),
            -(order if order is not None else np.zeros(len(groups))),
            -completeness,
            groups,
        )
    )
    first = np.ones(len(ranked), dtype=bool)
    first[1:] = groups[ranked][1:] != groups[ranked][:-1]
    chosen = np.zeros(len(groups), dtype=bool)
    chosen[ranked[first]] = True
    return chosen


@dataclass(frozen=True)
class EntityIds:
    """Each group's entity id, and the merges and splits against the previous run."""

    ids: list[str]
    events: list[dict[str, object]]
    kept: int
    opened: int


def entity_number(entity_id: str) -> int:
    return int(entity_id.removeprefix(ENTITY_PREFIX))


def stable_ids(
    groups: np.ndarray, record_ids: Sequence[str], previous: Mapping[str, str]
) -> EntityIds:
    """Entity ids for the groups that keep the previous run's where they can: an entity keeps
    its id while it keeps its records; a merge keeps the oldest id; a split gives the id to the
    part holding most of the previous entity's records. New groups get new ids, after the
    largest one in use. ``previous`` maps record id → previous entity id."""
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    held: dict[str, dict[int, int]] = {}
    for record, group in zip(record_ids, groups.tolist(), strict=True):
        before = previous.get(record)
        if before is not None:
            held.setdefault(before, {}).setdefault(group, 0)
            held[before][group] += 1
    heir_of: dict[int, list[str]] = {}
    events: list[dict[str, object]] = []
    for entity, parts in held.items():
        # Most records, then the group met first: deterministic for equal parts.
        heir = max(parts, key=lambda g: (parts[g], -g))
        heir_of.setdefault(heir, []).append(entity)
        if len(parts) > 1:
            events.append({"event": "split", "entity_id": entity, "parts": len(parts)})
    next_number = max((entity_number(e) for e in previous.values()), default=0) + 1
    ids: list[str] = []
    kept = opened = 0
    for group in range(n_groups):
        claims = sorted(heir_of.get(group, []), key=entity_number)
        if claims:
            ids.append(claims[0])
            kept += 1
            for merged in claims[1:]:
                events.append({"event": "merge", "entity_id": claims[0], "merged": merged})
        else:
            ids.append(f"{ENTITY_PREFIX}{next_number:09d}")
            next_number += 1
            opened += 1
    return EntityIds(ids, events, kept, opened)


def entity_table(
    id_column: str,
    *,
    record_ids: Sequence[str],
    groups: np.ndarray,
    ids: EntityIds,
    survivor: np.ndarray,
    run_id: str,
) -> pa.Table:
    """The ``entities`` table: record id, entity id, entity size, survivor flag, run id."""
    sizes = np.bincount(groups, minlength=len(ids.ids))
    return pa.table(
        {
            id_column: pa.array(list(record_ids), pa.string()),
            "entity_id": pa.array([ids.ids[g] for g in groups.tolist()], pa.string()),
            "entity_size": pa.array(sizes[groups], pa.int64()),
            "survivor": pa.array(survivor, pa.bool_()),
            "run_id": pa.array([run_id] * len(groups), pa.string()),
        }
    )
