"""Pooled maps of the views: re-pooling, axes with group labels, shared colour ranges, and map specs ready to draw."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.masks import GroupMask, group_mask, pooled_mask
from noether.explorer.scenario import Scenario
from noether.explorer.views_heads import HeadChoice, HeadOption, Pooling, head_label
from noether.explorer.weights import WeightResult


def _pool_axis(values: np.ndarray, axis: int, multiple: int, reduce: np.ufunc) -> np.ndarray:
    """Reduce runs of ``multiple`` bins along ``axis`` (the last run may be shorter).

    As ``multiple`` strided slices folded into the first: numpy's reductions over a short axis (and ``reduceat``
    along rows) take several times longer for the same arithmetic.
    """
    if multiple == 1:
        return values
    moved = np.moveaxis(values, axis, 0)
    out = moved[::multiple].copy()
    for k in range(1, multiple):
        part = moved[k::multiple]
        reduce(out[: len(part)], part, out=out[: len(part)])
    return np.moveaxis(out, 0, axis)


def repool(
    values: np.ndarray,
    rows: PoolGrid,
    cols: PoolGrid,
    target_rows: PoolGrid,
    target_cols: PoolGrid,
    pooling: Pooling,
    *,
    overwrite: bool = False,
) -> np.ndarray:
    """Re-pool a pooled map onto coarser grids (factors multiples of the current ones); exact for mean and max.

    One axis at a time, rows first, in numpy: a re-draw reads the full-size map once and then only the row-pooled
    map, on the calling thread, so that it never waits for a torch worker thread that other load on the machine
    has descheduled. ``overwrite`` lets mean pooling weight ``values`` in place (a copy the caller owns), so that
    no second full-size map is allocated.
    """
    if target_rows.factor == rows.factor and target_cols.factor == cols.factor:
        return values
    row_multiple, col_multiple = target_rows.factor // rows.factor, target_cols.factor // cols.factor
    if pooling == "max":
        return _pool_axis(_pool_axis(values, 0, row_multiple, np.maximum), 1, col_multiple, np.maximum)
    # A mean bin's weight is its token count, so that a short last bin counts for what it holds.
    row_sizes, col_sizes = rows.bin_sizes().astype(np.float64), cols.bin_sizes().astype(np.float64)
    weighted = np.multiply(values, row_sizes[:, None], out=values if overwrite else None)
    pooled = _pool_axis(weighted, 0, row_multiple, np.add)
    pooled *= col_sizes[None, :]  # a map of its own: the weighted copy, or the pooled one
    pooled = _pool_axis(pooled, 1, col_multiple, np.add)
    pooled /= target_rows.bin_sizes().astype(np.float64)[:, None]
    pooled /= target_cols.bin_sizes().astype(np.float64)[None, :]
    return pooled


def weight_map(
    result: WeightResult, batch: int = 0, head: HeadChoice = "mean", pooling: Pooling = "mean"
) -> np.ndarray:
    """One 2-D map (row bins x column bins) of the kept weights: a head or the head average, mean or max pooled."""
    # In numpy, like the re-pooling: on the calling thread (see :func:`repool`).
    if pooling == "mean":
        maps = result.mean[batch].numpy()
        return (maps.mean(0) if head == "mean" else maps[head]).astype(np.float64)
    if head == "mean":
        if result.head_mean_max is None:
            raise ValueError("max pooling of the head average was not computed (WeightOptions.head_mean_max)")
        return result.head_mean_max[batch].numpy().astype(np.float64)
    if result.max is None:
        raise ValueError("max pooling was not computed (WeightOptions.max_pooling)")
    return result.max[batch, head].numpy().astype(np.float64)


def display_map(
    result: WeightResult, budget: int, batch: int = 0, head: HeadChoice = "mean", pooling: Pooling = "mean"
) -> tuple[np.ndarray, PoolGrid, PoolGrid]:
    """:func:`weight_map` re-pooled to at most ``budget`` bins per axis, with the grids it is drawn on."""
    rows, cols = result.rows.coarsen(budget), result.cols.coarsen(budget)
    own = weight_map(result, batch, head, pooling)
    values = repool(own, result.rows, result.cols, rows, cols, pooling, overwrite=True)
    return values, rows, cols


@dataclass(frozen=True)
class Axis:
    """Group boundaries and label positions of one axis of a pooled image, in bin units."""

    names: list[str]
    starts: list[float]
    stops: list[float]

    @property
    def centres(self) -> list[float]:
        return [(a + b) / 2 for a, b in zip(self.starts, self.stops, strict=True)]


def _clipped(names: list[str], spans: list[tuple[int, int]], grid: PoolGrid, origin: int) -> Axis:
    """Groups of an axis that starts at token ``origin`` and spans ``grid.n`` tokens (a window), in bin units."""
    kept = [
        (name, max(lo - origin, 0), min(hi - origin, grid.n))
        for name, (lo, hi) in zip(names, spans, strict=True)
        if min(hi - origin, grid.n) > max(lo - origin, 0) or (lo == hi and 0 <= lo - origin <= grid.n)
    ]
    return Axis([k[0] for k in kept], [grid.edge(k[1]) for k in kept], [grid.edge(k[2]) for k in kept])


def query_axis(layout: TokenLayout, grid: PoolGrid, origin: int = 0) -> Axis:
    groups = layout.query_groups
    spans = [(g.query_offset or 0, (g.query_offset or 0) + g.size) for g in groups]
    return _clipped([g.name for g in groups], spans, grid, origin)


def key_axis(layout: TokenLayout, grid: PoolGrid, origin: int = 0) -> Axis:
    groups = layout.key_groups
    names = [g.name + (" (cached)" if g.cached else "") for g in groups]
    return _clipped(names, [(g.key_span.start, g.key_span.stop) for g in groups], grid, origin)


def weight_maps(
    result: WeightResult, budget: int, batch: int, heads: Sequence[HeadChoice], pooling: Pooling
) -> list[tuple[np.ndarray, PoolGrid, PoolGrid]]:
    """Display maps (see :func:`display_map`) of several heads."""
    return [display_map(result, budget, batch, head, pooling) for head in heads]


def colour_range(maps: Sequence[np.ndarray], *, log: bool) -> tuple[float, float]:
    """One colour range for several maps: 0 (log: the smallest positive value) to the largest value."""
    high = max((float(np.max(m)) for m in maps if m.size), default=1.0)
    if not log:
        return 0.0, high if high > 0 else 1.0
    positives = [float(np.min(m[m > 0])) for m in maps if (m > 0).any()]
    return (min(positives) if positives else 1e-12), high if high > 0 else 1.0


def head_colour_range(result: WeightResult, batch: int, pooling: Pooling, *, log: bool) -> tuple[float, float]:
    """The colour range shared by the head mean and every head, so that switching heads keeps one scale."""
    heads: list[HeadChoice] = ["mean", *range(result.mean.shape[1])]
    return colour_range([weight_map(result, batch, head, pooling) for head in heads], log=log)


def log10_map(
    values: np.ndarray, zmin: float | None = None, zmax: float | None = None
) -> tuple[np.ndarray, float | None, float | None]:
    """A map and its colour limits in log10, for a log colour scale.

    Zeros and limits at or below zero have no logarithm: they take the map's smallest positive value or the positive
    lower limit, whichever is lower, so that a lower limit shared by several maps stays the same for each of them.
    """
    z = np.asarray(values, dtype=np.float64)
    lows = [float(z[z > 0].min())] if (z > 0).any() else []
    lows += [zmin] if zmin is not None and zmin > 0 else []
    floor = max(min(lows, default=1e-12), 1e-12)
    z = np.log10(np.maximum(z, floor))
    low = None if zmin is None else float(np.log10(max(zmin, floor)))
    high = None if zmax is None else float(np.log10(max(zmax, floor)))
    return z, low, high


def grid_note(rows: PoolGrid, cols: PoolGrid) -> str:
    """What one cell of a pooled map covers."""
    if rows.exact and cols.exact:
        return "exact: 1 cell = 1 query-key pair"
    return f"1 cell = {rows.factor:,} query x {cols.factor:,} key tokens"


def weights_title(head: HeadOption, pooling: Pooling, rows: PoolGrid, cols: PoolGrid) -> str:
    return f"Attention weights, {head_label(head)}, {pooling} pooling ({grid_note(rows, cols)})"


@dataclass(frozen=True)
class MapSpec:
    """A pooled map ready to draw, the same whether it becomes a plotly chart, an HTML page or a PNG."""

    values: np.ndarray
    rows: Axis
    cols: Axis
    grid: tuple[PoolGrid, PoolGrid]
    title: str
    colorscale: str
    colorbar_title: str
    zmin: float | None = None
    zmax: float | None = None
    log: bool = False
    blocked: np.ndarray | None = None
    """Cells whose every (query, key) pair the rules block; drawn in their own colour, apart from the scale."""


def mask_map(layout: TokenLayout, pooled: np.ndarray, rows: PoolGrid, cols: PoolGrid) -> MapSpec:
    """The token-level mask: share of attended pairs per cell, 0..1."""
    return MapSpec(
        pooled,
        query_axis(layout, rows),
        key_axis(layout, cols),
        (rows, cols),
        f"Token-level mask ({grid_note(rows, cols)}): share of attended pairs per cell",
        "Blues",
        "attended",
        0.0,
        1.0,
    )


def weights_map(
    result: WeightResult,
    layout: TokenLayout,
    budget: int,
    batch: int,
    head: HeadChoice,
    pooling: Pooling,
    *,
    log: bool = True,
    zrange: tuple[float, float] | None = None,
) -> MapSpec:
    """One head's (or the head mean's) pooled weights, re-pooled to at most ``budget`` bins per axis."""
    values, rows, cols = display_map(result, budget, batch, head, pooling)
    blocked = blocked_cells(layout, rows, cols)
    title = weights_title(head, pooling, rows, cols)
    if result.mean.shape[0] > 1:
        title += f", sample {batch}"
    if result.origin != (0, 0) or result.rows.n != layout.n_queries:
        q0, k0 = result.origin
        title += f", window queries {q0}:{q0 + rows.n} x keys {k0}:{k0 + cols.n}"
    if result.preview:
        title = f"PREVIEW ({result.sampled_rows:,} sampled query rows) — " + title
    zmin, zmax = zrange if zrange is not None else (None, None)
    return MapSpec(
        values,
        query_axis(layout, rows, result.origin[0]),
        key_axis(layout, cols, result.origin[1]),
        (rows, cols),
        title,
        "Viridis",
        "weight",
        zmin,
        zmax,
        log,
        blocked,
    )


def blocked_cells(layout: TokenLayout, rows: PoolGrid, cols: PoolGrid) -> np.ndarray:
    """Cells of a pooled map in which the rules block every (query, key) pair."""
    return pooled_mask(layout, rows, cols) == 0


@dataclass(frozen=True)
class MaskView:
    """Everything the Mask view draws, from the group structure alone (no module, no inputs)."""

    layout: TokenLayout
    groups: GroupMask
    pooled: np.ndarray
    """(row bins, column bins): share of attended (query, key) pairs in each cell."""
    rows: PoolGrid
    cols: PoolGrid


def mask_view(scenario: Scenario, budget: int) -> MaskView:
    layout = TokenLayout.from_scenario(scenario)
    rows, cols = PoolGrid.fit(layout.n_queries, budget), PoolGrid.fit(layout.n_keys, budget)
    return MaskView(layout, group_mask(layout), pooled_mask(layout, rows, cols), rows, cols)
