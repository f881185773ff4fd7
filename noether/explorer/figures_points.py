"""3-D point-cloud figures: tokens on the geometry coloured by a value or by group, subsampled for payload."""

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from noether.explorer.figures_style import (
    GROUP_COLOURS,
    MUTED_COLOUR,
    POINT_VALUE_SCALE,
    SELECTED_COLOUR,
    TITLE_LINE_PX,
    _label,
    _title,
    _title_lines,
    colour_scale,
)
from noether.explorer.layout import TokenLayout
from noether.explorer.picking import AXIS_NAMES, PickLayout, pick_layout, project
from noether.explorer.views_tokens import query_points

MAX_CLOUD_POINTS = 20_000


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
    legend: tuple[str, str] = ("attended", "not attended"),
    muted_colour: str = MUTED_COLOUR,
) -> go.Figure:
    """Points in 3-D coloured by ``values`` (e.g. attention) or by group ``labels``; subsampled for payload.

    ``muted`` (bool per point, with ``values``) draws those points in ``muted_colour`` instead of by value, for points
    the values do not concern (keys a query may not attend), so that the colour scale spans the others only;
    ``legend`` names the coloured and the muted points.
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
            traces.append(_markers(pts[~shown], legend[1], {"size": 2, "color": muted_colour}, hoverinfo="skip"))
        marker = {
            "size": 2,
            "color": values[keep][shown].astype(np.float32),
            # Light for little attention, dark for much: on a white page a dark low end (Inferno) made the
            # least-attended points the most visible.
            "colorscale": colour_scale(POINT_VALUE_SCALE),
            "colorbar": {"title": {"text": "attention"}},
        }
        name = "tokens" if muted is None else legend[0]
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


def pick_figure(
    layout: PickLayout,
    points: Sequence[np.ndarray],
    plane: tuple[int, int],
    chosen: tuple[str, int] | None = None,
    title: str = "",
    colours: Sequence[str] | None = None,
) -> go.Figure:
    """A 2-D view of the candidate tokens for picking by clicking: trace ``i`` is group ``layout.groups[i]`` with the
    tokens ``layout.shown[i]`` (``points[i]`` holds all of the group's (n, 3) positions) in ``colours[i]`` (default:
    the group colours in trace order); the chosen token is the last trace, so that the group traces keep their
    numbers."""
    if colours is None:
        colours = [GROUP_COLOURS[i % len(GROUP_COLOURS)] for i in range(len(layout.groups))]
    traces = []
    for name, shown, xyz, colour in zip(layout.groups, layout.shown, points, colours, strict=True):
        x, y = project(np.asarray(xyz)[shown], plane)
        traces.append(
            go.Scattergl(
                x=x.astype(np.float32),
                y=y.astype(np.float32),
                mode="markers",
                name=_label(name),
                marker={"size": 4, "color": colour},
                customdata=shown,
                hovertemplate=f"{_label(name)}:%{{customdata}}<extra></extra>",
            )
        )
    if chosen is not None and chosen[0] in layout.groups:
        xyz = np.asarray(points[layout.groups.index(chosen[0])])
        if 0 <= chosen[1] < len(xyz):
            x, y = project(xyz[chosen[1] : chosen[1] + 1], plane)
            traces.append(
                go.Scattergl(
                    x=x.astype(np.float32),
                    y=y.astype(np.float32),
                    mode="markers",
                    name="chosen token",
                    marker={
                        "size": 14,
                        "color": SELECTED_COLOUR,
                        "symbol": "diamond",
                        "line": {"color": "black", "width": 2},
                    },
                    hoverinfo="skip",
                )
            )
    fig = go.Figure(traces)
    shown_points, total = layout.points, sum(layout.sizes)
    if shown_points < total:
        title += f" ({shown_points:,} of {total:,} tokens drawn)"
    fig.update_layout(
        title=_title(title),
        height=440 + TITLE_LINE_PX * _title_lines(title),
        margin={"l": 10, "r": 10, "t": 30 + TITLE_LINE_PX * _title_lines(title), "b": 10},
        xaxis={"title": AXIS_NAMES[plane[0]]},
        # Equal scales: the projection keeps the geometry's proportions.
        yaxis={"title": AXIS_NAMES[plane[1]], "scaleanchor": "x", "scaleratio": 1},
        legend={"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0, "itemsizing": "constant"},
    )
    return fig


def query_pick_figure(
    layout: TokenLayout, positions: np.ndarray, row: int, plane: tuple[int, int], seed: int = 0
) -> tuple[PickLayout, go.Figure]:
    """The Spatial view's picker: the query tokens of every group in 2-D (``positions`` on the input axis), the token
    at query row ``row`` marked; and which token each drawn point is, to read a click with.

    Big groups are drawn first so that small ones (the anchors) lie on top; each group keeps its colour of the
    view's "group" mode, whatever the drawing order.
    """
    points = query_points(layout, positions)
    drawn = sorted(points, key=lambda name: -len(points[name]))
    picks = pick_layout({name: len(points[name]) for name in drawn}, seed=seed)
    colours = [GROUP_COLOURS[layout.groups.index(layout.by_name[name]) % len(GROUP_COLOURS)] for name in drawn]
    group, index = layout.query_group_at(row)
    title = "Click a query token to pick it"
    fig = pick_figure(picks, [points[name] for name in drawn], plane, (group.name, index), title, colours)
    return picks, fig
