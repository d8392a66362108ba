"""What the terminal shows of a run: the summaries of a training and a scoring run, on
standard output; progress and segmatch's own lines go to standard error."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from segmatch.results import DedupeResult, RunResult, ScoringResult, plain_number_columns

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)


def optional_text(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def column_plan_line(plan: list[dict[str, str]]) -> str:
    """Roles with their columns, ignored ones grouped by reason (the full plan is in the run's
    column_plan.json)."""
    used: dict[str, list[str]] = {}
    ignored: dict[str, list[str]] = {}
    for entry in plan:
        if entry["role"] == "ignored":
            ignored.setdefault(entry["reason"], []).append(entry["column"])
        else:
            used.setdefault(entry["role"], []).append(entry["column"])
    parts = [f"{role}: {', '.join(columns)}" for role, columns in used.items()]
    parts += [f"ignored ({reason}): {', '.join(columns)}" for reason, columns in ignored.items()]
    return "columns — " + "; ".join(parts)


def _lookalikes_line(lookalikes: dict[str, Any]) -> str:
    recall = lookalikes["recall_at_k"]
    checked = (
        ""
        if recall is None
        else f", recall@{lookalikes['top_k']} {recall:.3f} against exact search"
    )
    return (
        f"lookalikes: top {lookalikes['top_k']} per customer, searched in {lookalikes['cells']:,} "
        f"cells (largest {lookalikes['largest_cell']:,} customers){checked}"
    )


def show_summary(result: RunResult) -> None:
    """Print segments, the k sweep, stage times, data quality and where outputs are."""
    out.print()
    out.print(
        f"[bold]segmatch run {result.run_id}[/] — {result.customers:,} customers in "
        f"[bold]{result.k}[/] segments, silhouette [bold]{result.silhouette:.3f}[/] "
        f"(exact, squared Euclidean), {result.total_seconds:.2f} s"
    )
    if result.identity:
        found = result.identity
        out.print(
            f"identity: {found['records']:,} records → {found['entities']:,} entities "
            f"({found['linked_pairs']:,} linked pairs at {found['threshold']:.2f}; the model "
            f"expects precision {found['expected_precision']:.3f}, recall "
            f"{found['expected_recall']:.3f})"
        )
    moved = (
        f"; {result.moved_customers:,} customers changed segment since the last run"
        if result.transitions is not None
        else ""
    )
    if result.mlflow_run_id:
        # The run id above names the run everywhere (tables, run folder, MLflow run name);
        # MLflow's own id is shown for its UI. Every command takes either.
        out.print(
            f"model {result.config.tracking.model_name} version {result.model_version} "
            f"(MLflow run {result.mlflow_run_id}, named {result.run_id}){moved}",
            soft_wrap=True,
        )
    elif moved:
        out.print(moved.removeprefix("; "))
    out.print(column_plan_line(result.column_plan), soft_wrap=True)
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {warning}")
    out.print(_segments_table(result))
    if result.lookalikes:
        out.print(_lookalikes_line(result.lookalikes))
    if result.candidates:
        out.print(_sweep_table(result))
    out.print(_stages_table(result))
    out.print(_quality_table(result))
    outputs = Table(title="Outputs", show_header=False, title_justify="left")
    for name, path in result.outputs.items():
        version = result.table_versions.get(name)
        outputs.add_row(name, str(path), "" if version is None else f"Delta version {version}")
    out.print(outputs)


def show_scores(result: ScoringResult) -> None:
    """Per segment: new customers, share, median confidence, how many are unlike training."""
    out.print()
    out.print(
        f"[bold]scored {result.customers:,} customers[/] ({result.quarantined:,} quarantined) in "
        f"{sum(r.seconds for r in result.stages):.2f} s"
    )
    if any(result.imputed.values()):
        cells = ", ".join(f"{c} {n:,}" for c, n in sorted(result.imputed.items()) if n)
        out.print(f"blank or non-number cells imputed with the training medians: {cells}")
    if result.linked_records or result.opened_entities:
        out.print(
            f"identity: {result.linked_records:,} records linked to known customers, "
            f"{result.opened_entities:,} new entities opened (links table: which and why)"
        )
    table = Table(title="New customers per segment", title_justify="left")
    for column in ("segment", "customers", "share", "median confidence", "unlike training"):
        table.add_column(column, justify="right")
    for row in result.segments.to_pylist():
        beyond = round((row["beyond_training_p99_mean"] or 0.0) * row["size"])
        table.add_row(
            str(row["segment"]),
            f"{row['size']:,}",
            f"{row['share']:.1%}",
            f"{row['confidence_median']:.2f}",
            f"{beyond:,}",
        )
    out.print(table)
    share = result.beyond_training_p99 / max(result.customers, 1)
    # By construction 1% of customers like the training ones lie beyond that distance.
    style = "[yellow]warning:[/] " if share > 0.05 else ""
    out.print(
        f"{style}{result.beyond_training_p99:,} new customers ({share:.1%}) are unlike the "
        "training data: farther from their segment's centre than 99% of its training customers "
        "(scores.beyond_training_p99)"
    )
    outputs = Table(title="Outputs", show_header=False, title_justify="left")
    for name, path in result.outputs.items():
        version = result.table_versions.get(name)
        outputs.add_row(name, str(path), "" if version is None else f"Delta version {version}")
    out.print(outputs)


def _segments_table(result: RunResult) -> Table:
    """Segments as columns, so a dozen features still fit a terminal."""
    profiles = result.profiles.to_pylist()
    table = Table(
        title="Segments (median of each numeric feature; most frequent levels)",
        title_justify="left",
    )
    table.add_column("")
    for row in profiles:
        table.add_column(f"segment {row['segment']}", justify="right")
    table.add_row("customers", *(f"{row['size']:,}" for row in profiles), style="bold")
    table.add_row("share", *(f"{row['share']:.1%}" for row in profiles), end_section=True)
    plain = plain_number_columns(result.column_plan)
    for name in result.model.numeric_columns:
        table.add_row(
            name, *(_number(row[f"{name}_median"], plain=name in plain) for row in profiles)
        )
    for name in result.model.categorical_levels:
        table.add_row(name, *(row[f"{name}_top"].replace("; ", "\n") for row in profiles))
    for outcome in result.outcomes:
        table.add_row(*_outcome_cells(outcome, profiles), style="italic")
    return table


def _outcome_cells(outcome: dict, profiles: list[dict]) -> list[str]:
    """An outcome's row: its share (of a level) or mean per segment, or its top levels."""
    name, column = outcome["column"], outcome["profile_column"]
    if outcome["level"] is not None:
        label = f"{name} = {outcome['level']} (outcome)"
        return [label, *(_share(row[column]) for row in profiles)]
    if column.endswith("_top"):
        return [f"{name} (outcome)", *(row[column].replace("; ", "\n") for row in profiles)]
    return [f"{name} (outcome, mean)", *(_number(row[column]) for row in profiles)]


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _sweep_table(result: RunResult) -> Table:
    table = Table(title=f"Choosing k (on {result.sweep_rows:,} customers)", title_justify="left")
    columns = ("k", "silhouette", "Calinski–Harabasz", "stability", "inertia", "smallest", "")
    for column in columns:
        table.add_column(column, justify="right" if column else "left")
    for c in result.candidates:
        mark = "← chosen" if c.k == result.k else (f"rejected: {c.rejected}" if c.rejected else "")
        table.add_row(
            str(c.k),
            f"{c.silhouette:.4f}",
            f"{c.calinski_harabasz:,.1f}",
            f"{c.stability:.2f}",
            f"{c.inertia:,.0f}",
            f"{c.smallest_share:.1%}",
            mark,
        )
    return table


def _stages_table(result: RunResult) -> Table:
    table = Table(title="Time per stage", title_justify="left")
    for column in ("stage", "seconds", "rows in", "rows out", "peak MiB"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for r in result.stages:
        table.add_row(
            r.stage,
            f"{r.seconds:.2f}",
            f"{r.rows_in:,}",
            f"{r.rows_out:,}",
            f"{r.peak_memory_mb:,.0f}",
        )
    table.add_row("total", f"{result.total_seconds:.2f}", "", "", "", style="bold")
    return table


def _quality_table(result: RunResult) -> Table:
    table = Table(title="Data quality", show_header=False, title_justify="left")
    table.add_row("rows read", f"{result.rows_in:,}")
    table.add_row("quarantined", f"{result.quarantined:,}")
    for rule, n in sorted(result.quarantined_by_rule.items()):
        table.add_row(f"  {rule}", f"{n:,}")
    trimming = "on" if result.config.clean.trim_ids else "off (clean.trim_ids)"
    table.add_row(f"ids trimmed of spaces ({trimming})", f"{result.ids_trimmed:,}")
    table.add_row("duplicate ids resolved", f"{result.duplicates:,}")
    for column, n in sorted(result.imputed.items()):
        table.add_row(f"imputed {column}", f"{n:,}")
    return table


def _number(value: float | None, *, plain: bool = False) -> str:
    if value is None:
        return "-"
    if plain:
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def show_dedupe(result: DedupeResult) -> None:
    """Records, entities, the threshold and what the model expects of it, the blocking."""
    out.print()
    out.print(
        f"[bold]{result.records:,} records → {result.entities:,} entities[/] "
        f"({result.linked_pairs:,} linked pairs of {result.scored_pairs:,} kept) in "
        f"{sum(r.seconds for r in result.stages):.2f} s"
    )
    out.print(
        f"threshold {result.threshold:.2f} ({result.threshold_chosen_by}): the model expects "
        f"precision {result.expected_precision:.3f}, recall {result.expected_recall:.3f}; "
        f"blocking recall about {result.estimated_blocking_recall:.3f}"
    )
    roles = Table(title="Compared columns", title_justify="left")
    for column in ("column", "role", "why"):
        roles.add_column(column)
    for entry in result.roles:
        roles.add_row(entry["column"], entry["role"], entry["reason"])
    out.print(roles)
    blocking = Table(title="Blocking rules", title_justify="left")
    for column in ("rule", "comparisons", "largest block", "keys capped", ""):
        blocking.add_column(column, justify="left" if column in ("rule", "") else "right")
    for rule in result.blocking:
        blocking.add_row(
            " + ".join(rule["columns"]),
            f"{rule['pairs']:,}",
            f"{rule['largest_block']:,}",
            f"{rule['capped_keys']:,}",
            "" if rule["used"] else f"left out: {rule['why_not']}",
        )
    out.print(blocking)
    if result.refused_links:
        out.print(
            f"{result.refused_links:,} links refused: they would have chained entities past "
            "identity.max_entity_size"
        )
    if result.kept_ids or result.events:
        out.print(
            f"entity ids: {result.kept_ids:,} kept from the previous run, {result.opened_ids:,} "
            f"new; {sum(e['event'] == 'merge' for e in result.events):,} merges, "
            f"{sum(e['event'] == 'split' for e in result.events):,} splits"
        )
    outputs = Table(title="Outputs", show_header=False, title_justify="left")
    for name, path in result.outputs.items():
        version = result.table_versions.get(name)
        outputs.add_row(name, str(path), "" if version is None else f"Delta version {version}")
    out.print(outputs)
