"""The output lease: one run at a time commits to an output, and a manifest names what is current.

An output location holds several Delta tables and a model file that only make sense together.
Delta makes each table's commit atomic, not the set. Runs therefore commit under a lease: a
one-row Delta table, ``<output>/_segmatch/lease``, that names the run holding it (if any) and
the run whose tables and model are current, with each table's version.

Taking the lease is an overwrite of that row from the version just read. Delta's optimistic
concurrency makes it exclusive on every store Delta supports: two runs that read the same
version both remove the same file, so only the first commit of the next version succeeds and
the other gets a conflict, reads again and waits. The same primitive is what makes a Delta
commit safe on the store at hand (a rename on a file system, a conditional put on S3), so the
lease needs nothing Delta does not already need.

A holder that died (its process is gone, or, seen from another host, its lease is older than
``stale_after``) loses the lease to the next run, which is told what the dead run may have
half-committed (:attr:`Claim.interrupted`) and puts those tables back first.

Example:
    >>> lease = OutputLease("s3://lake/out", storage_options={})  # doctest: +SKIP
    >>> claim = lease.acquire("run-2", timeout=600)  # doctest: +SKIP
    >>> lease.release(claim, current_run="run-2", tables={})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from segmatch.errors import OutputBusyError
from segmatch.layout import OutputLayout

logger = logging.getLogger(__name__)

#: How long a lease held from another host counts as live without its holder finishing.
STALE_AFTER_SECONDS = 6 * 3600.0
#: The first pause between two looks at a held lease (it doubles up to a second).
FIRST_WAIT_SECONDS = 0.05

_SCHEMA = pa.schema(
    [
        ("holder", pa.string()),
        ("holder_host", pa.string()),
        ("holder_pid", pa.int64()),
        ("acquired_at", pa.float64()),
        ("current_run", pa.string()),
        ("tables", pa.string()),
        ("updated_at", pa.float64()),
    ]
)


@dataclass(frozen=True)
class TableState:
    """A table as the last run that committed it left it."""

    version: int
    run_id: str
    #: The batch (config and input) it was committed for: the same batch again is nothing new.
    batch: str | None = None


@dataclass(frozen=True)
class LeaseState:
    """The lease row: who holds it, and which run's outputs are current."""

    holder: str | None = None
    holder_host: str | None = None
    holder_pid: int | None = None
    acquired_at: float | None = None
    current_run: str | None = None
    #: Table name → its version, and the run and batch that committed it.
    tables: dict[str, TableState] = field(default_factory=dict)

    @property
    def versions(self) -> dict[str, int]:
        return {name: table.version for name, table in self.tables.items()}

    def held_by_live_run(self, *, stale_after: float) -> bool:
        if self.holder is None:
            return False
        if self.holder_host != socket.gethostname():
            return time.time() - (self.acquired_at or 0.0) < stale_after
        try:
            os.kill(int(self.holder_pid or 0), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, OverflowError, ValueError):
            return True
        return True


@dataclass(frozen=True)
class Claim:
    """A held lease: the state it was taken from, and the version that holds it."""

    run_id: str
    previous: LeaseState
    version: int
    #: A holder that died before releasing: its tables may be ahead of ``previous.versions``.
    interrupted: str | None = None


class OutputLease:
    """Exclusive commits to one output location, and the manifest of what is current there."""

    def __init__(
        self,
        root: str,
        *,
        storage_options: Mapping[str, str] | None = None,
        stale_after: float = STALE_AFTER_SECONDS,
    ) -> None:
        self.root = root
        self.location = OutputLayout(root).lease
        self.storage_options = dict(storage_options or {}) or None
        self.stale_after = stale_after

    def current(self) -> LeaseState:
        """The lease as it is now (an empty state where no run committed under it yet)."""
        try:
            table = DeltaTable(self.location, storage_options=self.storage_options)
        except TableNotFoundError:
            return LeaseState()
        return _state(table)

    def acquire(self, run_id: str, *, timeout: float) -> Claim:
        """Hold the lease, waiting up to ``timeout`` seconds for a live holder to finish."""
        deadline = time.monotonic() + timeout
        wait = FIRST_WAIT_SECONDS
        while True:
            table, state = self._read()
            if not state.held_by_live_run(stale_after=self.stale_after):
                interrupted = state.holder
                taken = LeaseState(
                    holder=run_id,
                    holder_host=socket.gethostname(),
                    holder_pid=os.getpid(),
                    acquired_at=time.time(),
                    current_run=state.current_run,
                    tables=state.tables,
                )
                version = self._write(table, taken)
                if version is not None:
                    logger.debug(
                        "run %s holds the lease on %s (version %d)", run_id, self.root, version
                    )
                    return Claim(run_id, state, version, interrupted)
            elif time.monotonic() >= deadline:
                raise OutputBusyError(
                    f"another run {state.holder} is writing to {self.root!r} (since "
                    f"{time.strftime('%H:%M:%S', time.localtime(state.acquired_at or 0))}, "
                    f"on {state.holder_host}); this run committed nothing. Run it again once "
                    "that one has finished, or raise output.lease_timeout to wait longer"
                )
            logger.debug("run %s waits for %s to release %s", run_id, state.holder, self.root)
            time.sleep(wait)
            wait = min(2 * wait, 1.0)

    def release(
        self, claim: Claim, *, current_run: str | None, tables: Mapping[str, TableState]
    ) -> None:
        """Give the lease up, naming the run whose outputs are now current."""
        table, state = self._read()
        if state.holder != claim.run_id:
            raise OutputBusyError(
                f"run {claim.run_id} lost its lease on {self.root!r} to {state.holder} while "
                "committing (its lease was taken as stale); check `segmatch history`"
            )
        released = LeaseState(current_run=current_run, tables=dict(tables))
        if self._write(table, released) is None:
            raise OutputBusyError(
                f"run {claim.run_id} could not release its lease on {self.root!r}: another "
                "writer changed it"
            )

    def _read(self) -> tuple[DeltaTable, LeaseState]:
        table = self._open()
        return table, _state(table)

    def _open(self) -> DeltaTable:
        """The lease table, created free (one row, no holder) where there is none yet.

        Taking the lease must remove a file some other taker would remove too, for the two
        commits to conflict: so the table always holds a row, from its first version on.
        """
        try:
            return DeltaTable(self.location, storage_options=self.storage_options)
        except TableNotFoundError:
            pass
        with contextlib.suppress(CommitFailedError):  # another run created it first
            write_deltalake(
                self.location,
                _row(LeaseState()),
                mode="append",
                storage_options=self.storage_options,
            )
        return DeltaTable(self.location, storage_options=self.storage_options)

    def _write(self, table: DeltaTable, state: LeaseState) -> int | None:
        """Overwrite the lease from the version read; None when another run wrote first."""
        try:
            write_deltalake(table, _row(state), mode="overwrite")
        except CommitFailedError:
            return None
        return table.version()


def _state(table: DeltaTable) -> LeaseState:
    rows = table.to_pyarrow_table().to_pylist()
    # Two runs creating the lease at once may each add a free row: a held row wins.
    row = next((r for r in rows if r["holder"] is not None), rows[0] if rows else None)
    if row is None:
        return LeaseState()
    return LeaseState(
        holder=row["holder"],
        holder_host=row["holder_host"],
        holder_pid=row["holder_pid"],
        acquired_at=row["acquired_at"],
        current_run=row["current_run"],
        tables={k: TableState(**v) for k, v in json.loads(row["tables"] or "{}").items()},
    )


def _row(state: LeaseState) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "holder": state.holder,
                "holder_host": state.holder_host,
                "holder_pid": state.holder_pid,
                "acquired_at": state.acquired_at,
                "current_run": state.current_run,
                "tables": json.dumps(
                    {name: asdict(table) for name, table in state.tables.items()}, sort_keys=True
                ),
                "updated_at": time.time(),
            }
        ],
        schema=_SCHEMA,
    )
