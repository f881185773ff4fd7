"""Comparing two scenarios: where their token-level masks differ, and what each costs."""

from dataclasses import dataclass

import numpy as np

from noether.explorer.cost import CostSummary, cost_summary
from noether.explorer.devices import DTYPES
from noether.explorer.guard import format_bytes
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.masks import pooled_mask
from noether.explorer.scenario import Scenario


@dataclass(frozen=True)
class MaskDifference:
    """Pooled mask of B minus pooled mask of A, when both have the same token axes."""

    values: np.ndarray | None
    """(row bins, column bins) in [-1, 1]: +1 attended only in B, -1 only in A; None when the axes differ."""
    rows: PoolGrid | None
    cols: PoolGrid | None
    message: str
    """What the map shows, or why there is none."""


def mask_difference(a: TokenLayout, b: TokenLayout, budget: int) -> MaskDifference:
    """Token-level mask difference on a shared pooled grid; only defined when the query and key axes have equal
    lengths (the groups may be named differently)."""
    if (a.n_queries, a.n_keys) != (b.n_queries, b.n_keys):
        return MaskDifference(
            None,
            None,
            None,
            f"The token axes differ (current: {a.n_queries:,} queries x {a.n_keys:,} keys, other: "
            f"{b.n_queries:,} x {b.n_keys:,}), so a token-by-token mask difference is not defined; "
            "compare the group diagrams and the cost table instead.",
        )
    rows, cols = PoolGrid.fit(a.n_queries, budget), PoolGrid.fit(a.n_keys, budget)
    values = pooled_mask(b, rows, cols) - pooled_mask(a, rows, cols)
    changed = int(np.count_nonzero(np.abs(values) > 1e-12))
    if changed == 0:
        message = "The two masks are identical: every (query, key) pair is attended in both or in neither."
    else:
        message = (
            f"{changed:,} of {values.size:,} cells differ. Blue: attended only in the other scenario; red: only in "
            "the current one (a pooled cell shows the share of its pairs that changed)."
        )
    return MaskDifference(values, rows, cols, message)


def scenario_cost(scenario: Scenario) -> CostSummary:
    """Analytic cost of a scenario from its groups alone (no module is built), in the dtype it asks for."""
    return cost_summary(
        TokenLayout.from_scenario(scenario),
        scenario.attention.hidden_dim,
        scenario.run.batch_size,
        DTYPES[scenario.run.dtype].itemsize,
    )


def _ratio(a: float, b: float) -> str:
    if a == b:
        return "same"
    if a == 0:
        return "new"
    return f"{b / a:.2f}x"


def cost_difference(a: CostSummary, b: CostSummary) -> list[dict[str, str]]:
    """Side-by-side cost of the current scenario (A) and the other one (B), with B relative to A."""

    def count(value: float) -> str:
        return f"{value:,.0f}"

    def flops(value: float) -> str:
        return f"{value:.3g}"

    rows = [
        ("query tokens", a.n_queries, b.n_queries, count),
        ("key tokens", a.key_tokens, b.key_tokens, count),
        ("attended pairs (per head and sample)", a.attended_pairs, b.attended_pairs, count),
        ("attention FLOPs", a.attention_flops, b.attention_flops, flops),
        ("projection FLOPs", a.projection_flops, b.projection_flops, flops),
        ("dense bool mask", a.dense_mask_bytes, b.dense_mask_bytes, format_bytes),
        ("per-pattern extra activations", a.per_pattern_bytes, b.per_pattern_bytes, format_bytes),
    ]
    table = [
        {"quantity": name, "current": fmt(x), "other": fmt(y), "other / current": _ratio(x, y)}
        for name, x, y, fmt in rows
    ]
    table.insert(
        3,
        {
            "quantity": "sparsity",
            "current": f"{a.sparsity:.2%}",
            "other": f"{b.sparsity:.2%}",
            "other / current": f"{(b.sparsity - a.sparsity) * 100:+.2f} points",
        },
    )
    return table
