"""The Spark session segmatch uses, and the partition plan it spreads the input by."""

from __future__ import annotations

import os
import sys
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from segmatch.config import SparkConfig
from segmatch.engines.spark.frames import (
    persist,
)
from segmatch.partitioning import plan_partitions


def session_for(settings: SparkConfig) -> SparkSession:
    """A SparkSession for segmatch: the active one if any, else one built from the config."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = (
        SparkSession.builder.appName("segmatch")
        .master(settings.master)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    if settings.master.startswith("local") and "spark.driver.memory" not in settings.conf:
        # In local mode the driver holds everything; Spark's 1 GiB default fails at 5M rows.
        builder = builder.config("spark.driver.memory", f"{_half_of_memory_gib()}g")
    for key, value in settings.conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _half_of_memory_gib() -> int:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, total // 2**31)


class SparkPlanning:
    """How many partitions the data is spread over, decided from its volume and the cores."""

    @property
    def partitions(self) -> int:
        return self._plan.partitions if self._plan else self.spark.sparkContext.defaultParallelism

    def partition_plan(self) -> dict[str, Any]:
        return self._plan.as_dict() if self._plan else {}

    def distribute(self, frame: DataFrame, *, key: str, input_bytes: int) -> DataFrame:
        self._plan = plan_partitions(
            input_bytes=input_bytes,
            cores=self.spark.sparkContext.defaultParallelism,
            target_bytes=self.settings.target_partition_mb * 2**20,
            floor=self.settings.min_partitions,
            ceiling=self.settings.max_partitions,
            fixed=self.settings.fixed_partitions,
        )
        return persist(frame.repartition(self._plan.partitions, key))
