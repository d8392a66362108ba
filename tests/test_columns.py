"""Every input column accounted for: its role and reason in the column plan; ids as written."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import adjusted_rand_score

from helpers import make_config
from segmatch.api import demo_config, run_pipeline
from segmatch.config_loading import build_config
from segmatch.errors import ConfigError, InputError
from segmatch.storage import read_delta
from segmatch.synthetic import customer_table, generate_customers, latent_segments
from segmatch.terminal import column_plan_line


def mixed_csv(path, rows=120):
    lines = ["customer_id,spend,visits,score,channel,signup"]
    for i in range(rows):
        # Zero-padded and float-looking ids, exactly as an export writes them.
        customer = f"{i:05d}" if i % 2 else f"{10_000 + i}.0"
        lines.append(
            f"{customer},{(i % 7) * 10.5},{i % 5},{i % 11},{'web' if i % 3 else 'store'},"
            f"2024-01-{1 + i % 28:02d}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_column_gets_a_role_and_ids_are_kept_as_written(engine, tmp_path):
    data = mixed_csv(tmp_path / "customers.csv")
    config = make_config(
        data,
        tmp_path / "out",
        engine.name,
        input={"id_column": "customer_id"},
        features={"numeric": ["spend", "visits"]},
        cluster={"k": 3},
    )
    result = run_pipeline(config, spark=getattr(engine, "spark", None))
    roles = {entry["column"]: (entry["role"], entry["reason"]) for entry in result.column_plan}
    assert list(roles) == ["customer_id", "spend", "visits", "score", "channel", "signup"]
    assert roles["customer_id"] == ("id", "input.id_column")
    assert roles["spend"][0] == roles["visits"][0] == "numeric feature"
    assert roles["score"] == ("ignored", "not listed in features.numeric")
    assert roles["channel"][0] == "ignored" and "features.categorical" in roles["channel"][1]
    assert roles["signup"][0] == "ignored" and "date" in roles["signup"][1]
    written = json.loads(
        (tmp_path / "out" / "runs" / result.run_id / "column_plan.json").read_text()
    )
    assert written == result.column_plan
    line = column_plan_line(result.column_plan)
    assert line.startswith("columns — id: customer_id; numeric feature: spend, visits")
    ids = set(read_delta(tmp_path / "out" / "segments")["customer_id"].to_pylist())
    assert {"00001", "00003", "10000.0"} <= ids
    assert len(ids) == 120


def test_ids_are_trimmed_and_ids_that_then_collide_are_duplicates(engine, tmp_path):
    lines = ["customer_id,spend,visits"]
    for i in range(60):
        lines.append(f"c{i:03d},{i % 7},{i % 5}")
    lines += ["  c001 ,3,3", " c100,4,1"]  # a padded copy of c001, and a padded new id
    data = tmp_path / "customers.csv"
    data.write_text("\n".join(lines) + "\n")
    config = make_config(data, tmp_path / "out", engine.name, input={"id_column": "customer_id"})
    result = run_pipeline(config, spark=getattr(engine, "spark", None))
    assert (result.ids_trimmed, result.duplicates, result.customers) == (2, 1, 61)
    ids = set(read_delta(tmp_path / "out" / "segments")["customer_id"].to_pylist())
    assert "c100" in ids and not any(i != i.strip() for i in ids)
    untrimmed = make_config(
        data,
        tmp_path / "kept",
        engine.name,
        input={"id_column": "customer_id"},
        clean={"trim_ids": False},
    )
    kept = run_pipeline(untrimmed, spark=getattr(engine, "spark", None))
    assert (kept.ids_trimmed, kept.duplicates, kept.customers) == (0, 0, 62)


def test_constant_and_empty_columns_are_left_out_of_default_features(engine, tmp_path):
    lines = ["customer_id,spend,visits,plan_fee,legacy_score"]
    lines += [f"c{i},{i % 7},{i % 5},9.9," for i in range(80)]
    data = tmp_path / "customers.csv"
    data.write_text("\n".join(lines) + "\n")
    config = make_config(data, tmp_path / "out", engine.name, input={"id_column": "customer_id"})
    result = run_pipeline(config, spark=getattr(engine, "spark", None))
    roles = {entry["column"]: (entry["role"], entry["reason"]) for entry in result.column_plan}
    assert roles["plan_fee"] == (
        "ignored",
        "constant: every value of 80 rows is 9.9, so it tells no customer apart",
    )
    assert roles["legacy_score"][0] == "ignored"
    assert result.model.numeric_columns == ["spend", "visits"]


def test_absurd_magnitudes_are_quarantined_naming_the_column(engine, tmp_path):
    lines = ["customer_id,spend,visits"]
    lines += [f"c{i},{i % 7},{i % 5}" for i in range(200)]
    lines += ["huge,1e308,2", "endless,inf,3"]
    data = tmp_path / "customers.csv"
    data.write_text("\n".join(lines) + "\n")
    config = make_config(data, tmp_path / "out", engine.name, input={"id_column": "customer_id"})
    result = run_pipeline(config, spark=getattr(engine, "spark", None))
    assert result.quarantined_by_rule == {"too_large": 1, "not_finite": 1}
    quarantine = read_delta(tmp_path / "out" / "quarantine").to_pylist()
    assert {(r["customer_id"], r["quarantine_column"]) for r in quarantine} == {
        ("huge", "spend"),
        ("endless", "spend"),
    }
    assert result.rows_in == result.customers + result.quarantined + result.duplicates


def test_a_k_at_the_edge_of_the_range_is_a_warning(tmp_path):
    lines = ["customer_id,spend,visits"]
    centres = [(0, 0), (100, 0), (0, 100)]
    lines += [f"c{i},{centres[i % 3][0] + i % 5},{centres[i % 3][1] + i % 4}" for i in range(300)]
    data = tmp_path / "customers.csv"
    data.write_text("\n".join(lines) + "\n")
    config = make_config(
        data,
        tmp_path / "out",
        input={"id_column": "customer_id"},
        cluster={"k_min": 2, "k_max": 3},
    )
    result = run_pipeline(config)
    assert result.k == 3
    assert any("at the top of the range 2–3" in w for w in result.warnings)


def test_a_gzipped_csv_is_read_as_csv(engine, tmp_path):
    import gzip  # noqa: PLC0415

    rows = "\n".join(f"{i:04d},{i % 7},{i % 5}" for i in range(90))
    data = tmp_path / "customers.csv.gz"
    data.write_bytes(gzip.compress(f"customer_id,spend,visits\n{rows}\n".encode()))
    config = make_config(data, tmp_path / "out", engine.name, input={"id_column": "customer_id"})
    result = run_pipeline(config, spark=getattr(engine, "spark", None))
    assert result.customers == 90
    assert "0007" in read_delta(tmp_path / "out" / "segments")["customer_id"].to_pylist()


def test_a_cp1252_export_with_semicolons_is_read_with_its_encoding(engine, tmp_path):
    rows = [f"ç{i:03d};{i % 7};{i % 5};{'São Paulo' if i % 2 else 'Brasília'}" for i in range(80)]
    data = tmp_path / "clientes.csv"
    data.write_bytes(("código;gasto;visitas;cidade\n" + "\n".join(rows) + "\n").encode("cp1252"))
    config = make_config(
        data,
        tmp_path / "out",
        engine.name,
        input={"id_column": "código", "csv_separator": ";", "encoding": "cp1252"},
    )
    result = run_pipeline(config, spark=getattr(engine, "spark", None))
    roles = {entry["column"]: entry["role"] for entry in result.column_plan}
    assert roles == {
        "código": "id",
        "gasto": "numeric feature",
        "visitas": "numeric feature",
        "cidade": "categorical feature",
    }
    assert "ç007" in read_delta(tmp_path / "out" / "segments")["código"].to_pylist()


def test_an_unknown_encoding_is_named():
    with pytest.raises(ConfigError, match="unknown text encoding 'latin-9000'"):
        build_config({"input": {"path": "x.csv", "encoding": "latin-9000"}}, source="test")


def roles_of(result) -> dict[str, tuple[str, str]]:
    return {entry["column"]: (entry["role"], entry["reason"]) for entry in result.column_plan}


def test_numbers_with_a_decimal_comma_and_thousands_dots_are_read_as_numbers(engine, tmp_path):
    # A Brazilian export: BOM, ';' between fields, 1.234,56 for 1234.56, zero-padded ids.
    spend = [1234.56 + 1000 * (i % 4) for i in range(90)]
    rows = [
        f"{i:05d};{s:,.2f};{i % 5};{'web' if i % 3 else 'loja'}".replace(",", "_")
        .replace(".", ",")
        .replace("_", ".")
        for i, s in enumerate(spend)
    ]
    data = tmp_path / "clientes.csv"
    data.write_bytes(("id;saldo;visitas;canal\n" + "\n".join(rows) + "\n").encode("utf-8-sig"))
    assert rows[1].split(";")[1] == "2.234,56"
    config = make_config(
        data,
        tmp_path / "out",
        engine.name,
        input={"id_column": "id", "csv_separator": ";", "decimal": ",", "thousands": "."},
        cluster={"k": 2},
    )
    result = run_pipeline(config, spark=getattr(engine, "spark", None))
    roles = roles_of(result)
    assert [roles[c][0] for c in ("id", "saldo", "visitas", "canal")] == [
        "id",
        "numeric feature",
        "numeric feature",
        "categorical feature",
    ]
    assert result.quarantined == 0 and result.customers == 90
    profiles = result.profiles.to_pylist()
    overall = sum(p["saldo_mean"] * p["size"] for p in profiles) / 90
    assert overall == pytest.approx(np.mean(spend))
    assert "00042" in read_delta(tmp_path / "out" / "segments")["id"].to_pylist()


def test_a_decimal_comma_column_stops_a_run_that_does_not_set_it(engine, tmp_path):
    rows = [f"c{i};{i % 9},{i % 10}0;{i % 5}" for i in range(60)]
    data = tmp_path / "clientes.csv"
    data.write_text("id;saldo;visitas\n" + "\n".join(rows) + "\n")
    config = make_config(
        data, tmp_path / "out", engine.name, input={"id_column": "id", "csv_separator": ";"}
    )
    with pytest.raises(InputError, match=r"column 'saldo' .*'\d,\d0'.*input\.decimal: ','"):
        run_pipeline(config, spark=getattr(engine, "spark", None))
    assert not (tmp_path / "out" / "segments").exists()


def test_the_thousands_mark_cannot_be_the_decimal_mark():
    with pytest.raises(ConfigError, match=r"input\.thousands '\.' is also the decimal mark"):
        build_config({"input": {"path": "x.csv", "thousands": "."}}, source="test")


def test_a_table_without_an_id_column_gets_row_positions(engine, tmp_path):
    rows = [f"{(i * 37) % 101},{i % 13},{i % 7}" for i in range(1, 601)]
    rows[449] = "inf,1,1"  # row 450 breaks a rule: the quarantine names it by position
    data = tmp_path / "customers.csv"
    data.write_text("spend,visits,tenure\n" + "\n".join(rows) + "\n")
    config = make_config(data, tmp_path / "out", engine.name, input={"id_column": None})
    spark = getattr(engine, "spark", None)
    if spark is not None:
        # Several scan partitions, so a position must add the rows of the ones before it.
        spark.conf.set("spark.sql.files.maxPartitionBytes", "2048")
    try:
        result = run_pipeline(config, spark=spark)
    finally:
        if spark is not None:
            spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert roles_of(result)["row_number"][0] == "id"
    assert "position" in roles_of(result)["row_number"][1]
    quarantine = read_delta(tmp_path / "out" / "quarantine").to_pylist()
    assert [(r["row_number"], r["quarantine_column"]) for r in quarantine] == [("450", "spend")]
    ids = read_delta(tmp_path / "out" / "segments")["row_number"].to_pylist()
    assert sorted(ids, key=int) == [str(i) for i in range(1, 601) if i != 450]


def test_few_level_text_columns_become_categorical_features_with_top_levels(engine, tmp_path):
    data = mixed_csv(tmp_path / "customers.csv")
    config = make_config(
        data, tmp_path / "out", engine.name, input={"id_column": "customer_id"}, cluster={"k": 2}
    )
    result = run_pipeline(config, spark=getattr(engine, "spark", None))
    roles = roles_of(result)
    assert roles["channel"][0] == "categorical feature"
    assert "2 levels" in roles["channel"][1] and "features.max_levels=20" in roles["channel"][1]
    assert roles["signup"][0] == "ignored"
    assert result.model.categorical_levels == {"channel": ["web", "store"]}
    profiles = read_delta(tmp_path / "out" / "profiles").to_pylist()
    for profile in profiles:
        levels = profile["channel_top"].split("; ")
        assert {level.split()[0] for level in levels} <= {"web", "store"}
        assert sum(int(level.split()[1].rstrip("%")) for level in levels) in (99, 100, 101)


def test_a_run_with_only_categorical_features(engine, tmp_path):
    tiers = ["gold", "silver", "bronze"]
    rows = [f"c{i},{tiers[i % 3]},{'web' if i % 3 == 0 else 'store'}" for i in range(90)]
    data = tmp_path / "customers.csv"
    data.write_text("customer_id,tier,channel\n" + "\n".join(rows) + "\n")
    config = make_config(
        data,
        tmp_path / "out",
        engine.name,
        input={"id_column": "customer_id"},
        features={"numeric": [], "categorical": ["tier", "channel"]},
        cluster={"k": 3},
    )
    result = run_pipeline(config, spark=getattr(engine, "spark", None))
    assert result.k == 3 and result.customers == 90
    profiles = read_delta(tmp_path / "out" / "profiles").to_pylist()
    assert sorted(p["tier_top"] for p in profiles) == ["bronze 100%", "gold 100%", "silver 100%"]


def test_numeric_codes_are_used_but_flagged(tmp_path):
    rows = [f"c{i},{i % 7 * 3.5},{1 + i % 3},{i % 2}" for i in range(90)]
    data = tmp_path / "customers.csv"
    data.write_text("customer_id,spend,Region,is_member\n" + "\n".join(rows) + "\n")
    config = make_config(data, tmp_path / "out", input={"id_column": "customer_id"})
    result = run_pipeline(config)
    roles = roles_of(result)
    assert roles["Region"][0] == "numeric feature"
    assert "looks like a numeric code (whole numbers 1 to 3 over 90 rows)" in roles["Region"][1]
    assert "numeric code" not in roles["is_member"][1]
    assert any(w.startswith("Region look(s) like numeric codes") for w in result.warnings)


def test_a_zstd_compressed_csv_is_read_as_csv(engine, tmp_path):
    rows = "\n".join(f"{i:04d},{i % 7},{i % 5}" for i in range(90))
    data = tmp_path / "customers.csv.zst"
    with pa.CompressedOutputStream(str(data), "zstd") as stream:
        stream.write(f"customer_id,spend,visits\n{rows}\n".encode())
    config = make_config(data, tmp_path / "out", engine.name, input={"id_column": "customer_id"})
    result = run_pipeline(config, spark=getattr(engine, "spark", None))
    assert result.customers == 90
    assert "0007" in read_delta(tmp_path / "out" / "segments")["customer_id"].to_pylist()


def test_categoricals_recover_the_latent_segments_at_least_as_well(tmp_path):
    rows = 8000
    data = generate_customers(tmp_path / "base.parquet", rows=rows, seed=5, dirty_share=0.0)
    truth = dict(
        zip(
            customer_table(rows=rows, seed=5, dirty_share=0.0)["idcliente"].to_pylist(),
            latent_segments(rows=rows, seed=5),
            strict=True,
        )
    )
    scores = {}
    for name, categorical in (("numeric", ()), ("mixed", ("channel", "region"))):
        config = demo_config(data, tmp_path / name, tracking=False, categorical=categorical)
        run_pipeline(config, overrides={"cluster.k": 6})
        segments = read_delta(tmp_path / name / "segments")
        expected = [truth[i] for i in segments["idcliente"].to_pylist()]
        scores[name] = adjusted_rand_score(expected, segments["segment"].to_numpy())
    assert scores["mixed"] >= scores["numeric"] > 0.6, scores
