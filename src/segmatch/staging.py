"""A run's tables, staged beside the output until every stage has succeeded, then committed
together: one Delta commit per table, by the engine's committer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from segmatch.layout import OutputLayout
from segmatch.locations import Files, is_remote, join
from segmatch.tables import WriteMode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableCommit:
    """What committing one table did."""

    table: str
    path: str
    version: int
    operation: str
    rows: int
    skipped: bool = False


class StagedOutputs:
    """Tables of one run, staged as Parquet under ``<root>/.staging/runs/<run_id>``.

    ``root`` is the output location (a local path or a URI): staged files sit beside the
    tables, where every executor can write them.

    Example:
        >>> staged = StagedOutputs("s3://bucket/out", "run-1")  # doctest: +SKIP
        >>> engine.stage_table(frame, outputs=staged, table="segments")  # doctest: +SKIP
        >>> staged.commit(engine.commit_table, modes={"segments": "overwrite"}, keys={})
    """

    def __init__(
        self,
        root: str | Path,
        run_id: str,
        *,
        files: Files | None = None,
        tables_in: str | None = None,
    ) -> None:
        self.root = str(root)
        self.run_id = run_id
        self.files = files or Files()
        #: ``catalog.schema`` when tables are named in a catalog rather than placed in root.
        self.tables_in = tables_in
        self.staging = OutputLayout(self.root).staged_run(run_id)
        self._tables: list[str] = []
        self._held: dict[str, Any] = {}

    def path_for(self, table: str) -> str:
        """The folder to write ``table``'s Parquet files to."""
        folder = join(self.staging, table)
        if not is_remote(folder):
            self.files.make_dirs(folder)
        if table not in self._tables:
            self._tables.append(table)
        return folder

    def hold(self, table: str, rows: Any) -> None:
        """Stage ``table`` as rows the engine keeps (a lazy frame) instead of files: its
        committer writes them to the Delta table directly."""
        self._held[table] = rows
        if table not in self._tables:
            self._tables.append(table)

    @property
    def staged_tables(self) -> tuple[str, ...]:
        """The tables staged so far and not yet committed."""
        return tuple(self._tables)

    def table_path(self, table: str) -> str:
        """The table's location: its folder under root, or its catalog name."""
        return f"{self.tables_in}.{table}" if self.tables_in else join(self.root, table)

    def commit(
        self,
        committer: TableCommitter,
        *,
        modes: Mapping[str, WriteMode],
        keys: Mapping[str, Sequence[str]],
        batch_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        concurrency: int = 1,
    ) -> dict[str, TableCommit]:
        """Commit every staged table to its Delta table; return what each commit did.

        ``committer`` is the engine's way to commit one table (:func:`commit_staged` here);
        up to ``concurrency`` tables commit at once. When one fails, the others still finish
        before its error is raised, so the caller can put back every table that moved.
        The staging folder stays until :meth:`discard` (other staged files may follow).
        """
        properties = {"segmatch.run_id": self.run_id, **(metadata or {})}

        def commit(table: str) -> TableCommit:
            return committer(
                self.table_path(table),
                staged=self._held.get(table, join(self.staging, table)),
                mode=modes.get(table, "overwrite"),
                keys=keys.get(table, ()),
                app_id=f"segmatch:{table}:{batch_id}" if batch_id else None,
                metadata=properties,
            )

        workers = max(1, min(concurrency, len(self._tables)))
        if workers == 1:
            done = {table: commit(table) for table in self._tables}
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="segmatch-commit") as pool:
                futures = {table: pool.submit(commit, table) for table in self._tables}
                wait(futures.values())
            done = {table: future.result() for table, future in futures.items()}
        self._tables.clear()
        self._held.clear()
        for result in done.values():
            logger.debug(
                "table %s: version %d (%s, %d rows)",
                result.path,
                result.version,
                result.operation,
                result.rows,
            )
        return done

    def discard(self) -> None:
        """Remove whatever this run staged (the run failed or committed)."""
        self.files.remove_tree(self.staging)


class TableCommitter(Protocol):
    """Commits one table's staged rows (a Parquet folder, or rows the engine held) to its
    Delta table."""

    def __call__(
        self,
        location: str,
        *,
        staged: Any,
        mode: WriteMode,
        keys: Sequence[str],
        app_id: str | None,
        metadata: Mapping[str, str],
    ) -> TableCommit: ...
