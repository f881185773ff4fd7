"""Plotly figures of the views. Inputs are already pooled, so every figure stays small at any token count.

This module holds the group-level and line/bar figures and re-exports the rest: colours and label escaping
(figures_style), pooled maps (figures_maps) and point clouds (figures_points).
"""

import numpy as np
import plotly.graph_objects as go

from noether.explorer.cost import BackendTiming
from noether.explorer.figures_maps import (
    MAX_AXIS_LABELS,
    add_box_layer,
    attended_percent,
    heatmap,
    log_ticks,
    map_figure,
    mark_query_row,
    mask_figure,
)
from noether.explorer.figures_points import (
    MAX_CLOUD_POINTS,
    groups_pick_figure,
    pick_figure,
    point_cloud_figure,
    query_pick_figure,
)
from noether.explorer.figures_style import (
    BLOCKED_COLOUR,
    GROUP_COLOURS,
    KEYLESS_COLOUR,
    MUTED_COLOUR,
    POINT_VALUE_SCALE,
    SELECTED_COLOUR,
    TITLE_LINE_PX,
    _label,
    _title,
    _title_lines,
    colour_scale,
    group_colours,
)
from noether.explorer.guard import format_duration
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.masks import GroupMask
from noether.explorer.titles import HALF_WIDTH_TITLE_CHARS, TITLE_CHARS

__all__ = [
    "BLOCKED_COLOUR",
    "GROUP_COLOURS",
    "GROUP_MASK_TITLE",
    "KEYLESS_COLOUR",
    "MAX_AXIS_LABELS",
    "MAX_BLOCK_DIAGRAM_GROUPS",
    "MAX_BLOCK_TEXT_GROUPS",
    "MAX_CLOUD_POINTS",
    "MAX_LINE_POINTS",
    "MUTED_COLOUR",
    "POINT_VALUE_SCALE",
    "SELECTED_COLOUR",
    "TITLE_LINE_PX",
    "add_box_layer",
    "attended_percent",
    "backend_figure",
    "colour_scale",
    "compact_count",
    "group_colours",
    "group_mask_figure",
    "groups_pick_figure",
    "heatmap",
    "log_ticks",
    "map_figure",
    "mark_query_row",
    "mask_figure",
    "mass_figure",
    "pick_figure",
    "point_cloud_figure",
    "query_pick_figure",
    "row_figure",
]

MAX_LINE_POINTS = 20_000


MAX_BLOCK_TEXT_GROUPS = 40
"""Above this many groups the blocks are too small for their pair counts (hover still shows them)."""
MAX_BLOCK_DIAGRAM_GROUPS = 300
"""Above this many groups the block diagram would be unreadable and heavy; the token-level mask shows the same."""


GROUP_MASK_TITLE = "Who attends to whom (attended token pairs per block)"


def compact_count(n: int) -> str:
    """A count in at most five characters ("2.1M", "205k"), for blocks too narrow for "2,097,152"."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= 10 * scale or (n >= scale and unit != "k"):
            return f"{n / scale:.3g}{unit}"
    return f"{n:,}"


def group_mask_figure(mask: GroupMask, half_width: bool = False) -> go.Figure:
    """Group x group blocks: coloured where attended, annotated with the attended pairs.

    ``half_width``: drawn in half the main column (side by side), with a shorter title line and compact counts that
    fit the narrower blocks (the hover keeps the exact count).
    """
    groups = max(len(mask.query_names), len(mask.key_names))
    if groups > MAX_BLOCK_DIAGRAM_GROUPS:
        return _note_figure(
            f"{groups:,} groups: the group-level diagram is drawn for up to {MAX_BLOCK_DIAGRAM_GROUPS}. "
            "The token-level mask shows the same structure; the table lists the attended blocks."
        )
    count = compact_count if half_width else (lambda n: f"{n:,}")
    text = [
        [count(int(p)) if a else "" for p, a in zip(row_p, row_a, strict=True)]
        for row_p, row_a in zip(mask.pairs, mask.allowed, strict=True)
    ]
    exact = [[f"{int(p):,}" for p in row] for row in mask.pairs]
    title_chars = HALF_WIDTH_TITLE_CHARS if half_width else TITLE_CHARS
    few = groups <= MAX_BLOCK_TEXT_GROUPS
    fig = go.Figure(
        go.Heatmap(
            z=mask.allowed.astype(np.uint8),
            x=[f"{_label(n)}<br>({int(s):,})" for n, s in zip(mask.key_names, mask.key_sizes, strict=True)],
            y=[f"{_label(n)} ({int(s):,})" for n, s in zip(mask.query_names, mask.query_sizes, strict=True)],
            text=text,
            customdata=exact,
            texttemplate="%{text}" if few else None,
            colorscale=[[0, "#f0f0f0"], [1, "#4C78A8"]],
            zmin=0,
            zmax=1,
            showscale=False,
            hovertemplate="%{y} attends %{x}<br>pairs %{customdata}<extra></extra>",
            xgap=2 if few else 0,
            ygap=2 if few else 0,
        )
    )
    fig.update_yaxes(autorange="reversed", title="query group (tokens)")
    fig.update_xaxes(title="key/value group (tokens)", side="top")
    if not few:
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False)
    fig.update_layout(
        # Title in the container's top margin, above the (possibly rotated) key labels and the axis title.
        title=_title(GROUP_MASK_TITLE, title_chars) | {"x": 0.01, "xanchor": "left"},
        margin={"l": 10, "r": 10, "t": 150 + TITLE_LINE_PX * _title_lines(GROUP_MASK_TITLE, title_chars), "b": 10},
        # Tall enough for the vertical axis title even with one or two query groups.
        height=max(340, 200 + 60 * len(mask.query_names)) if few else 760,
    )
    return fig


def _note_figure(text: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=_label(text), x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=120, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def mass_figure(matrix: np.ndarray, query_names: list[str], key_names: list[str], title: str) -> go.Figure:
    fig = go.Figure(
        go.Heatmap(
            z=matrix.astype(np.float32),
            x=[_label(n) for n in key_names],
            y=[_label(n) for n in query_names],
            text=np.round(matrix, 3).astype(str),
            texttemplate="%{text}",
            colorscale=colour_scale("Viridis"),
            zmin=0,
            zmax=1,
            colorbar={"title": {"text": "mass"}},
            hovertemplate="%{y} → %{x}: %{z:.4f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title="query group")
    fig.update_xaxes(title="key group", side="top")
    fig.update_layout(
        title=_title(title),
        margin={"l": 10, "r": 10, "t": 80 + TITLE_LINE_PX * _title_lines(title), "b": 10},
        height=140 + TITLE_LINE_PX * _title_lines(title) + 50 * len(query_names),
    )
    return fig


def row_figure(values: np.ndarray, layout: TokenLayout, title: str) -> go.Figure:
    """Exact weights of one query over the key axis; rows longer than MAX_LINE_POINTS are max-pooled for drawing."""
    values = np.asarray(values, dtype=np.float64)
    grid = PoolGrid.fit(len(values), MAX_LINE_POINTS)
    if not grid.exact:
        padded = np.zeros(grid.bins * grid.factor)
        padded[: len(values)] = values
        values = padded.reshape(grid.bins, grid.factor).max(axis=1)
        title += f" (drawn max-pooled, {grid.factor} keys per point)"
    x = np.arange(len(values), dtype=np.float32) * grid.factor
    fig = go.Figure(
        go.Scattergl(
            x=x,
            y=values.astype(np.float32),
            mode="lines",
            line={"width": 1},
            hovertemplate="key %{x}: %{y:.4g}<extra></extra>",
        )
    )
    for index, group in enumerate(layout.key_groups):
        fig.add_vrect(
            x0=group.key_span.start,
            x1=group.key_span.stop,
            opacity=0.08,
            line_width=0,
            fillcolor=GROUP_COLOURS[index % len(GROUP_COLOURS)],
            annotation_text=_label(group.name),
            annotation_position="top left",
        )
    fig.update_layout(
        title=_title(title),
        xaxis_title="key token",
        yaxis_title="attention weight",
        height=340 + TITLE_LINE_PX * _title_lines(title),
        margin={"l": 10, "r": 10, "t": 40 + TITLE_LINE_PX * _title_lines(title), "b": 10},
    )
    return fig


def backend_figure(timings: list[BackendTiming]) -> go.Figure:
    shown = [t for t in timings if t.available and t.seconds is not None]
    fig = go.Figure(
        go.Bar(
            x=[t.name for t in shown],
            y=[t.seconds for t in shown],
            text=[format_duration(t.seconds) for t in shown if t.seconds is not None],
            textposition="outside",
        )
    )
    fig.update_layout(
        title="Measured attention time (median)",
        yaxis_title="seconds",
        height=360,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return fig
