"""The pipeline segmatch replaces: a monolithic PySpark + MLlib job, as the case study ran it.

Fixed ``repartition(200)``, every stage's output written to Parquet and read back, MLlib
StandardScaler / PCA / KMeans / ClusteringEvaluator, fixed k. Prints one JSON line of timings.

Usage: python -m benchmarks.baseline_spark DATA.parquet WORK_DIR --k 6 --components 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

NUMERIC = ["age", "income", "recency_days", "frequency", "monetary", "tenure_days"]
SKEWED = ["income", "recency_days", "frequency", "monetary"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("work")
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--components", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    started = time.perf_counter()
    from pyspark.ml.clustering import KMeans  # noqa: PLC0415
    from pyspark.ml.evaluation import ClusteringEvaluator  # noqa: PLC0415
    from pyspark.ml.feature import PCA, StandardScaler, VectorAssembler  # noqa: PLC0415
    from pyspark.sql import SparkSession, Window  # noqa: PLC0415
    from pyspark.sql import functions as F  # noqa: N812, PLC0415

    spark = (
        SparkSession.builder.master("local[*]").appName("baseline")
        .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )  # fmt: skip
    spark.sparkContext.setLogLevel("ERROR")
    stages: dict[str, float] = {"startup": time.perf_counter() - started}

    def step(name, write_to=None):
        def wrap(compute):
            start = time.perf_counter()
            frame = compute()
            if write_to is not None:
                frame.write.mode("overwrite").parquet(f"{args.work}/{write_to}")
                frame = spark.read.parquet(f"{args.work}/{write_to}")
            stages[name] = time.perf_counter() - start
            return frame

        return wrap

    raw = step("ingest", "raw")(lambda: spark.read.parquet(args.data).repartition(200))
    latest = Window.partitionBy("idcliente").orderBy(F.col("updated_at").desc())
    cleaned = step("clean", "clean")(
        lambda: raw.where(F.col("idcliente").isNotNull() & (F.trim("idcliente") != ""))
        .where(~F.col("monetary").isin(float("inf"), float("-inf")))
        .where(F.col("age").between(16, 110))
        .withColumn("__r", F.row_number().over(latest)).where("__r = 1").drop("__r")
        .fillna({"income": raw.approxQuantile("income", [0.5], 0.001)[0]})
    )  # fmt: skip
    features = step("features", "features")(
        lambda: VectorAssembler(inputCols=NUMERIC, outputCol="raw_features").transform(
            cleaned.select(
                "idcliente",
                *[(F.log1p(F.col(c)) if c in SKEWED else F.col(c)).cast("double").alias(c)
                  for c in NUMERIC],
            )
        )
    )  # fmt: skip

    def reduce():
        scaler = StandardScaler(inputCol="raw_features", outputCol="scaled", withMean=True)
        scaled = scaler.fit(features).transform(features)
        pca = PCA(k=args.components, inputCol="scaled", outputCol="pca")
        return pca.fit(scaled).transform(scaled).select("idcliente", "pca")

    reduced = step("scale_pca", "pca")(reduce)
    holder = {}

    def cluster():
        model = KMeans(k=args.k, seed=42, featuresCol="pca", predictionCol="segment").fit(reduced)
        return model.transform(reduced)

    clustered = step("kmeans", "segments")(cluster)

    def evaluate():
        holder["silhouette"] = ClusteringEvaluator(
            featuresCol="pca", predictionCol="segment", distanceMeasure="squaredEuclidean"
        ).evaluate(clustered)
        return clustered

    step("silhouette")(evaluate)
    spark.stop()
    print(json.dumps({
        "pipeline": "baseline", "stages": stages, "silhouette": holder["silhouette"],
        "total_seconds": time.perf_counter() - started, "customers": None,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
