"""Positional layers: RoPE frequencies and sine-cosine embeddings of continuous coordinates."""

from noether.modeling.modules.layers.continuous_sincos_embed import ContinuousSincosEmbed
from noether.modeling.modules.layers.rope_frequency import RopeFrequency

__all__ = ["ContinuousSincosEmbed", "RopeFrequency"]
