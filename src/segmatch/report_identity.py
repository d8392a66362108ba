"""The report's identity section: what the linkage model weighs, the threshold, the entities'
sizes, the blocking, and a sample of links and near misses with their weights."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from segmatch.charts import HorizontalBar, bar_chart, horizontal_bars
from segmatch.report_parts import PALETTE, table


def identity_section(identity: dict[str, Any], sample: pa.Table | None) -> str:
    """The section's body for a run's ``identity`` summary and its pairs sample."""
    figures = [
        ["records", f"{identity['records']:,}"],
        ["entities", f"{identity['entities']:,}"],
        ["linked pairs", f"{identity['linked_pairs']:,}"],
        ["threshold (match probability)", f"{identity['threshold']:.2f}"],
        ["precision the model expects", f"{identity['expected_precision']:.3f}"],
        ["recall the model expects", f"{identity['expected_recall']:.3f}"],
        ["blocking recall (estimated)", f"{identity['estimated_blocking_recall']:.3f}"],
        ["links refused by the chain guard", f"{identity['refused_links']:,}"],
    ]
    parts = [table(["", ""], figures, header=False), _weights(identity["model"])]
    parts.append(_sizes(identity["size_histogram"]))
    rules = [
        [
            " + ".join(rule["columns"]),
            f"{rule['pairs']:,}",
            f"{rule['largest_block']:,}",
            f"{rule['capped_keys']:,}",
            "used" if rule["used"] else f"left out: {rule['why_not']}",
        ]
        for rule in identity["blocking"]
    ]
    parts.append("<h3>Blocking rules</h3>")
    parts.append(table(["rule", "comparisons", "largest block", "keys capped", ""], rules))
    if sample is not None and sample.num_rows:
        parts.append(_sample(sample))
    return "".join(parts)


def _weights(model: dict[str, Any]) -> str:
    """Per compared column, the match weight of its closest agreement and of disagreement:
    how much one field moves the odds that two records are one person."""
    names, agree, disagree = [], [], []
    for comparison in model.get("comparisons", []):
        levels = [
            level
            for level in comparison.get("comparison_levels", [])
            if not level.get("is_null_level") and "m_probability" in level
        ]
        if not levels:
            continue
        names.append(comparison.get("output_column_name", "?"))
        agree.append(_weight(levels[0]))
        disagree.append(_weight(levels[-1]))
    if not names:
        return ""
    bars = [
        HorizontalBar(row, 0.0, weight, colour, offset=offset, thickness=0.4)
        for row, pair in enumerate(zip(agree, disagree, strict=True))
        for weight, colour, offset in zip(pair, (PALETTE[2], PALETTE[3]), (-0.2, 0.2), strict=True)
    ]
    figure = horizontal_bars(
        names,
        bars,
        x_label="match weight (log2 of m / u)",
        gid="weights",
        legend_entries=[("s", PALETTE[2], "agree"), ("s", PALETTE[3], "disagree")],
        zero_line=True,
    )
    return "<h3>What each field weighs</h3>" + figure


def _weight(level: dict[str, Any]) -> float:
    m, u = level.get("m_probability"), level.get("u_probability")
    if not m or not u:
        return 0.0
    return math.log2(m / u)


def _sizes(histogram: dict[str, int]) -> str:
    sizes = sorted(histogram, key=int)
    figure = bar_chart(
        sizes,
        [histogram[s] for s in sizes],
        [PALETTE[0]] * len(sizes),
        x_label="records in the entity",
        y_label="entities",
        log=True,
    )
    return "<h3>Entity sizes</h3>" + figure


def _sample(sample: pa.Table) -> str:
    weights = [c for c in sample.column_names if c.startswith("weight_") and c != "weight_prior"]
    ids = sample.column_names[:2]
    rows = [
        [
            str(row[ids[0]]),
            str(row[ids[1]]),
            f"{row['match_probability']:.3f}",
            "linked" if row["linked"] else (row["reason"] or "not linked"),
            *(f"{row[c]:+.1f}" for c in weights),
        ]
        for row in sample.to_pylist()
    ]
    header = ["record", "record", "probability", "", *(c.removeprefix("weight_") for c in weights)]
    return (
        "<h3>Links and near misses</h3><p>The weakest links and the strongest pairs left "
        "unlinked, with each field's weight.</p>" + table(header, rows, compact=True)
    )
