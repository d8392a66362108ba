"""The write modes, defined once: what committing rows to a Delta table means, whatever writes.

Overwrite replaces the table's rows, append adds them, merge upserts them on a key (a merge
into a table that does not exist yet creates it). A commit carrying a batch's application id
commits that batch once: a table that already holds it is left alone. Each engine supplies a
:class:`DeltaWriter` — delta-rs over staged files or Arrow rows, Delta's own Spark writer over
a DataFrame — and :func:`commit_rows` decides which of its operations to run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from segmatch.staging import TableCommit
from segmatch.tables import WriteMode

RowsT_contra = TypeVar("RowsT_contra", contravariant=True)


@dataclass(frozen=True)
class Written:
    """What a write did: the rows it wrote, and the table's version after it when the writer
    knows it without asking again (None: ask :meth:`DeltaWriter.version`)."""

    rows: int
    version: int | None = None


@dataclass(frozen=True)
class CommitInfo:
    """What every commit carries: the run's metadata, and the batch's application id."""

    metadata: Mapping[str, str]
    app_id: str | None


class DeltaWriter(Protocol, Generic[RowsT_contra]):
    """One engine's operations on a Delta table; :func:`commit_rows` gives them meaning."""

    def version(self, location: str) -> int | None:
        """The table's latest version (None: no table there)."""
        ...

    def holds_batch(self, location: str, app_id: str) -> bool:
        """Whether the table already committed this application id (False when the writer
        cannot tell ahead: it then skips the batch itself, leaving the version unchanged)."""
        ...

    def write(
        self,
        location: str,
        rows: RowsT_contra,
        *,
        mode: Literal["overwrite", "append"],
        create: bool,
        commit: CommitInfo,
    ) -> Written:
        """Replace or add the rows (creating the table when ``create``)."""
        ...

    def merge(
        self, location: str, rows: RowsT_contra, *, keys: Sequence[str], commit: CommitInfo
    ) -> Written:
        """Upsert on ``keys``, rewriting only rows whose values differ."""
        ...


def commit_rows(
    writer: DeltaWriter[RowsT_contra],
    location: str,
    rows: RowsT_contra,
    *,
    name: str,
    mode: WriteMode,
    keys: Sequence[str],
    app_id: str | None,
    metadata: Mapping[str, str],
) -> TableCommit:
    """Commit ``rows`` to the table at ``location`` in ``mode``; what the commit did."""
    before = writer.version(location)
    if before is not None and app_id is not None and writer.holds_batch(location, app_id):
        return TableCommit(name, location, before, "skipped", 0, skipped=True)
    info = CommitInfo(metadata, app_id)
    if before is None or mode != "merge":
        plain: Literal["overwrite", "append"] = "overwrite" if mode == "overwrite" else "append"
        written = writer.write(location, rows, mode=plain, create=before is None, commit=info)
    else:
        written = writer.merge(location, rows, keys=keys, commit=info)
    after = written.version if written.version is not None else writer.version(location)
    if after is None or after == before:
        return TableCommit(name, location, before or 0, "skipped", 0, skipped=True)
    return TableCommit(name, location, after, mode, written.rows)
