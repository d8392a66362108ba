"""Tables as exported by real systems: sorted files whose first rows say little, outcome
columns beside the behaviour, dates written day first. Every decision comes from whole columns,
on both engines."""

from __future__ import annotations

import random
from datetime import datetime

import pytest

from helpers import make_config
from segmatch.api import run_pipeline
from segmatch.errors import ColumnTypeError
from segmatch.stages.ingest import read_input

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
