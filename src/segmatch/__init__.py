"""segmatch: customer segmentation and profile matching, timed, tracked and versioned.

``import segmatch`` is light: engines and their libraries load only when a run needs them.

Example:
    >>> import segmatch
    >>> result = segmatch.run_pipeline("config.yaml")  # doctest: +SKIP
    >>> result.k, round(result.silhouette, 3)  # doctest: +SKIP
    (6, 0.412)
"""

from __future__ import annotations

from typing import Any

from segmatch._version import __version__

__all__ = ["__version__", "generate_customers", "load_config", "run_pipeline"]


def __getattr__(name: str) -> Any:
    if name in {"run_pipeline", "generate_customers", "load_config"}:
        from segmatch import api  # noqa: PLC0415 -- the API pulls in the engines' libraries

        return getattr(api, name)
    raise AttributeError(f"module 'segmatch' has no attribute {name!r}")
