"""Sizes and resource estimates of an :class:`~noether.explorer.run.ExplorerRun`: every computation is estimated
from the group layout before it runs and refused above the run's memory/time budget (see :mod:`guard`).
"""

import torch

from noether.explorer import guard
from noether.explorer.cost import CostSummary, cost_summary
from noether.explorer.inputs import key_value_features
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.scenario import Scenario
from noether.explorer.weights import WeightOptions

DEFAULT_PIXELS = 1024


class RunEstimates:
    """Estimates and the guard of a run; mixed into ExplorerRun, whose scenario, layout and device they read."""

    scenario: Scenario
    layout: TokenLayout
    device: torch.device
    dtype: torch.dtype
    memory_budget: int
    time_budget_s: float

    def check(self, estimate: guard.Estimate) -> None:
        guard.check(estimate, self.memory_budget, self.time_budget_s)

    def grids(self, pixels: int = DEFAULT_PIXELS) -> tuple[PoolGrid, PoolGrid]:
        return PoolGrid.fit(self.layout.n_queries, pixels), PoolGrid.fit(self.layout.n_keys, pixels)

    def cost(self) -> CostSummary:
        attention = self.scenario.attention
        return cost_summary(
            self.layout,
            attention.hidden_dim,
            self.scenario.run.batch_size,
            self._element_bytes,
            kv_dim=key_value_features(self.scenario),
        )

    @property
    def _element_bytes(self) -> int:
        return self.dtype.itemsize

    def setup_estimate(self) -> guard.Estimate:
        attention = self.scenario.attention
        width = max(attention.hidden_dim, key_value_features(self.scenario))
        per_token = 3 * width * 4 + 3 * 4  # features with their fp32 intermediates, positions
        if attention.use_rope:
            per_token += (attention.head_dim or 0) * 4  # complex64 rotations, head_dim // 2 of them
        inputs = self.scenario.run.batch_size * self.layout.n_inputs * per_token
        # About ten floating-point operations per byte of features (sine-cosine waves, RoPE rotations).
        return guard.Estimate("building the inputs", inputs, guard.estimate_seconds(self.device, 10.0 * inputs))

    def forward_estimate(self) -> guard.Estimate:
        cost = self.cost()
        batch, hidden = self.scenario.run.batch_size, self.scenario.attention.hidden_dim
        activations = 8 * batch * self.layout.n_inputs * hidden * self._element_bytes + cost.per_pattern_bytes
        return guard.Estimate(
            "the forward pass",
            activations,
            guard.estimate_seconds(self.device, cost.attention_flops + cost.projection_flops),
        )

    def weights_estimate(self, pixels: int, options: WeightOptions) -> guard.Estimate:
        batch, heads = self.scenario.run.batch_size, self.scenario.attention.num_heads
        rows, cols = self.grids(pixels)
        maps = 4 * batch * heads * rows.bins * cols.bins * (1 + options.max_pooling) + 4 * batch * rows.bins * cols.bins
        keys = 4 * batch * self.layout.n_keys * self.scenario.attention.hidden_dim
        received = 4 * batch * heads * self.layout.n_keys
        chunk = 3 * max(options.chunk_bytes, 4 * batch * heads * self.layout.n_keys)
        cost = self.cost()
        elements = batch * heads * cost.attended_pairs
        projections = 2.0 * batch * self.layout.n_queries * self.scenario.attention.hidden_dim**2
        return guard.Estimate(
            "the attention-weight maps",
            maps + keys + received + chunk + self.forward_estimate().bytes // 4,
            guard.estimate_seconds(self.device, projections, elements, row_stats=options.row_stats),
        )

    def dense_estimate(self) -> guard.Estimate:
        cost = self.cost()
        batch, heads = self.scenario.run.batch_size, self.scenario.attention.num_heads
        scores = 0 if self.device.type == "cpu" else 4 * batch * heads * cost.n_queries * cost.n_keys
        return guard.Estimate(
            "one dense masked SDPA call",
            cost.dense_mask_bytes + cost.dense_float_mask_bytes + scores + self.forward_estimate().bytes,
            guard.estimate_seconds(
                self.device, 4.0 * batch * cost.n_queries * cost.n_keys * self.scenario.attention.hidden_dim
            ),
        )

    def flex_estimate(self) -> guard.Estimate:
        """Stacked Q/K/V of the whole axes plus the tile tables of the block mask (built from the groups)."""
        cost = self.cost()
        batch, hidden = self.scenario.run.batch_size, self.scenario.attention.hidden_dim
        stacked = 4 * batch * hidden * (2 * cost.n_queries + 2 * cost.n_keys)
        tiles = 16 * (cost.n_queries // 128 + 1) * (cost.n_keys // 128 + 1)
        return guard.Estimate(
            "FlexAttention over the whole axes",
            stacked + tiles + self.forward_estimate().bytes,
            guard.estimate_seconds(self.device, cost.attention_flops),
        )
