"""Self-anchor attention: each branch attends to its own anchors."""

from collections.abc import Sequence

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.modeling.modules.attention.anchor_attention.multi_branch import (
    MultiBranchAnchorAttention,
    MultiBranchAnchorAttentionConfig,
    branch_groups,
)


class SelfAnchorAttentionConfig(MultiBranchAnchorAttentionConfig):
    """Configuration of self-anchor attention."""


def self_anchor_patterns(
    token_specs: Sequence[TokenSpec], branches: Sequence[str], anchor_suffix: str = "_anchors"
) -> list[AttentionPattern]:
    """All groups of a branch attend to that branch's anchors."""
    return [
        AttentionPattern(query_tokens=branch_groups(token_specs, branch), key_value_tokens=[f"{branch}{anchor_suffix}"])
        for branch in branches
    ]


class SelfAnchorAttention(MultiBranchAnchorAttention):
    """Anchor attention within branches: A tokens attend to A_anchors, B tokens to B_anchors, and so on.

    Example: surface tokens attend to surface_anchors and volume tokens attend to volume_anchors::

        AttentionPattern(query_tokens=["surface_anchors", "surface_queries"], key_value_tokens=["surface_anchors"])
        AttentionPattern(query_tokens=["volume_anchors", "volume_queries"], key_value_tokens=["volume_anchors"])
    """

    def _create_attention_patterns(self, token_specs: Sequence[TokenSpec]) -> Sequence[AttentionPattern]:
        return self_anchor_patterns(token_specs, self.branches, self.anchor_suffix)
