"""A run killed (SIGKILL) in any stage resumes from its checkpoints and ends as if unbroken."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from helpers import make_config
from segmatch.api import run_pipeline
from segmatch.pipeline import CHECKPOINTED, STAGES
from segmatch.storage import open_table, read_delta

TABLES = ("segments", "lookalikes", "profiles", "quarantine")

KILLER = textwrap.dedent(
    """
    import json, os, signal, sys
    import segmatch.storage as storage
    from segmatch.api import run_pipeline
    from segmatch.config_loading import build_config

    raw, target = json.loads(sys.argv[1]), sys.argv[2]

    class KillAt:
        def before_run(self, **_): pass
        def before_stage(self, *, run_id, stage):
            if stage == target:
                os.kill(os.getpid(), signal.SIGKILL)
        def after_stage(self, **_): pass
        def after_run(self, **_): pass

    if target == "commit":
        commit_table = storage.commit_table
        def commit_then_die(path, *args, **kwargs):
            done = commit_table(path, *args, **kwargs)
            if path.name == "lookalikes":  # some tables committed, the others not yet
                os.kill(os.getpid(), signal.SIGKILL)
            return done
        storage.commit_table = commit_then_die

    run_pipeline(build_config(raw, source="test"), hooks=(KillAt(),))
    """
)


def config_for(data, out):
    return make_config(
        data,
        out,
        clean={"max_bad_share": 0.2},
        cluster={"k_max": 4},
        output={"checkpoint_min_seconds": 0},
    )


def comparable(path, table) -> pa.Table:
    data = read_delta(path / table)
    data = data.drop_columns([c for c in ("run_id", "model_version") if c in data.column_names])
    order = [(c, "ascending") for c in data.column_names if c in ("idcliente", "rank", "segment")]
    return data.sort_by(order) if order else data


@pytest.fixture(scope="module")
def reference(customers_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run_pipeline(config_for(customers_path, out))
    return out


@pytest.mark.parametrize("target", [*STAGES, "commit"])
def test_killed_run_resumes_and_matches_an_uninterrupted_run(
    target, reference, customers_path, tmp_path
):
    out = tmp_path / "out"
    config = config_for(customers_path, out)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    killed = subprocess.run(
        [sys.executable, str(script), json.dumps(config.model_dump(mode="json")), target],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    for table in TABLES:
        delta = open_table(out / table)
        if delta is not None:  # every version a reader can open is whole
            for version in range(delta.version() + 1):
                assert read_delta(out / table, version=version).num_rows > 0
    assert target != "ingest" or not (out / "segments").exists()

    resumed = run_pipeline(config)
    reused = [r.stage for r in resumed.stages if r.reused]
    finished = STAGES if target == "commit" else STAGES[: STAGES.index(target)]
    assert reused == [s for s in finished if s in CHECKPOINTED]
    for table in TABLES:
        assert comparable(out, table).equals(comparable(reference, table)), table


def test_a_changed_config_section_reruns_that_stage_and_the_ones_after(customers_path, tmp_path):
    out = tmp_path / "out"
    run_pipeline(config_for(customers_path, out))
    changed = make_config(
        customers_path,
        out,
        clean={"max_bad_share": 0.2},
        cluster={"k_max": 4},
        reduce={"components": 2},
        output={"checkpoint_min_seconds": 0},
    )
    again = run_pipeline(changed)
    assert [r.stage for r in again.stages if r.reused] == ["clean"]


def test_retention_keeps_the_checkpoints_of_the_last_runs_only(customers_path, tmp_path):
    out = tmp_path / "out"
    for components in (2, 3, 4):
        run_pipeline(
            make_config(
                customers_path,
                out,
                clean={"max_bad_share": 0.2},
                cluster={"k": 3},
                reduce={"components": components},
                output={"path": str(out), "keep_runs": 1, "checkpoint_min_seconds": 0},
            )
        )
    cluster_checkpoints = list((out / ".staging" / "checkpoints").glob("cluster-*"))
    assert len(cluster_checkpoints) == 1
    assert len(list((out / ".staging" / "manifests").glob("*.json"))) == 1
    assert open_table(out / "segments").version() == 2  # cleanup never touches the tables


def test_stages_quicker_than_the_threshold_are_recomputed_not_stored(customers_path, tmp_path):
    out = tmp_path / "out"
    config = make_config(customers_path, out, clean={"max_bad_share": 0.2}, cluster={"k": 3})
    assert config.output.checkpoint_min_seconds > 1.0  # the default; these stages take less
    run_pipeline(config)
    again = run_pipeline(config)
    assert not any(r.reused for r in again.stages)
    assert not list((out / ".staging" / "checkpoints").glob("*"))


def write_marker(runs, run_id, *, pid, host=None, checkpoints=()):
    folder = runs / run_id
    folder.mkdir(parents=True)
    marker = {
        "run_id": run_id,
        "host": host or socket.gethostname(),
        "pid": pid,
        "checkpoints": list(checkpoints),
    }
    (folder / "run.json").write_text(json.dumps(marker))


def test_retention_keeps_what_live_runs_use_and_clears_what_ended_runs_left(
    customers_path, tmp_path
):
    out = tmp_path / "out"
    runs, checkpoints = out / ".staging" / "runs", out / ".staging" / "checkpoints"
    for key in ("cluster-live", "cluster-ended"):
        (checkpoints / key).mkdir(parents=True)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        write_marker(runs, "live", pid=live.pid, checkpoints=["cluster-live"])
        write_marker(runs, "ended", pid=ended.pid, checkpoints=["cluster-ended"])
        write_marker(runs, "elsewhere", pid=1, host="another-host")
        run_pipeline(config_for(customers_path, out))
    finally:
        live.kill()
        live.wait()
    assert sorted(p.name for p in runs.iterdir()) == ["elsewhere", "live"]
    assert (checkpoints / "cluster-live").exists()
    assert not (checkpoints / "cluster-ended").exists()
