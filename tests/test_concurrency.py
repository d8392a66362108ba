"""Runs that never mix: two processes writing one output at the same moment, many times.

After every pair: each table's latest version, the lease's current run and ``model.json`` belong
to one run that exited 0; a run that exited non-zero committed nothing; no run printed a
traceback; each run's stage log holds its own stages, every one of them.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import yaml
from click.testing import CliRunner
from deltalake import CommitProperties, write_deltalake

from helpers import BUCKET
from segmatch.api import run_pipeline
from segmatch.cli import app
from segmatch.config_loading import build_config
from segmatch.errors import RunFailedError
from segmatch.layout import STAGE_LOG_FILE, run_folder
from segmatch.lease import OutputLease
from segmatch.locations import Files, join
from segmatch.pipeline import STAGES
from segmatch.storage import read_delta, table_history
from segmatch.synthetic import generate_customers

TRAINING_TABLES = ("segments", "lookalikes", "profiles", "quarantine", "stage_log")
RUN_ID = re.compile(r"run ([0-9a-f]{32}) started")
START = (
    "import sys, time; time.sleep(float(sys.argv.pop(1))); from segmatch.cli import main; main()"
)


@dataclass
class Outcome:
    returncode: int
    run_id: str | None
    stdout: str
    stderr: str


def launch(arguments: list[str], *, delay: float, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", START, f"{delay:.3f}", *arguments],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> Outcome:
    stdout, stderr = process.communicate(timeout=900)
    found = RUN_ID.search(stdout + stderr)
    return Outcome(process.returncode, found.group(1) if found else None, stdout, stderr)


def write_config(
    path: Path,
    *,
    data: Path,
    out: str,
    engine: str,
    lease_timeout: float,
    tracking: str | None = None,
) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "engine": engine,
                "input": {"path": str(data), "id_column": "idcliente"},
                "clean": {"max_bad_share": 0.2},
                "features": {"numeric": ["age", "income", "monetary"], "categorical": []},
                "cluster": {"k": 3},
                "lookalikes": {"top_k": 3, "recall_sample": 0},
                "output": {
                    "path": out,
                    "report": False,
                    "checkpoints": False,
                    "lease_timeout": lease_timeout,
                },
                # One data set under two config files: one model name, or the second run
                # would stop before its first stage (its output holds another data set's).
                "tracking": (
                    {"enabled": True, "uri": tracking, "model_name": "pairs"}
                    if tracking
                    else {"enabled": False, "model_name": "pairs"}
                ),
                "spark": {"master": "local[1]", "conf": {"spark.ui.enabled": "false"}},
            }
        )
    )
    return path


def latest_run(location: str) -> str | None:
    return table_history(location)[0]["run_id"]


def runs_in(location: str) -> set[str]:
    return {entry["run_id"] for entry in table_history(location)}


def check_one_run_is_current(out: str, outcomes: list[Outcome], tables=TRAINING_TABLES) -> str:
    """Every table, the lease and the model name one run that exited 0; return it."""
    for outcome in outcomes:
        assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
        assert outcome.run_id is not None, outcome.stdout + outcome.stderr
        if outcome.returncode != 0:
            assert "another run" in outcome.stderr and "committed nothing" in outcome.stderr, (
                outcome.stderr[-2000:]
            )
    succeeded = {o.run_id for o in outcomes if o.returncode == 0}
    assert succeeded, [o.stderr[-2000:] for o in outcomes]
    lease = OutputLease(out).current()
    assert lease.holder is None
    assert lease.current_run in succeeded
    model = json.loads(Files().read_text(join(out, "model.json")))
    assert model["metadata"]["run_id"] == lease.current_run
    for table in tables:
        location = join(out, table)
        assert latest_run(location) == lease.current_run, table
        assert lease.versions[table] == table_history(location)[0]["version"], table
    for outcome in outcomes:
        log = Files().read_text(join(run_folder(out, outcome.run_id), STAGE_LOG_FILE))
        records = [json.loads(line) for line in log.splitlines()]
        assert {r["run_id"] for r in records} == {outcome.run_id}
        assert [r["stage"] for r in records] == list(STAGES), outcome.run_id
        committed = [t for t in tables if outcome.run_id in runs_in(join(out, t))]
        if outcome.returncode == 0:
            assert committed == list(tables), (outcome.run_id, committed)
        else:
            assert committed == [], (outcome.run_id, committed)
    return lease.current_run


def run_pairs(
    tmp_path: Path,
    *,
    out: str,
    engine: str,
    pairs: int,
    seed: int,
    tracking: str | None = None,
) -> list[str]:
    rng = random.Random(seed)
    results = []
    for pair in range(pairs):
        # New data for every run: a batch the output already holds would commit nothing new.
        inputs = [
            generate_customers(
                tmp_path / f"customers_{pair}_{side}.parquet",
                rows=1500,
                seed=100 * seed + 2 * pair + side,
            )
            for side in range(2)
        ]
        # Every other pair gives up at once instead of waiting: both endings get exercised.
        timeout = 0.0 if pair % 2 else 600.0
        configs = [
            write_config(
                tmp_path / f"run_{side}.yaml",
                data=inputs[side],
                out=out,
                engine=engine,
                lease_timeout=timeout,
                tracking=tracking,
            )
            for side in range(2)
        ]
        processes = [
            launch(["run", str(config)], delay=rng.uniform(0.0, 1.5), cwd=tmp_path)
            for config in configs
        ]
        outcomes = [finish(process) for process in processes]
        current = check_one_run_is_current(out, outcomes)
        if tracking:
            check_the_registry_agrees(tracking, current, outcomes)
        results.append("/".join("ok" if o.returncode == 0 else "busy" for o in outcomes))
    return results


@pytest.mark.slow
def test_twenty_pairs_of_local_runs_on_one_output_never_mix(tmp_path):
    outcomes = run_pairs(tmp_path, out=str(tmp_path / "out"), engine="local", pairs=20, seed=1)
    assert len(outcomes) == 20
    print("pair outcomes:", outcomes)


def check_the_registry_agrees(uri: str, current: str, outcomes: list[Outcome]) -> None:
    """The champion is the current run's model; a run that failed registered nothing."""
    client = mlflow.MlflowClient(uri)
    champion = client.get_model_version_by_alias("pairs", "champion")
    assert client.get_run(champion.run_id).data.tags["segmatch.run_id"] == current
    registered = {
        client.get_run(v.run_id).data.tags["segmatch.run_id"]
        for v in client.search_model_versions("name='pairs'")
    }
    for outcome in outcomes:
        assert (outcome.run_id in registered) == (outcome.returncode == 0), outcome.run_id


@pytest.mark.slow
def test_tracked_pairs_keep_the_champion_with_the_current_tables(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcomes = run_pairs(
        tmp_path, out=str(tmp_path / "out"), engine="local", pairs=4, seed=4, tracking=uri
    )
    print("pair outcomes:", outcomes)


@pytest.mark.slow
def test_pairs_of_local_runs_on_object_storage_never_mix(s3_server, tmp_path):
    out = f"s3://{BUCKET}/concurrent/{tmp_path.name}"
    outcomes = run_pairs(tmp_path, out=out, engine="local", pairs=4, seed=2)
    print("pair outcomes:", outcomes)


def test_pairs_of_spark_runs_on_one_output_never_mix(spark_process, tmp_path):
    outcomes = run_pairs(tmp_path, out=str(tmp_path / "out"), engine="spark", pairs=2, seed=3)
    print("pair outcomes:", outcomes)


@pytest.mark.slow
def test_a_scoring_run_while_a_retrain_commits(tmp_path):
    data = generate_customers(tmp_path / "customers.parquet", rows=1500, seed=4)
    out = str(tmp_path / "out")
    config = write_config(
        tmp_path / "run.yaml", data=data, out=out, engine="local", lease_timeout=600
    )
    first = finish(launch(["run", str(config)], delay=0.0, cwd=tmp_path))
    assert first.returncode == 0, first.stderr
    # Scoring reads the training segments at the version the lease names while a retrain
    # commits; it writes its own tables to an output of its own.
    scores = str(tmp_path / "scores")
    rng = random.Random(5)
    for round_ in range(3):
        fresh = generate_customers(tmp_path / f"new_{round_}.parquet", rows=1500, seed=40 + round_)
        config = write_config(
            tmp_path / "run.yaml", data=fresh, out=out, engine="local", lease_timeout=600
        )
        training = launch(["run", str(config)], delay=rng.uniform(0, 1.0), cwd=tmp_path)
        scoring = launch(
            ["score", "--model", out, "--input", str(fresh), "--out", scores],
            delay=rng.uniform(0, 1.0),
            cwd=tmp_path,
        )
        trained, scored = finish(training), finish(scoring)
        assert trained.returncode == 0 and scored.returncode == 0, (trained.stderr, scored.stderr)
        current = check_one_run_is_current(
            out, [trained], tables=("segments", "lookalikes", "profiles")
        )
        assert current == trained.run_id
        for table in ("scores", "lookalikes"):
            assert latest_run(join(scores, table)) == scored.run_id


@pytest.mark.parametrize(
    "store", ["local disk", pytest.param("object storage", marks=pytest.mark.slow)]
)
def test_a_lease_taken_from_one_version_is_held_by_one_run(store, request, tmp_path):
    if store == "local disk":
        out = str(tmp_path / "out")
    else:
        request.getfixturevalue("s3_server")
        out = f"s3://{BUCKET}/lease/{tmp_path.name}"
    script = (
        "import sys, time; from segmatch.lease import OutputLease; "
        "lease = OutputLease(sys.argv[1]); time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
        "claim = lease.acquire(sys.argv[3], timeout=0); time.sleep(1.0); "
        "lease.release(claim, current_run=sys.argv[3], tables={})"
    )
    start = time.time() + 2.0
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, out, str(start), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second", "third")
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in processes]
    held = [code for code, _ in results if code == 0]
    assert len(held) == 1, results
    unexpected = [e[-1500:] for code, e in results if code and "is writing to" not in e]
    assert unexpected == []
    assert OutputLease(out).current().current_run in ("first", "second", "third")


def test_a_run_that_died_holding_the_lease_is_rolled_back_by_the_next(tmp_path):
    data = generate_customers(tmp_path / "customers.parquet", rows=1500, seed=6)
    later = generate_customers(tmp_path / "later.parquet", rows=1500, seed=16)
    out = str(tmp_path / "out")
    raw = yaml.safe_load(
        write_config(
            tmp_path / "c.yaml", data=data, out=out, engine="local", lease_timeout=5
        ).read_text()
    )
    first = run_pipeline(build_config(raw, source="test"))
    # A run that dies part-way through its commit: segments committed, the rest not.
    dead = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; from segmatch.lease import OutputLease; "
            "lease = OutputLease(sys.argv[1]); lease.acquire('dead-run', timeout=0); os._exit(0)",
            out,
        ],
        check=True,
    )
    assert dead.returncode == 0
    assert OutputLease(out).current().holder == "dead-run"
    write_deltalake(
        join(out, "segments"),
        read_delta(join(out, "segments")).slice(0, 10),
        mode="overwrite",
        commit_properties=CommitProperties(custom_metadata={"segmatch.run_id": "dead-run"}),
    )
    assert latest_run(join(out, "segments")) == "dead-run"
    raw["input"]["path"] = str(later)
    second = run_pipeline(build_config(raw, source="test"))
    history = table_history(join(out, "segments"))
    assert history[0]["run_id"] == second.run_id
    assert "RESTORE" in history[1]["operation"].upper()
    assert OutputLease(out).current().current_run == second.run_id
    assert first.run_id != second.run_id
    listing = CliRunner().invoke(app, ["history", join(out, "segments")], terminal_width=200)
    assert listing.exit_code == 0, listing.output
    assert f"committed by run {second.run_id}" in listing.output
    assert "← current" in listing.output


class ExplodingCommit:
    """A hook that fails the way a bug would, in the middle of the run."""

    def before_stage(self, *, run_id: str, stage: str) -> None:
        if stage == "lookalikes":
            raise KeyError("centroid 7")


def test_an_unexpected_error_is_one_line_with_the_run_and_stage(tmp_path):
    data = generate_customers(tmp_path / "customers.parquet", rows=1500, seed=7)
    raw = yaml.safe_load(
        write_config(
            tmp_path / "c.yaml",
            data=data,
            out=str(tmp_path / "out"),
            engine="local",
            lease_timeout=5,
        ).read_text()
    )
    with pytest.raises(RunFailedError) as caught:
        run_pipeline(build_config(raw, source="test"), hooks=(ExplodingCommit(),), run_id="r1")
    message = str(caught.value)
    assert message.startswith("run r1 failed in stage 'lookalikes': KeyError: 'centroid 7'")
    log = Path(caught.value.log)
    assert log == tmp_path / "out" / "runs" / "r1" / "error.log"
    assert "Traceback" in log.read_text() and "centroid 7" in log.read_text()
    assert not (tmp_path / "out" / "segments").exists()
