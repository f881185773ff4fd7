"""Base of the multi-branch anchor attentions: validation of branches and anchors, shared MixedAttention."""

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn

from noether.core.schemas.modules.attention import AttentionConfig, AttentionPattern, TokenSpec
from noether.modeling.modules.attention.anchor_attention.mixed import KVCache, MixedAttention, MixedAttentionConfig


class MultiBranchAnchorAttentionConfig(AttentionConfig):
    """Configuration of a multi-branch anchor attention module."""

    branches: list[str] = Field(..., min_length=1)
    """Branch names, e.g. ["surface", "volume"]; a group belongs to the branch its name starts with."""

    anchor_suffix: str = Field("_anchors")
    """Suffix that turns a branch name into its anchor group name ("surface" -> "surface_anchors")."""


class MissingBranchTokensError(ValueError):
    """Raised when expected tokens for a configured branch are not present."""


class MissingAnchorTokenError(ValueError):
    """Raised when a required anchor token is not present."""


class UnexpectedTokenError(ValueError):
    """Raised when an unexpected token is present."""


def check_branches(token_specs: Sequence[TokenSpec], branches: Sequence[str], anchor_suffix: str) -> None:
    """Every group belongs to a configured branch, and every branch has groups and its anchor group."""
    names = {spec.name for spec in token_specs}
    for spec in token_specs:
        if not any(spec.name.startswith(branch) for branch in branches):
            raise UnexpectedTokenError(
                f"Unexpected token in input: Token '{spec.name}' does not belong to any configured branch. "
                f"Configured branches: {list(branches)}; rename the group to start with a branch name."
            )
    for branch in branches:
        if not any(spec.name.startswith(branch) for spec in token_specs):
            raise MissingBranchTokensError(
                f"Configured branch '{branch}' has no tokens present in the input `token_specs`."
            )
        if f"{branch}{anchor_suffix}" not in names:
            raise MissingAnchorTokenError(
                f"Configured branch '{branch}' is missing its required anchor token '{branch}{anchor_suffix}'."
            )


def branch_groups(token_specs: Sequence[TokenSpec], branch: str) -> list[str]:
    """Names of the groups that belong to ``branch``, in input order."""
    return [spec.name for spec in token_specs if spec.name.startswith(branch)]


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
