"""Base attention configs and back-compat re-exports for moved attention configs.

The base configs (``AttentionConfig``, ``TokenSpec``, ``AttentionPattern``) have no matching class and stay here.
The concrete attention configs have moved next to their matching classes in
``noether.modeling.modules.attention``; they are re-exported here for backward compatibility.
"""

from collections.abc import Sequence
from importlib import import_module
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from noether.core.types import InitWeightsMode


class AttentionConfig(BaseModel):
    """Configuration for an attention module.

    Since there are many different attention implementations, extra fields are allowed so that the same schema
    serves all of them.
    """

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    hidden_dim: int = Field(..., ge=1)
    """Dimensionality of the hidden features."""

    num_heads: int = Field(..., ge=1)
    """Number of attention heads."""

    use_rope: bool = Field(False)
    """Whether to use Rotary Positional Embeddings (RoPE)."""

    dropout: float = Field(0.0, ge=0.0, le=1.0)
    """Dropout rate for the attention weights and output projection."""

    init_weights: InitWeightsMode = Field("truncnormal002")
    """Weight initialization strategy."""

    bias: bool = Field(True)
    """Whether to use bias terms in linear layers."""

    head_dim: int | None = Field(None)
    """Dimensionality of each attention head (derived: hidden_dim // num_heads)."""

    qk_norm: bool = Field(False)
    """Whether to apply layer normalization to the query and key features before computing attention scores."""

    @model_validator(mode="after")
    def _derive_head_dim(self) -> "AttentionConfig":
        if self.hidden_dim % self.num_heads != 0:
            raise ValueError(
                f"The 'hidden_dim' must be divisible by 'num_heads' (got hidden_dim={self.hidden_dim}, "
                f"num_heads={self.num_heads}); pick a hidden_dim that is a multiple of num_heads."
            )
        self.head_dim = self.hidden_dim // self.num_heads
        return self


class TokenSpec(BaseModel):
    """Specification for a token type in the attention mechanism.

    When ``size`` is ``None``, the token group is not present in the input tensor and its key/value
    representations will be loaded from a KV cache instead.
    """

    model_config = ConfigDict(use_attribute_docstrings=True)

    name: str
    """Semantic identifier of the group, e.g. "surface_anchors"."""

    size: int | None = Field(..., ge=0)
    """Number of tokens of the group in the input tensor, or None when its keys/values come from a KV cache."""

    @classmethod
    def from_dict(cls, token_dict: dict[str, int | None]) -> "TokenSpec":
        """Create TokenSpec from dictionary with single key-value pair."""
        if not isinstance(token_dict, dict) or len(token_dict) != 1:
            found = list(token_dict) if isinstance(token_dict, dict) else type(token_dict).__name__
            raise ValueError(
                f"Dictionary must contain exactly one key-value pair {{name: size}}, got {found}; "
                "write one group per item or use the explicit form {name: ..., size: ...}."
            )
        name, size = next(iter(token_dict.items()))
        return cls(name=name, size=size)

    def to_dict(self) -> dict[str, int | None]:
        """Convert TokenSpec to dictionary."""
        return {self.name: self.size}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def domain(self) -> str:
        """Extract token domain from the name (e.g., "surface" from "surface_anchors")."""
        return self.name.split("_")[0]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def attn_type(self) -> str:
        """Extract attention type from the name (e.g., "anchors" from "surface_anchors")."""
        return self.name.split("_")[-1]


class AttentionPattern(BaseModel):
    """Defines which tokens attend to which other tokens."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    query_tokens: Sequence[str]
    """The token groups that attend to the key/value groups, e.g. ["surface_anchors", "surface_queries"]."""

    key_value_tokens: Sequence[str]
    """The token groups that are attended to by the query groups, e.g. ["surface_anchors"]."""


# Concrete configs live with the modules (re-exported by each module file); importing them here eagerly would be
# circular (they build on the base configs above), so they are resolved on first access.
_MOVED_CONFIGS = {
    "DotProductAttentionConfig": "noether.modeling.modules.attention.configs",
    "MixedAttentionConfig": "noether.modeling.modules.attention.configs",
    "MultiBranchAnchorAttentionConfig": "noether.modeling.modules.attention.configs",
    "SelfAnchorAttentionConfig": "noether.modeling.modules.attention.configs",
    "CrossAnchorAttentionConfig": "noether.modeling.modules.attention.configs",
    "JointAnchorAttentionConfig": "noether.modeling.modules.attention.configs",
    "PerceiverAttentionConfig": "noether.modeling.modules.attention.configs",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED_CONFIGS:
        return getattr(import_module(_MOVED_CONFIGS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_MOVED_CONFIGS])


__all__ = ["AttentionConfig", "AttentionPattern", "TokenSpec", *_MOVED_CONFIGS]
