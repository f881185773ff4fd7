"""Attention modules and their configs (the configs live next to the classes they configure)."""

from noether.modeling.modules.attention.anchor_attention import (
    CrossAnchorAttention,
    CrossAnchorAttentionConfig,
    JointAnchorAttention,
    JointAnchorAttentionConfig,
    MixedAttention,
    MixedAttentionConfig,
    MultiBranchAnchorAttention,
    MultiBranchAnchorAttentionConfig,
    SelfAnchorAttention,
    SelfAnchorAttentionConfig,
)
from noether.modeling.modules.attention.dot_product import DotProductAttention, DotProductAttentionConfig
from noether.modeling.modules.attention.perceiver import PerceiverAttention, PerceiverAttentionConfig

__all__ = [
    "CrossAnchorAttention",
    "CrossAnchorAttentionConfig",
    "DotProductAttention",
    "DotProductAttentionConfig",
    "JointAnchorAttention",
    "JointAnchorAttentionConfig",
    "MixedAttention",
    "MixedAttentionConfig",
    "MultiBranchAnchorAttention",
    "MultiBranchAnchorAttentionConfig",
    "PerceiverAttention",
    "PerceiverAttentionConfig",
    "SelfAnchorAttention",
    "SelfAnchorAttentionConfig",
]
