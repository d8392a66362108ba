"""ingest: read the input and check, before any work, that it holds what the config needs."""

from __future__ import annotations

import codecs
import csv
import io
import math
from dataclasses import dataclass
from pathlib import PurePosixPath

from segmatch.config import CleanConfig, FeaturesConfig, InputConfig
from segmatch.engines.base import Engine, Frame, TransactionColumns
from segmatch.errors import (
    ColumnNotFoundError,
    ColumnTypeError,
    ConfigError,
    InputError,
    did_you_mean,
)
from segmatch.locations import Files, is_table_name, join, name_of
from segmatch.storage import is_delta_table

#: Customer behaviour computed from a transactions table (see the features stage).
BEHAVIOUR_FEATURES = (
    "recency_days",
    "frequency",
    "monetary_total",
    "monetary_avg",
    "tenure_days",
    "return_share",
)
CATEGORY_FEATURE = "distinct_categories"

#: Compression both engines read by a CSV file's extension.
COMPRESSED_SUFFIXES = {".gz", ".zst"}
#: Enough of a CSV file's start to hold its header line.
HEADER_BYTES = 1 << 20
#: Values of each text column looked at to tell a column of numbers stored as text.
NUMBER_SAMPLE = 1000
NUMBER_SHARE = 0.95
#: A text column is a numeric feature with a few bad values only if most values parse.
MIN_PARSED_SHARE = 0.5
#: The id column made from row positions when ``input.id_column`` is null.
ROW_NUMBER_COLUMN = "row_number"
#: A numeric column of at most this many integers counting from 1 may be a code (1 = north…).
MAX_CODE_VALUES = 12


@dataclass(frozen=True)
class ColumnRole:
    """One input column: what the run does with it, and why."""

    column: str
    kind: str
    role: str
    reason: str


@dataclass(frozen=True)
class ColumnPlan:
    """What each input column is for, checked against the input's schema; ``roles`` accounts
    for every column of the input, in its order."""

    id_column: str
    validated_numeric: tuple[str, ...]
    numeric_as_text: tuple[str, ...]
    required: tuple[str, ...]
    features: tuple[str, ...]
    log: tuple[str, ...]
    categorical: tuple[str, ...]
    ranges: dict[str, tuple[float | None, float | None]]
    transactions: TransactionColumns | None
    roles: tuple[ColumnRole, ...] = ()

    def counts(self) -> dict[str, int]:
        """How many columns have each role."""
        found: dict[str, int] = {}
        for role in self.roles:
            found[role.role] = found.get(role.role, 0) + 1
        return found


@dataclass(frozen=True)
class RawInput:
    """The rows as read, their count, and the column plan."""

    frame: Frame
    rows: int
    source: str
    plan: ColumnPlan

    @property
    def rows_out(self) -> int:
        return self.rows


def read_input(
    engine: Engine, *, config: InputConfig, features: FeaturesConfig, clean: CleanConfig
) -> RawInput:
    """Read the configured input and build its column plan; fail fast on a bad schema."""
    path = config.path
    frame, marked_numbers = _open_input(engine, config)
    id_column = config.id_column or ROW_NUMBER_COLUMN
    source = path
    if config.id_column is None:
        if ROW_NUMBER_COLUMN in engine.schema(frame):
            raise InputError(
                f"input {source!r} already has a column {ROW_NUMBER_COLUMN!r}; with "
                "input.id_column: null that name is taken by the row positions — name the id "
                "column instead"
            )
        frame = engine.add_row_numbers(frame, column=ROW_NUMBER_COLUMN)
    if marked_numbers:
        frame = _normalize_numbers(engine, frame, config, keep_text={id_column, *config.types})
    if id_column in engine.schema(frame):
        # Spread (and on Spark, cache) the rows first, so every later pass starts from there.
        frame = engine.distribute(
            frame,
            key=id_column,
            input_bytes=engine.input_bytes(path),
            trimmed_key=clean.trim_ids,
        )
    rows = engine.count(frame)
    if rows == 0:
        raise InputError(f"input {source!r} is empty: it has a header but no rows")
    plan = plan_columns(engine, frame, config, features=features, clean=clean, source=source)
    return RawInput(frame=frame, rows=rows, source=source, plan=plan)


def _open_input(engine: Engine, config: InputConfig) -> tuple[Frame, bool]:
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
    if fmt == "csv":
        _check_header(path, config.csv_separator, config.encoding, files)
    id_column = config.id_column or ROW_NUMBER_COLUMN
    # Ids are read as written: numeric inference would turn 007 into 7 and 10001 into 10001.0.
    types = {id_column: "str", **config.types} if fmt == "csv" else dict(config.types)
    marked_numbers = fmt == "csv" and (config.decimal == "," or config.thousands is not None)
    frame = engine.read(
        path=path,
        fmt=fmt,
        types=types,
        separator=config.csv_separator,
        version=config.version,
        encoding=config.encoding,
        infer_numbers=not marked_numbers,
    )
    return frame, marked_numbers


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
    schema = list(engine.schema(_open_input(engine, config)[0]))
    named: dict[str, str] = {}
    if config.id_column:
        named[config.id_column] = "id column"
    for column in config.types:
        named.setdefault(column, "typed column (input.types)")
    for column in features.numeric or []:
        named.setdefault(column, "numeric feature column")
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
    if features.numeric is not None:
        _check_log_columns(features.log, list(features.numeric))
    return schema


def plan_columns(
    engine: Engine,
    frame: Frame,
    config: InputConfig,
    *,
    features: FeaturesConfig,
    clean: CleanConfig,
    source: str,
) -> ColumnPlan:
    """Match the config's column names to the input's schema."""
    schema = engine.schema(frame)
    id_column = config.id_column or ROW_NUMBER_COLUMN
    id_reason = (
        "input.id_column"
        if config.id_column
        else "input.id_column is null: the row's position in the input (1 = first row)"
    )

    def require(column: str, role: str) -> None:
        if column not in schema:
            raise ColumnNotFoundError(column, schema, source=source, role=role)

    require(id_column, "id")
    for column in clean.ranges:
        require(column, "range (clean.ranges)")
    if clean.duplicates.order_by:
        require(clean.duplicates.order_by, "ordering (clean.duplicates.order_by)")

    if config.transactions is not None:
        return _plan_transactions(
            engine,
            frame,
            config,
            features=features,
            clean=clean,
            schema=schema,
            require=require,
            source=source,
            id_column=id_column,
            id_reason=id_reason,
        )

    named_categorical = list(features.categorical or [])
    excluded = {id_column, clean.duplicates.order_by, *named_categorical}
    sample = _head(engine, frame, [c for c in schema if c not in excluded])
    text = {c: values for c, values in sample.items() if schema[c] == "string"}
    as_numbers = {c for c, values in text.items() if _share_parsed(values) >= NUMBER_SHARE}
    if features.numeric is not None:
        numeric = list(features.numeric)
    else:
        if config.decimal is None:
            _stop_on_decimal_commas(text, as_numbers, source)
        numeric = [
            c for c in schema if c not in excluded and (schema[c] == "numeric" or c in as_numbers)
        ]
    levels_seen = {c: _distinct(values) for c, values in text.items() if c not in as_numbers}
    auto_categorical = features.categorical is None and features.numeric is None
    categorical = named_categorical or (
        [c for c, seen in levels_seen.items() if 2 <= seen <= features.max_levels]
        if auto_categorical
        else []
    )
    if not numeric and not categorical:
        raise ColumnTypeError(
            f"input {source!r} has no numeric or categorical column to use as a feature besides "
            f"the id {id_column!r}; name the features in features.numeric or "
            "features.categorical"
        )
    for column in numeric:
        require(column, "numeric feature")
    for column in categorical:
        require(column, "categorical feature")
    _check_log_columns(features.log, numeric)
    as_text = _numeric_stored_as_text(engine, frame, numeric, schema, source)
    named = features.numeric is not None
    uninformative = _uninformative(engine, frame, [c for c in numeric if c not in as_text])
    empty_named = [c for c, why in uninformative.items() if named and why.startswith("all null")]
    if empty_named:
        raise ColumnTypeError(
            f"feature column {empty_named[0]!r} of {source!r} has no values (every cell is "
            "empty); remove it from features.numeric"
        )
    # A column the user named is kept (a model scores with the features it was fitted on);
    # the plan still says it is constant here.
    dropped = {} if named else uninformative
    numeric = [c for c in numeric if c not in dropped]
    codes = _numeric_codes(sample, numeric)
    if not numeric and not categorical:
        raise ColumnTypeError(
            f"input {source!r} has no informative feature left: "
            + "; ".join(f"{c} is {why}" for c, why in dropped.items())
        )
    checked = sorted(
        {*numeric, *(c for c in clean.ranges if c not in numeric)}, key=list(schema).index
    )

    def role_of(column: str, kind: str) -> tuple[str, str]:
        if column == id_column:
            return "id", id_reason
        if column in dropped:
            return "ignored", dropped[column]
        if column in numeric:
            how = "listed in features.numeric" if named else "a numeric column"
            if column in uninformative:
                how += f"; {uninformative[column]}"
            if column in as_text:
                bad = as_text[column]
                how += (
                    f"; stored as text, {bad:,} cell(s) not a number (quarantined as not_numeric)"
                    if bad
                    else "; stored as text, every cell a number"
                )
            if column in codes:
                how += f"; {codes[column]}"
            return "numeric feature", how
        if column in categorical:
            if column in named_categorical:
                return "categorical feature", "listed in features.categorical"
            return "categorical feature", (
                f"text with {levels_seen[column]} levels (at most features.max_levels="
                f"{features.max_levels}): one-hot, weighted like one numeric variable"
            )
        if column == clean.duplicates.order_by:
            return "ordering", "clean.duplicates.order_by: picks the latest duplicate"
        if column in clean.ranges:
            return "checked", "clean.ranges: rows outside the range are quarantined"
        return "ignored", _ignored_because(kind, sample.get(column), auto_categorical, features)

    roles = tuple(ColumnRole(c, kind, *role_of(c, kind)) for c, kind in schema.items())
    return ColumnPlan(
        id_column=id_column,
        validated_numeric=tuple(checked),
        numeric_as_text=tuple(as_text),
        required=(),
        features=tuple(numeric),
        log=tuple(c for c in features.log if c in numeric),
        categorical=tuple(categorical),
        ranges=dict(clean.ranges),
        transactions=None,
        roles=roles,
    )


def _plan_transactions(
    engine, frame, config, *, features, clean, schema, require, source, id_column, id_reason
) -> ColumnPlan:
    t = config.transactions
    require(t.timestamp, "timestamp (input.transactions.timestamp)")
    if schema[t.timestamp] != "temporal":
        raise ColumnTypeError(
            f"timestamp column {t.timestamp!r} of {source!r} is not a date or time "
            f"(it reads as {schema[t.timestamp]}); set input.types.{t.timestamp}: datetime"
        )
    money = [c for c in (t.amount, t.quantity, t.unit_price) if c]
    for column in money:
        require(column, "amount (input.transactions)")
    for column in (t.invoice, t.category):
        if column:
            require(column, "transactions")
    if features.categorical:
        raise ConfigError(
            "features.categorical is not supported with shape: transactions (the features are "
            f"the behaviour columns {', '.join(BEHAVIOUR_FEATURES)})"
        )
    available = [*BEHAVIOUR_FEATURES, *([CATEGORY_FEATURE] if t.category else [])]
    chosen = list(features.numeric) if features.numeric is not None else available
    for column in chosen:
        if column not in available:
            raise ColumnNotFoundError(
                column,
                available,
                source="the behaviour built from transactions",
                role="numeric feature",
            )
    _check_log_columns(features.log, chosen)
    as_text = _numeric_stored_as_text(engine, frame, money, schema, source)
    used = {
        id_column: ("id", id_reason),
        t.timestamp: ("transaction", "input.transactions.timestamp: recency and tenure"),
        **{c: ("transaction", "input.transactions: spend per customer") for c in money},
        **({t.invoice: ("transaction", "input.transactions.invoice: orders")} if t.invoice else {}),
        **(
            {t.category: ("transaction", "input.transactions.category: distinct categories")}
            if t.category
            else {}
        ),
    }
    if clean.duplicates.order_by:
        used.setdefault(clean.duplicates.order_by, ("ordering", "clean.duplicates.order_by"))
    roles = tuple(
        ColumnRole(c, kind, *used.get(c, ("ignored", "not a column of input.transactions")))
        for c, kind in schema.items()
    )
    return ColumnPlan(
        id_column=id_column,
        validated_numeric=tuple(dict.fromkeys([*money, *clean.ranges])),
        numeric_as_text=tuple(as_text),
        required=(t.timestamp, *money),
        features=tuple(chosen),
        log=tuple(features.log),
        categorical=(),
        ranges=dict(clean.ranges),
        transactions=TransactionColumns(
            id_column=id_column,
            timestamp=t.timestamp,
            amount=t.amount,
            quantity=t.quantity,
            unit_price=t.unit_price,
            invoice=t.invoice,
            category=t.category,
            cancellation_prefix=t.cancellation_prefix,
            drop_returns=t.returns == "drop",
            as_of=t.as_of,
        ),
        roles=roles,
    )


def _check_header(path: str, separator: str, encoding: str, files: Files) -> None:
    """Stop on repeated column names, which readers would rename and use silently."""
    if files.is_dir(path):
        entries = [e for e in files.list_files(path) if not e.relative.startswith((".", "_"))]
        if not entries:
            return
        first = join(path, entries[0].relative)
    else:
        first = path
    filesystem, inner = files.resolve(first)
    with filesystem.open_input_stream(inner) as stream:
        head = stream.read(HEADER_BYTES)
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"
    head = head.decode(encoding, errors="replace")
    header = next(csv.reader(io.StringIO(head.split("\n", 1)[0]), delimiter=separator), [])
    names = [name.strip() for name in header]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(
            f"input {path!r} repeats the column name(s) {', '.join(map(repr, repeated))}; "
            "rename them so each column has its own name"
        )


def _uninformative(engine: Engine, frame: Frame, columns: list[str]) -> dict[str, str]:
    """Numeric columns that cannot tell customers apart, with why: all null, or constant."""
    found = {}
    for column, (values, low, high) in engine.value_ranges(frame, columns=columns).items():
        if values == 0:
            found[column] = "all null: every cell is empty"
        elif low == high:
            found[column] = f"constant: every value is {low:g}, so it tells no customer apart"
    return found


def _ignored_because(
    kind: str, values: list | None, auto_categorical: bool, features: FeaturesConfig
) -> str:
    if kind == "numeric":
        return "not listed in features.numeric"
    if kind == "string" and values is not None and auto_categorical:
        present = [v for v in values if v is not None and str(v).strip()]
        seen = _distinct(values)
        if seen == 0:
            return "all null: every cell is empty"
        if seen == 1:
            return "constant text: one value, so it tells no customer apart"
        if seen == len(present):
            return f"id-like: a different value on each of the first {len(present):,} rows"
        return (
            f"text with more than features.max_levels={features.max_levels} levels; list it "
            "under features.categorical to use its most frequent levels"
        )
    if kind == "string":
        return "text: list it under features.categorical to use its levels"
    if kind == "temporal":
        return "a date or time: not a feature (transactions derive recency from one)"
    return f"a {kind} column: not a feature"


def _head(engine: Engine, frame: Frame, columns: list[str]) -> dict[str, list]:
    """The first values of each column (a cheap look, whatever the input's size)."""
    if not columns:
        return {}
    return engine.to_arrow(frame, limit=NUMBER_SAMPLE).select(columns).to_pydict()


def _present(values: list) -> list[str]:
    return [v.strip() for v in values if v is not None and v.strip()]


def _distinct(values: list) -> int:
    return len({v.strip() if isinstance(v, str) else v for v in values if v is not None} - {""})


def _share_parsed(values: list, *, decimal: str = ".", thousands: str | None = None) -> float:
    """The share of a text column's present values that read as numbers (0 with none)."""
    present = _present(values)
    if not present:
        return 0.0
    return sum(_is_number(v, decimal=decimal, thousands=thousands) for v in present) / len(present)


def _is_number(text: str, *, decimal: str = ".", thousands: str | None = None) -> bool:
    if thousands is not None:
        text = text.replace(thousands, "")
    try:
        float(text.replace(decimal, ".") if decimal != "." else text)
    except ValueError:
        return False
    return True


def _normalize_numbers(
    engine: Engine, frame: Frame, config: InputConfig, *, keep_text: set[str]
) -> Frame:
    """Rewrite the text columns that hold numbers in the input's notation so they parse."""
    schema = engine.schema(frame)
    candidates = [c for c, kind in schema.items() if kind == "string" and c not in keep_text]
    marks = {"decimal": config.decimal or ".", "thousands": config.thousands}
    columns = [
        column
        for column, values in _head(engine, frame, candidates).items()
        if _share_parsed(values, **marks) >= MIN_PARSED_SHARE
    ]
    return engine.normalize_numbers(frame, columns=columns, **marks) if columns else frame


def _stop_on_decimal_commas(text: dict[str, list], as_numbers: set[str], source: str) -> None:
    """A column of numbers with a decimal comma would be dropped as text: stop and say why."""
    for column, values in text.items():
        if column not in as_numbers and _share_parsed(values, decimal=",") >= NUMBER_SHARE:
            example = next(v for v in _present(values) if "," in v)
            raise InputError(
                f"column {column!r} of {source!r} holds numbers written with a comma (e.g. "
                f"{example!r}): set input.decimal: ',' if the comma marks decimals, or "
                "input.thousands: ',' if it separates thousands (or leave the column out by "
                "naming the features in features.numeric)"
            )


def _numeric_codes(sample: dict[str, list], columns: list[str]) -> dict[str, str]:
    """Numeric columns whose values look like codes (a few small positive integers)."""
    found = {}
    for column in columns:
        numbers = (
            float(v)
            for v in sample.get(column, [])
            if v is not None and (not isinstance(v, str) or _is_number(v))
        )
        values = {v for v in numbers if not math.isnan(v)}
        if not values or not all(v.is_integer() for v in values):
            continue
        # Codes count from 1 (Region 1, 2, 3); a count or a measure (tenure 6–12) need not.
        if len(values) >= 2 and min(values) == 1 and max(values) <= MAX_CODE_VALUES:
            shown = ", ".join(f"{v:g}" for v in sorted(values))
            found[column] = (
                f"looks like a numeric code (values {shown}): used as a magnitude; list it "
                "under features.categorical if it is a code"
            )
    return found


def _check_log_columns(log: list[str], numeric: list[str]) -> None:
    for column in log:
        if column not in numeric:
            raise ConfigError(
                f"features.log names {column!r}, which is not a numeric feature "
                f"(numeric features: {', '.join(numeric)})"
            )


def _numeric_stored_as_text(engine, frame, columns, schema, source) -> dict[str, int]:
    """Feature columns stored as text, with how many of their cells are not numbers."""
    as_text = {}
    for column in columns:
        kind = schema[column]
        if kind == "numeric":
            continue
        if kind != "string":
            if kind == "other" and engine.value_ranges(frame, columns=[column])[column][0] == 0:
                raise ColumnTypeError(
                    f"feature column {column!r} of {source!r} has no values (every cell is "
                    "empty); remove it from the features"
                )
            raise ColumnTypeError(
                f"feature column {column!r} of {source!r} is not numeric (it reads as {kind})"
            )
        check = engine.check_numeric_text(frame, column=column)
        if check.non_null == 0 or check.failed > (1 - MIN_PARSED_SHARE) * check.non_null:
            example = f"; e.g. value {check.example!r}" if check.example is not None else ""
            if check.example is not None and _is_number(check.example, decimal=","):
                example += " (a decimal comma? set input.decimal: ',')"
            raise ColumnTypeError(
                f"feature column {column!r} of {source!r} is not numeric: {check.failed:,} of "
                f"{check.non_null:,} values are not numbers{example}"
            )
        as_text[column] = check.failed
    return as_text


def _detect_format(path: str, fmt: str, files: Files) -> str:
    if is_table_name(path):
        return "delta"
    if not files.exists(path):
        raise InputError(f"input {path!r} does not exist (input.path)")
    if fmt != "auto":
        return fmt
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
