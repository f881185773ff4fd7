"""Figures of the model overview and the rollout: plotly for the app and HTML pages, Pillow for PNGs (no browser)."""

import io
import math
import re

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from noether.explorer.figures import GROUP_COLOURS, MAX_CLOUD_POINTS, MUTED_COLOUR, colour_scale
from noether.explorer.figures_points import scene_layout
from noether.explorer.model_overview import CallSummary, DepthTable, HeadChoice, ModelOverview
from noether.explorer.png import colour_table
from noether.explorer.views_heads import head_label

ROLLOUT_DECADES = 4.0
"""Rollout weights span orders of magnitude: colours cover this many decades below the largest weight."""
PNG_SIZE = 900


def _short(path: str, keep: int = 48) -> str:
    return path if len(path) <= keep else "…" + path[-keep + 1 :]


PAIR_ARROW = " → "
"""How a depth table's column names a query group → key group pair."""
FULL_NAME_CHARS = 60
"""Column labels keep the full group names while the widest name times the columns stays within this many
characters; past it (the demo: ten pairs of names like ``surface_queries``) they use short names, with a key."""
KEY_LINE_CHARS = 110
SHORT_WORD_CHARS = 7


def short_group_names(names: list[str]) -> dict[str, str]:
    """A short, distinct name per group: the initials of its words (``surface_queries`` -> ``SQ``), a single word up
    to its first seven letters (``queries`` stays); more letters, then a number, where two would be the same."""
    short: dict[str, str] = {}
    for name in names:
        words = [w for w in re.split(r"[_\W]+", name) if w] or [name or "?"]
        tries = [
            "".join(w[0] for w in words).upper() if len(words) > 1 else words[0][:SHORT_WORD_CHARS],
            "".join(w[:2].capitalize() for w in words),
            "".join(w[:4].capitalize() for w in words),
        ]
        taken = set(short.values())
        choice = next((c for c in tries if c not in taken), None)
        number = 2
        while choice is None:
            choice = f"{tries[0]}{number}" if f"{tries[0]}{number}" not in taken else None
            number += 1
        short[name] = choice
    return short


def pair_labels(columns: list[str]) -> tuple[list[str], str]:
    """Two-line tick labels (query over ``→ key``, read without tilt) for depth-table columns, and the key of the
    short names they use ('' when they use the full names)."""
    pairs = [tuple(c.split(PAIR_ARROW, 1)) if PAIR_ARROW in c else (c,) for c in columns]
    names = list(dict.fromkeys(name for pair in pairs for name in pair))
    if not names or max(len(n) for n in names) * len(columns) <= FULL_NAME_CHARS:
        short = {name: name for name in names}
    else:
        short = short_group_names(names)
    labels = ["<br>".join([short[pair[0]], *(f"→ {short[name]}" for name in pair[1:])]) for pair in pairs]
    key_parts = [f"{short[name]} = {name}" for name in names if short[name] != name]
    lines, line = [], ""
    for part in key_parts:
        if line and len(line) + 3 + len(part) > KEY_LINE_CHARS:
            lines.append(line)
            line = ""
        line = f"{line} · {part}" if line else part
    return labels, "<br>".join([*lines, line] if line else lines)


def mass_depth_figure(table: DepthTable, title: str) -> go.Figure:
    """Depth (rows, call order top to bottom) x (query group → key group) attention mass; blank where not attended.

    Column labels are two lines, query over key, without tilt; many long group names are shortened (the key below
    the chart spells them out, the hover gives the full pair)."""
    labels, key = pair_labels(table.columns)
    columns = np.array(table.columns, dtype=object)
    fig = go.Figure(
        go.Heatmap(
            z=table.values,
            x=list(range(len(table.columns))),
            y=[f"{i}: {_short(name)}" for i, name in enumerate(table.layers)],
            customdata=np.broadcast_to(columns, table.values.shape),
            colorscale=colour_scale("Viridis"),
            zmin=0.0,
            zmax=1.0,
            colorbar={"title": {"text": "mass"}},
            hovertemplate="%{y}<br>%{customdata}: %{z:.3f}<extra></extra>",
        )
    )
    key_px = 18 * (key.count("<br>") + 1) if key else 0
    if key:
        fig.add_annotation(
            text=key,
            xref="paper",
            yref="paper",
            x=0,
            y=0,
            yshift=-8,
            xanchor="left",
            yanchor="top",
            align="left",
            showarrow=False,
            font={"size": 12},
        )
    lines = max((label.count("<br>") + 1 for label in labels), default=1)
    fig.update_layout(
        title=title,
        height=max(320, 28 * len(table.layers) + 130 + 16 * lines + key_px),
        margin={"l": 10, "r": 10, "t": 50 + 16 * lines, "b": 10 + key_px},
        yaxis={"autorange": "reversed"},
        xaxis={
            "side": "top",
            "tickangle": 0,
            "tickmode": "array",
            "tickvals": list(range(len(labels))),
            "ticktext": labels,
        },
    )
    return fig


MAX_CALL_TICKS = 8
"""Numbered calls on the axis of a depth line chart; the hover names every call."""
LEGEND_ROW_PX = 20


def depth_lines_figure(table: DepthTable, title: str, axis_title: str, errors: DepthTable | None = None) -> go.Figure:
    """One line per column over the calls (x = call number); gaps where a call lacks the group. ``errors``: a
    standard error per cell, drawn as ±1 error bars and given in the hover (0 = exact)."""
    x = list(range(len(table.layers)))
    fig = go.Figure()
    for j, name in enumerate(table.columns):
        error_bars, spread, hover = None, None, "%{text}<br>%{y:.4g}"
        if errors is not None:
            spread = np.nan_to_num(errors.values[:, j])
            error_bars = {"type": "data", "array": spread, "visible": True, "thickness": 1.2}
            hover += " ± %{customdata:.2g}"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=table.values[:, j],
                error_y=error_bars,
                customdata=spread,
                mode="lines+markers",
                name=name,
                line={"color": GROUP_COLOURS[j % len(GROUP_COLOURS)]},
                text=table.layers,
                hovertemplate=hover + "<extra>" + name + "</extra>",
            )
        )
    # The legend goes below, one name per row: beside a half-width chart it left the calls' axis too narrow for
    # its numbers. The bottom margin holds the axis's numbers and title, then the legend.
    legend_px = LEGEND_ROW_PX * len(table.columns)
    fig.update_layout(
        title=title,
        height=280 + legend_px,
        margin={"l": 10, "r": 10, "t": 50, "b": 60 + legend_px},
        legend={"orientation": "v", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0, "xanchor": "left"},
        # Every call numbered crowded the axis into overlapping, tilted digits: at most ~8 labels.
        xaxis={
            "title": {"text": "call (in model order)"},
            "tickmode": "linear",
            "tick0": 0,
            "dtick": max(1, math.ceil(len(x) / MAX_CALL_TICKS)),
        },
        yaxis={"title": {"text": axis_title}},
    )
    return fig


def head_figures(overview: ModelOverview, head: HeadChoice = "mean") -> tuple[go.Figure, go.Figure, go.Figure]:
    """The overview's charts for one head or the head mean, as the app and the HTML page show them: attention mass
    by depth, mean entropy over depth, and top-k mass over depth with its standard errors."""
    label = head_label(head)
    return (
        mass_depth_figure(overview.mass_table(head), f"Attention mass by depth ({label})"),
        depth_lines_figure(overview.row_stat_table("entropy", head), f"Mean entropy ({label})", "nats"),
        depth_lines_figure(
            overview.row_stat_table("top_k_mass", head),
            f"Top-{overview.top_k} mass ({label})",
            "mass",
            errors=overview.top_k_error_table(head),
        ),
    )


def _call_hover(call: CallSummary) -> str:
    groups = ", ".join(f"{name} {size:,}" for name, size, _ in call.groups)
    return f"{call.path}<br>{groups}<br>{'<br>'.join(call.patterns)}"


def calls_diagram(overview: ModelOverview) -> go.Figure:
    """The calls in model order as bars of attended pairs (log axis), coloured by kind, groups and patterns on hover."""
    kinds = list(dict.fromkeys(call.kind for call in overview.calls))
    fig = go.Figure()
    for index, kind in enumerate(kinds):
        rows = [(i, call) for i, call in enumerate(overview.calls) if call.kind == kind]
        fig.add_trace(
            go.Bar(
                x=[i for i, _ in rows],
                y=[max(call.attended_pairs, 1) for _, call in rows],
                name=kind,
                marker={"color": GROUP_COLOURS[index % len(GROUP_COLOURS)]},
                hovertext=[_call_hover(call) for _, call in rows],
                hovertemplate="%{hovertext}<br>%{y:,} attended pairs<extra></extra>",
            )
        )
    fig.update_layout(
        title="Calls in model order (bar height: attended query–key pairs)",
        height=300,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        yaxis={"type": "log", "title": {"text": "attended pairs"}},
        xaxis={"title": {"text": "call"}, "tickmode": "array", "tickvals": list(range(len(overview.calls)))},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def rollout_colour(weights: np.ndarray) -> np.ndarray:
    """log10 of the weights, floored :data:`ROLLOUT_DECADES` below the largest (zeros land on the floor)."""
    top = float(weights.max()) if weights.size else 1.0
    floor = np.log10(max(top, 1e-30)) - ROLLOUT_DECADES
    return np.maximum(np.log10(np.maximum(weights, 1e-300)), floor)


def _subsample(n: int, seed: int = 0) -> np.ndarray:
    if n <= MAX_CLOUD_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_CLOUD_POINTS, replace=False))


def rollout_figure(
    xyz: np.ndarray, weights: np.ndarray, labels: list[str], title: str, marked: np.ndarray | None = None
) -> go.Figure:
    """3-D points coloured by log10 rollout weight; ``marked`` (3,) is the chosen token, drawn as a diamond."""
    keep = _subsample(len(xyz))
    unreached = keep[weights[keep] <= 0]
    keep = keep[weights[keep] > 0]
    colour = rollout_colour(weights)[keep]
    order = np.argsort(colour)  # the heaviest points last, on top
    pts, names = xyz[keep][order].astype(np.float32), np.asarray(labels)[keep][order]
    traces = []
    if len(unreached):
        grey = xyz[unreached].astype(np.float32)
        traces.append(
            go.Scatter3d(
                x=grey[:, 0],
                y=grey[:, 1],
                z=grey[:, 2],
                mode="markers",
                name="not reached",
                marker={"size": 2, "color": MUTED_COLOUR},
                hoverinfo="skip",
            )
        )
    fig = go.Figure(traces)
    fig.add_trace(
        go.Scatter3d(
            x=pts[:, 0],
            y=pts[:, 1],
            z=pts[:, 2],
            mode="markers",
            name="rollout weight",
            marker={
                "size": 2.5,
                "color": colour[order],
                "colorscale": colour_scale("Inferno"),
                "colorbar": {"title": {"text": "log10 weight"}},
            },
            text=names,
            customdata=weights[keep][order],
            hovertemplate="%{text}<br>%{customdata:.3g}<extra></extra>",
        )
    )
    if marked is not None:
        fig.add_trace(
            go.Scatter3d(
                x=[marked[0]],
                y=[marked[1]],
                z=[marked[2]],
                mode="markers",
                name="chosen token",
                marker={"size": 9, "color": "#00E5FF", "symbol": "diamond"},
            )
        )
    if len(keep) < len(xyz):
        title += f" ({len(keep):,} of {len(xyz):,} points shown)"
    fig.update_layout(
        title=title,
        height=640,
        margin={"l": 0, "r": 0, "t": 50, "b": 30},
        scene=scene_layout(xyz if marked is None else np.vstack([xyz, np.reshape(marked, (1, 3))])),
        legend={"orientation": "h", "yanchor": "top", "y": 0, "x": 0},
    )
    return fig


def _project(xyz: np.ndarray, azimuth: float = -55.0, elevation: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic view from a fixed camera: (screen x, screen y) and depth (larger = nearer)."""
    a, e = np.radians(azimuth), np.radians(elevation)
    centred = xyz - xyz.mean(0) if len(xyz) else xyz
    right = np.array([np.cos(a), np.sin(a), 0.0])
    towards = np.array([-np.sin(a) * np.cos(e), np.cos(a) * np.cos(e), np.sin(e)])
    up = np.cross(towards, right)
    return np.stack([centred @ right, centred @ up], axis=1), centred @ towards


def rollout_png(
    xyz: np.ndarray, weights: np.ndarray, title: str, marked: np.ndarray | None = None, size: int = PNG_SIZE
) -> bytes:
    """The rollout as a PNG: points projected from a fixed camera, coloured by log10 weight, heaviest on top."""
    table = colour_table("Inferno")
    keep = _subsample(len(xyz))
    xyz, weights = xyz[keep], weights[keep]
    canvas = Image.new("RGB", (size + 120, size + 60), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((10, 10), title[:140], fill="black", font=font)
    colour = rollout_colour(weights) if len(weights) else weights
    lo, hi = (float(colour.min()), float(colour.max())) if len(colour) else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    if len(xyz):
        screen, _ = _project(np.vstack([xyz, marked[None]]) if marked is not None else xyz)
        extent = np.abs(screen).max() or 1.0
        pixels = (screen / extent * (size / 2 - 20)) * np.array([1.0, -1.0]) + np.array([size / 2, size / 2 + 40])
        levels = ((colour - lo) / span * (len(table) - 1)).round().astype(np.int64)
        for i in np.argsort(colour):
            x, y = pixels[i]
            fill = tuple(int(c) for c in table[levels[i]]) if weights[i] > 0 else MUTED_COLOUR
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=fill)
        if marked is not None:
            x, y = pixels[-1]
            draw.polygon([(x, y - 8), (x + 8, y), (x, y + 8), (x - 8, y)], outline="#00B8D4", width=3)
    x0, y0, height = size + 40, 60, size - 80
    for y in range(height):
        c = table[int((1 - y / max(height - 1, 1)) * (len(table) - 1))]
        draw.line([(x0, y0 + y), (x0 + 20, y0 + y)], fill=tuple(int(v) for v in c))
    draw.text((x0 - 10, y0 - 20), "log10 weight", fill="black", font=font)
    draw.text((x0 + 24, y0), f"{hi:.2f}", fill="black", font=font)
    draw.text((x0 + 24, y0 + height - 10), f"{lo:.2f}", fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
