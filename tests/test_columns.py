"""Every input column accounted for: its role and reason in the column plan; ids as written."""

from __future__ import annotations

import json

from helpers import make_config
from segmatch.api import run_pipeline
from segmatch.cli import _column_plan_line
from segmatch.storage import read_delta


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
    line = _column_plan_line(result.column_plan)
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
        "constant: every value is 9.9, so it tells no customer apart",
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
        "cidade": "ignored",
    }
    assert "ç007" in read_delta(tmp_path / "out" / "segments")["código"].to_pylist()


def test_an_unknown_encoding_is_named():
    import pytest  # noqa: PLC0415

    from segmatch.config import build_config  # noqa: PLC0415
    from segmatch.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match="unknown text encoding 'latin-9000'"):
        build_config({"input": {"path": "x.csv", "encoding": "latin-9000"}}, source="test")
