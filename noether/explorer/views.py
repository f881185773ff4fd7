"""What the views show, as plain data: selected and re-pooled maps, tables of statistics, summaries.

The app and the command line render these; they compute nothing themselves. This module holds the tables and
summaries and re-exports the rest: head choices (views_heads), pooled maps (views_maps) and per-token values
(views_tokens).
"""

import numpy as np

from noether.explorer.cost import BackendTiming, CostSummary
from noether.explorer.guard import format_bytes, format_duration
from noether.explorer.layout import TokenLayout
from noether.explorer.masks import GroupMask
from noether.explorer.problems import count as count_of
from noether.explorer.views_heads import (
    ALL_HEADS,
    HeadChoice,
    HeadOption,
    Pooling,
    head_label,
    head_options,
    head_slice,
)
from noether.explorer.views_maps import (
    Axis,
    MapSpec,
    MaskView,
    blocked_cells,
    colour_range,
    display_map,
    grid_note,
    head_colour_range,
    key_axis,
    log10_map,
    mask_map,
    mask_view,
    query_axis,
    repool,
    weight_map,
    weight_maps,
    weights_map,
    weights_title,
)
from noether.explorer.views_tokens import (
    attended_keys,
    on_tokens,
    query_points,
    query_row,
    query_token_index,
    received_weights,
    row_weights,
    token_labels,
    token_positions,
)
from noether.explorer.weights import WeightResult

__all__ = [
    "ALL_HEADS",
    "Axis",
    "HeadChoice",
    "HeadOption",
    "MapSpec",
    "MaskView",
    "Pooling",
    "attended_keys",
    "backend_table",
    "blocked_cells",
    "colour_range",
    "cost_table",
    "display_map",
    "grid_note",
    "group_mask_table",
    "head_colour_range",
    "head_label",
    "head_options",
    "key_axis",
    "log10_map",
    "mask_map",
    "mask_view",
    "mass_matrix",
    "on_tokens",
    "preview_note",
    "query_axis",
    "query_group_table",
    "query_points",
    "query_row",
    "query_token_index",
    "received_weights",
    "repool",
    "row_weights",
    "scenario_summary",
    "token_labels",
    "token_positions",
    "top_keys",
    "weight_map",
    "weight_maps",
    "weights_map",
    "weights_title",
]

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


def mass_matrix(result: WeightResult, batch: int = 0, head: HeadChoice = "mean") -> np.ndarray:
    """(query groups x key groups) mean attention mass a query of the row group gives each key group."""
    return head_slice(result.group_mass, batch, head).double().numpy()


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
            entropy = float(head_slice(result.entropy, batch, head)[i])
            row["entropy (nats)"] = round(entropy, 4)
            row["max entropy"] = round(float(np.log(max(keys, 1))), 4)
            row[f"top-{result.top_k} mass"] = round(float(head_slice(result.top_k_mass, batch, head)[i]), 4)
        rows.append(row)
    return rows


def top_keys(
    result: WeightResult, layout: TokenLayout, count: int = 20, batch: int = 0, head: HeadChoice = "mean"
) -> list[dict[str, object]]:
    """Key tokens that receive the most attention, with their group and index inside it."""
    received = head_slice(result.received, batch, head)
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
