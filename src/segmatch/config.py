"""Typed configuration: every section and key, with defaults and checks (loading YAML is in
:mod:`segmatch.config_loading`).

Example:
    >>> cfg = Config.model_validate({"input": {"path": "customers.csv"}})
    >>> cfg.cluster.k_max
    10
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from segmatch.errors import ConfigError
from segmatch.locations import TABLE_NAME_PART, is_table_name
from segmatch.tables import TABLES, Table, WriteMode

logger = logging.getLogger(__name__)

ColumnType = Literal["float", "int", "str", "date", "datetime", "bool"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransactionsConfig(_Strict):
    """How a transactions table (one row per purchase line) maps to customer behaviour."""

    timestamp: str
    amount: str | None = None
    quantity: str | None = None
    unit_price: str | None = None
    invoice: str | None = None
    category: str | None = None
    cancellation_prefix: str | None = None
    returns: Literal["net", "drop"] = "net"
    as_of: datetime | None = None

    @model_validator(mode="after")
    def _amount_is_defined(self) -> TransactionsConfig:
        if self.amount is None and (self.quantity is None or self.unit_price is None):
            raise ValueError(
                "give either 'amount' (a column holding each line's amount) "
                "or both 'quantity' and 'unit_price'"
            )
        if self.amount is not None and (self.quantity or self.unit_price):
            raise ValueError("give 'amount' or 'quantity' + 'unit_price', not both")
        return self


class InputConfig(_Strict):
    """Where the data is and how to read it."""

    #: A local path or a URI (s3://, abfss://, gs://, dbfs:/, /Volumes/...).
    path: str
    format: Literal["auto", "csv", "parquet", "delta"] = "auto"
    shape: Literal["customers", "transactions"] = "customers"
    #: The column that names each customer, read as text exactly as written. ``null``: the
    #: input has none, and each row's position (1 for the first row) becomes its id, in a
    #: column named ``row_number``.
    id_column: str | None = "idcliente"
    types: dict[str, ColumnType] = Field(default_factory=dict)
    #: A CSV input's separator. Unset: ``,``, or the one its header splits on when it reads as
    #: one column with ``,`` (a tab, ``;`` or ``|``), as the column plan then says.
    csv_separator: str | None = Field(None, min_length=1, max_length=1)
    #: Dates written with the day or the month first (21/08/2013, 08/21/2013). Unset: decided
    #: per column from every value (a first field over 12 is a day), day first when none is.
    dayfirst: bool | None = None
    #: The text encoding of a CSV input (utf-8 with or without BOM; latin-1, cp1252 …).
    encoding: str = "utf-8"
    #: A CSV input's decimal mark. Unset: ``.``, and a column of numbers written with a
    #: decimal comma stops the run with a message saying to set it.
    decimal: Literal[".", ","] | None = None
    #: A CSV input's thousands separator (``.``, ``,``, a space …), removed before numbers
    #: are read.
    thousands: str | None = Field(None, min_length=1, max_length=1)
    version: int | None = Field(None, ge=0)
    transactions: TransactionsConfig | None = None

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"unknown text encoding {value!r} (e.g. utf-8, latin-1, cp1252)"
            ) from None
        return value

    @model_validator(mode="after")
    def _number_marks_differ(self) -> InputConfig:
        if self.thousands is not None and self.thousands == (self.decimal or "."):
            raise ValueError(
                f"input.thousands {self.thousands!r} is also the decimal mark; they must differ"
            )
        return self

    @model_validator(mode="after")
    def _transactions_need_mapping(self) -> InputConfig:
        if self.version is not None and self.format not in ("auto", "delta"):
            raise ValueError("'version' (time travel) needs a Delta input")
        if self.shape == "transactions" and self.transactions is None:
            raise ValueError("shape 'transactions' needs a 'transactions' section (timestamp, …)")
        if self.shape == "customers" and self.transactions is not None:
            raise ValueError("a 'transactions' section needs shape: transactions")
        return self


class DuplicatesConfig(_Strict):
    """Which row wins when an id appears more than once."""

    keep: Literal["first", "latest"] = "first"
    order_by: str | None = None

    @model_validator(mode="after")
    def _latest_needs_order(self) -> DuplicatesConfig:
        if self.keep == "latest" and self.order_by is None:
            raise ValueError("keep: latest needs 'order_by', the timestamp column to compare")
        return self


class CleanConfig(_Strict):
    """Validation rules, duplicate handling and imputation."""

    duplicates: DuplicatesConfig = DuplicatesConfig()
    #: Remove spaces around ids (' C1 ' is C1): ids that then collide are duplicates.
    trim_ids: bool = True
    impute: Literal["median", "mean"] = "median"
    ranges: dict[str, tuple[float | None, float | None]] = Field(default_factory=dict)
    max_bad_share: float = Field(0.05, ge=0.0, le=1.0)


class FeaturesConfig(_Strict):
    """Which columns become features, and how."""

    #: Unset: every numeric column (and every column of numbers stored as text).
    numeric: list[str] | None = None
    log: list[str] = Field(default_factory=list)
    #: Numeric features whose skewness over every customer passes 2 (spend, counts, balances):
    #: ``log`` takes their signed log (as if listed under ``log``, and the plan says so);
    #: ``keep`` leaves them raw, where a few extreme customers can form segments of their own.
    skewed: Literal["log", "keep"] = "log"
    #: Unset, with ``numeric`` unset too: every text column with at most ``max_levels``
    #: levels. A list names them; ``[]`` uses none.
    categorical: list[str] | None = None
    max_levels: int = Field(20, ge=1)
    min_level_share: float = Field(0.01, ge=0.0, lt=1.0)
    #: Columns that record what happened to a customer (churn, a response, a default): left
    #: out of the features and profiled per segment. Unset: those whose name says so (churn,
    #: target, ``y``, cancelou…); ``[]``: none. Naming one under ``numeric`` or
    #: ``categorical`` still makes it a feature.
    outcomes: list[str] | None = None
    #: Date columns turned into days before the as-of date (tenure, recency), as the numeric
    #: features ``<column>_days``.
    dates: list[str] = Field(default_factory=list)
    #: The date ``dates`` count days to. Unset: the latest date in those columns.
    as_of: datetime | None = None


IdentityRole = Literal[
    "full_name",
    "first_name",
    "surname",
    "birth_date",
    "email",
    "phone",
    "postcode",
    "address",
    "city",
    "national_id",
    "cpf",
    "category",
    "text",
]


class IdentityConfig(_Strict):
    """Entity resolution: records of one person under several ids become one entity."""

    enabled: bool = False
    #: Column → role (full_name, first_name, surname, birth_date, email, phone, postcode,
    #: address, city, national_id, cpf, category — compared exactly —, text — fuzzily). Unset:
    #: the roles the columns' names say.
    columns: dict[str, IdentityRole] | None = None
    #: The match probability a pair is linked at. Unset: the one with the best F1 the fitted
    #: model expects of itself.
    threshold: float | None = Field(None, gt=0.0, lt=1.0)
    #: The most comparisons blocking may generate (rules past it are left out, and said).
    max_pairs: int = Field(20_000_000, ge=1_000)
    #: A blocking key shared by more records than this is left out of its rule (and counted).
    max_block: int = Field(1_000, ge=2)
    #: No entity grows past this many records by a chain of links (the guard refuses the link).
    max_entity_size: int = Field(50, ge=2)
    #: Two sources stacked in one input: the column naming each record's source.
    source_column: str | None = None
    #: With ``source_column``: compare records of different sources only.
    link_only: bool = False
    seed: int = 42

    @model_validator(mode="after")
    def _link_only_needs_sources(self) -> IdentityConfig:
        if self.link_only and self.source_column is None:
            raise ValueError("link_only compares sources: it needs 'source_column'")
        return self


class ScaleConfig(_Strict):
    """Feature scaling."""

    method: Literal["standard", "robust"] = "standard"


class ReduceConfig(_Strict):
    """PCA: a fixed number of components, or the fewest that explain a share of variance."""

    components: int | None = Field(None, ge=1)
    variance: float | None = Field(None, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_target(self) -> ReduceConfig:
        if self.components is not None and self.variance is not None:
            raise ValueError("give 'components' or 'variance', not both")
        return self

    @property
    def variance_target(self) -> float:
        return self.variance if self.variance is not None else 0.9


class ClusterConfig(_Strict):
    """k-means: k fixed, or chosen over [k_min, k_max] by silhouette."""

    k: int | None = Field(None, ge=2)
    k_min: int = Field(2, ge=2)
    k_max: int = Field(10, ge=2)
    min_segment_share: float = Field(0.02, ge=0.0, lt=0.5)
    seed: int = 42
    max_iter: int = Field(300, ge=1)
    #: Convergence: k-means stops once the summed squared centroid shift of an iteration falls
    #: below ``tol`` × the mean variance of the clustered coordinates (scikit-learn's rule).
    #: Tighter than scikit-learn's 1e-4: on 5M synthetic customers 1e-4 stopped the refine on
    #: every row one pass short of the optimum (adjusted Rand index 0.875 against 0.878).
    tol: float = Field(1e-6, gt=0.0, lt=1.0)
    #: Seedings per fit (alternately k-means++ and k-means||, each converged on a subsample), the
    #: lowest inertia kept and refined. Two seedings still both landed in a poor optimum on 1M
    #: synthetic customers (adjusted Rand index 0.73 against the latent segments); eight: 0.88.
    n_init: int = Field(8, ge=1)
    #: k-means (and the sweep over k) first runs on this many rows, seeded, held in memory;
    #: the chosen centroids are then refined on every row. None: all rows.
    sweep_sample_size: int | None = Field(200_000, ge=1000)
    #: The chosen centroids are refined in memory (on Spark: on the driver) on up to this
    #: many MiB of the reduced matrix (256: 6.7 million rows of 5 components) before any pass
    #: over every row; a larger sample leaves fewer such passes, and a sample of every row
    #: none (at 5M rows on Spark, 64 MiB left the cluster stage six passes over every row and
    #: 28-38 s; with every row held, it took 15.5 s). On Spark, rows whose features fit it are
    #: held on the driver from the scale stage on (the cluster stage then took 5 s).
    fit_sample_mb: float = Field(256.0, gt=0)
    silhouette_sample_size: int = Field(10_000, ge=100)

    @model_validator(mode="after")
    def _range_is_ordered(self) -> ClusterConfig:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min={self.k_min} should be <= k_max={self.k_max}")
        return self

    @property
    def candidates(self) -> list[int]:
        return [self.k] if self.k is not None else list(range(self.k_min, self.k_max + 1))


class LookalikesConfig(_Strict):
    """Lookalikes: each customer's most similar customers within its segment."""

    enabled: bool = True
    top_k: int = Field(10, ge=1)
    #: The most customers one search holds: larger segments are cut into cells of about 3/4
    #: of it. ``None`` takes the engine's default (each segment whole on the local engine,
    #: 50,000 on Spark, where a cell is one task's memory).
    max_cell_size: int | None = Field(None, ge=100)
    #: How many of its segment's nearest cells each customer is copied to as a candidate:
    #: more finds more true neighbours near cell borders, at that many times the work.
    probes: int = Field(3, ge=1)
    #: Customers whose lookalikes are checked against exact search to measure recall@k
    #: (0 skips the check).
    recall_sample: int = Field(200, ge=0)


class OutputConfig(_Strict):
    """Where results go: one Delta table per output, each with its write mode."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )

    #: A local path or a URI (s3://, abfss://, gs://, dbfs:/, /Volumes/...). With a catalog
    #: and schema it still holds the model, the run summaries, staging and checkpoints.
    path: str = "segmatch-out"
    #: Name the tables instead of placing them (Spark engine): with both set, the segments
    #: table is ``catalog.schema.segments`` (Unity Catalog, or the session's own catalog).
    catalog: str | None = None
    schema_: str | None = Field(None, alias="schema")
    modes: dict[Table, WriteMode] = Field(default_factory=dict)
    checkpoints: bool = True
    #: A stage's result is checkpointed only when computing it took at least this long: a
    #: quicker stage costs less to recompute on resume than to write (on Spark, a whole job).
    checkpoint_min_seconds: float = Field(20.0, ge=0.0)
    keep_runs: int = Field(2, ge=0)
    #: How long a run waits for another run committing to the same output before it gives up
    #: (committing nothing): runs commit one at a time, each one's tables and model together.
    lease_timeout: float = Field(600.0, ge=0.0)
    report: bool = True
    #: Which input columns the segments table (and scoring's scores table) carries beside the
    #: segment: the features (read a segment without a join), every column, or none.
    segments_columns: Literal["features", "all", "none"] = "features"

    @model_validator(mode="after")
    def _merged_tables_have_keys(self) -> OutputConfig:
        for table, mode in self.modes.items():
            if mode == "merge" and not TABLES[table].mergeable:
                raise ValueError(f"the {table} has no key to merge on; use overwrite or append")
        return self

    @model_validator(mode="after")
    def _catalog_and_schema_together(self) -> OutputConfig:
        if (self.catalog is None) != (self.schema_ is None):
            raise ValueError("output.catalog and output.schema name tables together; set both")
        for key, part in (("catalog", self.catalog), ("schema", self.schema_)):
            if part is not None and not TABLE_NAME_PART.fullmatch(part):
                raise ValueError(
                    f"output.{key} {part!r} is not a plain name (letters, digits, _ and -)"
                )
        return self

    def mode(self, table: str) -> WriteMode:
        return self.modes.get(Table(table), TABLES[table].default_mode)

    @property
    def tables_in(self) -> str | None:
        """``catalog.schema`` when the tables are named, else None."""
        return None if self.catalog is None else f"{self.catalog}.{self.schema_}"


class TrackingConfig(_Strict):
    """MLflow tracking and the model registry."""

    enabled: bool = True
    #: A run whose store cannot be reached stops before its first stage; ``false`` runs it
    #: untracked instead (with a warning): nothing registered or promoted, stable segment ids
    #: from the output's model.json.
    required: bool = True
    uri: str | None = None
    experiment: str = "segmatch"
    #: The registered model. Unset, each data set gets its own: ``segmatch-<config file name>``
    #: (or the output folder's name), so ``@champion`` never crosses data sets.
    model_name: str | None = None
    max_silhouette_drop: float | None = Field(None, ge=0.0)

    @property
    def registered_name(self) -> str:
        """The registered model's name (a config built from a file or a mapping has one)."""
        if self.model_name is None:
            raise ConfigError("tracking.model_name is not set: no model to register or promote")
        return self.model_name


class SparkConfig(_Strict):
    """The Spark session and the partition planner (engine: spark)."""

    master: str = "local[*]"
    #: Spark Connect: ``sc://host:port``, or ``local[N]`` to start a Connect server here.
    #: ``SPARK_REMOTE`` is honoured when unset; either one replaces ``master``.
    remote: str | None = None
    #: Give a session segmatch builds Delta Lake's Spark writer (fetched from Maven Central
    #: when the session starts). A session passed in, or Databricks', is used as it is.
    delta: bool = True
    conf: dict[str, str] = Field(default_factory=dict)
    target_partition_mb: int = Field(64, ge=1)
    min_partitions: int | None = Field(None, ge=1)
    max_partitions: int = Field(2000, ge=1)
    fixed_partitions: int | None = Field(None, ge=1)

    @field_validator("conf", mode="before")
    @classmethod
    def _settings_as_text(cls, conf: Any) -> Any:
        """Spark takes every setting as text; YAML (and --set) reads ``8`` as a number."""
        if not isinstance(conf, dict):
            return conf
        return {
            key: str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in conf.items()
        }


#: (sections…, former key) → key: read under the new name, with a warning.
RENAMED_KEYS: dict[tuple[str, ...], str] = {
    ("match",): "lookalikes",
    ("cluster", "min_cluster_share"): "min_segment_share",
    ("output", "modes", "matches"): "lookalikes",
}


def _renamed(raw: Any, parents: list[str], old: str, new: str, *, at: str = "") -> Any:
    """``raw`` (a copy where it changes) with ``parents…old`` moved to ``parents…new``."""
    if not isinstance(raw, dict):
        return raw
    if parents:
        section = raw.get(parents[0])
        inner = _renamed(section, parents[1:], old, new, at=f"{at}{parents[0]}.")
        return raw if inner is section else {**raw, parents[0]: inner}
    if old not in raw:
        return raw
    if new in raw:
        raise ValueError(f"give {at}{new} only: {at}{old} is its former name")
    logger.warning("config key %s%s is now %s%s", at, old, at, new)
    return {(new if key == old else key): value for key, value in raw.items()}


class Config(_Strict):
    """The whole job, as described by one YAML file."""

    engine: Literal["local", "spark"] = "local"
    input: InputConfig
    clean: CleanConfig = CleanConfig()
    features: FeaturesConfig = FeaturesConfig()
    scale: ScaleConfig = ScaleConfig()
    reduce: ReduceConfig = ReduceConfig()
    cluster: ClusterConfig = ClusterConfig()
    lookalikes: LookalikesConfig = LookalikesConfig()
    identity: IdentityConfig = IdentityConfig()
    output: OutputConfig = OutputConfig()
    tracking: TrackingConfig = TrackingConfig()
    spark: SparkConfig = SparkConfig()
    #: Credentials and endpoints for remote locations, passed to delta-rs, Polars and Arrow
    #: (e.g. AWS_ENDPOINT_URL, AWS_REGION); the usual environment variables work as well.
    storage_options: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, raw: Any) -> Any:
        """Keys of earlier releases are read under their new names, saying so."""
        for (*parents, old), new in RENAMED_KEYS.items():
            raw = _renamed(raw, list(parents), old, new)
        return raw

    @model_validator(mode="before")
    @classmethod
    def _model_named_after_the_output(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        tracking = raw.get("tracking") or {}
        if not isinstance(tracking, dict) or tracking.get("model_name"):
            return raw
        output = raw.get("output") or {}
        named = output.get("schema") if isinstance(output, dict) else None
        path = output.get("path") if isinstance(output, dict) else None
        folder = str(path or OutputConfig().path).rstrip("/").rpartition("/")[2]
        return {**raw, "tracking": {**tracking, "model_name": model_name_for(named or folder)}}

    @model_validator(mode="after")
    def _named_tables_need_spark(self) -> Config:
        if self.engine == "spark":
            return self
        if self.output.catalog is not None:
            raise ValueError(
                "output.catalog and output.schema name tables in a Spark catalog; they need "
                "engine: spark (the local engine writes Delta tables under output.path)"
            )
        if is_table_name(self.input.path):
            raise ValueError(
                f"input.path {self.input.path!r} names a catalog table, which only the spark "
                "engine reads (give a file or folder for the local engine)"
            )
        return self


def model_name_for(data_set: str) -> str:
    """``segmatch-<data set>``, in the letters MLflow's registry accepts everywhere."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", data_set).strip("-") or "default"
    return slug if slug.startswith("segmatch") else f"segmatch-{slug}"


def config_digest(config: Config) -> str:
    """A stable hash of the whole config."""
    blob = json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
