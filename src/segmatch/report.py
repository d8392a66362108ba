"""The run report: one self-contained HTML page per run (inline SVG, no network needed).

Built from what a run stored: its summary (``runs/<run_id>/summary.json``), its lookalike
sample, and the segments and profiles tables at the versions the run wrote.
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from segmatch.charts import (
    HorizontalBar,
    Series,
    bar_chart,
    heatmap,
    horizontal_bars,
    line_chart,
    scatter,
)
from segmatch.errors import InputError
from segmatch.layout import (
    IDENTITY_SAMPLE_FILE,
    LOOKALIKE_SAMPLE_FILE,
    PROFILES_FILE,
    SCATTER_SAMPLE_FILE,
    SUMMARY_FILE,
    read_arrow,
    run_folder,
)
from segmatch.locations import Files, join
from segmatch.report_identity import identity_section
from segmatch.report_parts import PALETTE, colour, number, table
from segmatch.results import plain_number_columns

REPORT_FILE = "report.html"
#: What the report says of the two silhouettes it shows.
SILHOUETTES = (
    "the exact one uses squared Euclidean distances over every customer (as Spark's "
    "ClusteringEvaluator), the sampled one plain Euclidean distances (as scikit-learn's "
    "silhouette_score) on a sample stratified by segment, and reads lower; compare runs on "
    "the exact one"
)


def build_report(
    output: str | Path, run_id: str, *, storage_options: dict[str, str] | None = None
) -> str:
    """Write ``report.html`` for a run from its stored outputs and return its location."""
    files = Files(storage_options)
    folder = run_folder(output, run_id)
    summary_path = join(folder, SUMMARY_FILE)
    if not files.exists(summary_path):
        raise InputError(
            f"no run {run_id!r} under {str(output)!r} (expected {summary_path!r}); "
            "give the output folder of the run"
        )
    summary = json.loads(files.read_text(summary_path))
    profiles = read_arrow(join(folder, PROFILES_FILE), files=files)
    segments = read_arrow(join(folder, SCATTER_SAMPLE_FILE), files=files)
    sample_path = join(folder, LOOKALIKE_SAMPLE_FILE)
    sample = read_arrow(sample_path, files=files) if files.exists(sample_path) else None
    pairs_path = join(folder, IDENTITY_SAMPLE_FILE)
    pairs = read_arrow(pairs_path, files=files) if files.exists(pairs_path) else None
    target = join(folder, REPORT_FILE)
    files.write_text(target, _page(summary, profiles, segments, sample, pairs))
    return target


# -- the page --------------------------------------------------------------------------------
def _page(
    summary: dict,
    profiles: pa.Table,
    segments: pa.Table,
    sample: pa.Table | None,
    pairs: pa.Table | None = None,
) -> str:
    features = summary["numeric_columns"]
    rows = profiles.to_pylist()
    plain = plain_number_columns(summary.get("column_plan", []))
    sections = [
        _section("overview", "Run", _overview(summary)),
        _section("timeline", "Stage timeline", _timeline(summary["stages"])),
        _section("sweep", "Choosing k", _sweep(summary)),
        _section("sizes", "Segment sizes", _sizes(rows)),
        _section(
            "heatmap",
            "Segment profiles",
            (_heatmap(rows, features, summary.get("spread", {})) if features else "")
            + _medians(rows, features, plain)
            + _outcomes(rows, summary.get("outcomes", [])),
        ),
        _section("scatter", "Customers in PCA space", _scatter(segments, summary)),
        _section("lookalikes", "Lookalikes (a sample)", _lookalikes(sample, features, plain)),
        _section("quality", "Data quality", _quality(summary)),
        _section("columns", "Columns", _columns(summary.get("column_plan", []))),
    ]
    if summary.get("identity"):
        sections.insert(
            4,
            _section(
                "identity", "Records into entities", identity_section(summary["identity"], pairs)
            ),
        )
    if summary.get("transitions"):
        sections.append(
            _section(
                "transitions",
                "Customers that changed segment",
                _transitions(summary["transitions"]),
            )
        )
    title = f"segmatch run {summary['run_id']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body><header><h1>{html.escape(title)}</h1>
<p>{summary["customers"]:,} customers · {summary["k"]} segments · silhouette
{summary["silhouette"]:.3f} · {summary["engine"]} engine · {html.escape(summary["finished_at"])}</p>
</header><main>{"".join(sections)}</main></body></html>
"""


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _overview(summary: dict) -> str:
    items = {
        "engine": summary["engine"],
        "input": summary["input_path"],
        "rows read": f"{summary['rows_in']:,}",
        "customers": f"{summary['customers']:,}",
        "k": summary["k"],
        "silhouette (exact, squared Euclidean)": f"{summary['silhouette']:.4f}",
        "silhouette (Euclidean, stratified sample)": f"{summary['sample_silhouette']:.4f}",
        "the two silhouettes": SILHOUETTES,
        "PCA components": f"{len(summary['explained_variance'])} "
        f"({sum(summary['explained_variance']):.1%} of variance)",
        "total seconds": f"{sum(s['seconds'] for s in summary['stages']):.2f}",
        "model version": summary.get("model_version") or "-",
        "table versions": ", ".join(f"{t} v{v}" for t, v in summary["table_versions"].items()),
    }
    return table(["", ""], [[k, str(v)] for k, v in items.items()], header=False)


def _timeline(stages: list[dict]) -> str:
    starts = [datetime.fromisoformat(s["started_at"]).timestamp() for s in stages]
    origin = min(starts)
    bars = [
        HorizontalBar(
            row=i,
            start=start - origin,
            length=max(stage["seconds"], 1e-3),
            colour="#8C8C8C" if stage.get("reused") else PALETTE[0],
            note=f"{stage['seconds']:.2f} s · {stage['rows_in']:,} → {stage['rows_out']:,}",
        )
        for i, (stage, start) in enumerate(zip(stages, starts, strict=True))
    ]
    figure = horizontal_bars(
        [s["stage"] for s in stages],
        bars,
        x_label="seconds since the first stage started",
        gid="timeline",
        room_for_notes=0.35,
    )
    inside = sum(s["seconds"] for s in stages)
    span = max(start - origin + s["seconds"] for s, start in zip(stages, starts, strict=True))
    caption = (
        f"<p>The stages took {inside:.2f} s of the {span:.2f} s from the first stage's start to "
        f"the last one's end; the {max(span - inside, 0.0):.2f} s between them went to steps "
        "that are not stages (registering the model, waiting for tracking) and to writing each "
        "stage's record.</p>"
    )
    return figure + caption


def _sweep(summary: dict) -> str:
    candidates = summary["candidates"]
    if not candidates:
        return f"<p>k was fixed at {summary['k']}.</p>"
    ks = [c["k"] for c in candidates]
    rejected = [c for c in candidates if c["rejected"]]
    series = [Series("silhouette", [c["silhouette"] for c in candidates], PALETTE[0], "o")]
    if rejected:
        at_rejected = [c["silhouette"] if c["rejected"] else math.nan for c in candidates]
        series.append(Series("rejected k", at_rejected, PALETTE[3], "x", joined=False))
    series.append(
        Series("inertia", [c["inertia"] for c in candidates], PALETTE[1], "s", "5 3", right=True)
    )
    figure = line_chart(
        ks,
        series,
        x_label="k",
        left_label="silhouette",
        right_label="inertia",
        marked_x=(summary["k"], PALETTE[2], f"chosen k={summary['k']}"),
        gid="sweep",
    )
    rows = [
        [
            c["k"],
            f"{c['silhouette']:.4f}",
            _figure(c.get("calinski_harabasz"), "{:,.1f}"),
            _figure(c.get("stability"), "{:.2f}"),
            f"{c['inertia']:,.0f}",
            f"{c['smallest_share']:.1%}",
            "chosen" if c["k"] == summary["k"] else (c["rejected"] or ""),
        ]
        for c in candidates
    ]
    marks = "; ✕ marks a rejected k" if rejected else ""
    note = (
        f"<p>Swept on {summary['sweep_rows']:,} customers{marks}. k is the best silhouette "
        "among the k whose smallest segment holds cluster.min_segment_share; beside it, the "
        "Calinski–Harabasz index (higher: segments farther apart for their spread) and the "
        "stability (adjusted Rand index of two fits on halves of the rows; 1: the same "
        "segments).</p>"
    )
    header = ["k", "silhouette", "Calinski–Harabasz", "stability", "inertia", "smallest", ""]
    return figure + note + table(header, rows)


def _figure(value: float | None, form: str) -> str:
    return "-" if value is None or math.isnan(value) else form.format(value)


def _sizes(rows: list[dict]) -> str:
    return bar_chart(
        [str(r["segment"]) for r in rows],
        [r["size"] for r in rows],
        [colour(r["segment"]) for r in rows],
        x_label="segment",
        y_label="customers",
        notes=[f"{r['share']:.1%}" for r in rows],
    )


def standardised_means(
    rows: list[dict], features: list[str], customer_spread: dict[str, float]
) -> np.ndarray:
    """Each segment's mean minus the customers' mean, in standard deviations of the customers
    (not of the segment means, which would make every row ±1 at k = 2)."""
    means = np.array([[r[f"{f}_mean"] for f in features] for r in rows], dtype=float)
    sizes = np.array([r["size"] for r in rows], dtype=float)
    overall = (means * sizes[:, None]).sum(axis=0) / sizes.sum()
    spread = np.array([customer_spread.get(f, 0.0) or 0.0 for f in features], dtype=float)
    return (means - overall) / np.where(spread > 0, spread, 1.0)


def _heatmap(rows: list[dict], features: list[str], customer_spread: dict[str, float]) -> str:
    return heatmap(
        [f"segment {r['segment']}" for r in rows],
        features,
        standardised_means(rows, features, customer_spread).tolist(),
        limit=2.5,
        scale_label="segment mean − customers' mean, in customers' std. dev.",
    )


def _medians(rows: list[dict], features: list[str], plain: set[str]) -> str:
    body = [[f, *(number(r[f"{f}_median"], plain=f in plain) for r in rows)] for f in features]
    categorical = [c.removesuffix("_top") for c in (rows[0] if rows else {}) if c.endswith("_top")]
    body += [[c, *(r[f"{c}_top"] for r in rows)] for c in categorical]
    header = ["median / top levels of", *(f"segment {r['segment']}" for r in rows)]
    return "<h3>Medians and most frequent levels, in original units</h3>" + table(header, body)


def _outcomes(rows: list[dict], outcomes: list[dict]) -> str:
    """How often each outcome happened per segment (profiled, not clustered)."""
    if not outcomes:
        return ""
    body = []
    for outcome in outcomes:
        column = outcome["profile_column"]
        if outcome["level"] is not None:
            label = f"{outcome['column']} = {outcome['level']}"
            body.append([label, *(_share(r[column]) for r in rows)])
        elif column.endswith("_top"):
            body.append([outcome["column"], *(r[column] for r in rows)])
        else:
            body.append([f"{outcome['column']} (mean)", *(number(r[column]) for r in rows)])
    header = ["outcome", *(f"segment {r['segment']}" for r in rows)]
    return (
        "<h3>Outcomes per segment</h3><p>Columns that record what happened to a customer: "
        "left out of the features, so the segments do not split on them.</p>" + table(header, body)
    )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _columns(plan: list[dict]) -> str:
    body = [[entry["column"], entry["role"], entry["reason"]] for entry in plan]
    return "<p>What the run did with each input column, and why.</p>" + table(
        ["column", "role", "reason"], body
    )


def _scatter(segments: pa.Table, summary: dict) -> str:
    if "pc_2" not in segments.column_names:
        return "<p>One PCA component only: nothing to draw in two dimensions.</p>"
    sample = segments
    x, y = sample["pc_1"].to_numpy(), sample["pc_2"].to_numpy()
    labels = sample["segment"].to_numpy()
    groups = [
        (f"segment {segment}", colour(int(segment)), list(zip(x[mask], y[mask], strict=True)))
        for segment in np.unique(labels)
        for mask in [labels == segment]
    ]
    centroids = [(float(c[0]), float(c[1])) for c in summary["centroids"]]
    figure = scatter(
        groups, ("centroids", "black", centroids), x_label="PC 1", y_label="PC 2", gid="scatter"
    )
    drawn = f"{sample.num_rows:,} of {summary['customers']:,} customers drawn"
    return figure + f"<p>{drawn} (a sample stratified by segment).</p>"


def _lookalikes(sample: pa.Table | None, numeric: list[str], plain: set[str]) -> str:
    if sample is None or sample.num_rows == 0:
        return "<p>Matching was switched off for this run.</p>"
    fixed = {"customer", "rank", "lookalike_id", "similarity"}
    features = [c for c in sample.column_names if c not in fixed]
    parts = []
    # One row per lookalike, features as columns: as wide as the features, not the pairs.
    for customer in dict.fromkeys(sample["customer"].to_pylist()):
        rows = sample.filter(pa.compute.equal(sample["customer"], customer)).to_pylist()
        body = [
            [
                "customer" if r["rank"] == 0 else f"#{r['rank']}",
                str(r["lookalike_id"]),
                "" if r["rank"] == 0 else f"{r['similarity']:.3f}",
                *(number(r[f], plain=f in plain or f not in numeric) for f in features),
            ]
            for r in rows
        ]
        parts.append(table(["", "id", "similarity", *features], body, compact=True))
    return "".join(parts)


def _quality(summary: dict) -> str:
    rows = [
        ["rows read", f"{summary['rows_in']:,}"],
        ["quarantined", f"{summary['quarantined']:,}"],
    ]
    rows += [
        [f"  rule {rule}", f"{n:,}"] for rule, n in sorted(summary["quarantined_by_rule"].items())
    ]
    rows.append(["ids trimmed of spaces", f"{summary.get('ids_trimmed', 0):,}"])
    rows.append(["duplicate ids resolved", f"{summary['duplicates']:,}"])
    rows += [[f"imputed {c}", f"{n:,}"] for c, n in sorted(summary["imputed"].items())]
    return table(["", ""], rows, header=False)


def _transitions(transitions: list[dict]) -> str:
    rows = [[t["from_segment"], t["to_segment"], f"{t['customers']:,}"] for t in transitions]
    return table(["from", "to", "customers"], rows)


# -- helpers ---------------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#1f3b57;color:#fff;padding:16px 32px}header h1{margin:0;font-size:22px}
header p{margin:6px 0 0;opacity:.85}main{max-width:1100px;margin:0 auto;padding:8px 32px 48px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:8px;padding:12px 20px;margin:18px 0}
h2{font-size:17px;margin:6px 0 12px}h3{font-size:14px}figure{margin:0;overflow-x:auto}
svg{max-width:100%;height:auto}table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border-bottom:1px solid #eee;padding:4px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f5f7}
.scroll{overflow-x:auto;max-width:100%}
table.compact{font-size:11px}table.compact td,table.compact th{padding:2px 5px}
"""
