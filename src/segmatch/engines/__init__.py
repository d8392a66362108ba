"""Engines, made by name; each engine's library is imported only when it is made."""

from __future__ import annotations

from segmatch.engines.base import Engine
from segmatch.errors import EngineUnavailableError

ENGINES = ("local", "spark")


def make_engine(name: str) -> Engine:
    """Make the engine called ``name``.

    Example:
        >>> make_engine("local").name
        'local'
    """
    if name == "local":
        from segmatch.engines.local import LocalEngine  # noqa: PLC0415 -- keeps polars lazy

        return LocalEngine()
    if name == "spark":
        raise EngineUnavailableError(
            "engine 'spark' is not available in this version of segmatch yet; use engine: local"
        )
    raise EngineUnavailableError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
