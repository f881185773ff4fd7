"""Anchor attention: mixed attention and the multi-branch anchor schemes built on it."""

from noether.modeling.modules.attention.anchor_attention.cross import (
    CrossAnchorAttention,
    CrossAnchorAttentionConfig,
    cross_anchor_patterns,
)
from noether.modeling.modules.attention.anchor_attention.joint import (
    JointAnchorAttention,
    JointAnchorAttentionConfig,
    joint_anchor_patterns,
)
from noether.modeling.modules.attention.anchor_attention.mixed import (
    GroupTensors,
    KVCache,
    MixedAttention,
    MixedAttentionConfig,
    query_patterns,
)
from noether.modeling.modules.attention.anchor_attention.multi_branch import (
    MissingAnchorTokenError,
    MissingBranchTokensError,
    MultiBranchAnchorAttention,
    MultiBranchAnchorAttentionConfig,
    UnexpectedTokenError,
    check_branches,
)
from noether.modeling.modules.attention.anchor_attention.self_anchor import (
    SelfAnchorAttention,
    SelfAnchorAttentionConfig,
    self_anchor_patterns,
)

__all__ = [
    "CrossAnchorAttention",
    "CrossAnchorAttentionConfig",
    "GroupTensors",
    "JointAnchorAttention",
    "JointAnchorAttentionConfig",
    "KVCache",
    "MissingAnchorTokenError",
    "MissingBranchTokensError",
    "MixedAttention",
    "MixedAttentionConfig",
    "MultiBranchAnchorAttention",
    "MultiBranchAnchorAttentionConfig",
    "SelfAnchorAttention",
    "SelfAnchorAttentionConfig",
    "UnexpectedTokenError",
    "check_branches",
    "cross_anchor_patterns",
    "joint_anchor_patterns",
    "query_patterns",
    "self_anchor_patterns",
]
