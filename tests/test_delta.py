"""Outputs as Delta tables: modes, merge, idempotency, history, time travel, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import make_config, write_table
from segmatch.api import run_pipeline
from segmatch.errors import ColumnNotFoundError, InputError
from segmatch.staging import StagedOutputs
from segmatch.storage import (
    commit_staged,
    commit_table,
    input_digest,
    open_table,
    read_delta,
    restore_table,
    table_history,
)
from segmatch.synthetic import customer_table


def stage(folder: Path, table: pa.Table, name: str = "part-0.parquet") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name)
    return [folder / name]


def commit(path, folder, table, mode, *, run_id="r", app_id=None, engine=None):
    if engine is not None:
        stage(folder, table)
        return engine.commit_table(
            path,
            staged=folder,
            mode=mode,
            keys=("id",),
            app_id=app_id,
            metadata={"segmatch.run_id": run_id},
        )
    return commit_table(
        path,
        stage(folder, table),
        mode=mode,
        keys=("id",),
        app_id=app_id,
        metadata={"segmatch.run_id": run_id},
    )


def test_merge_updates_changed_rows_inserts_new_and_leaves_the_rest(engine, tmp_path):
    path = tmp_path / "t"
    first = pa.table({"id": ["a", "b", "c"], "segment": [1, 2, 3], "x": [0.1, 0.2, 0.3]})
    assert (
        commit(path, tmp_path / "s1", first, "overwrite", run_id="r1", engine=engine).version == 0
    )
    batch = pa.table(
        {"id": ["a", "b", "d", "d"], "segment": [1, 5, 7, 8], "x": [0.1, 0.2, 0.4, 0.5]}
    )
    done = commit(path, tmp_path / "s2", batch, "merge", run_id="r2", engine=engine)
    assert (done.version, done.operation, done.rows) == (1, "merge", 2)  # b updated, d inserted
    rows = {r["id"]: r for r in read_delta(path).to_pylist()}
    assert rows["b"]["segment"] == 5 and rows["d"]["segment"] == 8  # last duplicate wins
    assert rows["a"] == {"id": "a", "segment": 1, "x": 0.1} and rows["c"]["segment"] == 3
    last = table_history(path)[0]
    assert (last["operation"], last["run_id"], last["rows_written"]) == ("MERGE", "r2", 2)


def test_overwrite_and_append_adopt_staged_files_without_rewriting(tmp_path):
    path = tmp_path / "t"
    commit(path, tmp_path / "s1", pa.table({"id": ["a"], "v": [1]}), "overwrite")
    appended = commit(path, tmp_path / "s2", pa.table({"id": ["b"], "v": [2]}), "append")
    assert appended.rows == 1 and read_delta(path).num_rows == 2
    assert not any((tmp_path / "s2").iterdir())  # the staged file moved into the table
    commit(path, tmp_path / "s3", pa.table({"id": ["z"], "v": [9], "w": [1.0]}), "overwrite")
    assert read_delta(path).to_pylist() == [{"id": "z", "v": 9, "w": 1.0}]


def test_a_batch_is_committed_once(engine, tmp_path):
    path = tmp_path / "t"
    table = pa.table({"id": ["a"], "v": [1]})
    commit(path, tmp_path / "s1", table, "append", app_id="segmatch:t:batch-1", engine=engine)
    again = commit(
        path, tmp_path / "s2", table, "append", app_id="segmatch:t:batch-1", engine=engine
    )
    assert again.skipped and again.version == 0
    assert read_delta(path).num_rows == 1


def test_tables_stay_readable_by_every_reader(tmp_path):
    path = tmp_path / "t"
    commit(path, tmp_path / "s", pa.table({"id": ["a", "b"], "v": [1, 2]}), "overwrite")
    table = open_table(path)
    protocol = table.protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)
    assert table.metadata().configuration == {
        "delta.enableDeletionVectors": "false",
        "delta.dataSkippingNumIndexedCols": "2",
    }
    assert pl.read_delta(str(path)).height == 2
    assert (
        sum(pq.read_table(uri.removeprefix("file://")).num_rows for uri in table.file_uris()) == 2
    )


def _merge_worker(path: str, worker: int, rounds: int) -> None:
    for r in range(rounds):
        ids = [f"w{worker}-{i}" for i in range(20)] + [f"shared-{i}" for i in range(5)]
        batch = pa.table({"id": ids, "round": [r] * len(ids), "worker": [worker] * len(ids)})
        folder = Path(path).parent / f"stage-{worker}-{r}"
        commit(Path(path), folder, batch, "merge", run_id=f"w{worker}r{r}")


def test_two_processes_merging_into_one_table_lose_nothing(tmp_path):
    path = tmp_path / "t"
    commit(
        path, tmp_path / "s0", pa.table({"id": ["seed"], "round": [0], "worker": [-1]}), "overwrite"
    )
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_merge_worker, args=(str(path), w, 5)) for w in (1, 2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=240)
        assert process.exitcode == 0
    rows = read_delta(path).to_pylist()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 1 + 2 * 20 + 5
    for worker in (1, 2):
        assert all(r["round"] == 4 for r in rows if r["id"].startswith(f"w{worker}-"))
    assert open_table(path).version() == 10  # every merge of both processes landed


def pipeline_config(data, out, engine_name="local", **output):
    return make_config(
        data,
        out,
        engine_name,
        clean={"max_bad_share": 0.2},
        cluster={"k": 4},
        output={"path": str(out), **output},
    )


def test_three_batches_merge_into_the_segments_table(engine, tmp_path):
    base = customer_table(rows=1200, seed=21, dirty_share=0.0)
    first = write_table(base.slice(0, 1000), tmp_path / "b1.parquet")
    new = write_table(base.slice(1000, 200), tmp_path / "b2.parquet")
    changed_rows = base.slice(0, 300)
    changed_rows = changed_rows.set_column(
        changed_rows.schema.get_field_index("monetary"),
        "monetary",
        pa.array(np.asarray(changed_rows["monetary"]) * 3.0),
    )
    changed = write_table(changed_rows, tmp_path / "b3.parquet")
    out = tmp_path / "out"
    modes = {"modes": {"segments": "merge", "lookalikes": "merge"}}
    one = run_pipeline(pipeline_config(first, out, engine.name, **modes))
    before = {r["idcliente"]: r for r in read_delta(out / "segments").to_pylist()}
    two = run_pipeline(pipeline_config(new, out, engine.name, **modes))
    three = run_pipeline(pipeline_config(changed, out, engine.name, **modes))
    repeat = run_pipeline(pipeline_config(changed, out, engine.name, **modes))
    segments = read_delta(out / "segments").to_pylist()
    ids = [r["idcliente"] for r in segments]
    assert len(ids) == len(set(ids)) == 1200
    assert [one.table_versions["segments"], two.table_versions["segments"]] == [0, 1]
    assert three.table_versions["segments"] == repeat.table_versions["segments"] == 2
    after = {r["idcliente"]: r for r in segments}
    untouched = [c for c in before if c not in {r for r in changed_rows["idcliente"].to_pylist()}]
    assert all(after[c] == before[c] for c in untouched)
    assert all(after[c]["run_id"] == three.run_id for c in changed_rows["idcliente"].to_pylist())
    history = table_history(out / "segments")
    assert [h["run_id"] for h in history] == [three.run_id, two.run_id, one.run_id]
    assert history[1]["rows_written"] == 200 and history[0]["operation"] == "MERGE"


def test_rerunning_the_same_batch_adds_no_version(engine, tmp_path, customers_path):
    out = tmp_path / "out"
    first = run_pipeline(pipeline_config(customers_path, out, engine.name))
    second = run_pipeline(pipeline_config(customers_path, out, engine.name))
    assert first.table_versions == second.table_versions
    assert read_delta(out / "stage_log").num_rows == len(first.stages)  # appended once


def test_time_travel_and_restore(engine, tmp_path):
    source = tmp_path / "customers"
    base = customer_table(rows=400, seed=3, dirty_share=0.0)
    commit_table(
        source,
        stage(tmp_path / "s1", base.slice(0, 300)),
        mode="overwrite",
        keys=(),
        app_id=None,
        metadata={},
    )
    commit_table(
        source,
        stage(tmp_path / "s2", base.slice(300, 100)),
        mode="append",
        keys=(),
        app_id=None,
        metadata={},
    )
    old = run_pipeline(make_config(source, tmp_path / "a", engine.name, input={"version": 0}))
    new = run_pipeline(make_config(source, tmp_path / "b", engine.name))
    assert (old.rows_in, new.rows_in) == (300, 400)
    assert restore_table(source, 0) == 2
    assert read_delta(source).num_rows == 300
    with pytest.raises(InputError, match=r"version 7 of .* does not exist \(versions 0 to 2\)"):
        restore_table(source, 7)


def test_bad_delta_inputs_get_clear_errors(tmp_path):
    source = tmp_path / "customers"
    commit_table(
        source,
        stage(tmp_path / "s", pa.table({"client": ["a"], "x": [1.0]})),
        mode="overwrite",
        keys=(),
        app_id=None,
        metadata={},
    )
    with pytest.raises(ColumnNotFoundError, match=r"id column 'idcliente' not found\. .*'client'"):
        run_pipeline(make_config(source, tmp_path / "out"))
    with pytest.raises(InputError, match=r"input\.version=0 .* is parquet"):
        data = write_table({"idcliente": ["a"], "x": [1.0]}, tmp_path / "in.parquet")
        run_pipeline(make_config(data, tmp_path / "out", input={"version": 0}))
    for part in source.glob("*.parquet"):
        part.write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"cannot read delta input .*customers"):
        run_pipeline(make_config(source, tmp_path / "out"))
    log = next((source / "_delta_log").glob("*.json"))
    log.write_text(json.dumps({"garbage": True}))
    with pytest.raises(InputError, match=r"cannot read delta input"):
        run_pipeline(make_config(source, tmp_path / "out"))


def test_the_input_digest_comes_from_metadata_and_follows_every_change(tmp_path):
    data = write_table({"idcliente": ["a"], "x": [1.0]}, tmp_path / "in.parquet")
    first = input_digest(data)
    assert input_digest(data) == first
    write_table({"idcliente": ["a", "b"], "x": [1.0, 2.0]}, data)
    assert input_digest(data) != first
    source = tmp_path / "customers"
    for folder, mode in (("s1", "overwrite"), ("s2", "append")):
        commit(source, tmp_path / folder, pa.table({"id": ["a"], "v": [1]}), mode)
    assert input_digest(source, version=0) == input_digest(source, version=0)
    assert (
        input_digest(source, version=0) != input_digest(source) == input_digest(source, version=1)
    )


def test_tables_committing_side_by_side_all_finish_before_one_failure_is_raised(tmp_path):
    outputs = StagedOutputs(tmp_path / "out", "run-1")
    for name in ("segments", "profiles", "quarantine"):
        stage(Path(outputs.path_for(name)), pa.table({"id": ["a", "b"], "v": [1, 2]}))
    started = threading.Barrier(3, timeout=30)

    def committer(location, *, staged, **arguments):
        started.wait()  # all three commits are under way at once
        if location.endswith("profiles"):
            raise OSError("the store refused profiles")
        return commit_staged(location, staged=staged, **arguments)

    with pytest.raises(OSError, match="refused profiles"):
        outputs.commit(committer, modes={}, keys={}, concurrency=3)
    for name in ("segments", "quarantine"):
        assert read_delta(outputs.table_path(name)).num_rows == 2
    assert open_table(outputs.table_path("profiles")) is None
