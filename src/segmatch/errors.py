"""One exception tree for everything segmatch reports to a user.

Every message names the file, column or key at fault and the offending value, so that a user can
act on it without reading a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SegmatchError(Exception):
    """Base of every error segmatch raises on purpose."""


class ConfigError(SegmatchError):
    """The configuration is invalid: unknown key, wrong type, impossible combination."""


class InputError(SegmatchError):
    """The input data cannot be used: missing, unreadable, empty or of the wrong shape."""


class ColumnNotFoundError(InputError):
    """A column named in the config does not exist in the input."""

    def __init__(
        self,
        column: str,
        available: Iterable[str],
        *,
        source: str,
        role: str,
        message: str | None = None,
    ) -> None:
        available = list(available)
        hint = did_you_mean(column, available)
        listed = ", ".join(repr(c) for c in available[:30])
        more = f" (and {len(available) - 30} more)" if len(available) > 30 else ""
        super().__init__(
            message
            or f"{role} column {column!r} not found in {source}.{hint} Columns present: "
            f"{listed}{more}"
        )
        self.column = column


class ColumnTypeError(InputError):
    """A column has a type the config does not allow (e.g. text in a numeric feature)."""


class DataQualityError(SegmatchError):
    """Too many rows broke the validation rules; the run stops before writing any output."""


class ClusteringError(SegmatchError):
    """Clustering cannot produce a valid segmentation (too few customers, every k rejected)."""


class ModelError(SegmatchError):
    """A fitted model is missing, unfitted, or does not fit the data it is applied to."""


class OutputBusyError(SegmatchError):
    """Another run holds the output's lease: this run committed nothing."""


class LinkageUnavailableError(SegmatchError):
    """The identity step's libraries (Splink, DuckDB) are not installed."""


class EngineUnavailableError(SegmatchError):
    """The engine asked for needs an optional dependency that is not installed."""


class TrackingUnavailableError(SegmatchError):
    """The MLflow tracking store cannot be reached; the run stopped before its first stage."""

    def __init__(self, message: str, *, uri: str, reason: str) -> None:
        super().__init__(message)
        self.uri = uri
        self.reason = f"the MLflow tracking store {uri} cannot be reached ({reason})"


class TrackingError(SegmatchError):
    """The process that records runs in MLflow ended, or could not be reached."""


class PlanError(SegmatchError):
    """A plan is declared wrong: a step needs a value no earlier step makes, or a section or
    an attribute that does not exist. Raised when the plan is built, before any run."""


class StageError(SegmatchError):
    """An unexpected failure inside a stage, wrapped with the stage's name."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {type(cause).__name__}: {cause}")
        self.stage = stage


class RunFailedError(SegmatchError):
    """A run failed on something segmatch did not expect; its traceback is in the run's log."""

    def __init__(self, run_id: str, step: str, cause: BaseException, log: str | None) -> None:
        underlying = cause.__cause__ if isinstance(cause, StageError) and cause.__cause__ else cause
        where = f"the traceback is in {log}" if log else "its traceback could not be written"
        super().__init__(
            f"run {run_id} failed in {step}: {type(underlying).__name__}: "
            f"{first_line(underlying)}; {where}"
        )
        self.run_id = run_id
        self.step = step
        self.log = log


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries often append pages of context)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest candidate, or '' when none is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in candidates}
        if name.lower() in lowered:
            matches = [lowered[name.lower()]]
    return f" Did you mean {matches[0]!r}?" if matches else ""
