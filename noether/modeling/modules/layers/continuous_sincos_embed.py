"""Sine-cosine embedding of continuous 1-D to 3-D coordinates."""

import torch
from torch import nn

from noether.core.schemas.modules.layers import ContinuousSincosEmbeddingConfig
from noether.modeling.modules.layers.waves import wave_angles, wave_layout, wave_omega


class ContinuousSincosEmbed(nn.Module):
    """Embeds coordinates with sine and cosine waves per axis ("Attention is all you need", continuous form)."""

    omega: torch.Tensor
    padding_tensor: torch.Tensor

    def __init__(self, config: ContinuousSincosEmbeddingConfig) -> None:
        """
        Args:
            config: Embedding settings.
        """
        super().__init__()
        self.hidden_dim = config.hidden_dim
        self.input_dim = config.input_dim
        self.max_wavelength = config.max_wavelength
        dim_per_axis, self.padding = wave_layout(config.hidden_dim, config.input_dim)
        self.register_buffer("omega", wave_omega(dim_per_axis, config.max_wavelength))
        # Kept as a buffer so that upstream state_dicts (which contain it) load with strict=True.
        self.register_buffer("padding_tensor", torch.zeros(self.padding))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """
        Args:
            coords: Positions of shape (tokens, input_dim) or (batch, tokens, input_dim).

        Returns:
            fp32 embedding of shape (..., hidden_dim).
        """
        if coords.ndim not in (2, 3):
            raise ValueError(f"coords must be (tokens, dims) or (batch, tokens, dims), got {tuple(coords.shape)}.")
        angles = wave_angles(coords, self.omega, self.input_dim)
        emb = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(start_dim=-2)
        if self.padding:
            emb = torch.cat([emb, self.padding_tensor.expand(*emb.shape[:-1], -1)], dim=-1)
        return emb

    def extra_repr(self) -> str:
        return f"hidden_dim={self.hidden_dim}, input_dim={self.input_dim}"
