"""Cross-anchor attention: each branch attends to the anchors of all other branches."""

from collections.abc import Sequence

from noether.core.schemas.modules.attention import AttentionConfig, AttentionPattern, TokenSpec
from noether.modeling.modules.attention.anchor_attention.multi_branch import MultiBranchAnchorAttention
from noether.modeling.modules.attention.anchor_attention.patterns import cross_anchor_patterns
from noether.modeling.modules.attention.configs import CrossAnchorAttentionConfig


class CrossAnchorAttention(MultiBranchAnchorAttention):
    """Anchor attention across branches: A attends to (B_anchors + C_anchors), B to (A_anchors + C_anchors), ...

    Example: surface tokens attend to volume_anchors and volume tokens attend to surface_anchors::

        AttentionPattern(query_tokens=["surface_anchors", "surface_queries"], key_value_tokens=["volume_anchors"])
        AttentionPattern(query_tokens=["volume_anchors", "volume_queries"], key_value_tokens=["surface_anchors"])
    """

    def __init__(self, config: AttentionConfig) -> None:
        """
        Args:
            config: Settings with at least two ``branches``; see :class:`CrossAnchorAttentionConfig`.
        """
        if len(getattr(config, "branches", None) or []) < 2:
            raise ValueError("CrossAnchorAttention requires at least two branches.")
        super().__init__(config=config)

    def _create_attention_patterns(self, token_specs: Sequence[TokenSpec]) -> Sequence[AttentionPattern]:
        return cross_anchor_patterns(token_specs, self.branches, self.anchor_suffix)


__all__ = ["CrossAnchorAttention", "CrossAnchorAttentionConfig", "cross_anchor_patterns"]
