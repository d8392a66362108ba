"""The example configs on the public data sets (skipped when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import shared_data
from segmatch.api import run_pipeline
from segmatch.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_cc_general_reads_credit_limit_as_float_and_segments(tmp_path):
    shared_data("cc_general/CC_GENERAL.csv")
    result = run_pipeline(
        EXAMPLES / "public_data" / "cc_general.yaml", overrides={"output.path": str(tmp_path)}
    )
    assert result.customers == 8950
    assert result.imputed == {"CREDIT_LIMIT": 1, "MINIMUM_PAYMENTS": 313}
    assert 2 <= result.k <= 10 and result.silhouette > 0.3


def test_online_retail_transactions_become_customers(tmp_path):
    shared_data("online_retail/online_retail.parquet")
    result = run_pipeline(
        EXAMPLES / "public_data" / "online_retail.yaml", overrides={"output.path": str(tmp_path)}
    )
    assert result.rows_in == 541_909
    assert result.quarantined_by_rule["null_id"] == 135_080
    assert result.customers == 4372
    assert result.silhouette > 0.3


@pytest.mark.parametrize("name", ["cc_general.yaml", "online_retail.yaml"])
def test_example_configs_are_valid(name):
    assert Path(load_config(EXAMPLES / "public_data" / name).input.path).name
