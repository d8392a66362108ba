"""Engines, made by name; each engine's library is imported only when it is made."""

from __future__ import annotations

from typing import Any

from segmatch.config import SparkConfig
from segmatch.engines.base import Engine
from segmatch.errors import EngineUnavailableError

ENGINES = ("local", "spark")


def make_engine(
    name: str,
    *,
    spark: SparkConfig | None = None,
    session: Any | None = None,
    storage_options: dict[str, str] | None = None,
    input_bytes: int | None = None,
) -> Engine:
    """Make the engine called ``name``; ``session`` is an existing SparkSession to use.
    ``input_bytes`` (the input's stored size, when known) sizes a Spark session started here.

    Example:
        >>> make_engine("local").name
        'local'
    """
    engine: Engine
    if name == "local":
        from segmatch.engines.local import LocalEngine  # noqa: PLC0415 -- keeps polars lazy

        engine = LocalEngine()
    elif name == "spark":
        try:
            from segmatch.engines.spark import SparkEngine  # noqa: PLC0415 -- pyspark is optional
        except ImportError as exc:
            raise EngineUnavailableError(
                f"engine 'spark' needs PySpark ({exc}); "
                "install it with: pip install 'segmatch[spark]'"
            ) from exc
        engine = SparkEngine(
            settings=spark or SparkConfig(), session=session, input_bytes=input_bytes
        )
    else:
        raise EngineUnavailableError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    engine.storage_options = dict(storage_options or {})
    return engine
