"""The examples shipped in examples/data: each one's column plan, as a new user would see it."""

from __future__ import annotations

from pathlib import Path

from segmatch.api import run_pipeline, validate
from segmatch.engines import make_engine
from segmatch.stages.columns import BEHAVIOUR_FEATURES, CATEGORY_FEATURE
from segmatch.storage import read_delta

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

MIXED_PLAN = {
    "customer_id": "id",
    "age": "numeric feature",
    "income": "numeric feature",
    "visits_per_month": "numeric feature",
    "household": "categorical feature",
    "channel": "categorical feature",
    "region_code": "numeric feature",
    "signup_date": "ignored",
    "country": "ignored",
    "comment": "ignored",
}

TRANSACTIONS_PLAN = {
    "order_id": "transaction",
    "customer_id": "id",
    "ordered_at": "transaction",
    "amount": "transaction",
    "category": "transaction",
    **dict.fromkeys([*BEHAVIOUR_FEATURES, CATEGORY_FEATURE], "derived feature"),
}


def plan_of(result) -> dict[str, tuple[str, str]]:
    return {entry["column"]: (entry["role"], entry["reason"]) for entry in result.column_plan}


def run_example(name: str, out: Path, engine) -> object:
    return run_pipeline(
        EXAMPLES / name,
        overrides={"output.path": str(out), "tracking.enabled": False, "engine": engine.name},
        spark=getattr(engine, "spark", None),
    )


def test_the_mixed_customer_table_has_the_expected_column_plan(engine, tmp_path):
    result = run_example("mixed_customers.yaml", tmp_path, engine)
    plan = plan_of(result)
    assert {column: role for column, (role, _) in plan.items()} == MIXED_PLAN
    assert plan["signup_date"][1].startswith("a date or time")
    assert plan["country"][1].startswith("constant text")
    assert plan["comment"][1].startswith("id-like")
    assert (
        "looks like a numeric code (whole numbers 1 to 4 over 600 rows)" in plan["region_code"][1]
    )
    assert result.imputed == {"income": 7}
    assert result.customers == 600 and result.quarantined == 0
    assert set(result.model.categorical_levels) == {"household", "channel"}
    assert "2 adults, kids" in result.model.categorical_levels["household"]
    assert any("region_code look(s) like numeric codes" in w for w in result.warnings)


def test_the_transactions_example_keeps_text_ids(tmp_path):
    result = run_example("transactions.yaml", tmp_path, make_engine("local"))
    plan = plan_of(result)
    assert {column: role for column, (role, _) in plan.items()} == TRANSACTIONS_PLAN
    assert result.customers == 300
    assert result.model.numeric_columns[:3] == ["recency_days", "frequency", "monetary_total"]
    ids = read_delta(tmp_path / "segments")["customer_id"].to_pylist()
    assert len(ids) == 300 and "C-00007" in ids


def test_every_example_at_the_top_of_examples_runs_from_a_fresh_clone():
    """The examples a README reader tries first carry their data in the repository; those
    on public data sets live in examples/public_data and say where the data goes."""
    for config in sorted(EXAMPLES.glob("*.yaml")):
        checked, columns = validate(config)
        assert Path(checked.input.path).is_relative_to(EXAMPLES), config.name
        assert columns, config.name
    for config in sorted((EXAMPLES / "public_data").glob("*.yaml")):
        assert "not in this repository" in config.read_text(), config.name
