"""Benchmark segmatch's entity resolution against Splink with its own example settings, side by
side in one run, on data with true links.

Usage:
    python -m benchmarks.identity [--shared ../shared/data/entity_resolution]
                                  [--generated 50000] [--out benchmarks/results]
                                  [--sets febrl3,febrl4,fake_1000,generated,incremental]

For each data set, each contender runs in its own process: segmatch (`segmatch.api.dedupe`,
roles named, nothing else set) and Splink configured as its example notebooks configure it
(FEBRL 3 and 4, fake_1000; on the generated Brazilian records, the settings a Splink user would
write for those columns). Reported: wall seconds and peak memory of the process, pairs scored,
blocking recall (true pairs among the pairs scored), pairwise precision / recall / F1 at the
contender's threshold (segmatch's own; Splink's usual 0.9) and at the best threshold in
hindsight, and F1 of the pairs implied by the entities (cluster F1).

The ``incremental`` set measures what happens when 10% new records arrive, on generated
records with a spend and visits each: a batch run (identity and segmentation) over everyone,
against a run over the first records and `segmatch score` of the new ones (linked to known
entities, not refitted); how many new records of a known person are linked to its entity and
how many wrongly; and, for `segmatch dedupe` rerun with the new records, how many entities
whose records did not change got another id.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "entity_resolution"
FEBRL_COLUMNS = [
    "rec_id", "given_name", "surname", "street_number", "address_1", "address_2", "suburb",
    "postcode", "state", "date_of_birth", "soc_sec_id",
]  # fmt: skip
FEBRL_ROLES = {
    "given_name": "first_name",
    "surname": "surname",
    "street_number": "address",
    "address_1": "address",
    "address_2": "address",
    "suburb": "city",
    "postcode": "postcode",
    "date_of_birth": "birth_date",
    "soc_sec_id": "national_id",
}
SPLINK_THRESHOLD = 0.9


def _text(path: Path) -> pa.Table:
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    return table.cast(pa.schema([pa.field(n, pa.string()) for n in table.column_names]))


def prepare(name: str, work: Path, shared: Path, generated: int) -> dict:
    """Write the data set as one CSV (a source column where two files are linked) and its
    true pairs; return what the contenders need."""
    data = work / f"{name}.csv"
    if name == "febrl3":
        pacsv.write_csv(_text(shared / "febrl3.csv"), data)
        links = pacsv.read_csv(shared / "febrl3_true_links.csv").to_pylist()
        true = [(r["rec_id_1"], r["rec_id_2"]) for r in links]
        spec = {"id": "rec_id", "roles": FEBRL_ROLES, "source": None}
    elif name == "febrl4":
        parts = [
            _text(shared / f"febrl4{side}.csv").append_column("source", pa.array([side] * 5000))
            for side in ("a", "b")
        ]
        pacsv.write_csv(pa.concat_tables(parts), data)
        links = pacsv.read_csv(shared / "febrl4_true_links.csv").to_pylist()
        true = [(r["rec_id_a"], r["rec_id_b"]) for r in links]
        spec = {"id": "rec_id", "roles": FEBRL_ROLES, "source": "source"}
    elif name == "fake_1000":
        table = _text(shared / "fake_1000.csv")
        pacsv.write_csv(table.drop_columns(["cluster"]), data)
        true = _pairs_of(table["unique_id"].to_pylist(), table["cluster"].to_pylist())
        spec = {
            "id": "unique_id",
            "roles": {
                "first_name": "first_name",
                "surname": "surname",
                "dob": "birth_date",
                "city": "city",
                "email": "email",
            },
            "source": None,
        }
    else:
        from segmatch.synthetic_people import PEOPLE_ROLES, people_table  # noqa: PLC0415

        table, truth = people_table(rows=generated, duplicates=0.1, seed=11)
        pacsv.write_csv(table, data)
        true = _pairs_of(truth["id"].to_pylist(), truth["person"].to_pylist())
        spec = {"id": "id", "roles": PEOPLE_ROLES, "source": None}
    (work / f"{name}_truth.json").write_text(json.dumps(true))
    return {"name": name, "data": str(data), **spec}


def _pairs_of(ids: list, groups: list) -> list[tuple[str, str]]:
    members = defaultdict(list)
    for record, group in zip(ids, groups, strict=True):
        members[group].append(str(record))
    return [pair for m in members.values() for pair in itertools.combinations(sorted(m), 2)]


def run_segmatch(spec: dict, work: Path) -> dict:
    from segmatch.api import dedupe  # noqa: PLC0415
    from segmatch.config_loading import build_config  # noqa: PLC0415
    from segmatch.storage import read_delta  # noqa: PLC0415

    identity = {"enabled": True, "columns": spec["roles"]}
    if spec["source"]:
        identity |= {"source_column": spec["source"], "link_only": True}
    columns = [spec["id"], *spec["roles"], *([spec["source"]] if spec["source"] else [])]
    config = build_config(
        {
            "input": {
                "path": spec["data"],
                "id_column": spec["id"],
                "types": dict.fromkeys(columns, "str"),
            },
            "identity": identity,
            "output": {"path": str(work / "segmatch-out"), "report": False},
            "tracking": {"enabled": False},
        },
        source="benchmark",
    )
    result = dedupe(config)
    pairs = read_delta(work / "segmatch-out" / "pairs")
    entities = read_delta(work / "segmatch-out" / "entities")
    return {
        "pairs": list(
            zip(
                pairs[f"{spec['id']}_l"].to_pylist(),
                pairs[f"{spec['id']}_r"].to_pylist(),
                strict=True,
            )
        ),
        "probability": pairs["match_probability"].to_pylist(),
        "threshold": result.threshold,
        "scored": sum(rule["pairs"] for rule in result.blocking if rule["used"]),
        "clusters": _pairs_of(entities[spec["id"]].to_pylist(), entities["entity_id"].to_pylist()),
    }


def run_splink(spec: dict, work: Path) -> dict:
    import splink.comparison_library as cl  # noqa: PLC0415
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on  # noqa: PLC0415

    table = _text(Path(spec["data"]))
    db = DuckDBAPI()
    name = spec["name"]
    if name in ("febrl3", "febrl4"):
        comparisons = [
            cl.NameComparison("given_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison(
                "date_of_birth", input_is_string=True, datetime_format="%Y%m%d"
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
        ]
        rules = [
            block_on(c)
            for c in ("soc_sec_id", "given_name", "surname", "date_of_birth", "postcode")
        ]
        deterministic = [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth")]
        training = [block_on("date_of_birth"), block_on("postcode")]
    elif name == "fake_1000":
        comparisons = [
            cl.NameComparison("first_name"),
            cl.JaroAtThresholds("surname"),
            cl.DateOfBirthComparison("dob", input_is_string=True),
            cl.ExactMatch("city").configure(term_frequency_adjustments=True),
            cl.EmailComparison("email"),
        ]
        rules = [
            block_on("first_name", "city"),
            block_on("surname"),
            block_on("dob"),
            block_on("email"),
        ]
        deterministic = [block_on("first_name", "surname", "dob"), block_on("email")]
        training = [block_on("first_name", "surname"), block_on("dob")]
    else:
        comparisons = [
            cl.JaroWinklerAtThresholds("nome", [0.9, 0.7]),
            cl.DateOfBirthComparison(
                "nascimento", input_is_string=True, datetime_format="%d/%m/%Y"
            ),
            cl.ExactMatch("cpf"),
            cl.EmailComparison("email"),
            cl.ExactMatch("telefone"),
            cl.ExactMatch("cep"),
            cl.ExactMatch("cidade").configure(term_frequency_adjustments=True),
        ]
        rules = [block_on("cpf"), block_on("email"), block_on("nascimento"), block_on("telefone")]
        deterministic = [block_on("cpf"), block_on("email")]
        training = [block_on("nascimento"), block_on("cidade", "cep")]
    link_type = "link_only" if spec["source"] else "dedupe_only"
    settings = SettingsCreator(
        link_type=link_type,
        unique_id_column_name=spec["id"],
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=rules,
    )
    inputs = (
        [db.register(table.filter(pa.compute.equal(table["source"], s))) for s in ("a", "b")]
        if spec["source"]
        else db.register(table)
    )
    linker = Linker(inputs, settings, log_level=40)
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.9)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=2)
    for rule in training:
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    predictions = linker.inference.predict(threshold_match_probability=0.01)
    pairs = predictions.as_pyarrow_table()
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=SPLINK_THRESHOLD
    ).as_pyarrow_table()
    return {
        "pairs": list(
            zip(
                pairs[f"{spec['id']}_l"].to_pylist(),
                pairs[f"{spec['id']}_r"].to_pylist(),
                strict=True,
            )
        ),
        "probability": pairs["match_probability"].to_pylist(),
        "threshold": SPLINK_THRESHOLD,
        "scored": None,
        "clusters": _pairs_of(clusters[spec["id"]].to_pylist(), clusters["cluster_id"].to_pylist()),
    }


def score(found: dict, true: set) -> dict:
    pairs = [frozenset(map(str, p)) for p in found["pairs"]]
    probability = np.array(found["probability"], dtype=float)

    def at(threshold: float) -> tuple[float, float, float]:
        linked = {p for p, q in zip(pairs, probability, strict=True) if q >= threshold}
        hits = len(linked & true)
        precision, recall = hits / max(len(linked), 1), hits / max(len(true), 1)
        return precision, recall, 2 * precision * recall / (precision + recall) if hits else 0.0

    own = at(found["threshold"])
    best = max((at(t)[2], t) for t in np.round(np.arange(0.01, 1.0, 0.01), 2))
    clusters = {frozenset(map(str, p)) for p in found["clusters"]}
    hits = len(clusters & true)
    cluster_f1 = 2 * hits / (len(clusters) + len(true)) if hits else 0.0
    return {
        "pairs_kept": len(pairs),
        "blocking_recall": len(set(pairs) & true) / max(len(true), 1),
        "threshold": found["threshold"],
        "precision": own[0],
        "recall": own[1],
        "f1": own[2],
        "best_f1": best[0],
        "best_threshold": best[1],
        "cluster_f1": cluster_f1,
    }


def incremental(work: Path, rows: int) -> dict:
    """Batch over everyone against training on the known records and scoring the new ones;
    links against the truth; ids kept by a dedupe rerun with the new records."""
    from segmatch.api import dedupe, run_pipeline, score_customers  # noqa: PLC0415
    from segmatch.config_loading import build_config  # noqa: PLC0415
    from segmatch.storage import read_delta  # noqa: PLC0415
    from segmatch.synthetic_people import PEOPLE_ROLES, people_with_behaviour  # noqa: PLC0415

    table, truth = people_with_behaviour(rows=rows, duplicates=0.1, seed=21)
    known_rows = round(rows / 1.1)
    paths = {"everyone": table, "known": table.slice(0, known_rows), "new": table.slice(known_rows)}
    for name, part in paths.items():
        pacsv.write_csv(part, work / f"{name}.csv")
    text = dict.fromkeys(["id", "cpf", "telefone", "cep", "nascimento"], "str")

    def config(data: str, out: str, segment: bool = True) -> object:
        raw = {
            "input": {"path": str(work / f"{data}.csv"), "id_column": "id", "types": text},
            "identity": {"enabled": True, "columns": PEOPLE_ROLES},
            "output": {"path": str(work / out), "report": False},
            "tracking": {"enabled": False},
        }
        if segment:
            raw |= {
                "features": {"numeric": ["gasto", "visitas"], "categorical": []},
                "lookalikes": {"enabled": False},
            }
        return build_config(raw, source="benchmark")

    started = time.perf_counter()
    run_pipeline(config("everyone", "batch"))
    batch = time.perf_counter() - started
    run_pipeline(config("known", "trained"))
    started = time.perf_counter()
    scored = score_customers(work / "trained", work / "new.csv", work / "scored")
    scoring = time.perf_counter() - started
    linking = next(s.seconds for s in scored.stages if s.stage == "identity")
    person = dict(zip(truth["id"].to_pylist(), truth["person"].to_pylist(), strict=True))
    entities = read_delta(work / "trained" / "entities")
    persons_of = defaultdict(set)
    for record, entity in zip(
        entities["id"].to_pylist(), entities["entity_id"].to_pylist(), strict=True
    ):
        persons_of[entity].add(person[record])
    links = read_delta(work / "scored" / "links").to_pylist()
    known_persons = set().union(*persons_of.values())
    of_known = [r for r in links if person[r["id"]] in known_persons]
    right = [
        r
        for r in of_known
        if not r["new_entity"] and persons_of[r["entity_id"]] == {person[r["id"]]}
    ]
    wrong = [r for r in links if not r["new_entity"] and r not in right]

    dedupe(config("known", "deduped", segment=False))
    before = read_delta(work / "deduped" / "entities")
    dedupe(config("everyone", "deduped", segment=False))
    after = read_delta(work / "deduped" / "entities")
    members_before, members_after = defaultdict(set), defaultdict(set)
    for row in before.select(["id", "entity_id"]).to_pylist():
        members_before[row["entity_id"]].add(row["id"])
    entity_after = dict(zip(after["id"].to_pylist(), after["entity_id"].to_pylist(), strict=True))
    for record, entity in entity_after.items():
        members_after[entity].add(record)
    unchanged = [
        e for e, m in members_before.items() if members_after[entity_after[next(iter(m))]] == m
    ]
    return {
        "records": rows,
        "new_records": rows - known_rows,
        "batch_seconds": batch,
        "scoring_seconds": scoring,
        "linking_seconds": linking,
        "new_of_known_people": len(of_known),
        "linked_right": len(right),
        "linked_wrong": len(wrong),
        "unchanged_entities": len(unchanged),
        "changed_ids_of_unchanged": sum(
            entity_after[next(iter(members_before[e]))] != e for e in unchanged
        ),
    }


def contender_main(argv: list[str]) -> None:
    """Run one contender on one prepared data set; print its figures as JSON."""
    contender, spec_path, work = argv
    spec = json.loads(Path(spec_path).read_text())
    started = time.perf_counter()
    found = (run_segmatch if contender == "segmatch" else run_splink)(spec, Path(work))
    seconds = time.perf_counter() - started
    true = {
        frozenset(p)
        for p in json.loads((Path(work).parent / f"{spec['name']}_truth.json").read_text())
    }
    figures = score(found, true)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "contender": contender,
                "data": spec["name"],
                "seconds": seconds,
                "peak_mib": peak,
                **figures,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--generated", type=int, default=50_000)
    parser.add_argument("--sets", default="febrl3,febrl4,fake_1000,generated,incremental")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    rows = []
    added: dict | None = None
    with tempfile.TemporaryDirectory(prefix="segmatch-identity-") as folder:
        work = Path(folder)
        for name in args.sets.split(","):
            if name == "incremental":
                place = work / "incremental"
                place.mkdir()
                done = subprocess.run(
                    [sys.executable, "-m", "benchmarks.identity", "--incremental",
                     str(args.generated), str(place)],
                    cwd=ROOT, capture_output=True, text=True, check=False,
                )  # fmt: skip
                if done.returncode != 0:
                    raise SystemExit(f"incremental failed:\n{done.stderr[-3000:]}")
                added = json.loads(done.stdout.strip().splitlines()[-1])
                print(_incremental_line(added), flush=True)
                continue
            spec = prepare(name, work, args.shared, args.generated)
            spec_path = work / f"{name}.json"
            spec_path.write_text(json.dumps(spec))
            for contender in ("segmatch", "splink"):
                place = work / f"{name}-{contender}"
                place.mkdir()
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.identity",
                        "--contender",
                        contender,
                        str(spec_path),
                        str(place),
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    raise SystemExit(f"{contender} on {name} failed:\n{done.stderr[-3000:]}")
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(_line(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    (args.out / f"identity-{stamp}.json").write_text(
        json.dumps({"pairs": rows, "incremental": added}, indent=1)
    )
    table: list[str] = []
    if rows:
        table += [
            "| data | contender | seconds | peak MiB | pairs kept | blocking recall | P | R | "
            "F1 at its threshold | best F1 | cluster F1 |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(_line(r) for r in rows),
            "",
        ]
    if added:
        table += [INCREMENTAL_HEADER, "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        table.append(_incremental_line(added))
    (args.out / f"identity-{stamp}.md").write_text("\n".join(table) + "\n")


INCREMENTAL_HEADER = (
    "| records (+10% new) | batch s | score new s | of which linking s | new of known people | "
    "linked right | linked wrong | ids changed, unchanged entities |"
)


def _incremental_line(r: dict) -> str:
    return (
        f"| {r['records']:,} (+{r['new_records']:,}) | {r['batch_seconds']:.1f} | "
        f"{r['scoring_seconds']:.1f} ({r['scoring_seconds'] / r['batch_seconds']:.0%}) | "
        f"{r['linking_seconds']:.1f} | {r['new_of_known_people']:,} | {r['linked_right']:,} | "
        f"{r['linked_wrong']:,} | {r['changed_ids_of_unchanged']} of {r['unchanged_entities']:,} |"
    )


def _line(r: dict) -> str:
    return (
        f"| {r['data']} | {r['contender']} | {r['seconds']:.1f} | {r['peak_mib']:.0f} | "
        f"{r['pairs_kept']:,} | "
        f"{r['blocking_recall']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} | "
        f"{r['f1']:.4f} (at {r['threshold']:.2f}) | {r['best_f1']:.4f} | {r['cluster_f1']:.4f} |"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--contender":
        contender_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--incremental":
        print(json.dumps(incremental(Path(sys.argv[3]), int(sys.argv[2]))))
    else:
        main()
