"""The attention modules' configs, free of torch so that validating a scenario needs no torch.

Each module file re-exports its config, so ``from <module file> import <Config>`` works as upstream's does.
"""

from pydantic import Field, model_validator

from noether.core.schemas.modules.attention import AttentionConfig


class DotProductAttentionConfig(AttentionConfig):
    """Configuration for the dot-product attention module."""


class MixedAttentionConfig(DotProductAttentionConfig):
    """Configuration for the mixed attention module."""


class MultiBranchAnchorAttentionConfig(AttentionConfig):
    """Configuration of a multi-branch anchor attention module."""

    branches: list[str] = Field(..., min_length=1)
    """Branch names, e.g. ["surface", "volume"]; a group belongs to the branch its name starts with."""

    anchor_suffix: str = Field("_anchors")
    """Suffix that turns a branch name into its anchor group name ("surface" -> "surface_anchors")."""


class SelfAnchorAttentionConfig(MultiBranchAnchorAttentionConfig):
    """Configuration of self-anchor attention."""


class CrossAnchorAttentionConfig(MultiBranchAnchorAttentionConfig):
    """Configuration of cross-anchor attention (at least two branches)."""


class JointAnchorAttentionConfig(MultiBranchAnchorAttentionConfig):
    """Configuration of joint-anchor attention (at least two branches)."""


class PerceiverAttentionConfig(AttentionConfig):
    """Configuration for the perceiver attention module."""

    kv_dim: int | None = Field(None)
    """Width of the key/value input features; None means the same as hidden_dim."""

    @model_validator(mode="after")
    def _default_kv_dim(self) -> "PerceiverAttentionConfig":
        if self.kv_dim is None:
            self.kv_dim = self.hidden_dim
        return self
