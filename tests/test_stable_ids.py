"""Retraining keeps segment ids: new centroids are matched to the previous model's."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import make_config
from segmatch.api import demo_config, run_pipeline
from segmatch.model import SegmentModel
from segmatch.storage import read_delta


def fitted_model(centroids, ids=None) -> SegmentModel:
    d = centroids.shape[1]
    return SegmentModel(
        id_column="id",
        numeric_columns=[f"x{j}" for j in range(d)],
        log_columns=[],
        categorical_levels={},
        center_=np.zeros(d),
        scale_=np.ones(d),
        components_=np.eye(d),
        pca_mean_=np.zeros(d),
        centroids_=centroids,
        segment_ids_=np.arange(len(centroids)) if ids is None else np.asarray(ids),
    )


def test_matched_ids_follow_the_nearest_previous_centroid():
    previous = fitted_model(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]), ids=[4, 7, 9])
    new = np.array([[0.2, 9.7], [0.1, 0.1], [9.8, 0.3], [30.0, 30.0]])
    assert previous.matched_ids(new, ["x0", "x1"]).tolist() == [9, 4, 7, 10]
    assert previous.matched_ids(new[:2], ["x0", "x1"]).tolist() == [9, 4]
    assert previous.matched_ids(new, ["x0", "other"]) is None


def shuffled_copy(path, target, seed):
    table = pq.read_table(path)
    order = np.random.default_rng(seed).permutation(table.num_rows)
    pq.write_table(table.take(order), target)
    return target


def segment_of(out):
    table = read_delta(out / "segments")
    return dict(zip(table["idcliente"].to_pylist(), table["segment"].to_pylist(), strict=True))


def test_retraining_on_shuffled_input_keeps_every_segment_id(engine, customers_path, tmp_path):
    out = tmp_path / "out"
    first = run_pipeline(demo_config(customers_path, out, engine=engine.name, tracking=False))
    before = segment_of(out)
    shuffled = shuffled_copy(customers_path, tmp_path / "shuffled.parquet", seed=1)
    config = demo_config(shuffled, out, seed=77, engine=engine.name, tracking=False)
    second = run_pipeline(config)
    after = segment_of(out)
    agree = np.mean([before[c] == after[c] for c in before])
    assert second.k == first.k
    assert agree > 0.99
    assert second.transitions is not None
    assert second.moved_customers == sum(before[c] != after[c] for c in before)


def test_an_extra_segment_gets_a_new_id_and_the_rest_keep_theirs(engine, customers_path, tmp_path):
    out = tmp_path / "out"
    first = run_pipeline(
        make_config(
            customers_path, out, engine.name, clean={"max_bad_share": 0.2}, cluster={"k": 3}
        )
    )
    second = run_pipeline(
        make_config(
            customers_path, out, engine.name, clean={"max_bad_share": 0.2}, cluster={"k": 4}
        )
    )
    assert sorted(first.model.segment_ids_.tolist()) == [0, 1, 2]
    assert sorted(second.model.segment_ids_.tolist()) == [0, 1, 2, 3]
    profiles = second.profiles.to_pylist()
    assert sorted(p["segment"] for p in profiles) == [0, 1, 2, 3]
    transitions = second.transitions.to_pylist()
    assert {t["to_segment"] for t in transitions} == {0, 1, 2, 3}


@pytest.mark.usefixtures("tracking_store")
def test_the_champion_is_the_reference_when_tracking_is_on(
    tracking_store, customers_path, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store)
    config = demo_config(customers_path, tmp_path / "a", seed=5)
    config = config.model_copy(
        update={"tracking": config.tracking.model_copy(update={"model_name": "t-stable"})}
    )
    run_pipeline(config)
    before = segment_of(tmp_path / "a")
    shuffled = shuffled_copy(customers_path, tmp_path / "shuffled.parquet", seed=2)
    other = config.model_copy(
        update={
            "input": config.input.model_copy(update={"path": str(shuffled)}),
            "output": config.output.model_copy(update={"path": str(tmp_path / "b")}),
            "cluster": config.cluster.model_copy(update={"seed": 99}),
        }
    )
    second = run_pipeline(other)
    after = segment_of(tmp_path / "b")
    assert np.mean([before[c] == after[c] for c in before]) > 0.99
    assert second.transitions is None  # a fresh output folder has no previous segments
