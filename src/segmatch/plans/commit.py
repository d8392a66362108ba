"""Finishing a run: its staged tables (and model) committed as one unit under the lease.

A run that holds the output's lease is the only one committing to it. If it fails part-way,
the tables it committed are put back to the versions the lease records, so the output still
holds one run's tables and model; a training run that succeeds becomes the current run. Tables
a run that died holding the lease had committed are put back first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from segmatch.config import config_digest
from segmatch.errors import DataQualityError
from segmatch.lease import OutputLease, TableState
from segmatch.plans.context import RunContext
from segmatch.stages import clean, export, ingest
from segmatch.staging import TableCommit
from segmatch.tables import TABLES


def commit_tables(
    context: RunContext,
    *,
    id_column: str,
    model_version: str | None,
    model: tuple[str, str] | None = None,
    silhouette: float | None = None,
) -> dict[str, TableCommit]:
    """Commit the staged tables (and move the staged ``model`` file into place) as one unit
    under the output's lease; the batch (config + input) the output already holds is not
    committed again."""
    outputs = context.outputs
    batch = (
        hashlib.sha256(
            f"{config_digest(context.config)}:{context.input_digest}".encode()
        ).hexdigest()[:24]
        if context.input_digest
        else None
    )
    lease = OutputLease(outputs.root, storage_options=context.engine.storage_options)
    claim = lease.acquire(context.run_id, timeout=context.config.output.lease_timeout)
    tables = dict(claim.previous.tables)
    if claim.interrupted is not None:
        tables = _put_back(context, tables)
    staged = outputs.staged_tables
    if batch is not None and all(
        name in tables
        and tables[name].batch == batch
        and context.engine.table_version(outputs.table_path(name)) == tables[name].version
        for name in staged
    ):
        lease.release(claim, current_run=claim.previous.current_run, tables=tables)
        return {
            name: TableCommit(
                name, outputs.table_path(name), tables[name].version, "skipped", 0, True
            )
            for name in staged
        }
    try:
        commits = outputs.commit(
            context.engine.commit_table,
            modes={name: context.config.output.mode(name) for name in TABLES},
            keys={name: spec.key_for(id_column) for name, spec in TABLES.items()},
            # Unique per commit: a batch the output held before another one is committed again.
            batch_id=f"{batch}-{claim.version}" if batch else None,
            metadata={"segmatch.model_version": model_version} if model_version else {},
            concurrency=context.engine.commit_concurrency,
        )
        if model is not None:
            outputs.files.move(*model)
            if model_version is not None and silhouette is not None:
                context.registry.promote(version=model_version, silhouette=silhouette)
    except BaseException:
        lease.release(
            claim, current_run=claim.previous.current_run, tables=_put_back(context, tables)
        )
        raise
    tables |= {
        name: TableState(commit.version, context.run_id, batch) for name, commit in commits.items()
    }
    lease.release(
        claim,
        current_run=context.run_id if model is not None else claim.previous.current_run,
        tables=tables,
    )
    return commits


def _put_back(context: RunContext, tables: Mapping[str, TableState]) -> dict[str, TableState]:
    """Restore every table that moved past the version the lease records for it."""
    restored = dict(tables)
    for name, table in tables.items():
        location = context.outputs.table_path(name)
        if context.engine.table_version(location) not in (None, table.version):
            version = context.engine.restore_table(location, table.version)
            restored[name] = TableState(version, table.run_id, table.batch)
    return restored


def commit_quarantine(
    context: RunContext,
    *,
    raw: ingest.RawInput,
    cleaned: clean.CleanedRows,
    error: DataQualityError,
) -> DataQualityError:
    """A run stopped for data quality commits its quarantine, and says where it is."""
    export.write_quarantine(context.engine, cleaned, context.outputs)
    placed = commit_tables(context, id_column=raw.plan.id_column, model_version=None)
    return DataQualityError(
        f"{error} The quarantined rows, each with the rule it broke, are in the Delta "
        f"table {str(placed['quarantine'].path)!r}."
    )
