"""The first hour with segmatch, as a user meets it: the terminal, models, scoring, the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from helpers import make_config
from segmatch.api import load_config, run_pipeline
from segmatch.cli import app, config_key
from segmatch.config_loading import build_config
from segmatch.errors import ConfigError
from segmatch.storage import read_delta
from segmatch.synthetic import generate_customers

OWN_LINE = re.compile(r"^(run [0-9a-f]{32} started|⏱️ stage|generating |warning: )")


def segmatch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, "-m", "segmatch", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=environment,
    )


def write_job(folder: Path, name: str, data: Path) -> Path:
    job = folder / f"{name}.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "input": {"path": str(data), "id_column": "idcliente"},
                "features": {
                    "numeric": ["age", "income", "frequency", "monetary"],
                    "log": ["income", "monetary"],
                },
                "clean": {"max_bad_share": 0.1},
                "cluster": {"k_min": 2, "k_max": 5},
                "output": {"path": f"out_{name}"},
            }
        )
    )
    return job


@pytest.mark.slow
def test_a_tracked_session_from_run_to_score_as_a_user_sees_it(tmp_path):
    first = generate_customers(tmp_path / "shop_a.parquet", rows=3000, seed=1)
    second = generate_customers(tmp_path / "shop_b.parquet", rows=2000, seed=2)
    job_a, job_b = write_job(tmp_path, "shop_a", first), write_job(tmp_path, "shop_b", second)

    trained = segmatch("run", str(job_a), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    # Only segmatch's own lines on the terminal; MLflow's go to the run's log.
    noise = [line for line in trained.stderr.splitlines() if line and not OWN_LINE.match(line)]
    assert noise == []
    assert "model segmatch-shop_a version 1" in trained.stdout
    run_id = re.search(r"segmatch run ([0-9a-f]{32})", trained.stdout).group(1)
    mlflow_id = re.search(r"MLflow run ([0-9a-f]{32})", trained.stdout).group(1)
    run_log = (tmp_path / "out_shop_a" / "runs" / run_id / "run.log").read_text()
    assert "mlflow" in run_log and "Creating initial MLflow database tables" in run_log

    rerun = segmatch("run", str(job_a), "-q", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "model segmatch-shop_a version 1 " in rerun.stdout  # identical: nothing registered
    other = segmatch("run", str(job_b), "-q", cwd=tmp_path)
    assert "model segmatch-shop_b version 1 " in other.stdout  # its own model, its own champion

    unnamed = segmatch("score", "--input", str(second), cwd=tmp_path)
    assert unnamed.returncode == 2
    assert "segmatch-shop_a, segmatch-shop_b" in unnamed.stderr
    assert unnamed.stderr.count("error:") == 1

    scored = segmatch(
        "score",
        "--model",
        "models:/segmatch-shop_a@champion",
        "--input",
        str(second),
        "--out",
        "scores",
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr
    lines = scored.stdout.splitlines()
    assert lines[0].startswith("model segmatch-shop_a version 1: ")
    assert f"trained by run {run_id} on {first}" in lines[0]
    for text in ("scored ", "New customers per segment", "median confidence", "unlike the"):
        assert text in scored.stdout
    scores = read_delta(tmp_path / "scores" / "scores").to_pandas()
    assert {"segment", "confidence", "age", "income", "frequency", "monetary"} <= set(scores)

    # One run, two ids: every command takes either.
    for either in (run_id, mlflow_id):
        rebuilt = segmatch("report", either, cwd=tmp_path)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert f"runs/{run_id}/report.html" in rebuilt.stdout


def test_validate_reports_every_problem_at_once_and_starts_no_run(customers_path, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "input": {"path": str(customers_path), "id_column": "idcliente"},
                "features": {"numeric": ["age", "incom", "frequncy"]},
                "clean": {"ranges": {"agee": [0, 120]}},
            }
        )
    )
    outcome = CliRunner().invoke(app, ["validate", str(job)])
    assert outcome.exit_code == 2
    assert outcome.output.count("error:") == 1
    for line in (
        "numeric feature column 'incom' not found. Did you mean 'income'?",
        "numeric feature column 'frequncy' not found. Did you mean 'frequency'?",
        "range column (clean.ranges) 'agee' not found. Did you mean 'age'?",
    ):
        assert line in outcome.output
    ran = CliRunner().invoke(app, ["run", str(job)])
    assert ran.exit_code == 2 and ran.output.count("error:") == 1
    assert "started" not in ran.output and "failed" not in ran.output
    assert not (tmp_path / "home" / "mlflow.db").exists() and not Path("mlflow.db").exists()
    job.write_text(yaml.safe_dump({"input": {"path": str(customers_path)}}))
    valid = CliRunner().invoke(app, ["validate", str(job)])
    assert valid.exit_code == 0 and "valid" in valid.output and "model segmatch-job" in valid.output


def test_flags_are_shown_as_flags_and_run_and_demo_share_their_options():
    run_help = CliRunner().invoke(app, ["run", "--help"]).output
    demo_help = CliRunner().invoke(app, ["demo", "--help"]).output
    assert "Usage: segmatch run [OPTIONS] CONFIG" in run_help
    assert "<bool>" not in run_help and "{config}" not in run_help
    for option in ("-q, --quiet", "-v, --verbose", "--track / --no-track", "--engine", "--set",
                   "--spark-conf"):  # fmt: skip
        assert option in run_help and option in demo_help, option
    assert re.search(r"-q, --quiet\s+Only the summary", run_help)


def test_a_key_holding_dots_is_set_quoted_or_as_a_setting(customers_path, tmp_path):
    assert config_key("cluster.k") == ("cluster", "k")
    quoted = config_key('spark.conf."spark.sql.shuffle.partitions"')
    assert quoted == ("spark", "conf", "spark.sql.shuffle.partitions")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"input": {"path": str(customers_path)}}))
    config = load_config(job, {quoted: 8, ("spark", "conf", "spark.executor.cores"): "2"})
    assert config.spark.conf == {"spark.sql.shuffle.partitions": "8", "spark.executor.cores": "2"}
    for bad in ('spark."conf', "cluster..k", ""):
        with pytest.raises(Exception, match="is not a config key"):
            config_key(bad)
    outcome = CliRunner().invoke(
        app,
        ["validate", str(job), "--spark-conf", "spark.sql.shuffle.partitions=8", "--set",
         "spark.conf.'spark.executor.cores'=2"],
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.output


@pytest.mark.parametrize(
    ("choice", "carried"),
    [
        ("features", {"age", "income", "monetary", "channel"}),
        ("all", None),
        ("none", set()),
    ],
)
def test_segments_carry_the_input_columns_asked_for(
    engine, customers_path, tmp_path, choice, carried
):
    config = make_config(
        customers_path,
        tmp_path / "out",
        engine.name,
        features={"numeric": ["age", "income", "monetary"], "categorical": ["channel"]},
        clean={"max_bad_share": 0.2},
        cluster={"k": 3},
        output={"segments_columns": choice},
    )
    run_pipeline(config)
    segments = read_delta(tmp_path / "out" / "segments").to_pandas()
    own = {"idcliente", "segment", "distance", "run_id", "model_version"}
    extra = {c for c in segments.columns if c not in own and not c.startswith("pc_")}
    source = pq.read_table(customers_path).to_pandas()
    assert extra == (set(source.columns) - {"idcliente"} if carried is None else carried)
    if choice != "none":
        # Each row carries its own customer's values (ids sent once, so nothing was merged).
        once = source[~source["idcliente"].duplicated(keep=False)]
        joined = segments.merge(once, on="idcliente", suffixes=("", "_input"))
        assert len(joined) > 0.9 * len(segments)
        assert (joined["channel"] == joined["channel_input"].fillna("(missing)")).mean() > 0.99
        assert np.allclose(joined["monetary"], joined["monetary_input"], equal_nan=True)


def test_keys_of_earlier_releases_are_read_under_their_new_names(caplog):
    raw = {
        "input": {"path": "customers.csv"},
        "match": {"top_k": 3},
        "cluster": {"min_cluster_share": 0.05},
        "output": {"modes": {"matches": "merge"}},
    }
    with caplog.at_level("WARNING", logger="segmatch"):
        config = build_config(raw, source="an old config")
    assert config.lookalikes.top_k == 3 and config.cluster.min_segment_share == 0.05
    assert config.output.mode("lookalikes") == "merge"
    assert "config key match is now lookalikes" in caplog.text
    assert "config key output.modes.matches is now output.modes.lookalikes" in caplog.text
    with pytest.raises(ConfigError, match="give lookalikes only: match is its former name"):
        build_config({**raw, "lookalikes": {"top_k": 4}}, source="a mixed config")
