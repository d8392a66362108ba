"""ingest: read the input and check, before any work, that it holds what the config needs."""

from __future__ import annotations

import codecs
import csv
import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Literal, cast

from segmatch.config import CleanConfig, FeaturesConfig, InputConfig
from segmatch.engines.base import Engine, Frame
from segmatch.engines.expressions import DateOrder, Expr, col, row_position
from segmatch.errors import (
    ColumnNotFoundError,
    InputError,
    did_you_mean,
    first_line,
)
from segmatch.locations import Files, is_table_name, join, name_of
from segmatch.stages.column_facts import ColumnFacts, column_facts
from segmatch.stages.columns import (
    MIN_PARSED_SHARE,
    ROW_NUMBER_COLUMN,
    ColumnPlan,
    check_log_columns,
    days_column,
    plan_columns,
)
from segmatch.storage import is_delta_table

logger = logging.getLogger(__name__)

FORMATS: dict[str, Literal["csv", "parquet", "delta"]] = {
    "csv": "csv",
    "parquet": "parquet",
    "delta": "delta",
}
#: Separators a CSV header is tried with when it reads as one column.
SEPARATORS = (",", ";", "\t", "|")
#: Compression both engines read by a CSV file's extension.
COMPRESSED_SUFFIXES = {".gz", ".zst"}
#: Enough of a CSV file's start to hold its header line.
HEADER_BYTES = 1 << 20


@dataclass(frozen=True)
class RawInput:
    """The rows as read, their count, and the column plan."""

    frame: Frame
    rows: int
    source: str
    plan: ColumnPlan
    #: The moment date features count days to (None: no date feature).
    as_of: datetime | None = None
    #: Ids with spaces around them, which cleaning trims (0 when it keeps ids as written).
    ids_to_trim: int = 0

    @property
    def rows_out(self) -> int:
        return self.rows


@dataclass(frozen=True)
class OpenedInput:
    """The input as the engine's frame, and how it was read."""

    frame: Frame
    marked_numbers: bool
    #: The separator a CSV input is read with, and why when it is not the configured one.
    separator: str
    separator_note: str | None = None


def read_input(
    engine: Engine,
    *,
    config: InputConfig,
    features: FeaturesConfig,
    clean: CleanConfig,
    as_of: datetime | None = None,
) -> RawInput:
    """Read the configured input and build its column plan from every row; fail fast on a bad
    schema. ``as_of`` (a fitted model's) fixes the moment date features count days to."""
    path = config.path
    opened = open_input(engine, config)
    frame = opened.frame
    id_column = config.id_column or ROW_NUMBER_COLUMN
    source = path
    if config.id_column is None:
        if ROW_NUMBER_COLUMN in engine.schema(frame):
            raise InputError(
                f"input {source!r} already has a column {ROW_NUMBER_COLUMN!r}; with "
                "input.id_column: null that name is taken by the row positions — name the id "
                "column instead"
            )
        frame = engine.with_columns(frame, {ROW_NUMBER_COLUMN: row_position()})
    kinds = engine.schema(frame)
    trimmed = clean.trim_ids and kinds.get(id_column) == "string"
    if id_column in kinds:
        # Spread (and on Spark, hold) the rows first, so every later pass starts from there:
        # by the id as cleaning will compare it (trimmed), so rows it then matches sit together.
        key = col(id_column)
        frame = engine.spread(
            frame, key=key.strip() if trimmed else key, stored_bytes=engine.input_bytes(path)
        )
    # Cleaning's count of the ids it trims, taken in this pass over every row, not one of its own.
    to_trim = col(id_column).strip().ne(col(id_column)).fill_null(False).as_float().sum()
    keep_text = {id_column, *config.types}
    facts = column_facts(
        engine,
        frame,
        text=[c for c, kind in kinds.items() if kind == "string" and c != id_column],
        numeric=[c for c, kind in kinds.items() if kind == "numeric" and c != id_column],
        decimal=config.decimal or ".",
        thousands=config.thousands,
        sums={"ids_to_trim": to_trim} if trimmed else None,
    )
    if facts.rows == 0:
        raise InputError(f"input {source!r} is empty: it has a header but no rows")
    if opened.marked_numbers:
        frame = _normalize_numbers(engine, frame, config, facts=facts, keep_text=keep_text)
    plan = plan_columns(
        engine,
        frame,
        config,
        features=features,
        clean=clean,
        source=source,
        facts=facts,
        separator_note=opened.separator_note,
    )
    if plan.dates:
        frame, as_of = _with_days(engine, frame, plan, as_of=as_of or features.as_of)
    return RawInput(
        frame=frame,
        rows=facts.rows,
        source=source,
        plan=plan,
        as_of=as_of,
        ids_to_trim=facts.counted.get("ids_to_trim", 0),
    )


def _with_days(
    engine: Engine, frame: Frame, plan: ColumnPlan, *, as_of: datetime | None
) -> tuple[Frame, datetime]:
    """The frame with each date feature as days before ``as_of`` (unset: the latest date in
    those columns, over every row)."""
    dated = {
        column: col(column).as_date(cast(DateOrder, order)) if order else col(column)
        for column, order in plan.dates.items()
    }
    if as_of is None:
        latest = engine.aggregate(frame, {c: value.max() for c, value in dated.items()})
        found = [v for v in engine.to_arrow(latest).to_pylist()[0].values() if v is not None]
        if not found:
            raise InputError(
                f"date feature(s) {', '.join(map(repr, plan.dates))} hold no date to count from"
            )
        as_of = max(found)
    if as_of.tzinfo is not None:
        as_of = as_of.astimezone(UTC).replace(tzinfo=None)
    frame = engine.with_columns(
        frame, {days_column(c): value.days_until(as_of) for c, value in dated.items()}
    )
    return frame, as_of


def open_input(engine: Engine, config: InputConfig) -> OpenedInput:
    """The input as the engine's (lazy where it can be) frame, its header checked, and whether
    its numbers are written with ``input.decimal``/``input.thousands``: a CSV's are then read
    as text (a reader would take 1.234, one thousand…, for a fraction)."""
    path = config.path
    files = Files(engine.storage_options)
    fmt = _detect_format(path, config.format, files)
    if config.version is not None and fmt != "delta":
        raise InputError(
            f"input.version={config.version} reads an earlier version of a Delta table, but "
            f"{str(path)!r} is {fmt}"
        )
    separator, note = config.csv_separator or ",", None
    if fmt == "csv":
        separator, note = _check_header(path, config.csv_separator, config.encoding, files)
    id_column = config.id_column or ROW_NUMBER_COLUMN
    # Ids are read as written: numeric inference would turn 007 into 7 and 10001 into 10001.0.
    types = {id_column: "str", **config.types} if fmt == "csv" else dict(config.types)
    marked_numbers = fmt == "csv" and (config.decimal == "," or config.thousands is not None)
    frame = engine.read(
        path=path,
        fmt=fmt,
        types=types,
        separator=separator,
        version=config.version,
        encoding=config.encoding,
        infer_numbers=not marked_numbers,
    )
    return OpenedInput(frame, marked_numbers, separator, note)


def check_input(
    engine: Engine,
    *,
    config: InputConfig,
    features: FeaturesConfig,
    clean: CleanConfig,
    named_by: str = "the config names",
) -> list[str]:
    """Check, before a run starts, that the input is there and readable and has every column
    the config names; every missing column is listed in one error. Returns the input's
    columns. Reads the schema only (for local files, the header and a few rows)."""
    opened = open_input(engine, config)
    frame = opened.frame
    schema = list(engine.schema(frame))
    named: dict[str, str] = {}
    if config.id_column:
        named[config.id_column] = "id column"
    for column in config.types:
        named.setdefault(column, "typed column (input.types)")
    # A transactions table's features are derived from it, and a date's from its column.
    derived = config.transactions is not None
    dated = {days_column(c) for c in features.dates}
    for column in [] if derived else features.numeric or []:
        if column not in dated:
            named.setdefault(column, "numeric feature column")
    for column in features.dates:
        named.setdefault(column, "date column (features.dates)")
    for column in features.outcomes or []:
        named.setdefault(column, "outcome column (features.outcomes)")
    for column in features.categorical or []:
        named.setdefault(column, "categorical feature column")
    for column in clean.ranges:
        named.setdefault(column, "range column (clean.ranges)")
    if clean.duplicates.order_by:
        named.setdefault(clean.duplicates.order_by, "ordering column (clean.duplicates.order_by)")
    t = config.transactions
    if t is not None:
        for key in ("timestamp", "amount", "quantity", "unit_price", "invoice", "category"):
            if getattr(t, key):
                named.setdefault(getattr(t, key), f"input.transactions.{key} column")
    missing = [(column, role) for column, role in named.items() if column not in schema]
    if missing:
        listed = "".join(
            f"\n  - {role} {column!r} not found.{did_you_mean(column, schema)}"
            for column, role in missing
        )
        shown = ", ".join(map(repr, schema[:30])) + (" …" if len(schema) > 30 else "")
        raise ColumnNotFoundError(
            missing[0][0],
            schema,
            source=config.path,
            role=missing[0][1],
            message=f"input {config.path!r} lacks {len(missing)} column(s) {named_by}:"
            f"{listed}\nColumns present: {shown}",
        )
    if features.numeric is not None and not derived:
        check_log_columns(features.log, [*features.numeric, *dated])
    try:
        first = engine.to_arrow(frame, limit=1)
    except Exception as error:  # the reader's own error, whatever its library: named here
        raise InputError(f"cannot read input {config.path!r}: {first_line(error)}") from error
    if first.num_rows == 0:
        raise InputError(f"input {config.path!r} is empty: it has a header but no rows")
    if opened.separator_note:
        logger.warning("input %r: %s", config.path, opened.separator_note)
    return schema


def _check_header(
    path: str, separator: str | None, encoding: str, files: Files
) -> tuple[str, str | None]:
    """The separator to read with, and why when it is not the configured one (a header that
    reads as one column with ``,`` but splits on a tab, ``;`` or ``|``). Stops on an empty
    file, on a header that reads as one column with a separator the config sets, and on
    repeated column names, which readers would rename and use silently."""
    if files.is_dir(path):
        entries = [e for e in files.list_files(path) if not e.relative.startswith((".", "_"))]
        if not entries:
            return separator or ",", None
        first = join(path, entries[0].relative)
    else:
        first = path
    filesystem, inner = files.resolve(first)
    with filesystem.open_input_stream(inner) as stream:
        head = stream.read(HEADER_BYTES)
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"
    head = head.decode(encoding, errors="replace")
    line = head.split("\n", 1)[0].rstrip("\r")
    if not line.strip():
        raise InputError(f"input {path!r} is empty: it has no header line")
    used, note = separator or ",", None
    header = next(csv.reader(io.StringIO(line), delimiter=used), [])
    if len(header) == 1:
        other, columns = _another_separator(line, used)
        if columns > 1 and separator is not None:
            shown = line if len(line) <= 60 else line[:57] + "…"
            raise InputError(
                f"input {path!r} reads as one column with input.csv_separator {separator!r}, "
                f"but its header {shown!r} splits into {columns} columns on {other!r}: set "
                f"input.csv_separator: {other!r}"
            )
        if columns > 1:
            used = other
            note = (
                f"read with separator {other!r}: the header splits into {columns} columns on "
                "it and into one on ',' (set input.csv_separator to choose)"
            )
            header = next(csv.reader(io.StringIO(line), delimiter=used), [])
    names = [name.strip() for name in header]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(
            f"input {path!r} repeats the column name(s) {', '.join(map(repr, repeated))}; "
            "rename them so each column has its own name"
        )
    return used, note


def _another_separator(line: str, separator: str) -> tuple[str, int]:
    """Of the other common separators, the one the header splits on into most columns."""
    splits = {
        other: len(next(csv.reader(io.StringIO(line), delimiter=other), []))
        for other in SEPARATORS
        if other != separator
    }
    return max(splits.items(), key=lambda item: item[1])


def _normalize_numbers(
    engine: Engine, frame: Frame, config: InputConfig, *, facts: ColumnFacts, keep_text: set[str]
) -> Frame:
    """Rewrite the text columns that hold numbers in the input's notation so they parse."""
    decimal, thousands = config.decimal or ".", config.thousands
    columns = [
        column
        for column, text in facts.text.items()
        if column not in keep_text
        and text.present
        and text.numbers >= MIN_PARSED_SHARE * text.present
    ]

    def as_written(column: str) -> Expr:
        text = col(column)
        if thousands is not None:
            text = text.replace(thousands, "")
        return text.replace(decimal, ".")

    return engine.with_columns(frame, {column: as_written(column) for column in columns})


def _detect_format(path: str, fmt: str, files: Files) -> Literal["csv", "parquet", "delta"]:
    if is_table_name(path):
        return "delta"
    if not files.exists(path):
        raise InputError(f"input {path!r} does not exist (input.path)")
    if fmt in FORMATS:
        return FORMATS[fmt]
    if files.is_dir(path):
        if is_delta_table(path, files=files):
            return "delta"
        if any(entry.relative.endswith(".parquet") for entry in files.list_files(path)):
            return "parquet"
        raise InputError(f"input folder {path!r} holds neither a Delta table nor Parquet files")
    suffixes = [s.lower() for s in PurePosixPath(name_of(path)).suffixes]
    if len(suffixes) > 1 and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes.pop()  # customers.csv.gz is a CSV file, compressed; both readers inflate it
    suffix = suffixes[-1] if suffixes else ""
    if suffix in {".csv", ".txt", ".tsv"}:
        return "csv"
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    raise InputError(
        f"cannot tell the format of {path!r} from its extension {suffix!r}; "
        "set input.format to csv, parquet or delta"
    )
