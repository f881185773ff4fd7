"""The model overview as text lines (the CLI), a JSON document (scripts) and an HTML page (the app's figures)."""

import html
import json
import math
from typing import Any

import numpy as np

from noether.explorer.model_overview import DepthTable, HeadChoice, ModelOverview, call_table
from noether.explorer.views_heads import head_label


def _number(value: float) -> float | None:
    """JSON has no NaN: a missing cell (a call without that group or pair) is null."""
    return None if not math.isfinite(value) else round(float(value), 6)


def _table(table: DepthTable) -> dict[str, Any]:
    return {
        "calls": table.layers,
        "columns": table.columns,
        "values": [[_number(v) for v in row] for row in table.values],
    }


def overview_document(overview: ModelOverview, head: HeadChoice = "mean") -> dict[str, Any]:
    """Every number the overview shows, for one head or the head mean; missing cells are null."""
    return {
        "head": head,
        "top_k": overview.top_k,
        "top_k_rows_per_group": overview.top_k_rows,
        "top_k_note": overview.top_k_note,
        "calls": call_table(overview),
        "attention_mass": _table(overview.mass_table(head)),
        "mean_entropy_nats": _table(overview.row_stat_table("entropy", head)),
        "top_k_mass": _table(overview.row_stat_table("top_k_mass", head)),
        "top_k_mass_standard_error": _table(overview.top_k_error_table(head)),
        "notes": overview.notes,
    }


def overview_json(overview: ModelOverview, head: HeadChoice = "mean") -> str:
    return json.dumps(overview_document(overview, head), indent=2, allow_nan=False) + "\n"


def overview_html(overview: ModelOverview, head: HeadChoice = "mean") -> str:
    """One self-contained page: the calls diagram, the mass by depth, entropy and top-k mass over depth."""
    from noether.explorer.overview_figures import calls_diagram, head_figures

    figures = [calls_diagram(overview), *head_figures(overview, head)]
    parts = [figures[0].to_html(include_plotlyjs=True, full_html=False)]
    parts += [figure.to_html(include_plotlyjs=False, full_html=False) for figure in figures[1:]]
    notes = "".join(f"<p>{html.escape(note)}</p>" for note in [overview.top_k_note, *overview.notes])
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Model overview</title></head><body>"
        + "".join(parts)
        + notes
        + "</body></html>\n"
    )


def _top_k_text(value: float, error: float) -> str:
    if not np.isfinite(value):
        return "top-k not computed"
    return f"top-k {value:.4f}" + (" (exact)" if error == 0 else f" ± {error:.2g}")


def overview_lines(overview: ModelOverview, head: HeadChoice = "mean") -> list[str]:
    """The call table, then per call the attention mass of each attended pair and the per-group statistics."""
    lines = [f"{'#':>3}  {'call':<60} {'kind':<22} {'pairs':>13} {'GFLOP':>8} {'entropy':>8}  verified"]
    for number, row in enumerate(call_table(overview)):
        lines.append(
            f"{number:>3}  {row['call']!s:<60} {row['kind']!s:<22} {row['attended pairs']:>13,} "
            f"{row['attention GFLOP']:>8.3f} {row['mean entropy (nats)']:>8.4f}  {row['verified max diff']}"
        )
    mass = overview.mass_table(head)
    entropy = overview.row_stat_table("entropy", head)
    top = overview.row_stat_table("top_k_mass", head)
    errors = overview.top_k_error_table(head)
    label = head_label(head)
    lines.append(f"attention mass by query group → key group ({label}):")
    for number, call in enumerate(mass.layers):
        cells = [
            f"{name} {value:.3f}"
            for name, value in zip(mass.columns, mass.values[number], strict=True)
            if np.isfinite(value)
        ]
        lines.append(f"{number:>3}  {call}: " + ("; ".join(cells) if cells else "(no head of that number)"))
    lines.append(f"entropy (nats) and top-{overview.top_k} mass ± standard error per query group ({label}):")
    for number, call in enumerate(entropy.layers):
        cells = [
            f"{name} {entropy.values[number, j]:.3f} nats, "
            + _top_k_text(top.values[number, j], errors.values[number, j])
            for j, name in enumerate(entropy.columns)
            if np.isfinite(entropy.values[number, j])
        ]
        lines.append(f"{number:>3}  {call}: " + ("; ".join(cells) if cells else "(no head of that number)"))
    lines.append(overview.top_k_note)
    lines += [f"note: {note}" for note in overview.notes]
    return lines
