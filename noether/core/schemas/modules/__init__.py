"""Schemas of Noether modules."""

from noether.core.schemas.modules.attention import AttentionConfig, AttentionPattern, TokenSpec
from noether.core.schemas.modules.layers import ContinuousSincosEmbeddingConfig, RopeFrequencyConfig

__all__ = [
    "AttentionConfig",
    "AttentionPattern",
    "ContinuousSincosEmbeddingConfig",
    "RopeFrequencyConfig",
    "TokenSpec",
]
