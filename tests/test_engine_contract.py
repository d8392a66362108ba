"""The engine contract: every primitive of the Engine interface, on small data, once per engine.

A new engine passes this module before anything else; each test names the primitive it pins
down, and the last test checks that no abstract method is left without one.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from helpers import labelled_matrix, write_table
from segmatch.engines.base import Engine
from segmatch.engines.expressions import any_of, col, lit, row_position, rows, when
from segmatch.engines.shaping import lookalike_schema
from segmatch.engines.types import DISTANCE, RUNNER_UP, SEGMENT, SegmentRows, vector_column
from segmatch.staging import StagedOutputs

#: The primitives each test below pins down; every abstract method must be in one.
COVERED: set[str] = set()


def covers(*names: str):
    COVERED.update(names)
    return lambda test: test


ROWS = {
    "idcliente": ["a", " b", "c", "d", "e", "f"],
    "age": [30.0, None, 45.0, 60.0, 45.0, float("nan")],
    "income": ["1.200,5", "900", "x", "", "3.000", "15"],
    "channel": ["web", "app", None, "web", "web", "store"],
    "seen": [dt.datetime(2024, 1, d) for d in (1, 2, 3, 4, 5, 6)],
}


@pytest.fixture
def frame(engine: Engine, tmp_path):
    path = write_table(ROWS, tmp_path / "rows.parquet")
    return engine.read(path=str(path), fmt="parquet", types={}, separator=",")


def arrow(engine: Engine, frame) -> list[dict]:
    return engine.to_arrow(frame).to_pylist()


@covers("read", "schema", "to_arrow")
def test_read_gives_the_rows_their_kinds_and_a_head(engine, frame, tmp_path):
    assert engine.schema(frame) == {
        "idcliente": "string",
        "age": "numeric",
        "income": "string",
        "channel": "string",
        "seen": "temporal",
    }
    assert engine.to_arrow(frame, limit=2, columns=["idcliente"]).to_pylist() == [
        {"idcliente": "a"},
        {"idcliente": " b"},
    ]
    csv = tmp_path / "rows.csv"
    csv.write_text("id;value\n1;2,5\n")
    text = engine.read(path=str(csv), fmt="csv", types={}, separator=";", infer_numbers=False)
    assert arrow(engine, text) == [{"id": "1", "value": "2,5"}]
    # Only the columns asked for: the transitions read two of the previous segments' columns.
    parquet = str(tmp_path / "rows.parquet")
    age = engine.read(path=parquet, fmt="parquet", types={}, separator=",", columns=["age"])
    assert list(engine.schema(age)) == ["age"]
    value = engine.read(path=str(csv), fmt="csv", types={}, separator=";", columns=["value"])
    assert arrow(engine, value) == [{"value": "2,5"}]


@covers("with_columns")
def test_row_expressions_compile_the_same_everywhere(engine, frame):
    shaped = engine.with_columns(
        frame,
        {
            "id": col("idcliente").strip(),
            "income": col("income").replace(".", "").replace(",", ".").as_number(),
            "age": col("age").as_number().nan_to_null().fill_null(0.0),
            "band": when([(col("age").nan_to_null().gt(50.0).fill_null(False), "senior")], "other"),
            "position": row_position(),
            "web": col("channel").is_in(["web"]).fill_null(False),
        },
    )
    got = engine.to_arrow(shaped, columns=["id", "income", "age", "band", "position", "web"])
    assert got.to_pylist() == [
        {"id": "a", "income": 1200.5, "age": 30.0, "band": "other", "position": "1", "web": True},
        {"id": "b", "income": 900.0, "age": 0.0, "band": "other", "position": "2", "web": False},
        {"id": "c", "income": None, "age": 45.0, "band": "other", "position": "3", "web": False},
        {"id": "d", "income": None, "age": 60.0, "band": "senior", "position": "4", "web": True},
        {"id": "e", "income": 3000.0, "age": 45.0, "band": "other", "position": "5", "web": True},
        {"id": "f", "income": 15.0, "age": 0.0, "band": "other", "position": "6", "web": False},
    ]


@covers("filter", "aggregate")
@covers("lookup")
def test_lookup_joins_a_small_table_by_key(engine, frame):
    table = pa.table({"idcliente": ["c", "a", "zz"], "entity_id": ["E2", "E1", "E9"]})
    joined = arrow(engine, engine.lookup(frame, key="idcliente", table=table))
    found = {r["idcliente"]: r["entity_id"] for r in joined}
    assert found == {"a": "E1", " b": None, "c": "E2", "d": None, "e": None, "f": None}
    assert {r["idcliente"]: r["age"] for r in joined}["a"] == 30.0


def test_filters_and_aggregations(engine, frame):
    blank = col("income").strip().eq("").fill_null(False)
    kept = engine.filter(frame, any_of([blank, col("channel").is_null()]).not_())
    assert [r["idcliente"] for r in arrow(engine, kept)] == ["a", " b", "e", "f"]
    text = col("income").as_text().strip()
    failed = text.ne("").and_(text.as_number().is_null()).fill_null(False)
    totals = engine.to_arrow(
        engine.aggregate(
            frame,
            {
                "rows": rows(),
                "ages": col("age").as_number().nan_to_null().count(),
                "oldest": col("age").max(),
                "first_bad": when([(failed, text)]).first(),
                "channels": col("channel").n_unique(),
                "last_seen": col("seen").max(),
            },
        )
    ).to_pylist()[0]
    assert {k: totals[k] for k in ("rows", "ages", "first_bad", "channels")} == {
        "rows": 6,
        "ages": 4,
        "first_bad": "1.200,5",
        "channels": 3,
    }
    assert totals["last_seen"].replace(tzinfo=None) == dt.datetime(2024, 1, 6)
    by_channel = engine.aggregate(frame, {"n": rows(), "age": col("age").mean()}, by=["channel"])
    counted = {
        r["channel"]: r["n"]
        for r in engine.to_arrow(by_channel, columns=["channel", "n"]).to_pylist()
    }
    assert counted == {"web": 3, "app": 1, None: 1, "store": 1}
    assert engine.count(frame) == 6


def test_level_counts_of_several_columns_overall_and_by_group(engine, frame):
    counts = engine.level_counts(frame, ["channel", "age"])
    assert counts["channel"] == {(None, "web"): 3, (None, "app"): 1, (None, None): 1,
                                 (None, "store"): 1}  # fmt: skip
    # A number column's values as text; NaN is a value, a null is missing.
    assert sum(counts["age"].values()) == 6 and counts["age"][(None, None)] == 1
    assert counts["age"][(None, "45.0")] == 2 and counts["age"][(None, "NaN")] == 1
    grouped = engine.level_counts(frame, ["idcliente", "channel"], by="channel")
    assert grouped["channel"] == {(c, c): n for (_, c), n in counts["channel"].items()}
    assert grouped["idcliente"] == {
        ("web", "a"): 1, ("web", "d"): 1, ("web", "e"): 1, ("app", " b"): 1,
        (None, "c"): 1, ("store", "f"): 1,
    }  # fmt: skip
    assert engine.level_counts(frame, []) == {}


def test_text_levels_count_few_values_and_number_many(engine, frame):
    levels = engine.text_levels(frame, ["channel", "income", "age", "idcliente"], most=5)
    # Read as text without the spaces around it; blank and missing cells are left out.
    assert levels["channel"] == {"web": 3, "app": 1, "store": 1}
    assert levels["age"] == {"30.0": 1, "45.0": 2, "60.0": 1, "NaN": 1}
    assert levels["income"] == {"1.200,5": 1, "900": 1, "x": 1, "3.000": 1, "15": 1}
    assert levels["idcliente"] == 6
    assert engine.text_levels(frame, ["income", "idcliente"], most=4) == {
        "income": 5, "idcliente": 6
    }  # fmt: skip
    assert engine.text_levels(frame, [], most=4) == {}


@covers("deduplicate")
def test_one_row_per_id_the_first_or_the_latest(engine, tmp_path):
    path = write_table(
        {"id": ["a", "b", "a", "a"], "v": [1, 2, 3, 4], "at": [5, 1, 9, None]},
        tmp_path / "dupes.parquet",
    )
    frame = engine.read(path=str(path), fmt="parquet", types={}, separator=",")
    first, kept = engine.deduplicate(frame, id_column="id", keep="first", order_by=None)
    assert kept == 2 and sorted(r["v"] for r in arrow(engine, first)) == [1, 2]
    latest, _ = engine.deduplicate(frame, id_column="id", keep="latest", order_by="at")
    assert sorted(r["v"] for r in arrow(engine, latest)) == [2, 3]
    unique, kept = engine.deduplicate(first, id_column="id", keep="latest", order_by="at")
    assert kept == 2 and sorted(r["v"] for r in arrow(engine, unique)) == [1, 2]


@covers("quantiles")
def test_exact_quantiles_overall_and_by_group(engine, tmp_path):
    rng = np.random.default_rng(4)
    values = rng.normal(size=2001).round(2)
    groups = rng.integers(0, 3, 2001)
    path = write_table({"v": values, "g": groups}, tmp_path / "q.parquet")
    frame = engine.read(path=str(path), fmt="parquet", types={}, separator=",")
    assert engine.quantiles(frame, columns=["v"], q=0.5)[None]["v"] == np.median(values)
    found = engine.quantiles(frame, columns=["v"], q=0.9, by="g")
    for g in range(3):
        assert found[g]["v"] == pytest.approx(np.quantile(values[groups == g], 0.9), abs=1e-12)


def test_a_column_summary_counts_adds_and_takes_quantiles_per_group(engine, tmp_path):
    rng = np.random.default_rng(5)
    values = rng.normal(size=1001).round(2)
    gaps = np.where(rng.random(1001) < 0.1, np.nan, values * 3)
    groups = rng.integers(0, 3, 1001)
    path = write_table(
        {
            "v": values,
            "gaps": pa.array(gaps, from_pandas=True),
            "none": pa.nulls(1001, pa.float64()),
            "g": groups,
        },
        tmp_path / "n.parquet",
    )
    frame = engine.read(path=str(path), fmt="parquet", types={}, separator=",")
    whole = engine.column_summary(frame, columns=["v", "gaps", "none"], q=0.5)
    kept = gaps[~np.isnan(gaps)]
    assert whole.rows == {None: 1001}
    assert whole.values == {None: {"v": 1001, "gaps": len(kept), "none": 0}}
    assert whole.quantiles == {
        None: {"v": np.median(values), "gaps": np.median(kept), "none": None}
    }
    assert whole.mean(None, "gaps") == pytest.approx(kept.mean(), rel=1e-12)
    assert whole.mean(None, "none") is None
    grouped = engine.column_summary(frame, columns=["v"], q=0.9, by="g")
    for g in range(3):
        mine = values[groups == g]
        assert grouped.rows[g] == grouped.values[g]["v"] == len(mine)
        assert grouped.mean(g, "v") == pytest.approx(mine.mean(), rel=1e-12)
        assert grouped.quantiles[g]["v"] == pytest.approx(np.quantile(mine, 0.9), abs=1e-12)
    sizes = engine.column_summary(frame, columns=[], q=0.5, by="g")
    assert sizes.rows == {g: int((groups == g).sum()) for g in range(3)}


@covers("feature_matrix", "reduce_blocks", "affine", "matrix_frame")
def test_the_feature_matrix_and_passes_over_it(engine, frame):
    filled = engine.with_columns(frame, {"age": col("age").as_number().nan_to_null().fill_null(0)})
    matrix = engine.feature_matrix(
        filled,
        id_column="idcliente",
        numeric=["age"],
        log=["age"],
        levels={"channel": ["web", "(other)"]},
        carry=["channel"],
    )
    assert engine.matrix_rows(matrix) == 6
    sums = engine.reduce_blocks(matrix, kernel=lambda values, labels: values.sum(axis=0))
    expected_age = np.log1p([30.0, 0.0, 45.0, 60.0, 45.0, 0.0])
    # A missing level is neither a named level nor "(other)": cleaning fills it first.
    np.testing.assert_allclose(sums, [expected_age.sum(), 3.0, 2.0])
    moved = engine.affine(matrix, shift=np.zeros(3), linear=np.array([[2.0], [0.0], [1.0]]))
    out = engine.to_arrow(
        engine.matrix_frame(
            moved,
            id_column="idcliente",
            columns={"double": col(vector_column(0))},
            customers=filled,
            customer_columns=["channel"],
        )
    ).to_pylist()
    by_id = {r["idcliente"]: r for r in out}
    assert by_id["a"]["double"] == pytest.approx(2 * np.log1p(30.0))
    assert by_id[" b"]["double"] == pytest.approx(1.0)  # no age, and "app" is "(other)"
    assert by_id["c"]["channel"] is None and by_id["a"]["channel"] == "web"


@covers("assign", "relabel")
def test_assignment_and_relabelling(engine, tmp_path):
    points = np.array([[0.0], [1.0], [9.0], [10.0]])
    matrix = labelled_matrix(engine, ["p", "q", "r", "s"], points, [0, 0, 0, 0], tmp_path)
    assigned = engine.assign(matrix, centroids=np.array([[0.0], [10.0]]))
    relabelled = engine.relabel(assigned, ids=np.array([7, 3]))
    rows_of = engine.matrix_frame(
        relabelled,
        id_column="id",
        columns={"s": col(SEGMENT), "d": col(DISTANCE), "r": col(RUNNER_UP)},
    )
    got = {r["id"]: (r["s"], r["d"], r["r"]) for r in engine.to_arrow(rows_of).to_pylist()}
    assert got == {
        "p": (7, 0.0, 10.0),
        "q": (7, 1.0, 9.0),
        "r": (3, 1.0, 9.0),
        "s": (3, 0.0, 10.0),
    }


@covers("segment_transitions")
def test_transitions_count_the_customers_of_both_assignments(engine, tmp_path):
    previous = write_table(
        {"idcliente": ["p", "q", "r", "gone"], "segment": [1, 1, 2, 2]}, tmp_path / "seg.parquet"
    )
    before = engine.read(path=str(previous), fmt="parquet", types={}, separator=",")
    points = np.array([[0.0], [1.0], [9.0], [10.0]])
    matrix = labelled_matrix(engine, ["p", "q", "r", "new"], points, [1, 2, 2, 2], tmp_path)
    moved = engine.segment_transitions(before, matrix, id_column="idcliente")
    assert moved.to_pylist() == [
        {"from_segment": 1, "to_segment": 1, "customers": 1},
        {"from_segment": 1, "to_segment": 2, "customers": 1},
        {"from_segment": 2, "to_segment": 2, "customers": 1},
    ]


@covers("sample_rows")
def test_samples_are_the_smallest_id_hashes_in_hash_order(engine, tmp_path):
    ids = [f"c{i}" for i in range(300)]
    labels = [i % 3 for i in range(300)]
    matrix = labelled_matrix(engine, ids, np.arange(300.0)[:, None], labels, tmp_path)
    every = engine.sample_rows(matrix, rows=300, seed=3)
    some = engine.sample_rows(matrix, rows=40, seed=3)
    assert some.ids.to_pylist() == every.ids.to_pylist()[:40]
    per_segment = engine.sample_rows(matrix, rows={0: 5, 2: 1}, seed=3)
    assert sorted(per_segment.segments.tolist()) == [0, 0, 0, 0, 0, 2]
    ordered = [i for i in every.ids.to_pylist() if int(i[1:]) % 3 != 1]
    assert [i for i in per_segment.ids.to_pylist()] == [
        i for i in ordered if i in set(per_segment.ids.to_pylist())
    ]


@pytest.mark.parametrize("held_by", ["sample", "hold_rows"])
def test_a_matrix_held_whole_gives_the_same_passes(engine, tmp_path, held_by):
    """The cluster stage's fit sample takes every row when they fit its bound, and the scale
    stage holds them from the start when they do: on Spark the passes, projection,
    assignment, samples and quantiles that follow then run on the driver, and must give what
    Spark's jobs give."""
    rng = np.random.default_rng(5)
    points = rng.normal(size=(600, 2)) + np.repeat([[0.0, 0.0], [6.0, 6.0]], 300, axis=0)
    ids = [f"c{i}" for i in range(600)]
    centroids = np.array([[0.0, 0.0], [6.0, 6.0]])

    def passes(whole: bool, folder):
        folder.mkdir()
        matrix = labelled_matrix(engine, ids, points, np.zeros(600), folder)
        if whole and held_by == "sample":
            assert len(engine.sample_rows(matrix, rows=600, seed=1).ids) == 600
        elif whole:
            engine.hold_rows(matrix)
        jobs_before = _jobs_run(engine)
        moments = engine.reduce_blocks(matrix, kernel=lambda values, _: values.sum(axis=0))
        mapped = engine.affine(
            matrix, shift=np.array([1.0, 2.0]), linear=np.array([[1.0, 0.5], [0.0, 2.0]])
        )
        mapped_moments = engine.reduce_blocks(mapped, kernel=lambda values, _: values.sum(axis=0))
        first = engine.sample_rows(mapped, rows=5, seed=3)
        relabelled = engine.relabel(
            engine.assign(matrix, centroids=centroids), ids=np.array([4, 2])
        )
        counts = engine.reduce_blocks(
            relabelled, kernel=lambda _, labels: np.bincount(labels, minlength=5).astype(float)
        )
        sizes = {4: int(counts[4]), 2: int(counts[2])}
        sample = engine.sample_rows(relabelled, rows={4: 7, 2: 3}, seed=2, sizes=sizes)
        quantiles = engine.distance_quantiles(relabelled, id_column="id", q=0.9)
        jobs = None if jobs_before is None else _jobs_run(engine) - jobs_before
        # The one pass over every row a held projection leaves to Spark: the assignment.
        placed = engine.matrix_frame(
            engine.assign(mapped, centroids=np.array([[-1.0, -4.0], [5.0, 8.0]])),
            id_column="id",
            columns={"s": col(SEGMENT), "d": col(DISTANCE), "x": col(vector_column(1))},
        )
        placed_rows = sorted(
            (r["id"], r["s"], r["d"], r["x"]) for r in engine.to_arrow(placed).to_pylist()
        )
        return {
            "moments": np.concatenate([moments, mapped_moments]),
            "first": (first.ids.to_pylist(), first.values.tolist()),
            "placed": placed_rows,
            "counts": counts,
            "sample": (sample.ids.to_pylist(), sample.segments.tolist()),
            "quantiles": quantiles,
            "jobs": jobs,
        }

    whole, apart = passes(True, tmp_path / "whole"), passes(False, tmp_path / "apart")
    np.testing.assert_allclose(whole["moments"], apart["moments"], rtol=1e-12)
    assert whole["first"][0] == apart["first"][0]
    np.testing.assert_allclose(whole["first"][1], apart["first"][1], rtol=1e-12)
    assert [r[:2] for r in whole["placed"]] == [r[:2] for r in apart["placed"]]
    assert {r[1] for r in whole["placed"]} == {0, 1}
    np.testing.assert_allclose(
        [r[2:] for r in whole["placed"]], [r[2:] for r in apart["placed"]], rtol=1e-12
    )
    assert whole["counts"].tolist() == apart["counts"].tolist() == [0, 0, 300, 0, 300]
    assert whole["sample"] == apart["sample"] and len(whole["sample"][0]) == 10
    assert whole["quantiles"].keys() == apart["quantiles"].keys() == {2, 4}
    for segment, value in apart["quantiles"].items():
        assert whole["quantiles"][segment] == pytest.approx(value, rel=1e-12)
    if engine.name == "spark":
        assert whole["jobs"] == 0 and apart["jobs"] > 0


def test_summaries_of_held_rows_are_those_of_a_pass_over_them(engine, tmp_path):
    """The scale stage holds the carried customer columns with the matrix: the segment
    profiles' summaries of a frame shaped from those rows then run on the driver (on Spark,
    without a job), and must give what a pass over the frame's rows gives."""
    rng = np.random.default_rng(7)
    points = rng.normal(size=(900, 2)) + np.repeat([[0.0, 0.0], [5.0, 5.0], [0.0, 9.0]], 300, 0)
    spend = pa.array(rng.gamma(2.0, 50.0, 900).round(1), mask=rng.random(900) < 0.1)
    path = write_table(
        {
            "id": [f"c{i}" for i in range(900)],
            "x0": points[:, 0],
            "x1": points[:, 1],
            "spend": spend,
            "visits": rng.integers(0, 20, 900),
            "channel": rng.choice(["web", "app", "store"], 900).tolist(),
        },
        tmp_path / "customers.parquet",
    )
    customers = engine.read(path=str(path), fmt="parquet", types={}, separator=",")
    centroids = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 9.0]])

    def summaries(held: bool):
        matrix = engine.feature_matrix(
            customers,
            id_column="id",
            numeric=["x0", "x1"],
            log=(),
            levels={},
            carry=["spend", "visits", "channel"],
        )
        if held:
            engine.hold_rows(matrix)
        assigned = engine.relabel(
            engine.assign(matrix, centroids=centroids), ids=np.array([2, 0, 1])
        )
        labelled = engine.matrix_frame(
            assigned,
            id_column="id",
            columns={SEGMENT: col(SEGMENT)},
            customers=customers,
            customer_columns=["spend", "visits", "channel"],
        )
        jobs_before = _jobs_run(engine)
        summary = engine.column_summary(labelled, columns=["spend", "visits"], q=0.5, by=SEGMENT)
        overall = engine.column_summary(labelled, columns=["spend"], q=0.25)
        levels = engine.level_counts(labelled, ["channel"], by=SEGMENT)
        jobs = None if jobs_before is None else _jobs_run(engine) - jobs_before
        return summary, overall, levels, jobs

    with engine.run_scope():
        held = summaries(True)
    with engine.run_scope():
        apart = summaries(False)
    (summary, overall, levels, jobs), (summary_apart, overall_apart, levels_apart, _) = held, apart
    assert summary.rows == summary_apart.rows and set(summary.rows) == {0, 1, 2}
    assert summary.values == summary_apart.values
    assert 0 < sum(v["spend"] for v in summary.values.values()) < 900  # with gaps
    assert summary.quantiles == summary_apart.quantiles
    assert overall.rows == overall_apart.rows == {None: 900}
    assert overall.quantiles == overall_apart.quantiles
    for segment in summary.rows:
        for column in ("spend", "visits"):
            assert summary.mean(segment, column) == pytest.approx(
                summary_apart.mean(segment, column), rel=1e-12
            )
    assert levels == levels_apart
    assert sum(levels["channel"].values()) == 900
    if engine.name == "spark":
        assert jobs == 0


def _jobs_run(engine: Engine) -> int | None:
    """How many Spark jobs the engine's session has started (None on the local engine): job ids
    count up from 0, while the status tracker keeps only the latest jobs (a test session's
    shared Spark runs past that limit, and a count of those it keeps then falls)."""
    if engine.name != "spark":
        return None
    return max(engine.spark.sparkContext.statusTracker().getJobIdsForGroup(None), default=-1) + 1


@covers("map_groups")
def test_grouped_apply_over_segments_and_against_a_reference(engine, tmp_path):
    points = np.arange(8.0)[:, None]
    matrix = labelled_matrix(engine, list("abcdefgh"), points, [0, 0, 0, 1, 1, 1, 1, 1], tmp_path)

    def sizes(group: SegmentRows) -> pa.Table:
        home = np.ones(len(group.ids), bool) if group.home is None else group.home
        return pa.table(
            {
                "id": group.ids.take(pa.array(np.flatnonzero(home))),
                "segment": pa.array(group.labels[home], pa.int32()),
                "members": pa.array(np.full(int(home.sum()), len(group.ids)), pa.int64()),
            }
        )

    def schema(id_type: pa.DataType) -> pa.Schema:
        return pa.schema([("id", id_type), ("segment", pa.int32()), ("members", pa.int64())])

    per_segment = engine.to_arrow(engine.map_groups(matrix, sizes, schema=schema)).to_pylist()
    assert {r["id"]: r["members"] for r in per_segment} == {
        **dict.fromkeys("abc", 3),
        **dict.fromkeys("defgh", 5),
    }
    new = labelled_matrix(engine, ["n1", "n2"], np.array([[0.5], [6.5]]), [0, 1], tmp_path)
    against = engine.map_groups(new, sizes, schema=schema, reference=matrix)
    assert {r["id"]: r["members"] for r in engine.to_arrow(against).to_pylist()} == {
        "n1": 4,
        "n2": 6,
    }
    assert lookalike_schema("id", pa.string()).names[:3] == ["id", "segment", "lookalike_id"]


@covers("stage_table", "save", "load")
def test_staging_and_checkpoint_storage(engine, frame, tmp_path):
    outputs = StagedOutputs(str(tmp_path / "out"), "r1")
    engine.stage_table(frame, outputs=outputs, table="quarantine")
    assert outputs.staged_tables == ("quarantine",)
    engine.save(frame, folder=str(tmp_path / "saved"))
    loaded = engine.load(folder=str(tmp_path / "saved"), kind="frame")
    assert engine.stored_kind(loaded) == "frame" and engine.count(loaded) == 6
    matrix = labelled_matrix(engine, ["p", "q"], np.eye(2), [0, 1], tmp_path)
    engine.save(matrix, folder=str(tmp_path / "matrix"))
    back = engine.load(folder=str(tmp_path / "matrix"), kind="matrix")
    assert engine.stored_kind(back) == "matrix" and engine.stored_kind(lit(1)) is None
    np.testing.assert_array_equal(
        engine.reduce_blocks(back, kernel=lambda values, labels: values.sum(axis=0)), [1.0, 1.0]
    )


def test_every_abstract_method_has_a_contract_test():
    assert set(Engine.__abstractmethods__) == COVERED
    # DESIGN.md's "about 20": the join of a small driver-side table (lookup) made it 21.
    assert len(Engine.__abstractmethods__) <= 21
