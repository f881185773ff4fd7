"""Configs of the positional layers used with attention (RoPE frequencies, sin-cos embedding)."""

from typing import Literal

from pydantic import BaseModel, Field


class RopeFrequencyConfig(BaseModel):
    """Configuration of the rotary-embedding frequency generator."""

    hidden_dim: int = Field(..., ge=1)
    """Dimensionality of the frequencies; for attention this is the head dimension."""

    input_dim: int = Field(..., ge=1)
    """Dimensionality of the coordinates (1, 2 or 3)."""

    max_wavelength: int = Field(10000, ge=1)
    """Largest wavelength of the sine/cosine waves (RoPE's theta)."""

    implementation: Literal["real", "complex"] = Field("real")
    """"complex" returns complex rotations (fast); "real" returns a tuple of angles per axis (legacy)."""


class ContinuousSincosEmbeddingConfig(BaseModel):
    """Configuration of the sine-cosine embedding of continuous coordinates."""

    hidden_dim: int = Field(..., ge=1)
    """Dimensionality of the output embedding."""

    input_dim: int = Field(..., ge=1)
    """Dimensionality of the input coordinates."""

    max_wavelength: int = Field(10000, ge=1)
    """Largest wavelength of the sine/cosine waves."""
