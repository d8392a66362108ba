"""The whole job through the API and the command line."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score

from helpers import make_config
from segmatch import kernels
from segmatch.api import demo_config, run_pipeline
from segmatch.cli import app
from segmatch.model import SegmentModel
from segmatch.pipeline import STAGES
from segmatch.storage import read_delta
from segmatch.synthetic import SEGMENT_WEIGHTS, customer_table, generate_customers


def test_whole_run_writes_every_output_and_logs_every_stage(engine, customers_path, tmp_path):
    out = tmp_path / "out"
    result = run_pipeline(
        demo_config(customers_path, out, seed=5, engine=engine.name, tracking=False)
    )
    assert [r.stage for r in result.stages] == list(STAGES)
    segments = read_delta(out / "segments")
    assert segments.num_rows == result.customers
    assert {"idcliente", "segment", "distance", "pc_1"} <= set(segments.column_names)
    assert np.bincount(segments["segment"].to_numpy()).tolist() == result.sizes
    lookalikes = read_delta(out / "lookalikes")
    assert lookalikes.num_rows == result.customers * 10
    quarantine = read_delta(out / "quarantine")
    assert quarantine.num_rows == result.quarantined > 0
    assert set(quarantine["quarantine_rule"].to_pylist()) == {
        "null_id",
        "out_of_range",
        "not_finite",
    }
    assert result.duplicates > 0 and result.imputed["income"] > 0
    own_log = out / "runs" / result.run_id / "stage_log.jsonl"
    log = [json.loads(line) for line in own_log.read_text().splitlines()]
    assert [r["stage"] for r in log] == list(STAGES)
    assert {r["run_id"] for r in log} == {result.run_id}
    assert set(log[0]) >= {"seconds", "rows_in", "rows_out", "peak_memory_mb", "partitions"}
    assert read_delta(out / "stage_log").num_rows == len(STAGES)


def test_the_saved_model_reproduces_the_run_assignments(engine, customers_path, tmp_path):
    out = tmp_path / "out"
    result = run_pipeline(
        demo_config(customers_path, out, seed=5, engine=engine.name, tracking=False)
    )
    model = SegmentModel.load(out / "model.json")
    segments = read_delta(out / "segments")
    coordinates = np.column_stack(
        [segments[f"pc_{j + 1}"].to_numpy() for j in range(model.components_.shape[0])]
    )
    labels, _, _ = kernels.nearest_centroids(coordinates, model.centroids_)
    np.testing.assert_array_equal(model.segment_ids_[labels], segments["segment"].to_numpy())
    assert model.feature_names[:2] == ["age", "income"]
    assert result.model.n_segments == result.k


def test_same_seed_same_output(engine, customers_path, tmp_path):
    first = run_pipeline(
        demo_config(customers_path, tmp_path / "a", seed=9, engine=engine.name, tracking=False)
    )
    second = run_pipeline(
        demo_config(customers_path, tmp_path / "b", seed=9, engine=engine.name, tracking=False)
    )
    assert first.k == second.k and first.silhouette == second.silhouette
    for table in ("segments", "lookalikes", "profiles"):
        a, b = (read_delta(tmp_path / side / table) for side in ("a", "b"))
        if "run_id" in a.column_names:
            assert a["run_id"][0].as_py() == first.run_id != b["run_id"][0].as_py()
            a, b = a.drop_columns("run_id"), b.drop_columns("run_id")
        assert a.equals(b), table


def test_segments_recover_the_generators_latent_groups(engine, tmp_path):
    data = generate_customers(tmp_path / "clean.parquet", rows=6000, seed=3, dirty_share=0.0)
    config = demo_config(data, tmp_path / "out", engine=engine.name, tracking=False)
    result = run_pipeline(
        config.model_copy(update={"cluster": config.cluster.model_copy(update={"k": 6})})
    )
    assert result.k == 6
    table = customer_table(rows=6000, seed=3, dirty_share=0.0)
    rng = np.random.default_rng(3)
    truth = rng.choice(len(SEGMENT_WEIGHTS), size=6000, p=SEGMENT_WEIGHTS)
    truth_of = dict(zip(table["idcliente"].to_pylist(), truth, strict=True))
    segments = read_delta(tmp_path / "out" / "segments")
    assert sorted(segments["idcliente"].to_pylist()) == sorted(truth_of)
    expected = [truth_of[c] for c in segments["idcliente"].to_pylist()]
    assert adjusted_rand_score(expected, segments["segment"].to_numpy()) > 0.6


def test_a_sweep_on_a_sample_refits_on_every_row(engine, customers_path, tmp_path):
    config = make_config(
        customers_path,
        tmp_path / "out",
        engine.name,
        clean={"max_bad_share": 0.2},
        cluster={"sweep_sample_size": 1000, "k_max": 4},
    )
    result = run_pipeline(config)
    assert result.sweep_rows == 1000
    assert sum(result.sizes) == result.customers > 1000


def test_cli_generate_is_deterministic(tmp_path):
    runner = CliRunner()
    for name in ("a.parquet", "b.parquet"):
        outcome = runner.invoke(app, ["generate", "--rows", "500", "--out", str(tmp_path / name)])
        assert outcome.exit_code == 0, outcome.output
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))
    csv = runner.invoke(app, ["generate", "--rows", "50", "--out", str(tmp_path / "c.csv")])
    assert csv.exit_code == 0 and (tmp_path / "c.csv").read_text().startswith('"idcliente"')


def test_cli_demo_and_run_print_a_summary(tmp_path):
    runner = CliRunner()
    demo = runner.invoke(
        app, ["demo", "--rows", "2000", "--out", str(tmp_path / "demo"), "--seed", "4"]
    )
    assert demo.exit_code == 0, demo.output
    for text in (
        "segments",
        "silhouette",
        "Choosing k",
        "Time per stage",
        "Data quality",
        "Outputs",
    ):
        assert text in demo.output
    assert (tmp_path / "demo" / "output" / "segments").exists()
    data = next((tmp_path / "demo" / "data").glob("*.parquet"))
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "input": {"path": str(data)},
                "features": {
                    "numeric": ["age", "income", "monetary"],
                    "log": ["income", "monetary"],
                },
                "clean": {"max_bad_share": 0.1},
                "output": {"path": "results"},
            }
        )
    )
    run = runner.invoke(app, ["run", str(job), "--set", "cluster.k=3", "--quiet"])
    assert run.exit_code == 0, run.output
    assert "3[/]" not in run.output and "in 3 segments" in run.output
    assert (tmp_path / "results" / "segments").exists()


@pytest.mark.parametrize("command", [[], ["run"], ["demo"], ["generate"]])
def test_help_explains_every_command(command):
    outcome = CliRunner().invoke(app, [*command, "--help"])
    assert outcome.exit_code == 0
    assert "Usage" in outcome.output


def test_spark_jobs_carry_the_run_and_the_stage_as_session_tags(spark_session, tmp_path):
    """Spark's UI lists each job with its tags, and ``SparkSession.interruptTag`` stops a run's
    jobs by them: every stage's work is tagged with the run and the stage, and no tag outlives
    the run."""
    seen: dict[str, set[str]] = {}

    class TagsAtEachStage:
        def before_stage(self, *, run_id: str, stage: str) -> None:
            seen[stage] = set(spark_session.getTags())

    data = generate_customers(tmp_path / "customers.parquet", rows=2000, seed=3)
    config = make_config(data, tmp_path / "out", "spark", lookalikes={"enabled": False})
    result = run_pipeline(
        config, hooks=(TagsAtEachStage(),), run_id="tagged,run", spark=spark_session
    )
    assert list(seen) == [r.stage for r in result.stages]
    for stage, tags in seen.items():
        assert tags == {"segmatch-run-tagged_run", f"segmatch-{stage}"}
    assert spark_session.getTags() == set()
