"""Plotly figures of the views. Inputs are already pooled, so every figure stays small at any token count."""

import html
import math
import re
from collections.abc import Iterable

import numpy as np
import plotly.graph_objects as go
from plotly.colors import get_colorscale

from noether.explorer.cost import BackendTiming
from noether.explorer.guard import format_duration
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.masks import GroupMask
from noether.explorer.titles import HALF_WIDTH_TITLE_CHARS, TITLE_CHARS, TITLE_FONT_SIZE, wrap_title
from noether.explorer.views import Axis, MapSpec, log10_map, mask_map

MAX_LINE_POINTS = 20_000
MAX_CLOUD_POINTS = 20_000
MUTED_COLOUR = "#d3d3d3"
"""Tokens outside what a view is about (keys a query may not attend)."""
SELECTED_COLOUR = "#00E5FF"
POINT_VALUE_SCALE = "YlOrRd"
"""Attention on point clouds: pale yellow for none, dark red for the most."""
GROUP_COLOURS = (
    "#4C78A8",
    "#F58518",
    "#54A24B",
    "#E45756",
    "#72B7B2",
    "#EECA3B",
    "#B279A2",
    "#FF9DA6",
    "#9D755D",
    "#BAB0AC",
)


_STREAMLIT_PLACEHOLDER = re.compile(r"^#0000[0-9a-f]{2}$", re.IGNORECASE)


def colour_scale(name: str) -> list[tuple[float, str]]:
    """Plotly's named colour scale, safe to show in Streamlit.

    Streamlit's chart theme uses #000001...#0000ff as placeholders that its front end swaps for theme colours, so
    Inferno's first stop (#000004) would draw the lowest values in lavender; a red channel of 01 looks the same.
    """
    return [
        (float(stop), "#01" + colour[3:] if _STREAMLIT_PLACEHOLDER.match(colour) else colour)
        for stop, colour in get_colorscale(name)
    ]


def _label(name: str) -> str:
    """Group names come from user files: escape them before plotly renders its HTML-like labels."""
    return html.escape(name, quote=False)


TITLE_LINE_PX = 20
"""Height of one title line at the title font size: the top margin grows by it for each extra line."""
MULTILINE_TITLE_PAD = 10
"""Plotly draws a top-anchored title of several lines about 10 px higher than one of a single line (measured in
Chromium at the title font size), which cut the first line off at the chart's top edge."""


def _title(title: str, chars: int = TITLE_CHARS) -> dict[str, object]:
    """A chart title wrapped to lines of ``chars`` characters that fit the chart (plotly never wraps one: it runs
    past the right edge), at the top of the container."""
    lines = wrap_title(title, chars)
    return {
        "text": "<br>".join(_label(line) for line in lines),
        "font": {"size": TITLE_FONT_SIZE},
        "y": 0.995,
        "yref": "container",
        "yanchor": "top",
        "pad": {"t": MULTILINE_TITLE_PAD if len(lines) > 1 else 0},
    }


def _title_lines(title: str, chars: int = TITLE_CHARS) -> int:
    return len(wrap_title(title, chars))


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


BLOCKED_COLOUR = "#8c8c8c"
"""Cells no query may attend: their own colour, outside the colour scale, so that they never pass for small weights."""


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
    for index, group in enumerate(layout.groups):
        fig.add_vrect(
            x0=group.key_offset,
            x1=group.key_offset + group.size,
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


def _markers(points: np.ndarray, name: str, marker: dict[str, object], **extra: object) -> go.Scatter3d:
    return go.Scatter3d(
        x=points[:, 0], y=points[:, 1], z=points[:, 2], mode="markers", name=name, marker=marker, **extra
    )


def point_cloud_figure(
    positions: np.ndarray,
    title: str,
    *,
    values: np.ndarray | None = None,
    labels: list[str] | None = None,
    muted: np.ndarray | None = None,
    highlight: int | None = None,
    seed: int = 0,
) -> go.Figure:
    """Points in 3-D coloured by ``values`` (e.g. attention) or by group ``labels``; subsampled for payload.

    ``muted`` (bool per point, with ``values``) draws those points in light grey instead of by value, for points the
    values do not concern (keys a query may not attend), so that the colour scale spans the others only.
    """
    n = len(positions)
    keep = np.arange(n)
    if n > MAX_CLOUD_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(n, MAX_CLOUD_POINTS, replace=False))
        title += f" ({MAX_CLOUD_POINTS:,} of {n:,} points shown)"
    pts = positions[keep].astype(np.float32)
    traces = []
    if values is not None:
        shown = np.ones(len(keep), dtype=bool) if muted is None else ~np.asarray(muted, dtype=bool)[keep]
        if not shown.all():
            traces.append(_markers(pts[~shown], "not attended", {"size": 2, "color": MUTED_COLOUR}, hoverinfo="skip"))
        marker = {
            "size": 2,
            "color": values[keep][shown].astype(np.float32),
            # Light for little attention, dark for much: on a white page a dark low end (Inferno) made the
            # least-attended points the most visible.
            "colorscale": colour_scale(POINT_VALUE_SCALE),
            "colorbar": {"title": {"text": "attention"}},
        }
        name = "tokens" if muted is None else "attended"
        traces.append(_markers(pts[shown], name, marker, hovertemplate="%{marker.color:.4g}<extra></extra>"))
    else:
        names = np.asarray(labels if labels is not None else ["tokens"] * n)[keep]
        groups = list(dict.fromkeys(names.tolist()))
        counts = {name: int((names == name).sum()) for name in groups}
        # Big groups first, so that small ones (the anchors) are drawn over them instead of hidden; the legend
        # keeps the input order.
        for name in sorted(groups, key=lambda g: -counts[g]):
            index = groups.index(name)
            colour = GROUP_COLOURS[index % len(GROUP_COLOURS)]
            size = 2 if counts[name] > len(names) / (2 * len(groups)) else 3
            marker = {"size": size, "color": colour}
            traces.append(_markers(pts[names == name], _label(name), marker, legendrank=index + 1))
    if highlight is not None:
        marker = {
            "size": 14,
            "color": SELECTED_COLOUR,
            "symbol": "diamond",
            "line": {"color": "black", "width": 2},
        }
        traces.append(_markers(positions[highlight : highlight + 1], "selected token", marker))
    fig = go.Figure(traces)
    fig.update_layout(
        title=_title(title),
        height=640,
        margin={"l": 0, "r": 0, "t": 30 + TITLE_LINE_PX * _title_lines(title), "b": 40},
        scene={"aspectmode": "data"},
        # Below the scene: on the right it would sit on the colour bar's title.
        legend={"orientation": "h", "yanchor": "top", "y": 0, "xanchor": "left", "x": 0, "itemsizing": "constant"},
    )
    return fig
