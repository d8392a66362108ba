"""The command line: parse arguments, show progress and summaries. No logic lives here."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from segmatch import api
from segmatch._version import __version__
from segmatch.errors import SegmatchError
from segmatch.heap import own_process
from segmatch.locations import is_uri
from segmatch.progress import LibraryLog, ProgressTask, install_sink
from segmatch.terminal import err, optional_text, out, show_dedupe, show_scores, show_summary

EXIT_USER_ERROR = 2
HELP = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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


def _set_up_output(quiet: bool, verbose: bool = False) -> None:
    """segmatch's own lines on standard error; other libraries' logging and Python warnings
    into the run's ``run.log`` (and on standard error too with ``--verbose``)."""
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    own = logging.getLogger("segmatch")
    own.handlers[:] = [handler]
    own.setLevel(logging.WARNING if quiet else logging.INFO)
    own.propagate = False
    # MLflow would otherwise attach its own handler to standard error when imported.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    everything_else = logging.getLogger()
    verbose_handler = _CurrentStderrHandler()
    verbose_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    everything_else.handlers[:] = [
        LibraryLog(on_terminal=verbose),
        *([verbose_handler] if verbose else []),
    ]
    everything_else.setLevel(logging.INFO)
    logging.captureWarnings(True)
    interactive = sys.stderr.isatty() and not os.environ.get("CI")
    install_sink(_TerminalProgress(err) if interactive and not quiet else None)


def _fail(error: SegmatchError) -> click.exceptions.Exit:
    # Escaped: a message may hold brackets (pip install 'segmatch[identity]') that are not markup.
    err.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, markup=True)
    return click.exceptions.Exit(EXIT_USER_ERROR)


def config_key(text: str) -> tuple[str, ...]:
    """``cluster.k`` → ("cluster", "k"); a quoted part keeps its dots:
    ``spark.conf."spark.sql.shuffle.partitions"`` → ("spark", "conf", "spark.sql…")."""
    parts, current, quote = [], "", None
    for char in text:
        if quote:
            if char == quote:
                quote = None
            else:
                current += char
        elif char in "\"'":
            quote = char
        elif char == ".":
            parts.append(current)
            current = ""
        else:
            current += char
    if quote or not all([*parts, current]):
        raise click.BadParameter(
            f"{text!r} is not a config key (e.g. cluster.k)", param_hint="--set"
        )
    return (*parts, current)


def _overrides(options: dict[str, Any]) -> dict[tuple[str, ...], object]:
    """--set, --spark-conf, --engine, --out and --track/--no-track as config overrides."""
    parsed: dict[tuple[str, ...], object] = {}
    for option, items in (("--set", options["sets"]), ("--spark-conf", options["spark_conf"])):
        for item in items:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise click.BadParameter(f"expects KEY=VALUE, got {item!r}", param_hint=option)
            if option == "--set":
                parsed[config_key(key.strip())] = yaml.safe_load(raw)
            else:
                parsed["spark", "conf", key.strip()] = raw
    if options["engine"]:
        parsed[("engine",)] = options["engine"]
    if options.get("out_dir"):
        target = options["out_dir"]
        parsed["output", "path"] = target if is_uri(target) else str(Path(target).resolve())
    if options["track"] is not None:
        parsed["tracking", "enabled"] = options["track"]
    return parsed


def _job_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that runs a job takes (run, demo, validate)."""
    for decorator in reversed(
        [
            click.option(
                "--engine", type=click.Choice(["local", "spark"]), help="Engine to run on."
            ),
            click.option(
                "--set",
                "sets",
                multiple=True,
                metavar="KEY=VALUE",
                help="Override a config key (repeatable), e.g. --set cluster.k=6; quote a part "
                "holding dots: --set 'spark.conf.\"spark.sql.shuffle.partitions\"=8'.",
            ),
            click.option(
                "--spark-conf",
                multiple=True,
                metavar="KEY=VALUE",
                help="A Spark setting (repeatable): --spark-conf spark.sql.shuffle.partitions=8.",
            ),
            click.option(
                "--track/--no-track",
                default=None,
                help="Record the run in MLflow or not (default: the config's tracking.enabled).",
            ),
        ]
    ):
        command = decorator(command)
    return command


def _output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "-v", "--verbose", is_flag=True, help="Show other libraries' log lines and warnings too."
    )(command)
    return click.option("-q", "--quiet", is_flag=True, help="Only the summary.")(command)


@click.group(name="segmatch", context_settings=HELP)
@click.version_option(
    __version__, "--version", prog_name="segmatch", message="%(prog)s %(version)s"
)
def app() -> None:
    """Customer segmentation and profile matching: timed, tracked, versioned."""


@app.command(context_settings=HELP)
@click.argument("config", type=click.Path(path_type=Path))
@_job_options
@click.option(
    "--out", "out_dir", metavar="DIR", help="Output folder or URI (overrides output.path)."
)
@click.option(
    "--as-of", type=click.IntRange(min=0), help="Read this version of a Delta input (time travel)."
)
@_output_options
def run(config: Path, as_of: int | None, quiet: bool, verbose: bool, **options: Any) -> None:
    """Run the pipeline as the YAML file CONFIG describes."""
    _set_up_output(quiet, verbose)
    overrides = _overrides(options)
    if as_of is not None:
        overrides["input", "version"] = as_of
    try:
        result = api.run_pipeline(config, overrides=overrides)
    except SegmatchError as error:
        raise _fail(error) from None
    show_summary(result)


@app.command(context_settings=HELP)
@click.argument("config", type=click.Path(path_type=Path))
@_job_options
@click.option(
    "--out", "out_dir", metavar="DIR", help="Output folder or URI (overrides output.path)."
)
@_output_options
def dedupe(config: Path, quiet: bool, verbose: bool, **options: Any) -> None:
    """Resolve CONFIG's records into entities (no segmentation).

    Writes the entities table (each record's entity, its size, the survivor) and the pairs
    table (scored pairs with each field's weight, linked or not and why)."""
    _set_up_output(quiet, verbose)
    try:
        result = api.dedupe(config, overrides=_overrides(options))
    except SegmatchError as error:
        raise _fail(error) from None
    show_dedupe(result)


@app.command(context_settings=HELP)
@click.argument("config", type=click.Path(path_type=Path))
@_job_options
def validate(config: Path, **options: Any) -> None:
    """Check a config, its input and its columns; run nothing.

    Reports every problem of CONFIG at once: unknown keys, an input that is missing or
    unreadable, every column it names that the input lacks."""
    try:
        checked, columns = api.validate(config, overrides=_overrides({**options, "out_dir": None}))
    except SegmatchError as error:
        raise _fail(error) from None
    out.print(
        f"{config}: valid — input {checked.input.path} ({len(columns)} columns), engine "
        f"{checked.engine}, output {checked.output.path}"
        + (f", model {checked.tracking.model_name}" if checked.tracking.enabled else "")
    )


@app.command(context_settings=HELP)
@click.option("--rows", type=click.IntRange(min=10), default=100_000, show_default=True,
              help="Customers to generate.")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default="segmatch-demo",
              show_default=True, help="Folder for data and outputs.")  # fmt: skip
@click.option("--seed", type=int, default=42, show_default=True,
              help="Seed for the data and for k-means.")  # fmt: skip
@click.option("--duplicates", type=click.FloatRange(0.0, 0.5), default=0.0, show_default=True,
              help="Share of customers written again under other ids (identity).")  # fmt: skip
@_job_options
@_output_options
def demo(
    rows: int,
    out_dir: Path,
    seed: int,
    duplicates: float,
    quiet: bool,
    verbose: bool,
    **options: Any,
) -> None:
    """Generate synthetic customers and run the whole pipeline.

    With --duplicates, a share of the customers is written again under new ids, as another
    system would write them, and the run resolves records into entities first."""
    _set_up_output(quiet, verbose)
    out_dir = out_dir.resolve()
    suffix = f"_dup{duplicates:g}" if duplicates else ""
    data = out_dir / "data" / f"customers_{rows}_{seed}{suffix}.parquet"
    try:
        if not data.exists():
            err.print(f"generating {rows:,} synthetic customers → {data}")
            api.generate_demo_customers(data, rows=rows, seed=seed, duplicates=duplicates)
        config = api.demo_config(data, out_dir / "output", seed=seed, identity=bool(duplicates))
        result = api.run_pipeline(config, overrides=_overrides({**options, "out_dir": None}))
    except SegmatchError as error:
        raise _fail(error) from None
    show_summary(result)


@app.command(context_settings=HELP)
@click.option("--rows", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Customers to generate.")  # fmt: skip
@click.option("--out", "out_path", type=click.Path(path_type=Path), default="customers.parquet",
              show_default=True, help="File to write (.parquet or .csv).")  # fmt: skip
@click.option("--seed", type=int, default=7, show_default=True,
              help="Random seed (same seed, same file).")  # fmt: skip
@click.option("--dirty-share", type=click.FloatRange(0.0, 0.5), default=0.004, show_default=True,
              help="Share of rows carrying a fault.")  # fmt: skip
def generate(rows: int, out_path: Path, seed: int, dirty_share: float) -> None:
    """Write the synthetic customer data set (seeded)."""
    path = api.generate_customers(out_path, rows=rows, seed=seed, dirty_share=dirty_share)
    out.print(f"wrote {rows:,} customers (plus re-sent duplicates) to {path}")


@app.command(context_settings=HELP)
@click.option("--model", metavar="MODEL",
              help="models:/NAME@ALIAS, runs:/ID/model, a model.json or a run's output folder "
              "(default: the champion of the only registered model).")  # fmt: skip
@click.option("--input", "input_path", default="customers.csv", show_default=True,
              help="New customers (CSV, Parquet, Delta; path or URI).")  # fmt: skip
@click.option("--out", "out_dir", default="segmatch-scores", show_default=True,
              help="Folder or URI for scores and lookalikes.")  # fmt: skip
@click.option("--segments", metavar="TABLE",
              help="Segments table offering lookalikes (default: the training run's).")  # fmt: skip
@_output_options
def score(
    model: str | None,
    input_path: str,
    out_dir: str,
    segments: str | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Assign new customers to saved segments, find lookalikes."""
    _set_up_output(quiet, verbose)
    try:
        loaded = api.load_model(model)
        out.print(loaded.describe(), soft_wrap=True)
        result = api.score_customers(loaded, input_path, out_dir, segments=segments)
    except SegmatchError as error:
        raise _fail(error) from None
    show_scores(result)


@app.command(context_settings=HELP)
@click.argument("run_id")
@click.option("--output", metavar="DIR",
              help="The run's output folder or URI (default: asked from MLflow).")  # fmt: skip
def report(run_id: str, output: str | None) -> None:
    """Rebuild a run's HTML report.

    RUN_ID is segmatch's run id (in the tables and the summary) or MLflow's id of the run."""
    try:
        path = api.rebuild_report(run_id, output=output)
    except SegmatchError as error:
        raise _fail(error) from None
    out.print(f"report: {path}")


@app.command(context_settings=HELP)
@click.argument("table")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many versions to list.")  # fmt: skip
def history(table: str, limit: int) -> None:
    """List a Delta table's versions and the runs that wrote them.

    TABLE is a Delta folder or URI (segmatch-out/segments) or a catalog name
    (main.crm.segments, read through Spark)."""
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


@app.command(context_settings=HELP)
@click.argument("table")
@click.argument("version", type=click.IntRange(min=0))
def restore(table: str, version: int) -> None:
    """Roll a Delta table back to an earlier version.

    TABLE is a Delta folder, URI or catalog name; the restore is recorded as a new version."""
    try:
        new_version = api.restore_table(table, version)
    except SegmatchError as error:
        raise _fail(error) from None
    out.print(f"{table} restored to version {version} (now version {new_version})")


@app.command(context_settings=HELP)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many runs to list.")  # fmt: skip
@click.option("--uri", help="MLflow tracking URI (default: ./mlflow.db).")
def runs(limit: int, uri: str | None) -> None:
    """List recent tracked runs, failures with their reason.

    Id, date, status, input, rows, k, silhouette, seconds and model version of each run."""
    _set_up_output(quiet=True)
    table = Table(title="Recent runs", title_justify="left")
    for column in (
        "run id",
        "started (UTC)",
        "status",
        "input",
        "rows",
        "k",
        "silhouette",
        "seconds",
        "model",
    ):
        table.add_column(column, overflow="fold", no_wrap=column == "run id")
    for run in api.recent_runs(uri=uri, limit=limit):
        started = datetime.fromtimestamp(run["started"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        status = run["status"]
        if run["error"]:
            status += f": {run['error'].splitlines()[0][:80]}"
        table.add_row(
            run["run_id"],
            started,
            status,
            run["input"] or "-",
            run["rows"] or "-",
            optional_text(run["k"], "{:.0f}"),
            optional_text(run["silhouette"], "{:.4f}"),
            optional_text(run["seconds"], "{:.2f}"),
            run["model_version"] or "-",
        )
    out.print(table)


def main() -> None:
    """Entry point of the ``segmatch`` command."""
    own_process()
    app()
