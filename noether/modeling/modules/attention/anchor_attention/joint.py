"""Joint-anchor attention: every group attends to the anchors of all branches."""

from collections.abc import Sequence

from noether.core.schemas.modules.attention import AttentionConfig, AttentionPattern, TokenSpec
from noether.modeling.modules.attention.anchor_attention.multi_branch import MultiBranchAnchorAttention
from noether.modeling.modules.attention.anchor_attention.patterns import joint_anchor_patterns
from noether.modeling.modules.attention.configs import JointAnchorAttentionConfig


class JointAnchorAttention(MultiBranchAnchorAttention):
    """Anchor attention within and across branches: all tokens attend to (A_anchors + B_anchors + ...).

    Example: all tokens attend to surface_anchors and volume_anchors::

        AttentionPattern(
            query_tokens=["surface_anchors", "surface_queries", "volume_anchors", "volume_queries"],
            key_value_tokens=["surface_anchors", "volume_anchors"],
        )
    """

    def __init__(self, config: AttentionConfig) -> None:
        """
        Args:
            config: Settings with at least two ``branches``; see :class:`JointAnchorAttentionConfig`.
        """
        if len(getattr(config, "branches", None) or []) < 2:
            raise ValueError("JointAnchorAttention requires at least two branches. Otherwise use SelfAnchorAttention.")
        super().__init__(config=config)

    def _create_attention_patterns(self, token_specs: Sequence[TokenSpec]) -> Sequence[AttentionPattern]:
        return joint_anchor_patterns(token_specs, self.branches, self.anchor_suffix)


__all__ = ["JointAnchorAttention", "JointAnchorAttentionConfig", "joint_anchor_patterns"]
