"""The Spark session segmatch uses, and the partition plan it spreads the input by."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812 -- the PySpark convention

from segmatch import heap
from segmatch.config import SparkConfig
from segmatch.engines.expressions import Expr
from segmatch.engines.spark.class_archive import ClassArchive
from segmatch.engines.spark.expressions import kinds_of, to_spark
from segmatch.engines.spark.frames import persist
from segmatch.partitioning import PartitionPlan, plan_partitions

#: Rows of the probe that counts the partitions Spark gives a scan, when the session has no
#: SparkContext to ask (Spark Connect).
PARALLELISM_PROBE_ROWS = 1 << 16

#: Delta Lake's Spark writer, built for the PySpark minor version installed (``{spark}``).
DELTA_PACKAGE = "io.delta:delta-spark_{spark}_2.13:4.4.0"
#: Libraries Delta's package depends on that Spark already ships, at its own versions: the
#: package's older copies must not shadow them.
SPARK_PROVIDES = (
    "org.apache.hadoop:hadoop-client-runtime",
    "org.apache.hadoop:hadoop-client-api",
    "org.apache.parquet:parquet-hadoop",
    "org.apache.parquet:parquet-column",
    "org.apache.parquet:parquet-common",
    "org.apache.parquet:parquet-encoding",
    "org.apache.parquet:parquet-format-structures",
    "org.apache.parquet:parquet-jackson",
    "com.fasterxml.jackson.core:jackson-databind",
    "com.fasterxml.jackson.core:jackson-core",
    "com.fasterxml.jackson.core:jackson-annotations",
    "org.apache.logging.log4j:log4j-core",
    "org.apache.logging.log4j:log4j-api",
    "org.apache.logging.log4j:log4j-slf4j2-impl",
    "org.scala-lang:scala-library",
    "org.slf4j:slf4j-api",
    "org.roaringbitmap:RoaringBitmap",
    "org.xerial.snappy:snappy-java",
)
#: A static setting: PySpark reads it once per process, at the first column function.
DATAFRAME_DEBUGGING = "spark.python.sql.dataFrameDebugging.enabled"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"
UNCOMPRESSED_CACHE = "spark.sql.inMemoryColumnarStorage.compressed"
#: Inputs stored in fewer bytes than this run on a JVM that compiles with its quick compiler
#: only (about 250,000 customers of ten columns as Parquet).
QUICK_JIT_BYTES = 8 * 2**20
#: Quick compilation only, with the code cache the optimising compiler would have had: alone,
#: the quick compiler's 48 MB cache filled up in a Spark Connect server running a whole job.
QUICK_JIT = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
#: The logging of a local session segmatch starts (read by the JVM at its start).
LOGGING = Path(__file__).with_name("log4j2.properties")


def delta_settings() -> dict[str, str]:
    """Settings that give a session segmatch builds Delta Lake's Spark writer and SQL.

    Spark fetches the package from Maven Central (or its Ivy cache) when the session starts.
    """
    import pyspark  # noqa: PLC0415 -- only its version is needed

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return {
        "spark.jars.packages": DELTA_PACKAGE.format(spark=spark_minor),
        "spark.jars.excludes": ",".join(SPARK_PROVIDES),
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
    }


def session_for(settings: SparkConfig, *, input_bytes: int | None = None) -> SparkSession:
    """A SparkSession for segmatch: the active one if any, else one built from the config.

    ``spark.remote`` (or ``SPARK_REMOTE``) makes a Spark Connect session: ``sc://host:port``
    for a server, ``local[N]`` for one started here; otherwise ``spark.master`` a classic one.
    ``input_bytes`` (the input's stored size, when known) sizes what a local JVM is started
    with (see :func:`launch_settings`); the config's own ``spark.conf`` wins over those.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    remote = settings.remote or os.environ.get("SPARK_REMOTE")
    builder = SparkSession.builder.appName("segmatch")
    # A Connect session refuses a master (CANNOT_CONFIGURE_SPARK_CONNECT_MASTER).
    builder = builder.remote(remote) if remote else builder.master(settings.master)
    builder = (
        builder.config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    master = remote or settings.master
    launched = launch_settings(master, remote=bool(remote), input_bytes=input_bytes)
    archive = None
    own_java = "spark.driver.extraJavaOptions" in settings.conf
    if not remote and local_cores(master) is not None and not own_java:
        archive = ClassArchive.for_this_machine(cache_folder())
        # Writing it doubles a short run's time once: a small input's run only maps one.
        small = input_bytes is not None and input_bytes < QUICK_JIT_BYTES
        if archive is not None and (options := archive.java_options(may_write=not small)):
            java = launched["spark.driver.extraJavaOptions"]
            launched["spark.driver.extraJavaOptions"] = " ".join([java, *options])
    for key, value in launched.items():
        builder = builder.config(key, value)
    combined = {**(delta_settings() if settings.delta else {}), **settings.conf}
    if settings.delta and "spark.jars.packages" in settings.conf:
        # The config's packages (hadoop-aws for s3a://, say) come beside Delta's.
        combined["spark.jars.packages"] = ",".join(
            [delta_settings()["spark.jars.packages"], settings.conf["spark.jars.packages"]]
        )
    listing = None if remote else _jar_listing(combined)
    resolved = listing.read() if listing else None
    if listing and resolved:
        combined = listing.in_place_of_packages(combined, resolved)
    for key, value in combined.items():
        builder = builder.config(key, value)
    with warnings.catch_warnings():
        # A Connect client re-applies start-up settings (UI, memory) to the running server,
        # which refuses each with a warning although the server already started with them.
        warnings.filterwarnings("ignore", message="Failed to set spark", category=UserWarning)
        session = builder.getOrCreate()
    if listing and not resolved:
        listing.write(session)
    if archive is not None:
        archive.keep_at_exit(session)
    heap.settle()
    return session


def cache_folder() -> Path:
    """Where segmatch keeps what it resolved once per machine: ``SEGMATCH_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/segmatch`` (``~/.cache/segmatch``)."""
    if os.environ.get("SEGMATCH_CACHE_DIR"):
        return Path(os.environ["SEGMATCH_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "segmatch"


class JarListing:
    """The jars Spark resolved for a set of packages, listed once per machine: later classic
    sessions load them directly instead of resolving the packages again through Ivy (about a
    second of each start here, more where Maven Central is far)."""

    def __init__(self, packages: str, excludes: str, user_jars: str) -> None:
        digest = hashlib.sha256(f"{packages}|{excludes}".encode()).hexdigest()[:16]
        self.path = cache_folder() / f"spark-jars-{digest}.txt"
        self.user_jars = [j for j in user_jars.split(",") if j]

    def read(self) -> list[str] | None:
        """The listed jars, when the listing is there and every jar in it still is."""
        try:
            jars = [j for j in self.path.read_text(encoding="utf-8").split("\n") if j]
        except OSError:
            return None
        present = all(Path(j.removeprefix("file://")).is_file() for j in jars)
        return jars if jars and present else None

    def in_place_of_packages(self, settings: dict[str, str], jars: list[str]) -> dict[str, str]:
        kept = {k: v for k, v in settings.items() if k not in PACKAGE_SETTINGS}
        return kept | {"spark.jars": ",".join([*self.user_jars, *jars])}

    def write(self, session: SparkSession) -> None:
        """List the jars the session resolved (the config's own ``spark.jars`` left out)."""
        loaded = session.sparkContext.getConf().get("spark.jars") or ""
        jars = [j for j in loaded.split(",") if j and j not in self.user_jars]
        if not jars:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text("\n".join(jars) + "\n", encoding="utf-8")
            partial.replace(self.path)
        except OSError as error:
            # Only the next start's speed depends on it: it resolves the packages again.
            logger.info("could not list the resolved Spark jars in %s: %s", self.path, error)


#: The settings that make Spark resolve packages through Ivy at start.
PACKAGE_SETTINGS = ("spark.jars.packages", "spark.jars.excludes")


def _jar_listing(settings: dict[str, str]) -> JarListing | None:
    packages = settings.get("spark.jars.packages")
    if not packages:
        return None
    return JarListing(
        packages, settings.get("spark.jars.excludes", ""), settings.get("spark.jars", "")
    )


def launch_settings(
    master: str, *, remote: bool = False, input_bytes: int | None = None
) -> dict[str, str]:
    """What segmatch starts a session of its own with, beyond the config: sized to a local
    master's cores and memory, and to the input's stored size when known."""
    launched: dict[str, str] = {}
    if not remote:
        # PySpark's call-site capture turns each column function into five round trips to the
        # JVM (the setting read, the origin set and cleared): 1,000 `when` chains took 3.3 s
        # with it, 0.9 s without. segmatch's errors name the stage and value themselves.
        launched[DATAFRAME_DEBUGGING] = "false"
    cores = local_cores(master)
    if cores is None:
        return launched
    # Delta rebuilds a table's state from its log over 50 partitions unless told: on one
    # machine, each overwrite of a 20,000-row table then took 2.5-8 s instead of 0.7-0.9 s.
    launched[DELTA_SNAPSHOT_PARTITIONS] = str(cores)
    # In local mode the driver holds everything; Spark's 1 GiB default fails at 5M rows.
    launched["spark.driver.memory"] = f"{_half_of_memory_gib()}g"
    # With half the machine's memory, a local session can hold its cached rows as they are:
    # compressing them cost 0.3-0.5 s of each 1M-row cache built, and scans read them no faster.
    launched[UNCOMPRESSED_CACHE] = "false"
    # Without a logging file of its own, a local start prints Spark's default profile (twice,
    # once as the packages resolve) and notices about this machine, not about the run.
    java = [f"-Dlog4j2.configurationFile={LOGGING.as_uri()}"]
    if not remote and input_bytes is not None and input_bytes < QUICK_JIT_BYTES:
        # A short run spends its time warming the JVM up: the optimising compiler's threads
        # then compete with the tasks for the cores. Quick compilation only: 20,000 customers
        # 30 s → 23 s, 100,000 33-36 s → 25-26 s; at 1M level, at 5M 113 s → 191 s. Not for
        # a Connect server, which outlives one client's run.
        java.append(QUICK_JIT)
    for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
        launched[key] = " ".join(java)
    return launched


def local_cores(master: str) -> int | None:
    """The cores a local master runs tasks on (``local``, ``local[4]``, ``local[*, 2]``,
    ``local-cluster[2, 1, 1024]``), None for a cluster's master or a Connect server's URL."""
    local = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if local:
        threads = local.group(1)
        if threads is None:
            return 1
        return (os.cpu_count() or 1) if threads == "*" else int(threads)
    cluster = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*\d+\]", master.strip())
    return int(cluster.group(1)) * int(cluster.group(2)) if cluster else None


def _half_of_memory_gib() -> int:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, total // 2**31)


logger = logging.getLogger(__name__)


class SparkPlanning:
    """How many partitions the data is spread over, decided from its volume and the cores."""

    spark: SparkSession
    settings: SparkConfig
    _plan: PartitionPlan | None
    _cores: int | None

    @property
    def partitions(self) -> int:
        return self._plan.partitions if self._plan else self.cores

    @property
    def cores(self) -> int:
        """The parallelism Spark gives a scan: its default parallelism (the executors' cores).

        Spark Connect sessions have no SparkContext to ask; there a tiny job counts the
        partitions of a range, which Spark splits by the same default.
        """
        if self._cores is None:
            try:
                self._cores = int(self.spark.sparkContext.defaultParallelism)
            except (PySparkException, AttributeError):
                partition = self.spark.range(0, PARALLELISM_PROBE_ROWS).select(
                    F.spark_partition_id().alias("partition")
                )
                counted = partition.agg(F.max("partition")).first()
                self._cores = int(counted[0] if counted is not None else 0) + 1
        return self._cores

    def partition_plan(self) -> dict[str, Any]:
        return self._plan.as_dict() if self._plan else {}

    def spread(self, frame: DataFrame, *, key: Expr, stored_bytes: int) -> DataFrame:
        self._plan = plan_partitions(
            input_bytes=stored_bytes,
            cores=self.cores,
            target_bytes=self.settings.target_partition_mb * 2**20,
            floor=self.settings.min_partitions,
            ceiling=self.settings.max_partitions,
            fixed=self.settings.fixed_partitions,
        )
        logger.debug(
            "spreading the rows over %d partitions: %s", self._plan.partitions, self._plan.reason
        )
        # Joins and aggregations after this point shuffle into as many partitions as planned.
        self.spark.conf.set("spark.sql.shuffle.partitions", str(self._plan.partitions))
        # Spread by the very expression cleaning later keys the rows with (a trimmed id): Spark
        # then sees them as already partitioned, and deduplication shuffles nothing again.
        by = to_spark(key, kinds_of(frame.schema), frame)
        return persist(frame.repartition(self._plan.partitions, by))
