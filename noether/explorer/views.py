"""What the views show, as plain data: selected and re-pooled maps, tables of statistics, summaries.

The app and the command line render these; they compute nothing themselves.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from noether.explorer.cost import BackendTiming, CostSummary
from noether.explorer.guard import format_bytes, format_duration
from noether.explorer.inputs import on_input_axis
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.masks import GroupMask, group_mask, pooled_mask
from noether.explorer.problems import count as count_of
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import Scenario
from noether.explorer.weights import WeightResult, pool_dim

Pooling = Literal["mean", "max"]
HeadChoice = int | Literal["mean"]
ALL_HEADS = "all"
HeadOption = HeadChoice | Literal["all"]


def _bin_counts(rows: PoolGrid, cols: PoolGrid) -> np.ndarray:
    return np.outer(rows.bin_sizes(), cols.bin_sizes()).astype(np.float64)


def repool(
    values: np.ndarray, rows: PoolGrid, cols: PoolGrid, target_rows: PoolGrid, target_cols: PoolGrid, pooling: Pooling
) -> np.ndarray:
    """Re-pool a pooled map onto coarser grids (factors multiples of the current ones); exact for mean and max."""
    if target_rows.factor == rows.factor and target_cols.factor == cols.factor:
        return values
    how = "sum" if pooling == "mean" else "max"
    tensor = torch.as_tensor(values * _bin_counts(rows, cols) if pooling == "mean" else values)
    _, tensor = pool_dim(tensor, 0, 0, target_rows.factor // rows.factor, how)
    _, tensor = pool_dim(tensor, 1, 0, target_cols.factor // cols.factor, how)
    out = tensor.numpy()
    return out / _bin_counts(target_rows, target_cols) if pooling == "mean" else out


def weight_map(
    result: WeightResult, batch: int = 0, head: HeadChoice = "mean", pooling: Pooling = "mean"
) -> np.ndarray:
    """One 2-D map (row bins x column bins) of the kept weights: a head or the head average, mean or max pooled."""
    if pooling == "mean":
        maps = result.mean[batch]
        return (maps.mean(0) if head == "mean" else maps[head]).double().numpy()
    if head == "mean":
        if result.head_mean_max is None:
            raise ValueError("max pooling of the head average was not computed (WeightOptions.head_mean_max)")
        return result.head_mean_max[batch].double().numpy()
    if result.max is None:
        raise ValueError("max pooling was not computed (WeightOptions.max_pooling)")
    return result.max[batch, head].double().numpy()


def display_map(
    result: WeightResult, budget: int, batch: int = 0, head: HeadChoice = "mean", pooling: Pooling = "mean"
) -> tuple[np.ndarray, PoolGrid, PoolGrid]:
    """:func:`weight_map` re-pooled to at most ``budget`` bins per axis, with the grids it is drawn on."""
    rows, cols = result.rows.coarsen(budget), result.cols.coarsen(budget)
    values = repool(weight_map(result, batch, head, pooling), result.rows, result.cols, rows, cols, pooling)
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


# --------------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------------


def group_mask_table(mask: GroupMask) -> list[dict[str, object]]:
    """One row per attended block: query group, key group, sizes, pairs."""
    rows = []
    for i, query in enumerate(mask.query_names):
        for j, key in enumerate(mask.key_names):
            if mask.allowed[i, j]:
                rows.append(
                    {
                        "query group": query,
                        "query tokens": int(mask.query_sizes[i]),
                        "key group": key,
                        "key tokens": int(mask.key_sizes[j]),
                        "attended pairs": int(mask.pairs[i, j]),
                    }
                )
    return rows


def _head_slice(tensor: torch.Tensor, batch: int, head: HeadChoice) -> torch.Tensor:
    selected = tensor[batch]
    return selected.mean(0) if head == "mean" else selected[head]


def mass_matrix(result: WeightResult, batch: int = 0, head: HeadChoice = "mean") -> np.ndarray:
    """(query groups x key groups) mean attention mass a query of the row group gives each key group."""
    return _head_slice(result.group_mass, batch, head).double().numpy()


def query_group_table(
    result: WeightResult, layout: TokenLayout, batch: int = 0, head: HeadChoice = "mean"
) -> list[dict[str, object]]:
    """Per query group: keys it may attend, mean entropy (and its maximum, log of the real keys), top-k mass."""
    rows = []
    for i, group in enumerate(layout.query_groups):
        pattern = layout.pattern_of(group.name)
        keys = sum(layout.by_name[name].real_keys for name in pattern.key_value_tokens)
        row: dict[str, object] = {"query group": group.name, "tokens": group.size, "keys attended": keys}
        if result.entropy is not None and result.top_k_mass is not None:
            entropy = float(_head_slice(result.entropy, batch, head)[i])
            row["entropy (nats)"] = round(entropy, 4)
            row["max entropy"] = round(float(np.log(max(keys, 1))), 4)
            row[f"top-{result.top_k} mass"] = round(float(_head_slice(result.top_k_mass, batch, head)[i]), 4)
        rows.append(row)
    return rows


def top_keys(
    result: WeightResult, layout: TokenLayout, count: int = 20, batch: int = 0, head: HeadChoice = "mean"
) -> list[dict[str, object]]:
    """Key tokens that receive the most attention, with their group and index inside it."""
    received = _head_slice(result.received, batch, head)
    total = float(received.sum()) or 1.0
    values, columns = received.topk(min(count, received.numel()))
    rows = []
    for rank, (value, column) in enumerate(zip(values.tolist(), columns.tolist(), strict=True), start=1):
        group, index = layout.key_group_at(column)
        rows.append(
            {
                "rank": rank,
                "key token": column,
                "group": group.name,
                "index in group": index,
                "attention received": round(value, 4),
                "share": round(value / total, 6),
            }
        )
    return rows


def cost_table(cost: CostSummary) -> list[dict[str, str]]:
    return [
        {"quantity": "query tokens x key tokens", "value": f"{cost.n_queries:,} x {cost.key_tokens:,}"},
        {"quantity": "attended pairs (per head and sample)", "value": f"{cost.attended_pairs:,}"},
        {"quantity": "sparsity", "value": f"{cost.sparsity:.2%}"},
        {"quantity": "attention FLOPs", "value": f"{cost.attention_flops:.3g}"},
        {"quantity": "projection FLOPs", "value": f"{cost.projection_flops:.3g}"},
        {"quantity": "dense bool mask", "value": format_bytes(cost.dense_mask_bytes)},
        {"quantity": "dense float mask (SDPA on CPU)", "value": format_bytes(cost.dense_float_mask_bytes)},
        {"quantity": "per-pattern extra activations", "value": format_bytes(cost.per_pattern_bytes)},
    ]


def backend_table(timings: list[BackendTiming]) -> list[dict[str, str]]:
    """Backends with time, speed relative to per-pattern MixedAttention, and output agreement."""
    reference = next((t.seconds for t in timings if t.available and t.seconds), None)
    rows = []
    for timing in timings:
        if not timing.available or timing.seconds is None:
            rows.append(
                {"backend": timing.name, "time": "—", "vs per-pattern": "—", "max |diff|": "—", "note": timing.note}
            )
            continue
        ratio = f"{timing.seconds / reference:.2f}x" if reference else "—"
        rows.append(
            {
                "backend": timing.name,
                "time": format_duration(timing.seconds),
                "vs per-pattern": ratio,
                "max |diff|": f"{timing.max_abs_diff:.2e}",
                "note": timing.note,
            }
        )
    return rows


def scenario_summary(layout: TokenLayout, mask: GroupMask) -> str:
    """One line: groups, tokens, patterns, attended pairs and sparsity."""
    cached = sum(1 for g in layout.groups if g.cached)
    cache_text = f" ({cached} cached)" if cached else ""
    return (
        f"{count_of(len(layout.groups), 'group')}{cache_text}, {layout.n_queries:,} query x "
        f"{layout.n_key_tokens:,} key tokens, {count_of(len(layout.patterns), 'pattern')}, "
        f"{mask.total_pairs:,} attended pairs, "
        f"sparsity {1 - mask.density:.1%}"
    )


# --------------------------------------------------------------------------------------------------------------------
# Choices: heads, query tokens, key tokens
# --------------------------------------------------------------------------------------------------------------------


def head_options(num_heads: int, *, with_all: bool = False) -> list[HeadOption]:
    options: list[HeadOption] = ["mean", *range(num_heads)]
    return [*options, ALL_HEADS] if with_all and num_heads > 1 else options


def head_label(head: HeadOption) -> str:
    if head == "mean":
        return "mean over heads"
    if head == ALL_HEADS:
        return "all heads side by side"
    return f"head {head}"


def query_row(layout: TokenLayout, group: str, index: int) -> int:
    """Query-axis row of token ``index`` of input group ``group`` (index clamped into the group)."""
    found = layout.by_name[group]
    if found.query_offset is None:
        raise KeyError(f"group '{group}' is cached and has no queries")
    return found.query_offset + min(max(index, 0), max(found.size - 1, 0))


def query_token_index(layout: TokenLayout, row: int) -> int:
    """Input-axis index (the row of :func:`token_positions`) of the token at query row ``row``."""
    group, index = layout.query_group_at(row)
    return group.input_offset + index


def token_labels(layout: TokenLayout) -> list[str]:
    """Group name of every input-axis token (for colouring token positions by group)."""
    names = np.array([g.name for g in layout.groups], dtype=object)
    return np.repeat(names, [g.size for g in layout.groups]).tolist()


def attended_keys(layout: TokenLayout, row: int) -> np.ndarray:
    """Bool over the key axis: the keys query row ``row`` may attend (its pattern's groups, padding excluded)."""
    group, _ = layout.query_group_at(row)
    attended = np.zeros(layout.n_keys, dtype=bool)
    for name in layout.pattern_of(group.name).key_value_tokens:
        span = layout.by_name[name].key_span
        attended[span.start : span.start + layout.by_name[name].real_keys] = True
    return attended


def on_tokens(layout: TokenLayout, key_values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Key-axis values placed on the input axis (the points of :func:`token_positions`), and which points have no
    key (a perceiver's queries: muted), or None when every point has one."""
    values = on_input_axis(layout, key_values)
    if layout.n_keys == layout.n_inputs:
        return values, None
    return values, ~on_input_axis(layout, np.ones(layout.n_keys, dtype=bool), fill=False)


# --------------------------------------------------------------------------------------------------------------------
# Per-token values of a run
# --------------------------------------------------------------------------------------------------------------------


def row_weights(run: ExplorerRun, row: int, batch: int, head: HeadChoice) -> np.ndarray:
    """Exact weights of query row ``row`` over every key: one head or the head mean."""
    return _head_slice(run.exact_row(row).double(), batch, head).numpy()


def received_weights(result: WeightResult, batch: int, head: HeadChoice) -> np.ndarray:
    """Total attention each key token receives from all queries: one head or the head mean."""
    return _head_slice(result.received.double(), batch, head).numpy()


def token_positions(run: ExplorerRun, batch: int) -> np.ndarray:
    """(input tokens, 3) positions of every group's tokens (cached ones and a perceiver's queries included) of
    batch element ``batch``."""
    return run.inputs.positions[batch].double().numpy()


# --------------------------------------------------------------------------------------------------------------------
# Maps: several heads, shared colour ranges, what a cell covers
# --------------------------------------------------------------------------------------------------------------------


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


def preview_note(result: WeightResult, layout: TokenLayout, batch: int = 0, head: HeadChoice = "mean") -> str:
    """What a preview is: how many rows were sampled, and how far its group masses may be off."""
    from noether.explorer.sampling import standard_errors

    errors = standard_errors(result, batch, head)["group_mass"]
    worst = float(np.nanmax(errors)) if np.isfinite(errors).any() else float("nan")
    return (
        f"PREVIEW from {result.sampled_rows:,} of {layout.n_queries:,} query rows, sampled per query group (every "
        f"key of a sampled row is exact). Group masses are within ±{worst:.2g} (one standard error, largest cell); "
        "max-pooled cells show the largest sampled weight. The exact pass replaces it when complete."
    )
