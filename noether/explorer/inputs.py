"""Deterministic inputs for a scenario: token features, positions and RoPE frequencies."""

from dataclasses import dataclass, field

import numpy as np
import torch

from noether.core.schemas.modules.layers import ContinuousSincosEmbeddingConfig, RopeFrequencyConfig
from noether.explorer.layout import TokenLayout
from noether.explorer.pointcloud import domain_points, domain_pool, load_sample
from noether.explorer.scenario import Scenario
from noether.modeling.modules.layers import ContinuousSincosEmbed, RopeFrequency

POSITION_SCALE = 40.0
"""Metres -> embedding units; makes the sin-cos waves resolve features of a few centimetres to a car length."""


@dataclass
class Inputs:
    """Inputs of every group on the layout's input axis (cached groups included: that is the anchor pass's input;
    a perceiver's queries included: they are its ``q``)."""

    x: torch.Tensor
    """(batch, input tokens, features) token features: hidden_dim of them, or for a perceiver whose kv_dim differs
    the wider of the two, each group's rows zero beyond its own width (see :func:`key_value_features`)."""
    positions: torch.Tensor
    """(batch, input tokens, 3) positions in metres (sample point cloud, or uniform in a box for random inputs)."""
    freqs: torch.Tensor | None
    """(batch, input tokens, head_dim // 2) complex RoPE rotations, when the scenario uses RoPE."""


@dataclass
class CapturedInputs:
    """Inputs recorded from a real forward pass, injected into a run instead of generated ones.

    Tensors follow the run's input axis (all groups in token_specs order, cached groups included) so that every
    engine function reads them exactly as it reads generated inputs.
    """

    x: torch.Tensor
    """(batch, input tokens, features) features (a perceiver's kv rows have kv_dim of them, zero-padded to the
    widest of its two inputs); rows of cached groups come from the pass that filled the cache (zeros when
    the capture does not hold that pass: they are never read, the cache below is)."""
    freqs: torch.Tensor | None
    """(batch, input tokens, head_dim // 2) complex RoPE rotations, or None."""
    positions: torch.Tensor
    """(batch, input tokens, 3) token coordinates (recorded ones where the capture has them)."""
    state_dict: dict[str, torch.Tensor]
    """The module's recorded parameters, loaded with strict=True."""
    key_padding_mask: torch.Tensor | None = None
    """(batch, input tokens) bool, True = real token, exactly as the module received it."""
    kv_cache: dict[str, dict[str, torch.Tensor]] | None = None
    """The incoming cache of the cached groups, exactly as the module received it."""
    cached_inputs_known: bool = False
    """Whether the cached groups' rows of ``x``/``freqs`` are real (the filling pass is in the capture)."""
    notes: list[str] = field(default_factory=list)


def _group_seed(seed: int, batch: int, group: int) -> int:
    return int(np.random.SeedSequence([seed, batch, group]).generate_state(1)[0])


def token_positions(
    scenario: Scenario, layout: TokenLayout, cloud: dict[str, np.ndarray] | None = None
) -> torch.Tensor:
    """Positions of every input-axis token, (batch, input tokens, 3) float32, deterministic in the seed.

    Point-cloud inputs draw from ``cloud`` ({"surface", "volume"} arrays) or the shipped sample.
    """
    batch = scenario.run.batch_size
    if scenario.run.inputs == "point_cloud":
        sample = cloud if cloud is not None else load_sample()
        per_batch = []
        for b in range(batch):
            parts = [
                domain_points(
                    group.name.split("_")[0],
                    group.size,
                    _group_seed(scenario.run.seed, b, i),
                    sample,
                    generate=cloud is None,
                )
                for i, group in enumerate(layout.groups)
            ]
            per_batch.append(np.concatenate(parts) if parts else np.zeros((0, 3), np.float32))
        return torch.from_numpy(np.stack(per_batch)).float()
    generator = torch.Generator().manual_seed(scenario.run.seed + 1)
    box = torch.tensor([4.5, 1.8, 1.4])
    return torch.rand(batch, layout.n_inputs, 3, generator=generator) * box


def short_of_points(layout: TokenLayout, cloud: dict[str, np.ndarray]) -> dict[str, int]:
    """{group: points a supplied cloud offers its domain} for the groups with more tokens than that."""
    short = {}
    for group in layout.groups:
        available = len(domain_pool(group.name.split("_")[0], cloud))
        if group.size > available:
            short[group.name] = available
    return short


def cloud_shortfalls(layout: TokenLayout, cloud: dict[str, np.ndarray]) -> list[str]:
    """Notes for groups that need more points than a supplied cloud offers (their points are then reused)."""
    return [
        f"'{name}' has {layout.by_name[name].size:,} tokens but the point cloud offers {available:,} points for it; "
        "points are reused."
        for name, available in short_of_points(layout, cloud).items()
    ]


def key_value_features(scenario: Scenario) -> int:
    """Features of the tokens keys/values are projected from: a perceiver's ``kv_dim`` (default hidden_dim), else
    hidden_dim. Input tensors are as wide as the wider of this and hidden_dim; each group's rows are zero beyond
    its own width, and each projection reads the leading features it takes."""
    attention = scenario.attention
    kv_dim = (attention.model_extra or {}).get("kv_dim") if attention.kind == "perceiver" else None
    return int(kv_dim or attention.hidden_dim)


def _sincos(positions: torch.Tensor, features: int) -> torch.Tensor:
    embed = ContinuousSincosEmbed(ContinuousSincosEmbeddingConfig(hidden_dim=features, input_dim=3))
    return embed(positions * POSITION_SCALE)


def build_inputs(
    scenario: Scenario,
    layout: TokenLayout,
    device: torch.device,
    dtype: torch.dtype,
    cloud: dict[str, np.ndarray] | None = None,
) -> Inputs:
    """Features (seeded Gaussian, or sin-cos of positions), positions and RoPE frequencies for every input token."""
    attention = scenario.attention
    hidden, kv_features = attention.hidden_dim, key_value_features(scenario)
    width = max(hidden, kv_features)
    # A perceiver's key/value group has kv_dim features; every other group hidden_dim.
    narrower = {g.name: kv_features for g in layout.key_groups} if layout.perceiver and kv_features != hidden else {}
    positions = token_positions(scenario, layout, cloud)
    if scenario.run.inputs == "point_cloud":
        x = _sincos(positions, hidden)
        if narrower:
            x = torch.cat([x, x.new_zeros(*x.shape[:-1], width - hidden)], dim=-1)
            for name, features in narrower.items():
                span = layout.by_name[name].input_span
                x[:, span] = 0.0
                x[:, span, :features] = _sincos(positions[:, span], features)
    else:
        generator = torch.Generator().manual_seed(scenario.run.seed)
        x = torch.randn(scenario.run.batch_size, layout.n_inputs, width, generator=generator)
        for group in layout.groups:
            x[:, group.input_span, narrower.get(group.name, hidden) :] = 0.0
    freqs = None
    if attention.use_rope:
        assert attention.head_dim is not None
        rope = RopeFrequency(RopeFrequencyConfig(hidden_dim=attention.head_dim, input_dim=3, implementation="complex"))
        freqs = rope(positions * POSITION_SCALE).to(device)
    return Inputs(x=x.to(device=device, dtype=dtype), positions=positions, freqs=freqs)


def query_rows(layout: TokenLayout, tensor: torch.Tensor) -> torch.Tensor:
    """The query-group tokens of an input-axis tensor (dim 1): the query pass's input when groups are cached, a
    perceiver's queries."""
    if len(layout.query_groups) == len(layout.groups):
        return tensor
    return torch.cat([tensor[:, g.input_span] for g in layout.query_groups], dim=1)


def key_slice(layout: TokenLayout, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """One group's tokens of an input-axis tensor (dim 1)."""
    return tensor[:, layout.by_name[name].input_span]


def on_input_axis(layout: TokenLayout, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Values over the key axis (last dim) spread onto the input axis; tokens without keys get ``fill``."""
    spread = np.full((*values.shape[:-1], layout.n_inputs), fill, dtype=values.dtype)
    for group in layout.key_groups:
        spread[..., group.input_span] = values[..., group.key_span]
    return spread


def key_real_mask(layout: TokenLayout, mask: torch.Tensor | None) -> torch.Tensor | None:
    """A (batch, module input tokens) key_padding_mask placed on the key axis (cached groups are all real)."""
    if mask is None:
        return None
    parts, start = [], 0
    for group in layout.groups:
        if group.cached:
            parts.append(torch.ones(mask.shape[0], group.size, dtype=torch.bool, device=mask.device))
            continue
        if group.key_offset is not None:
            parts.append(mask[:, start : start + group.size])
        start += group.size
    return torch.cat(parts, dim=1)


def key_padding_mask(layout: TokenLayout, batch: int, device: torch.device) -> torch.Tensor | None:
    """The module's key_padding_mask (batch, input tokens), True = real token; None without padding."""
    if not layout.has_padding:
        return None
    real = torch.cat([torch.arange(g.size) < g.real_keys for g in layout.query_groups])
    return real.expand(batch, -1).to(device)
