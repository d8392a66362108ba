"""The command line: parse arguments, show progress and summaries. No logic lives here."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from segmatch import api
from segmatch._version import __version__
from segmatch.errors import SegmatchError
from segmatch.locations import is_uri
from segmatch.progress import ProgressTask, install_sink
from segmatch.results import RunResult

app = typer.Typer(
    help="Customer segmentation and profile matching: timed, tracked, versioned.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

EXIT_USER_ERROR = 2


class _TerminalProgress:
    def __init__(self, console: Console) -> None:
        self.console = console

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[ProgressTask]:
        with Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as bar:
            task_id = bar.add_task(description, total=total)

            class _Task:
                def advance(self, steps: int = 1) -> None:
                    bar.advance(task_id, steps)

            yield _Task()


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (it may be swapped)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        return None


def _set_up_output(quiet: bool) -> None:
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("segmatch")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False
    interactive = sys.stderr.isatty() and not os.environ.get("CI")
    install_sink(_TerminalProgress(err) if interactive and not quiet else None)


def _fail(error: SegmatchError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {error}", highlight=False, markup=True)
    return typer.Exit(code=EXIT_USER_ERROR)


def _parse_sets(values: list[str]) -> dict[str, object]:
    parsed = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set expects KEY=VALUE, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(raw)
    return parsed


def _version(value: bool) -> None:
    if value:
        out.print(f"segmatch {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Customer segmentation and profile matching: timed, tracked, versioned."""


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML file describing the job.")],
    engine: Annotated[str | None, typer.Option(help="Engine to run on (local or spark).")] = None,
    out_dir: Annotated[
        str | None,
        typer.Option("--out", help="Output folder or URI (overrides output.path)."),
    ] = None,
    as_of: Annotated[
        int | None,
        typer.Option("--as-of", min=0, help="Read this version of a Delta input (time travel)."),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set cluster.k=6 (repeatable)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Run the pipeline on your own data, as described by CONFIG."""
    _set_up_output(quiet)
    overrides = _parse_sets(sets or [])
    if engine:
        overrides["engine"] = engine
    if out_dir:
        overrides["output.path"] = out_dir if is_uri(out_dir) else str(Path(out_dir).resolve())
    if as_of is not None:
        overrides["input.version"] = as_of
    try:
        result = api.run_pipeline(config, overrides=overrides)
    except SegmatchError as error:
        raise _fail(error) from None
    show_summary(result)


@app.command()
def demo(
    rows: Annotated[int, typer.Option(min=10, help="Customers to generate.")] = 100_000,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for data and outputs.")] = Path(
        "segmatch-demo"
    ),
    seed: Annotated[int, typer.Option(help="Seed for the data and for k-means.")] = 42,
    engine: Annotated[str, typer.Option(help="Engine to run on (local or spark).")] = "local",
    track: Annotated[
        bool, typer.Option("--track/--no-track", help="Record the run in MLflow.")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Generate a synthetic customer base and run the whole pipeline on it."""
    _set_up_output(quiet)
    out_dir = out_dir.resolve()
    data = out_dir / "data" / f"customers_{rows}_{seed}.parquet"
    try:
        if not data.exists():
            err.print(f"generating {rows:,} synthetic customers → {data}")
            api.generate_customers(data, rows=rows, seed=seed)
        result = api.run_pipeline(
            api.demo_config(data, out_dir / "output", seed=seed, engine=engine, tracking=track)
        )
    except SegmatchError as error:
        raise _fail(error) from None
    show_summary(result)


@app.command()
def generate(
    rows: Annotated[int, typer.Option(min=1, help="Customers to generate.")] = 100_000,
    out_path: Annotated[
        Path, typer.Option("--out", help="File to write (.parquet or .csv).")
    ] = Path("customers.parquet"),
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file).")] = 7,
    dirty_share: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share of rows carrying a fault.")
    ] = 0.004,
) -> None:
    """Write the synthetic customer data set (seeded, deterministic)."""
    path = api.generate_customers(out_path, rows=rows, seed=seed, dirty_share=dirty_share)
    out.print(f"wrote {rows:,} customers (plus re-sent duplicates) to {path}")


@app.command()
def score(
    model: Annotated[
        str,
        typer.Option(
            help="models:/NAME@ALIAS, runs:/ID/model, a model.json or a run's output folder."
        ),
    ] = "models:/segmatch@champion",
    input_path: Annotated[
        str, typer.Option("--input", help="New customers (CSV, Parquet, Delta; path or URI).")
    ] = "customers.csv",
    out_dir: Annotated[
        str, typer.Option("--out", help="Folder or URI for scores and lookalikes.")
    ] = "segmatch-scores",
    segments: Annotated[
        str | None,
        typer.Option(help="Segments table offering lookalikes (default: the training run's)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Assign new customers to the saved segments and find their existing lookalikes."""
    _set_up_output(quiet)
    try:
        result = api.score_customers(model, input_path, out_dir, segments=segments)
    except SegmatchError as error:
        raise _fail(error) from None
    out.print(
        f"scored {result.customers:,} customers ({result.quarantined:,} quarantined) in "
        f"{sum(r.seconds for r in result.stages):.2f} s"
    )
    share = result.beyond_training_p99 / max(result.customers, 1)
    # By construction 1% of customers like the training ones lie beyond that distance.
    style = "[yellow]warning:[/] " if share > 0.05 else ""
    out.print(
        f"{style}{result.beyond_training_p99:,} new customers ({share:.1%}) are farther from their "
        "segment's centre than 99% of its training customers (scores.beyond_training_p99)"
    )
    for name, path in result.outputs.items():
        out.print(f"  {name}: {path}")


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(help="The run's id (shown in its summary).")],
    output: Annotated[
        str | None,
        typer.Option(help="The run's output folder or URI (default: asked from MLflow)."),
    ] = None,
) -> None:
    """(Re)build a run's HTML report from its stored outputs."""
    try:
        path = api.rebuild_report(run_id, output=output)
    except SegmatchError as error:
        raise _fail(error) from None
    out.print(f"report: {path}")


@app.command()
def history(
    table: Annotated[
        str,
        typer.Argument(
            help="A Delta table folder or URI (segmatch-out/segments), or a catalog name "
            "(main.crm.segments, read through Spark)."
        ),
    ],
    limit: Annotated[int, typer.Option(min=1, help="How many versions to list.")] = 20,
) -> None:
    """List a Delta table's versions: time, operation, rows written, and the run that wrote it."""
    try:
        versions = api.table_history(table)[:limit]
        current = api.current_version(table)
    except SegmatchError as error:
        raise _fail(error) from None
    listing = Table(title=f"History of {table}", title_justify="left")
    for column in ("version", "time (UTC)", "operation", "rows written", "run id", ""):
        listing.add_column(column)
    for entry in versions:
        stamp = datetime.fromtimestamp(entry["timestamp"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        listing.add_row(
            str(entry["version"]),
            stamp,
            entry["operation"] or "-",
            f"{entry['rows_written']:,}" if entry["rows_written"] else "-",
            entry["run_id"] or "-",
            "← current" if current and current[0] == entry["version"] else "",
        )
    out.print(listing)
    if current is not None:
        out.print(f"current: version {current[0]}, committed by run {current[1]}")


@app.command()
def restore(
    table: Annotated[str, typer.Argument(help="A Delta table folder, URI or catalog name.")],
    version: Annotated[int, typer.Argument(min=0, help="The version to roll back to.")],
) -> None:
    """Roll a Delta table back to an earlier version (recorded as a new version)."""
    try:
        new_version = api.restore_table(table, version)
    except SegmatchError as error:
        raise _fail(error) from None
    out.print(f"{table} restored to version {version} (now version {new_version})")


@app.command()
def runs(
    limit: Annotated[int, typer.Option(min=1, help="How many runs to list.")] = 20,
    uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: ./mlflow.db).")
    ] = None,
) -> None:
    """List recent runs: id, date, rows, k, silhouette, total seconds, model version."""
    table = Table(title="Recent runs", title_justify="left")
    for column in (
        "run id",
        "started (UTC)",
        "status",
        "rows",
        "k",
        "silhouette",
        "seconds",
        "model",
    ):
        table.add_column(column)
    for run in api.recent_runs(uri=uri, limit=limit):
        started = datetime.fromtimestamp(run["started"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            run["run_id"],
            started,
            run["status"],
            run["rows"] or "-",
            _optional(run["k"], "{:.0f}"),
            _optional(run["silhouette"], "{:.4f}"),
            _optional(run["seconds"], "{:.2f}"),
            run["model_version"] or "-",
        )
    out.print(table)


def _optional(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _column_plan_line(plan: list[dict[str, str]]) -> str:
    """Roles with their columns, ignored ones grouped by reason (the full plan is in the run's
    column_plan.json)."""
    used: dict[str, list[str]] = {}
    ignored: dict[str, list[str]] = {}
    for entry in plan:
        if entry["role"] == "ignored":
            ignored.setdefault(entry["reason"], []).append(entry["column"])
        else:
            used.setdefault(entry["role"], []).append(entry["column"])
    parts = [f"{role}: {', '.join(columns)}" for role, columns in used.items()]
    parts += [f"ignored ({reason}): {', '.join(columns)}" for reason, columns in ignored.items()]
    return "columns — " + "; ".join(parts)


def _matching_line(matching: dict[str, Any]) -> str:
    recall = matching["recall_at_k"]
    checked = (
        "" if recall is None else f", recall@{matching['top_k']} {recall:.3f} against exact search"
    )
    return (
        f"lookalikes: top {matching['top_k']} per customer, searched in {matching['cells']:,} "
        f"cells (largest {matching['largest_cell']:,} customers){checked}"
    )


def show_summary(result: RunResult) -> None:
    """Print segments, the k sweep, stage times, data quality and where outputs are."""
    out.print()
    out.print(
        f"[bold]segmatch run {result.run_id}[/] — {result.customers:,} customers in "
        f"[bold]{result.k}[/] segments, silhouette [bold]{result.silhouette:.3f}[/] "
        f"(exact, squared Euclidean), {result.total_seconds:.2f} s"
    )
    if result.mlflow_run_id:
        moved = (
            f", {result.moved_customers:,} customers changed segment since the last run"
            if result.transitions is not None
            else ""
        )
        out.print(
            f"tracked as MLflow run {result.mlflow_run_id}; model version "
            f"{result.model_version}{moved}"
        )
    out.print(_column_plan_line(result.column_plan))
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {warning}")
    out.print(_segments_table(result))
    if result.matching:
        out.print(_matching_line(result.matching))
    if result.candidates:
        out.print(_sweep_table(result))
    out.print(_stages_table(result))
    out.print(_quality_table(result))
    outputs = Table(title="Outputs", show_header=False, title_justify="left")
    for name, path in result.outputs.items():
        version = result.table_versions.get(name)
        outputs.add_row(name, str(path), "" if version is None else f"Delta version {version}")
    out.print(outputs)


def _segments_table(result: RunResult) -> Table:
    """Segments as columns, so a dozen features still fit a terminal."""
    profiles = result.profiles.to_pylist()
    table = Table(
        title="Segments (median of each numeric feature; most frequent levels)",
        title_justify="left",
    )
    table.add_column("")
    for row in profiles:
        table.add_column(f"segment {row['segment']}", justify="right")
    table.add_row("customers", *(f"{row['size']:,}" for row in profiles), style="bold")
    table.add_row("share", *(f"{row['share']:.1%}" for row in profiles), end_section=True)
    for name in result.model.numeric_columns:
        table.add_row(name, *(_number(row[f"{name}_median"]) for row in profiles))
    for name in result.model.categorical_levels:
        table.add_row(name, *(row[f"{name}_top"].replace("; ", "\n") for row in profiles))
    return table


def _sweep_table(result: RunResult) -> Table:
    table = Table(title=f"Choosing k (on {result.sweep_rows:,} customers)", title_justify="left")
    for column in ("k", "silhouette", "inertia", "smallest segment", ""):
        table.add_column(column, justify="right" if column else "left")
    for c in result.candidates:
        mark = "← chosen" if c.k == result.k else (f"rejected: {c.rejected}" if c.rejected else "")
        table.add_row(
            str(c.k), f"{c.silhouette:.4f}", f"{c.inertia:,.0f}", f"{c.smallest_share:.1%}", mark
        )
    return table


def _stages_table(result: RunResult) -> Table:
    table = Table(title="Time per stage", title_justify="left")
    for column in ("stage", "seconds", "rows in", "rows out", "peak MiB"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for r in result.stages:
        table.add_row(
            r.stage,
            f"{r.seconds:.2f}",
            f"{r.rows_in:,}",
            f"{r.rows_out:,}",
            f"{r.peak_memory_mb:,.0f}",
        )
    table.add_row("total", f"{result.total_seconds:.2f}", "", "", "", style="bold")
    return table


def _quality_table(result: RunResult) -> Table:
    table = Table(title="Data quality", show_header=False, title_justify="left")
    table.add_row("rows read", f"{result.rows_in:,}")
    table.add_row("quarantined", f"{result.quarantined:,}")
    for rule, n in sorted(result.quarantined_by_rule.items()):
        table.add_row(f"  {rule}", f"{n:,}")
    trimming = "on" if result.config.clean.trim_ids else "off (clean.trim_ids)"
    table.add_row(f"ids trimmed of spaces ({trimming})", f"{result.ids_trimmed:,}")
    table.add_row("duplicate ids resolved", f"{result.duplicates:,}")
    for column, n in sorted(result.imputed.items()):
        table.add_row(f"imputed {column}", f"{n:,}")
    return table


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def main() -> None:
    """Entry point of the ``segmatch`` command."""
    app()
