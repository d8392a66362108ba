# Databricks notebook source
# MAGIC %md
# MAGIC # Segment customers with segmatch
# MAGIC Runs the whole job on this cluster's Spark session: the input in a Unity Catalog volume,
# MAGIC the tables in Unity Catalog (`main.crm.segments` ...), the run tracked in this workspace's
# MAGIC MLflow, the model registered in Unity Catalog.

# COMMAND ----------
# MAGIC %pip install segmatch

# COMMAND ----------
from segmatch.api import run_pipeline, score_customers, table_history
from segmatch.config_loading import build_config

config = build_config(
    {
        "engine": "spark",
        "input": {"path": "/Volumes/main/crm/raw/customers.parquet", "id_column": "customer_id"},
        "features": {"log": ["income", "monetary"]},
        "cluster": {"k_min": 2, "k_max": 10},
        "output": {
            "path": "/Volumes/main/crm/segmatch/out",
            "catalog": "main",
            "schema": "crm",
            "modes": {"segments": "merge"},
        },
        "tracking": {
            "experiment": "/Shared/segmatch/customers",
            "model_name": "main.crm.segmatch_customers",
        },
    },
    source="the notebook",
)
result = run_pipeline(config, spark=spark)  # noqa: F821 -- the notebook's session
print(f"k={result.k} silhouette={result.silhouette:.3f} run={result.run_id}")

# COMMAND ----------
# Every version of the segments table, with the run that wrote it.
for version in table_history("main.crm.segments", spark=spark):  # noqa: F821
    print(version)

# COMMAND ----------
# New customers against the saved segments, with lookalikes from the segments table.
scored = score_customers(
    "models:/main.crm.segmatch_customers@champion",
    "/Volumes/main/crm/raw/new_customers.parquet",
    "/Volumes/main/crm/segmatch/scores",
)
print(scored.outputs)
