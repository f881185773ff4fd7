"""Base of the multi-branch anchor attentions: validation of branches and anchors, shared MixedAttention."""

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from noether.core.schemas.modules.attention import AttentionConfig, AttentionPattern, TokenSpec
from noether.modeling.modules.attention.anchor_attention.mixed import KVCache, MixedAttention, MixedAttentionConfig
from noether.modeling.modules.attention.anchor_attention.patterns import (
    MissingAnchorTokenError,
    MissingBranchTokensError,
    UnexpectedTokenError,
    branch_groups,
    check_branches,
)
from noether.modeling.modules.attention.configs import MultiBranchAnchorAttentionConfig


class MultiBranchAnchorAttention(nn.Module, ABC):
    """Anchor attention over several branches (e.g. surface and volume) sharing one set of projections.

    Subclasses only define the patterns (:meth:`_create_attention_patterns`); the module validates the groups and
    runs a single :class:`MixedAttention`, stored as ``mixed_attention`` (the upstream state_dict layout).
    """

    def __init__(self, config: AttentionConfig) -> None:
        """
        Args:
            config: Settings with ``branches`` and ``anchor_suffix``; see
                :class:`MultiBranchAnchorAttentionConfig`.
        """
        super().__init__()
        parsed = MultiBranchAnchorAttentionConfig(**config.model_dump())
        self.mixed_attention = MixedAttention(
            config=MixedAttentionConfig(
                hidden_dim=parsed.hidden_dim,
                num_heads=parsed.num_heads,
                use_rope=parsed.use_rope,
                bias=parsed.bias,
                init_weights=parsed.init_weights,
                dropout=parsed.dropout,
                qk_norm=parsed.qk_norm,
            )
        )
        self.branches = parsed.branches
        self.anchor_suffix = parsed.anchor_suffix

    def forward(
        self,
        x: torch.Tensor,
        token_specs: Sequence[TokenSpec],
        key_padding_mask: torch.Tensor | None = None,
        freqs: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache | None]:
        """Apply attention with the patterns of this anchor scheme; see :meth:`MixedAttention.forward`."""
        patterns = self.attention_patterns(token_specs)
        return self.mixed_attention(
            x, token_specs, patterns, key_padding_mask=key_padding_mask, freqs=freqs, kv_cache=kv_cache
        )

    def attention_patterns(self, token_specs: Sequence[TokenSpec]) -> list[AttentionPattern]:
        """Validate the groups against the branches and return the patterns this module applies."""
        check_branches(token_specs, self.branches, self.anchor_suffix)
        return list(self._create_attention_patterns(token_specs))

    @abstractmethod
    def _create_attention_patterns(self, token_specs: Sequence[TokenSpec]) -> Sequence[AttentionPattern]:
        """Patterns of this anchor scheme for validated ``token_specs``."""


__all__ = [
    "MissingAnchorTokenError",
    "MissingBranchTokensError",
    "MultiBranchAnchorAttention",
    "MultiBranchAnchorAttentionConfig",
    "UnexpectedTokenError",
    "branch_groups",
    "check_branches",
]
