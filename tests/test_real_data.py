"""The example configs on the public data sets (skipped when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import shared_data
from segmatch.api import run_pipeline
from segmatch.config_loading import build_config, load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def report_quality(request: pytest.FixtureRequest, result) -> None:
    """Silhouette and inertia of a run, listed at the end of the test session."""
    assert result.inertia > 0 and -1 <= result.silhouette <= 1
    request.node.user_properties.append(
        (
            "quality",
            f"{result.customers:,} customers, k={result.k}, silhouette {result.silhouette:.4f}, "
            f"inertia {result.inertia:,.1f}",
        )
    )


def test_cc_general_reads_credit_limit_as_float_and_segments(tmp_path, request):
    shared_data("cc_general/CC_GENERAL.csv")
    result = run_pipeline(
        EXAMPLES / "public_data" / "cc_general.yaml", overrides={"output.path": str(tmp_path)}
    )
    report_quality(request, result)
    assert result.customers == 8950
    assert result.imputed == {"CREDIT_LIMIT": 1, "MINIMUM_PAYMENTS": 313}
    assert 2 <= result.k <= 10 and result.silhouette > 0.3


def test_online_retail_transactions_become_customers(tmp_path, request):
    shared_data("online_retail/online_retail.parquet")
    result = run_pipeline(
        EXAMPLES / "public_data" / "online_retail.yaml", overrides={"output.path": str(tmp_path)}
    )
    report_quality(request, result)
    assert result.rows_in == 541_909
    assert result.quarantined_by_rule["null_id"] == 135_080
    assert result.customers == 4372
    assert result.silhouette > 0.3


@pytest.mark.parametrize(
    ("relative", "input_section"),
    [
        ("mall_customers/Mall_Customers.csv", {"id_column": "CustomerID"}),
        ("wholesale_customers/Wholesale_customers_data.csv", {"id_column": None}),
    ],
)
def test_the_other_shared_data_sets_segment_with_the_defaults(
    relative, input_section, tmp_path, request
):
    data = shared_data(relative)
    config = build_config(
        {
            "input": {"path": str(data), **input_section},
            "output": {"path": str(tmp_path), "report": False},
            "tracking": {"enabled": False},
        },
        source="the test",
    )
    result = run_pipeline(config)
    assert result.k >= 2
    report_quality(request, result)


@pytest.mark.parametrize("name", ["cc_general.yaml", "online_retail.yaml"])
def test_example_configs_are_valid(name):
    assert Path(load_config(EXAMPLES / "public_data" / name).input.path).name
