"""Tables as exported by real systems: sorted files whose first rows say little, outcome
columns beside the behaviour, dates written day first. Every decision comes from whole columns,
on both engines."""

from __future__ import annotations

import html
import math
import random
from datetime import datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import make_config
from segmatch.api import run_pipeline, score_customers
from segmatch.errors import ColumnTypeError, ConfigError, ModelError
from segmatch.layout import LOOKALIKE_SAMPLE_FILE
from segmatch.report import SILHOUETTES, standardised_means
from segmatch.stages.columns import BEHAVIOUR_FEATURES, CATEGORY_FEATURE
from segmatch.stages.ingest import read_input
from segmatch.storage import read_delta

HEAD = 1_200


def _plan(engine, path, tmp_path, **sections):
    config = make_config(path, tmp_path / "out", engine.name, **sections)
    return read_input(engine, config=config.input, features=config.features, clean=config.clean)


def _roles(raw) -> dict[str, tuple[str, str]]:
    return {role.column: (role.role, role.reason) for role in raw.plan.roles}


def test_a_sorted_file_is_judged_by_every_row_not_its_head(engine, tmp_path):
    rng = random.Random(5)
    lines = ["idcliente,channel,visits,spend"]
    for i in range(HEAD + 800):
        # The file is sorted by channel: its first 1,200 rows all say "store".
        channel = "store" if i < HEAD else rng.choice(["web", "app", "store"])
        visits = rng.randint(1, 8) if i < HEAD else rng.randint(1, 48)
        lines.append(f"c{i},{channel},{visits},{rng.uniform(10, 900):.2f}")
    path = tmp_path / "sorted.csv"
    path.write_text("\n".join(lines) + "\n")
    roles = _roles(_plan(engine, path, tmp_path))
    assert roles["channel"] == (
        "categorical feature",
        "text with 3 levels over 2,000 rows (at most features.max_levels=20): one-hot, "
        "weighted like one numeric variable",
    )
    assert roles["visits"] == ("numeric feature", "a numeric column")


def test_constant_and_id_like_text_quote_the_whole_column(engine, tmp_path):
    lines = ["idcliente,country,email,spend"]
    lines += [f"c{i},BR,user{i}@mail.com,{i % 17}" for i in range(300)]
    path = tmp_path / "customers.csv"
    path.write_text("\n".join(lines) + "\n")
    roles = _roles(_plan(engine, path, tmp_path))
    assert roles["country"][1].startswith("constant text: one value ('BR') over 300 rows")
    assert roles["email"][1] == "id-like: a different value on each of 300 rows"


def _customers_with_outcomes(path, rows=400):
    rng = random.Random(11)
    lines = ["idcliente,spend,visits,Churn,y"]
    for i in range(rows):
        heavy = i % 2 == 0
        spend = rng.gauss(900 if heavy else 100, 30)
        visits = rng.gauss(20 if heavy else 3, 1)
        churn = "Yes" if (not heavy and rng.random() < 0.6) else "No"
        subscribed = "yes" if heavy and rng.random() < 0.8 else "no"
        lines.append(f"c{i},{spend:.2f},{visits:.1f},{churn},{subscribed}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_outcome_columns_are_profiled_per_segment_not_clustered(engine, tmp_path):
    path = _customers_with_outcomes(tmp_path / "bank.csv")
    config = make_config(
        path,
        tmp_path / "out",
        engine.name,
        cluster={"k": 2, "seed": 3},
        lookalikes={"enabled": False},
    )
    result = run_pipeline(config, spark=getattr(engine, "spark", None))
    assert result.model.numeric_columns == ["spend", "visits"]
    assert result.model.categorical_levels == {}
    roles = {entry["column"]: entry for entry in result.column_plan}
    assert roles["Churn"]["role"] == "outcome"
    assert "share of 'Yes' profiled per segment" in roles["Churn"]["reason"]
    assert roles["y"]["role"] == "outcome"
    profiles = {row["segment"]: row for row in result.profiles.to_pylist()}
    churn = sorted(row["Churn_share"] for row in profiles.values())
    assert churn[0] == 0.0
    assert 0.45 < churn[1] < 0.75
    assert sorted(row["y_share"] for row in profiles.values())[0] == 0.0
    assert any(w.startswith("outcomes profiled per segment") for w in result.warnings)


def test_an_outcome_named_as_a_feature_is_one(engine, tmp_path):
    path = _customers_with_outcomes(tmp_path / "bank.csv", rows=60)
    raw = _plan(
        engine,
        path,
        tmp_path,
        features={"numeric": ["spend"], "categorical": ["Churn"], "outcomes": ["y"]},
    )
    assert raw.plan.categorical == ("Churn",)
    assert [o.column for o in raw.plan.outcomes] == ["y"]
    assert _roles(raw)["y"][1].startswith("listed in features.outcomes")


@pytest.mark.parametrize("separator", ["-", "/"])
def test_day_first_dates_become_days_before_the_as_of_date(engine, tmp_path, separator):
    rng = random.Random(2)
    lines = ["idcliente,spend,Dt_Customer"]
    for i in range(200):
        day, month = rng.randint(1, 28), rng.randint(1, 12)
        lines.append(
            f"c{i},{rng.uniform(1, 99):.1f},{day:02d}{separator}{month:02d}{separator}2013"
        )
    lines.append(f"late,5.0,31{separator}12{separator}2013")
    path = tmp_path / "marketing.csv"
    path.write_text("\n".join(lines) + "\n")
    plain = _roles(_plan(engine, path, tmp_path))
    assert plain["Dt_Customer"][0] == "ignored"
    assert plain["Dt_Customer"][1].startswith("dates, day first:")
    raw = _plan(engine, path, tmp_path, features={"dates": ["Dt_Customer"]})
    assert raw.plan.features == ("spend", "Dt_Customer_days")
    assert raw.as_of == datetime(2013, 12, 31)
    rows = engine.to_arrow(raw.frame, columns=["idcliente", "Dt_Customer", "Dt_Customer_days"])
    for row in rows.to_pylist():
        written = datetime.strptime(row["Dt_Customer"].replace(separator, "/"), "%d/%m/%Y")
        assert row["Dt_Customer_days"] == pytest.approx((raw.as_of - written).days)


def test_month_first_dates_are_read_so_and_dayfirst_forces_a_reading(engine, tmp_path):
    lines = ["idcliente,spend,signup"]
    lines += [f"c{i},{i}.5,0{1 + i % 9}/{13 + i % 15}/2020" for i in range(50)]
    path = tmp_path / "us.csv"
    path.write_text("\n".join(lines) + "\n")
    roles = _roles(_plan(engine, path, tmp_path))
    assert roles["signup"][1].startswith("dates, month first: 50 of 50 rows")
    forced = _roles(_plan(engine, path, tmp_path, input={"dayfirst": True}))
    assert forced["signup"][1].startswith("dates, day first as input.dayfirst says")
    with pytest.raises(ColumnTypeError, match=r"features\.dates names 'spend'"):
        _plan(engine, path, tmp_path, features={"dates": ["spend"]})


def _telecom(path, rows, *, blanks=(), junk=()):
    rng = random.Random(len(path.name) + rows)
    lines = ["customerID,tenure,TotalCharges,Contract"]
    for i in range(rows):
        heavy = i % 2 == 0
        tenure = rng.randint(40, 70) if heavy else rng.randint(1, 12)
        charges = f"{tenure * rng.uniform(60, 90):.2f}"
        if i in blanks:
            charges = " "
        if i in junk:
            charges = "n/a"
        contract = rng.choice(["Two year", "One year"] if heavy else ["Month-to-month"])
        lines.append(f"T{i:04d},{tenure},{charges},{contract}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _telecom_config(path, out, engine_name, **tracking):
    return make_config(
        path,
        out,
        engine_name,
        input={"id_column": "customerID"},
        cluster={"k": 2, "seed": 3},
        lookalikes={"enabled": False},
        tracking=tracking or {"enabled": False},
    )


def test_scoring_imputes_blank_and_junk_number_cells_with_the_training_medians(engine, tmp_path):
    train = _telecom(tmp_path / "telecom.csv", 300, blanks={3, 50, 77})
    result = run_pipeline(
        _telecom_config(train, tmp_path / "out", engine.name),
        spark=getattr(engine, "spark", None),
    )
    assert result.imputed == {"TotalCharges": 3}
    assert "TotalCharges" in result.model.numeric_columns
    new = _telecom(tmp_path / "new.csv", 40, blanks={1}, junk={2, 9})
    scored = score_customers(tmp_path / "out", new, tmp_path / "scored", engine=engine.name)
    assert (scored.customers, scored.quarantined) == (40, 0)
    assert scored.imputed == {"TotalCharges": 3}


@pytest.mark.slow
def test_the_registered_model_takes_the_file_the_run_took(tracking_store, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store)
    # The run records through the tracking process; this one's MLflow reads the same store.
    mlflow.set_tracking_uri(tracking_store)
    train = _telecom(tmp_path / "telecom.csv", 300, blanks={3, 50, 77})
    config = _telecom_config(train, tmp_path / "out", "local", enabled=True, model_name="t-telecom")
    result = run_pipeline(config)
    model = mlflow.pyfunc.load_model("models:/t-telecom@champion")
    frame = pd.read_csv(train)
    assert frame["TotalCharges"].dtype == object  # the blank cells make it text
    predicted = model.predict(frame)
    segments = read_delta(tmp_path / "out" / "segments").to_pandas()
    expected = frame[["customerID"]].merge(segments, on="customerID")["segment"]
    np.testing.assert_array_equal(predicted["segment"].to_numpy(), expected.to_numpy())
    junk = pd.read_csv(_telecom(tmp_path / "new.csv", 20, blanks={1}, junk={2}))
    assert len(model.predict(junk)) == 20
    with pytest.raises(ModelError, match=r"lacks feature column\(s\) 'TotalCharges'") as missing:
        model.predict(frame.drop(columns=["TotalCharges"]))
    assert "\n" not in str(missing.value) and len(str(missing.value)) < 300
    assert result.model_version is not None


def _transactions(path, customers, *, seed):
    rng = random.Random(seed)
    lines = ["order_id,customer_id,ordered_at,amount,category"]
    order = 0
    for c in range(customers):
        big = c % 3 == 0
        for _ in range(rng.randint(8, 14) if big else rng.randint(1, 3)):
            order += 1
            day = rng.randint(1, 28)
            amount = rng.uniform(200, 400) if big else rng.uniform(5, 40)
            category = rng.choice(["home", "fashion", "tech"])
            lines.append(
                f"T{order:06d},C-{c:04d},2025-0{rng.randint(1, 9)}-{day:02d}T10:00:00,"
                f"{amount:.2f},{category}"
            )
    path.write_text("\n".join(lines) + "\n")
    return path


def _transactions_config(path, out, engine_name, **tracking):
    return make_config(
        path,
        out,
        engine_name,
        input={
            "id_column": "customer_id",
            "shape": "transactions",
            "transactions": {
                "timestamp": "ordered_at",
                "amount": "amount",
                "invoice": "order_id",
                "category": "category",
                "as_of": "2025-10-01T00:00:00",
            },
        },
        cluster={"k": 3, "seed": 3},
        lookalikes={"enabled": False},
        tracking=tracking or {"enabled": False},
    )


def test_a_model_trained_on_transactions_scores_transactions(engine, tmp_path):
    train = _transactions(tmp_path / "orders.csv", 150, seed=1)
    config = _transactions_config(train, tmp_path / "out", engine.name)
    run_pipeline(config, spark=getattr(engine, "spark", None))
    trained = read_delta(tmp_path / "out" / "segments").to_pandas().set_index("customer_id")
    again = score_customers(tmp_path / "out", train, tmp_path / "again", engine=engine.name)
    scored = read_delta(again.outputs["scores"]).to_pandas().set_index("customer_id")
    assert again.customers == 150
    assert (scored["segment"] == trained.loc[scored.index, "segment"]).all()
    derived = tmp_path / "derived.csv"
    trained.reset_index()[["customer_id", *_behaviour(trained)]].to_csv(derived, index=False)
    as_customers = score_customers(tmp_path / "out", derived, tmp_path / "derived_scores")
    assert as_customers.customers == 150


def _behaviour(segments) -> list[str]:
    return [c for c in (*BEHAVIOUR_FEATURES, CATEGORY_FEATURE) if c in segments.columns]


@pytest.mark.slow
def test_the_registered_transactions_model_aggregates_what_it_is_given(
    tracking_store, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store)
    # The run records through the tracking process; this one's MLflow reads the same store.
    mlflow.set_tracking_uri(tracking_store)
    train = _transactions(tmp_path / "orders.csv", 150, seed=1)
    config = _transactions_config(
        train, tmp_path / "out", "local", enabled=True, model_name="t-orders"
    )
    run_pipeline(config)
    model = mlflow.pyfunc.load_model("models:/t-orders@champion")
    predicted = model.predict(pd.read_csv(train)).set_index("customer_id")
    trained = read_delta(tmp_path / "out" / "segments").to_pandas().set_index("customer_id")
    assert len(predicted) == 150
    assert (predicted["segment"] == trained.loc[predicted.index, "segment"]).all()


def test_two_configs_with_default_outputs_keep_their_own_tables(tmp_path):
    first = _telecom(tmp_path / "telecom.csv", 120)
    second = _transactions(tmp_path / "orders.csv", 60, seed=4)
    configs = {
        "telecom.yaml": {"input": {"path": first.name, "id_column": "customerID"}},
        "orders.yaml": {
            "input": {
                "path": second.name,
                "id_column": "customer_id",
                "shape": "transactions",
                "transactions": {"timestamp": "ordered_at", "amount": "amount"},
            }
        },
    }
    results = {}
    for name, raw in configs.items():
        raw |= {"cluster": {"k": 2}, "lookalikes": {"enabled": False}}
        raw |= {"tracking": {"enabled": False}}
        (tmp_path / name).write_text(yaml.safe_dump(raw))
        results[name] = run_pipeline(tmp_path / name)
    assert results["telecom.yaml"].config.output.path == str(tmp_path / "segmatch-out" / "telecom")
    assert results["orders.yaml"].config.output.path == str(tmp_path / "segmatch-out" / "orders")
    assert read_delta(tmp_path / "segmatch-out" / "orders" / "segments").num_rows == 60


def test_an_output_holding_another_data_sets_tables_stops_before_the_first_stage(tmp_path):
    first = _telecom(tmp_path / "telecom.csv", 120)
    out = tmp_path / "shared-out"
    run_pipeline(_telecom_config(first, out, "local"))
    second = _transactions(tmp_path / "orders.csv", 60, seed=4)
    other = _transactions_config(second, out, "local")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ConfigError, match=r"holds the tables of another data set .*--out"):
        run_pipeline(other)
    assert sorted(p.name for p in out.iterdir()) == before


def test_the_report_reads_as_its_labels_say(tmp_path):
    rng = random.Random(8)
    lines = ["idcliente,Year_Birth,Income,visits,channel"]
    for i in range(300):
        old = i % 2 == 0
        year = rng.randint(1940, 1965) if old else rng.randint(1980, 2000)
        income = rng.gauss(80_000 if old else 30_000, 4_000)
        visits = rng.gauss(3, 2)  # the same in both groups: its cell should read near 0
        channel = rng.choice(["web", "store"])
        lines.append(f" c{i},{year},{income:.0f},{visits:.2f},{channel}")
    path = tmp_path / "people.csv"
    path.write_text("\n".join(lines) + "\n")
    config = make_config(path, tmp_path / "out", cluster={"k": 2, "seed": 3})
    result = run_pipeline(config)
    page = Path(result.outputs["report"]).read_text()
    assert "ids trimmed of spaces</td><td>300" in page
    assert html.escape(SILHOUETTES.split(",")[0]) in page
    assert "1,9" not in page.split("Medians and most frequent levels")[1].split("</table>")[0]
    sample = pq.read_table(
        tmp_path / "out" / "runs" / result.run_id / LOOKALIKE_SAMPLE_FILE
    ).column_names
    assert "channel" in sample
    z = standardised_means(result.profiles.to_pylist(), result.model.numeric_columns, result.spread)
    by_feature = dict(zip(result.model.numeric_columns, np.abs(z).max(axis=0), strict=True))
    assert by_feature["visits"] < 0.3
    assert by_feature["Income"] > 0.8


def _heavy_tailed_orders(path, customers=1500, whales=12, seed=21):
    """Order lines of customers in three behaviours, and a dozen extreme spenders (0.8%)."""
    rng = random.Random(seed)
    lines = ["order_id,customer_id,ordered_at,amount"]
    order = 0
    for c in range(customers):
        kind = c % 3
        orders = (rng.randint(1, 2), rng.randint(4, 8), rng.randint(12, 20))[kind]
        scale = (15.0, 60.0, 200.0)[kind] * (300.0 if c < whales else 1.0)
        for _ in range(orders):
            order += 1
            month = (rng.randint(1, 3), rng.randint(4, 7), rng.randint(7, 9))[kind]
            amount = rng.lognormvariate(math.log(scale), 0.4)
            lines.append(
                f"T{order:07d},C{c:05d},2025-0{month}-{rng.randint(1, 28):02d},{amount:.2f}"
            )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("skewed", ["keep", "log"])
def test_extreme_spenders_no_longer_decide_k(engine, tmp_path, skewed):
    path = _heavy_tailed_orders(tmp_path / "orders.csv")
    config = make_config(
        path,
        tmp_path / "out",
        engine.name,
        input={
            "id_column": "customer_id",
            "shape": "transactions",
            "transactions": {"timestamp": "ordered_at", "amount": "amount"},
        },
        features={"skewed": skewed},
        cluster={"k_min": 2, "k_max": 6, "seed": 3},
        lookalikes={"enabled": False},
    )
    result = run_pipeline(config, spark=getattr(engine, "spark", None))
    rejected = [c.k for c in result.candidates if c.rejected]
    if skewed == "keep":
        # Raw spend: from k = 3 on, a few extreme spenders take a segment of their own, every
        # such k is rejected, and the run falls back to the coarsest split.
        assert rejected == [3, 4, 5, 6]
        assert result.k == 2
        return
    # Logged spend: the three behaviours, a third of the customers each.
    assert result.k == 3
    assert min(result.sizes) / sum(result.sizes) > 0.3
    logged = {e["column"]: e["reason"] for e in result.column_plan}
    assert "signed log is used" in logged["monetary_total"]
