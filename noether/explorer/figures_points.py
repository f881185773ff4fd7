"""3-D point-cloud figures: tokens on the geometry coloured by a value or by group, subsampled for payload."""

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from noether.explorer.figures_style import (
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
from noether.explorer.layout import TokenLayout
from noether.explorer.picking import AXIS_NAMES, PickLayout, pick_layout, project
from noether.explorer.views_tokens import query_points

MAX_CLOUD_POINTS = 20_000
SCENE_MIN_RATIO = 0.05
"""Shortest side of the 3-D box relative to the longest, so that flat (2-D) coordinates still get a visible box."""
SCENE_CAMERA = {"eye": {"x": 0.75, "y": 0.75, "z": 0.55}, "center": {"x": 0, "y": 0, "z": -0.12}}
"""Where the camera starts: plotly's default direction, closer and a little lower, so that a box whose longest side
is 1 fills the chart's width without leaving it; aimed below the middle, where the box's near corner reaches."""


def scene_layout(points: np.ndarray) -> dict[str, object]:
    """A 3-D scene that keeps the geometry's proportions and shows all of it from plotly's default camera.

    ``aspectmode="data"`` scales the box by the data ranges without bounding its longest side, so an elongated
    cloud (a car, 4 × 2 × 1.5 m) reached past the camera's view and was cut at the left edge; an aspect ratio whose
    longest side is 1 stays inside the unit cube the default camera frames.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1)]
    spans = points.max(axis=0) - points.min(axis=0) if len(points) else np.zeros(3)
    longest = float(spans.max())
    if longest <= 0:
        return {"aspectmode": "cube"}
    ratios = np.maximum(spans / longest, SCENE_MIN_RATIO)
    return {
        "aspectmode": "manual",
        "aspectratio": {axis: float(r) for axis, r in zip("xyz", ratios, strict=True)},
        "camera": SCENE_CAMERA,
    }


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
        all_names = np.asarray(labels if labels is not None else ["tokens"] * n)
        # The declared order from every token, so that a group keeps its colour when the subsample misses another.
        order = list(dict.fromkeys(all_names.tolist()))
        names = all_names[keep]
        groups = [name for name in order if (names == name).any()]
        counts = {name: int((names == name).sum()) for name in groups}
        colours = dict(zip(order, group_colours(order), strict=True))
        # Big groups first, so that small ones (the anchors) are drawn over them instead of hidden; the legend
        # keeps the input order.
        for name in sorted(groups, key=lambda g: -counts[g]):
            index = order.index(name)
            size = 2 if counts[name] > len(names) / (2 * len(groups)) else 3
            marker = {"size": size, "color": colours[name]}
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
        scene=scene_layout(positions),
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
    order: Sequence[str] | None = None,
) -> go.Figure:
    """A 2-D view of the candidate tokens for picking by clicking: trace ``i`` is group ``layout.groups[i]`` with the
    tokens ``layout.shown[i]`` (``points[i]`` holds all of the group's (n, 3) positions), in the colour of its place
    in ``order`` (the groups' declared order; default: the trace order); the chosen token is the last trace, so that
    the group traces keep their numbers."""
    colours = group_colours(layout.groups if order is None else order, layout.groups)
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


def groups_pick_figure(
    points: Mapping[str, np.ndarray],
    order: Sequence[str],
    plane: tuple[int, int],
    chosen: tuple[str, int] | None = None,
    title: str = "",
    seed: int = 0,
) -> tuple[PickLayout, go.Figure]:
    """A picker over the groups of ``points`` (name -> the group's (n, 3) positions), and which token each drawn point
    is, to read a click with. Big groups are drawn first so that small ones (the anchors) lie on top; each group keeps
    the colour of its place in ``order`` (as in the point cloud's "group" mode), whatever the drawing order."""
    drawn = sorted(points, key=lambda name: -len(points[name]))
    picks = pick_layout({name: len(points[name]) for name in drawn}, seed=seed)
    return picks, pick_figure(picks, [points[name] for name in drawn], plane, chosen, title, order)


def query_pick_figure(
    layout: TokenLayout, positions: np.ndarray, row: int, plane: tuple[int, int], seed: int = 0
) -> tuple[PickLayout, go.Figure]:
    """The Spatial view's picker: the query tokens of every group in 2-D (``positions`` on the input axis), the token
    at query row ``row`` marked, each group in its colour of the view's "group" mode; and which token each drawn
    point is."""
    group, index = layout.query_group_at(row)
    order = [g.name for g in layout.groups]
    title = "Click a query token to pick it"
    return groups_pick_figure(query_points(layout, positions), order, plane, (group.name, index), title, seed)
