"""A synthetic customer base with known segments and realistic dirt, seeded and deterministic.

Six latent segments differ in age, income, recency, frequency, spend, tenure, channel and
region; numeric columns are skewed like real spend data. A small share of rows carries the
faults a production feed has: blank ids, impossible ages, infinite spend, missing income and
re-sent (duplicate) customers with a later ``updated_at``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SEGMENT_WEIGHTS = np.array([0.27, 0.22, 0.18, 0.14, 0.11, 0.08])
# Per latent segment: age mean, log-income mean, mean recency (days), mean purchases per
# year, log spend per purchase, tenure mean (days).
SEGMENT_TRAITS = np.array(
    [
        [34.0, 10.3, 20.0, 24.0, 3.6, 700.0],
        [52.0, 10.9, 60.0, 8.0, 4.6, 2400.0],
        [27.0, 9.8, 150.0, 3.0, 3.1, 250.0],
        [45.0, 11.5, 10.0, 40.0, 5.2, 1800.0],
        [63.0, 10.5, 240.0, 2.0, 4.0, 3600.0],
        [40.0, 11.0, 90.0, 5.0, 6.0, 1200.0],
    ]
)
CHANNELS = np.array(["web", "store", "app", "phone"])
CHANNEL_ODDS = np.array(
    [
        [0.45, 0.15, 0.35, 0.05],
        [0.20, 0.60, 0.05, 0.15],
        [0.35, 0.05, 0.58, 0.02],
        [0.40, 0.30, 0.25, 0.05],
        [0.10, 0.55, 0.05, 0.30],
        [0.30, 0.30, 0.30, 0.10],
    ]
)
REGIONS = np.array(["north", "south", "east", "west", "islands"])
REGION_ODDS = np.array([0.30, 0.27, 0.20, 0.18, 0.05])
EPOCH = datetime(2026, 1, 1)

#: Default share of rows carrying a fault.
DIRTY_SHARE = 0.004


def generate_customers(
    path: str | Path, *, rows: int = 100_000, seed: int = 7, dirty_share: float = DIRTY_SHARE
) -> Path:
    """Write a synthetic customer table (``.parquet`` or ``.csv``) and return its path.

    Example:
        >>> generate_customers("customers.parquet", rows=1000)  # doctest: +SKIP
        PosixPath('customers.parquet')
    """
    path = Path(path)
    if rows < 1:
        raise ValueError(f"rows={rows} should be >= 1")
    table = customer_table(rows=rows, seed=seed, dirty_share=dirty_share)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path, row_group_size=1_000_000)
    return path


def customer_table(*, rows: int, seed: int = 7, dirty_share: float = DIRTY_SHARE) -> pa.Table:
    """The synthetic customer base as an Arrow table."""
    rng = np.random.default_rng(seed)
    segment = rng.choice(len(SEGMENT_WEIGHTS), size=rows, p=SEGMENT_WEIGHTS)
    traits = SEGMENT_TRAITS[segment]
    age = np.clip(rng.normal(traits[:, 0], 6.0), 18, 95).round().astype(np.int64)
    income = np.exp(rng.normal(traits[:, 1], 0.35)).round(2)
    recency = rng.exponential(traits[:, 2]).round(1)
    frequency = rng.poisson(traits[:, 3]).astype(np.int64)
    spend = (frequency * np.exp(rng.normal(traits[:, 4], 0.45))).round(2)
    tenure = np.clip(rng.normal(traits[:, 5], traits[:, 5] * 0.25), 1, None).round()
    channel = _categorical(rng, CHANNEL_ODDS[segment], CHANNELS)
    region = REGIONS[rng.choice(len(REGIONS), size=rows, p=REGION_ODDS)]
    updated = np.datetime64(EPOCH, "s") + rng.integers(0, 300 * 86400, size=rows).astype(
        "timedelta64[s]"
    )
    ids = pc.binary_join_element_wise(
        "C", pc.utf8_lpad(pc.cast(pa.array(np.arange(1, rows + 1)), pa.string()), 8, "0"), ""
    )
    columns = {
        "idcliente": ids.to_numpy(zero_copy_only=False).astype(object),
        "age": age.astype(np.float64),
        "income": income,
        "recency_days": recency,
        "frequency": frequency.astype(np.float64),
        "monetary": spend,
        "tenure_days": tenure,
        "channel": channel.astype(object),
        "region": region.astype(object),
        "updated_at": updated,
    }
    columns, duplicates = _add_faults(rng, columns, rows, dirty_share)
    table = pa.table(
        {
            "idcliente": pa.array(columns["idcliente"], pa.string()),
            "age": pa.array(columns["age"], pa.float64(), from_pandas=True),
            "income": pa.array(columns["income"], pa.float64(), from_pandas=True),
            "recency_days": pa.array(columns["recency_days"], pa.float64()),
            "frequency": pa.array(columns["frequency"], pa.int64()),
            "monetary": pa.array(columns["monetary"], pa.float64()),
            "tenure_days": pa.array(columns["tenure_days"], pa.float64()),
            "channel": pa.array(columns["channel"], pa.string()),
            "region": pa.array(columns["region"], pa.string()),
            "updated_at": pa.array(columns["updated_at"], pa.timestamp("s")),
        }
    )
    if not len(duplicates):
        return table
    resent = table.take(duplicates)
    later = pc.add(resent["updated_at"], pa.scalar(86400, pa.duration("s")))
    resent = resent.set_column(resent.schema.get_field_index("updated_at"), "updated_at", later)
    more = pc.round(pc.multiply(resent["monetary"], 1.1), 2)
    resent = resent.set_column(resent.schema.get_field_index("monetary"), "monetary", more)
    return pa.concat_tables([table, resent])


def latent_segments(*, rows: int, seed: int = 7) -> np.ndarray:
    """Each generated customer's latent segment, in row order (before re-sent duplicates)."""
    return np.random.default_rng(seed).choice(len(SEGMENT_WEIGHTS), size=rows, p=SEGMENT_WEIGHTS)


def _categorical(rng: np.random.Generator, odds: np.ndarray, levels: np.ndarray) -> np.ndarray:
    cumulative = odds.cumsum(axis=1)
    draws = rng.random(len(odds))[:, None]
    return levels[np.minimum((draws > cumulative).sum(axis=1), len(levels) - 1)]


def _add_faults(rng, columns, rows, dirty_share):
    faults = int(rows * dirty_share)
    if faults < 5:
        return columns, np.array([], dtype=np.int64)
    picked = rng.choice(rows, size=faults, replace=False)
    blank_id, bad_age, inf_spend, no_income, resent = np.array_split(picked, 5)
    columns["idcliente"][blank_id[: len(blank_id) // 2]] = None
    columns["idcliente"][blank_id[len(blank_id) // 2 :]] = " "
    columns["age"][bad_age] = 150.0
    columns["monetary"][inf_spend] = np.inf
    columns["income"][no_income] = np.nan
    return columns, np.sort(resent)
