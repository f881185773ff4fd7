"""Self-anchor attention: each branch attends to its own anchors."""

from collections.abc import Sequence

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.modeling.modules.attention.anchor_attention.multi_branch import MultiBranchAnchorAttention
from noether.modeling.modules.attention.anchor_attention.patterns import self_anchor_patterns
from noether.modeling.modules.attention.configs import SelfAnchorAttentionConfig


class SelfAnchorAttention(MultiBranchAnchorAttention):
    """Anchor attention within branches: A tokens attend to A_anchors, B tokens to B_anchors, and so on.

    Example: surface tokens attend to surface_anchors and volume tokens attend to volume_anchors::

        AttentionPattern(query_tokens=["surface_anchors", "surface_queries"], key_value_tokens=["surface_anchors"])
        AttentionPattern(query_tokens=["volume_anchors", "volume_queries"], key_value_tokens=["volume_anchors"])
    """

    def _create_attention_patterns(self, token_specs: Sequence[TokenSpec]) -> Sequence[AttentionPattern]:
        return self_anchor_patterns(token_specs, self.branches, self.anchor_suffix)


__all__ = ["SelfAnchorAttention", "SelfAnchorAttentionConfig", "self_anchor_patterns"]
