"""The attention module of a scenario: built from its config, its projecting core, and a perceiver called on the
group layout (queries first, then keys/values), so that :class:`~noether.explorer.run.ExplorerRun` runs every kind
through one call.
"""

from typing import Any

import torch
from torch import nn

from noether.core.schemas.modules.attention import TokenSpec
from noether.explorer.scenario import ANCHOR_CONFIGS, Scenario
from noether.modeling.modules.attention import (
    CrossAnchorAttention,
    JointAnchorAttention,
    MixedAttention,
    MixedAttentionConfig,
    PerceiverAttention,
    PerceiverAttentionConfig,
    SelfAnchorAttention,
)

_ANCHOR_MODULES = {
    "self_anchor": SelfAnchorAttention,
    "cross_anchor": CrossAnchorAttention,
    "joint_anchor": JointAnchorAttention,
}


def _build_module(scenario: Scenario) -> nn.Module:
    attention = scenario.attention
    config = attention.model_dump(exclude={"kind"})
    if attention.kind == "mixed":
        return MixedAttention(MixedAttentionConfig(**config))
    if attention.kind == "perceiver":
        return PerceiverAttention(PerceiverAttentionConfig(**config))
    return _ANCHOR_MODULES[attention.kind](ANCHOR_CONFIGS[attention.kind](**config))


def core_of(module: nn.Module) -> MixedAttention:
    """The module whose projections the weight views use: a MixedAttention (anchor modules keep theirs as
    ``mixed_attention``) or a PerceiverAttention, which offers the same ``project_queries``/``project_keys_values``."""
    if isinstance(module, MixedAttention | PerceiverAttention):
        return module  # type: ignore[return-value]
    return module.mixed_attention  # type: ignore[return-value]


def _call_perceiver(
    module: PerceiverAttention,
    x: torch.Tensor,
    specs: list[TokenSpec],
    freqs: torch.Tensor | None,
    kv_cache: dict | None,
    padding: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Any]:
    """Run a perceiver on the group layout: ``x`` holds the query group, then the key/value group unless cached.

    ``padding`` (batch, input tokens), True = real, masks key/value tokens: it becomes the module's ``attn_mask``.

    Each input gets the leading features its projection reads (hidden_dim for ``q``, kv_dim for ``kv``): the rows
    of the narrower one are zero-padded in ``x``.
    """
    query_spec, kv_spec = specs
    n_queries = query_spec.size or 0
    q = x[:, :n_queries, : module.q.in_features]
    q_freqs = None if freqs is None else freqs[:, :n_queries]
    if kv_spec.size is None:
        assert kv_cache is not None
        out, _ = module(q, None, q_freqs=q_freqs, kv_cache=kv_cache[kv_spec.name])
        return out, None
    k_freqs = None if freqs is None else freqs[:, n_queries:]
    attn_mask = None if padding is None else padding[:, None, None, n_queries:]
    kv = x[:, n_queries:, : module.k.in_features]
    out, cache = module(q, kv, attn_mask=attn_mask, q_freqs=q_freqs, k_freqs=k_freqs)
    return out, {kv_spec.name: cache}
