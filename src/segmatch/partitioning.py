"""The partition planner: how many partitions a Spark job should use, from volume and cores.

A pure function, so the decision is testable and can be logged with its inputs:
``n = clamp(ceil(input_bytes / target_bytes), floor, ceiling)``, with floor = 2 × cores unless
set, never more partitions than rows, and a fixed count only when the config asks for one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PartitionPlan:
    """The partitions chosen and everything the choice was made from."""

    partitions: int
    input_bytes: int
    rows: int | None
    cores: int
    target_bytes: int
    floor: int
    ceiling: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_partitions(
    *,
    input_bytes: int,
    cores: int,
    target_bytes: int,
    rows: int | None = None,
    floor: int | None = None,
    ceiling: int = 2000,
    fixed: int | None = None,
) -> PartitionPlan:
    """Choose the number of partitions.

    Example:
        >>> plan_partitions(input_bytes=10 * 2**30, cores=8, target_bytes=128 * 2**20).partitions
        80
    """
    if cores < 1 or target_bytes < 1 or ceiling < 1:
        raise ValueError(
            f"cores={cores}, target_bytes={target_bytes}, ceiling={ceiling} must be >= 1"
        )
    lower = max(1, floor if floor is not None else 2 * cores)

    def planned(partitions: int, reason: str) -> PartitionPlan:
        return PartitionPlan(
            partitions=partitions,
            reason=reason,
            input_bytes=input_bytes,
            rows=rows,
            cores=cores,
            target_bytes=target_bytes,
            floor=lower,
            ceiling=ceiling,
        )

    if fixed is not None:
        return planned(fixed, "fixed by config")
    by_size = math.ceil(max(input_bytes, 0) / target_bytes)
    partitions = min(max(by_size, lower), ceiling)
    reason = (
        f"{by_size} by size"
        if lower <= by_size <= ceiling
        else (f"floor {lower} (2 × cores)" if by_size < lower else f"ceiling {ceiling}")
    )
    if rows is not None and partitions > max(rows, 1):
        partitions, reason = max(rows, 1), "no more partitions than rows"
    return planned(partitions, reason)
