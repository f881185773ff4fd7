"""Pooled-map figures: heatmaps with group boundaries and names, the token-level mask, the selected query row."""

import math
from collections.abc import Iterable

import numpy as np
import plotly.graph_objects as go

from noether.explorer.figures_style import (
    BLOCKED_COLOUR,
    SELECTED_COLOUR,
    TITLE_LINE_PX,
    _label,
    _title,
    _title_lines,
    colour_scale,
)
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.views import Axis, MapSpec, log10_map, mask_map


def _boundaries(fig: go.Figure, rows: Axis | None, cols: Axis | None, extent: tuple[int, ...]) -> None:
    """Thin lines at group boundaries, all in one trace (cells are centred on integers, hence the half-bin shift).

    One shape per boundary made building and drawing grow with the square of the group count; one trace of
    segments separated by gaps costs a few numbers per boundary.
    """
    xs: list[float | None] = []
    ys: list[float | None] = []
    if cols is not None:
        for edge in sorted(set(cols.starts[1:])):
            xs += [edge - 0.5, edge - 0.5, None]
            ys += [-0.5, extent[0] - 0.5, None]
    if rows is not None:
        for edge in sorted(set(rows.starts[1:])):
            xs += [-0.5, extent[1] - 0.5, None]
            ys += [edge - 0.5, edge - 0.5, None]
    if xs:
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line={"color": "rgba(255,255,255,0.8)", "width": 1},
                hoverinfo="skip",
                showlegend=False,
                name="group boundaries",
            )
        )


MAX_AXIS_LABELS = 40
"""Group names per axis; with more groups every n-th is named so that labels stay readable."""


def _axis_ticks(axis: Axis) -> dict[str, object]:
    step = max(1, math.ceil(len(axis.names) / MAX_AXIS_LABELS))
    return {
        "tickmode": "array",
        "tickvals": [c - 0.5 for c in axis.centres[::step]],
        "ticktext": [_label(n) for n in axis.names[::step]],
    }


def _top_axis_px(cols: Axis | None) -> int:
    """Room above a heatmap for its top axis: group names, which plotly tilts when they crowd (about 3.5 px of
    height per character at 30 degrees; 4 leaves a gap), and the axis title. Plotly's own margin growth for the
    names does not count the chart title above them, so the room is reserved here."""
    longest = max((len(name) for name in cols.names), default=0) if cols is not None else 0
    return int(min(220, max(100, 40 + 4 * longest)))


def heatmap(
    values: np.ndarray,
    rows: Axis | None,
    cols: Axis | None,
    title: str,
    *,
    colorscale: str = "Viridis",
    zmin: float | None = None,
    zmax: float | None = None,
    log: bool = False,
    colorbar_title: str = "",
    row_title: str = "queries",
    col_title: str = "keys",
    blocked: np.ndarray | None = None,
) -> go.Figure:
    """A pooled matrix with group boundaries and group names on the axes; optional log10 colour scale.

    ``blocked`` marks cells the rules block entirely; they are drawn in :data:`BLOCKED_COLOUR`, not on the scale.
    """
    z = np.asarray(values, dtype=np.float64)
    blocked_cells = blocked is not None and bool(np.asarray(blocked).any())
    colorbar: dict[str, object] = {"title": {"text": colorbar_title}}
    if log:
        z, zmin, zmax = log10_map(z, zmin, zmax)
        # The colour bar spans the given range when there is one, else the data's.
        low = float(z.min()) if zmin is None else zmin
        high = float(z.max()) if zmax is None else zmax
        tickvals, ticktext = log_ticks(low, high)
        colorbar.update(tickvals=tickvals, ticktext=ticktext)
    if blocked_cells:
        z = np.where(np.asarray(blocked, dtype=bool), np.nan, z)  # gaps show the plot background: the blocked colour
    fig = go.Figure(
        go.Heatmap(
            z=z.astype(np.float32),
            colorscale=colour_scale(colorscale),
            zmin=zmin,
            zmax=zmax,
            colorbar=colorbar,
            hovertemplate="row bin %{y}, column bin %{x}<br>value %{z:.4g}<extra></extra>",
        )
    )
    _boundaries(fig, rows, cols, z.shape)
    if blocked_cells:
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={"symbol": "square", "size": 12, "color": BLOCKED_COLOUR},
                name="blocked by the rules",
                showlegend=True,
            )
        )
    # Fixed ranges: the boundary trace would otherwise make plotly pad the axes around the map.
    n_rows, n_cols = z.shape
    fig.update_yaxes(range=[n_rows - 0.5, -0.5], title=row_title, **(_axis_ticks(rows) if rows else {}))
    fig.update_xaxes(range=[-0.5, n_cols - 0.5], title=col_title, side="top", **(_axis_ticks(cols) if cols else {}))
    fig.update_layout(
        # The x axis sits on top with its title: the chart title goes above both, in the container's margin.
        title=_title(title) | {"x": 0.01, "xanchor": "left"},
        margin={"l": 10, "r": 10, "t": _top_axis_px(cols) + TITLE_LINE_PX * _title_lines(title), "b": 10},
        height=620,
        plot_bgcolor=BLOCKED_COLOUR if blocked_cells else None,
        legend={"orientation": "h", "y": -0.02, "yanchor": "top", "x": 0, "xanchor": "left"},
        xaxis={"showgrid": False, "zeroline": False},
        yaxis={"showgrid": False, "zeroline": False},
    )
    return fig


def log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Colour-bar ticks between ``low`` and ``high`` (log10 values), labelled like 2e-3.

    Powers of ten over two decades or more; below that 1, 2 and 5 times them, then every digit, then the two ends,
    whichever first gives two ticks, so that a colour bar never shows a single number.
    """
    ticks = _ticks_at(low, high, (1,) if high - low >= 2 else (1, 2, 5))
    if len(ticks) < 2:
        ticks = _ticks_at(low, high, range(1, 10))
    if len(ticks) < 2:
        ticks = [(value, f"{10**value:.2g}") for value in (low, high)]
    return [value for value, _ in ticks], [text for _, text in ticks]


def _ticks_at(low: float, high: float, mantissas: Iterable[int]) -> list[tuple[float, str]]:
    steps = tuple(mantissas)
    return [
        (decade + math.log10(m), f"{m}e{decade}")
        for decade in range(math.floor(low), math.ceil(high) + 1)
        for m in steps
        if low - 1e-9 <= decade + math.log10(m) <= high + 1e-9
    ]


def map_figure(spec: MapSpec) -> go.Figure:
    """A :class:`MapSpec` as an interactive heatmap."""
    return heatmap(
        spec.values,
        spec.rows,
        spec.cols,
        spec.title,
        colorscale=spec.colorscale,
        zmin=spec.zmin,
        zmax=spec.zmax,
        log=spec.log,
        colorbar_title=spec.colorbar_title,
        blocked=spec.blocked,
    )


def mask_figure(layout: TokenLayout, pooled: np.ndarray, rows: PoolGrid, cols: PoolGrid) -> go.Figure:
    """The token-level mask, sent as whole percents (one byte per cell instead of four)."""
    fig = map_figure(mask_map(layout, pooled, rows, cols))
    fig.update_traces(
        z=attended_percent(pooled),
        zmin=0,
        zmax=100,
        colorbar={"title": {"text": "attended %"}, "tickvals": [0, 25, 50, 75, 100]},
        hovertemplate="row bin %{y}, column bin %{x}<br>%{z}% of pairs attended<extra></extra>",
        selector={"type": "heatmap"},
    )
    return fig


def attended_percent(shares: np.ndarray) -> np.ndarray:
    """Shares 0..1 as whole percents, never rounded to a wrong extreme: a cell with any attended pair shows at least
    1 %, a cell with any blocked pair at most 99 %."""
    shares = np.asarray(shares, dtype=np.float64)
    percent = np.rint(shares * 100)
    percent = np.where((shares > 0) & (percent < 1), 1, percent)
    percent = np.where((shares < 1) & (percent > 99), 99, percent)
    return percent.astype(np.uint8)


def mark_query_row(fig: go.Figure, row_bin: int, columns: int) -> go.Figure:
    """Outline the pooled row that holds the selected query token."""
    fig.add_shape(
        type="rect",
        x0=-0.5,
        x1=columns - 0.5,
        y0=row_bin - 0.5,
        y1=row_bin + 0.5,
        line={"color": SELECTED_COLOUR, "width": 1.5},
    )
    return fig


def add_box_layer(fig: go.Figure, shape: tuple[int, int]) -> go.Figure:
    """Four invisible, unhoverable points on the corner cells of a map of ``shape`` (rows, columns) cells.

    Plotly offers box select only on charts with a selectable trace, and a heatmap is not one; with this layer the
    box is drawn and reported with its corners, which are what counts (:func:`noether.explorer.picking.window_of_box`).
    Only four points, because every point inside a box is sent back to the server with the selection.
    """
    last_row, last_col = max(shape[0] - 1, 0), max(shape[1] - 1, 0)
    fig.add_trace(
        go.Scatter(
            x=[0, last_col, 0, last_col],
            y=[0, 0, last_row, last_row],
            mode="markers",
            marker={"size": 1, "opacity": 0},
            hoverinfo="skip",
            showlegend=False,
            name="box select",
        )
    )
    return fig
