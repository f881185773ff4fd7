"""Picking by pointing: which token a click on a 2-D view of the geometry means, and which token window a box drawn
on a pooled map means.

Pure functions over the selection that Streamlit's ``st.plotly_chart(..., on_select=...)`` keeps in its widget state
(Streamlit 1.67, ``PlotlySelectionState``)::

    {"selection": {"points": [{"curve_number": 0, "point_index": 12, "x": ..., "y": ..., "customdata": ...}, ...],
                   "point_indices": [12, ...],
                   "box": [{"xref": "x", "yref": "y", "x": [x0, x1], "y": [y0, y1]}, ...],
                   "lasso": [...]}}

Plotly cannot select points of 3-D scatter plots nor cells of heatmaps, so a click picks from a 2-D projection of
the candidate tokens, and a box on a heatmap is read from its corners (the map carries an invisible layer of points
so that plotly offers box select at all).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from noether.explorer.layout import PoolGrid
from noether.explorer.window import Window

MAX_PICK_POINTS = 6000
"""Points drawn for picking, all groups together: enough to click anywhere on the geometry, small enough to send."""
PLANES: dict[str, tuple[int, int]] = {"x – y (top)": (0, 1), "x – z (side)": (0, 2), "y – z (front)": (1, 2)}
"""The projections offered for picking: two coordinate axes each."""
AXIS_NAMES = "xyz"


@dataclass(frozen=True)
class PickLayout:
    """Which tokens the picking chart draws: trace ``i`` holds tokens ``shown[i]`` (sorted) of group ``groups[i]``."""

    groups: tuple[str, ...]
    sizes: tuple[int, ...]
    shown: tuple[np.ndarray, ...]

    @property
    def points(self) -> int:
        return sum(len(s) for s in self.shown)


def share_budget(sizes: Sequence[int], budget: int) -> list[int]:
    """Points per group within ``budget``: small groups are drawn whole, the rest share what is left equally.

    Water-filling, so that a group of 500 anchors next to 100,000 surface points keeps all its points.
    """
    counts = [0] * len(sizes)
    left, open_groups = max(budget, 0), sorted(range(len(sizes)), key=lambda i: sizes[i])
    while open_groups:
        fair = left // len(open_groups)
        index = open_groups[0]
        if sizes[index] <= fair:
            counts[index] = sizes[index]
            left -= sizes[index]
            open_groups.pop(0)
            continue
        for index in open_groups:
            counts[index] = fair
        break
    return counts


def shown_tokens(size: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct token indices of a group of ``size``, sorted; the same for the same arguments.

    Random rather than strided, so that a grid-ordered point cloud does not show as stripes.
    """
    if count >= size:
        return np.arange(size, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(size, count, replace=False)).astype(np.int64)


def pick_layout(sizes: Mapping[str, int], budget: int = MAX_PICK_POINTS, seed: int = 0) -> PickLayout:
    """The tokens to draw for picking among ``sizes`` (group -> tokens), at most ``budget`` points in all."""
    names = tuple(sizes)
    counts = share_budget([sizes[n] for n in names], budget)
    shown = tuple(shown_tokens(sizes[n], c, seed + i) for i, (n, c) in enumerate(zip(names, counts, strict=True)))
    return PickLayout(names, tuple(sizes[n] for n in names), shown)


def project(points: np.ndarray, plane: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The two coordinates of ``plane`` (axis numbers) of (n, 3) points."""
    return points[:, plane[0]], points[:, plane[1]]


def _selection(state: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The ``selection`` part of a chart's widget state (an empty one for None or a malformed state)."""
    if not isinstance(state, Mapping):
        return {}
    selection = state.get("selection", state)
    return selection if isinstance(selection, Mapping) else {}


def token_of_point(layout: PickLayout, curve: int, point: int) -> tuple[str, int] | None:
    """(group, token index) of point ``point`` of trace ``curve``; None for a trace or point the layout lacks."""
    if not 0 <= curve < len(layout.groups) or not 0 <= point < len(layout.shown[curve]):
        return None
    return layout.groups[curve], int(layout.shown[curve][point])


def picked_token(state: Mapping[str, Any] | None, layout: PickLayout) -> tuple[str, int] | None:
    """The token a click picked: the last selected point that belongs to a group trace of ``layout``.

    Other traces (the marker of the current choice) are not picks, and neither is an empty selection.
    """
    for point in reversed(list(_selection(state).get("points") or [])):
        if not isinstance(point, Mapping):
            continue
        curve, index = point.get("curve_number"), point.get("point_index", point.get("point_number"))
        if isinstance(curve, int) and isinstance(index, int):
            token = token_of_point(layout, curve, index)
            if token is not None:
                return token
    return None


def _bins(lo: float, hi: float, grid: PoolGrid) -> tuple[int, int] | None:
    """The bins (first, last) whose centres (at integers) lie in [lo, hi]; when none does (a box narrower than a
    cell, or reaching onto the map by less than half a cell), the bin under the middle of the box's part on the map.
    None when the box misses the axis."""
    lo, hi = min(lo, hi), max(lo, hi)
    edge = grid.bins - 0.5
    if grid.bins == 0 or hi < -0.5 or lo > edge:
        return None
    first, last = max(math.ceil(lo), 0), min(math.floor(hi), grid.bins - 1)
    if first > last:
        middle = (max(lo, -0.5) + min(hi, edge)) / 2
        first = last = min(max(round(middle), 0), grid.bins - 1)
    return first, last


def window_of_box(
    state: Mapping[str, Any] | None, grid: tuple[PoolGrid, PoolGrid], origin: tuple[int, int] = (0, 0)
) -> Window | None:
    """The token window of the last box drawn on a pooled map (query bins on y, key bins on x, cells centred on
    integers), clamped to the map; every token of every covered bin is in it. None without a usable box."""
    boxes = [b for b in _selection(state).get("box") or [] if isinstance(b, Mapping)]
    if not boxes:
        return None
    box = boxes[-1]
    xs, ys = box.get("x"), box.get("y")
    if not (isinstance(xs, Sequence) and isinstance(ys, Sequence) and len(xs) >= 2 and len(ys) >= 2):
        return None
    try:
        x0, x1, y0, y1 = (float(v) for v in (xs[0], xs[-1], ys[0], ys[-1]))
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x0, x1, y0, y1)):
        return None
    rows, cols = grid
    row_bins, col_bins = _bins(y0, y1, rows), _bins(x0, x1, cols)
    if row_bins is None or col_bins is None:
        return None
    q0, k0 = origin
    return Window(
        q0 + row_bins[0] * rows.factor,
        q0 + min((row_bins[1] + 1) * rows.factor, rows.n),
        k0 + col_bins[0] * cols.factor,
        k0 + min((col_bins[1] + 1) * cols.factor, cols.n),
    )
