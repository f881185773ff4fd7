"""RoPE frequency generator for 1-D to 3-D token positions."""

import torch
from torch import nn

from noether.core.schemas.modules.layers import RopeFrequencyConfig
from noether.modeling.modules.layers.waves import wave_angles, wave_layout, wave_omega


class RopeFrequency(nn.Module):
    """Creates rotary-embedding frequencies (https://arxiv.org/abs/2104.09864) for arbitrary positions."""

    omega: torch.Tensor

    def __init__(self, config: RopeFrequencyConfig) -> None:
        """
        Args:
            config: Frequency settings; ``hidden_dim`` should be the attention head dimension.
        """
        super().__init__()
        self.hidden_dim = config.hidden_dim
        self.input_dim = config.input_dim
        self.max_wavelength = config.max_wavelength
        self.implementation = config.implementation
        dim_per_axis, self.padding = wave_layout(config.hidden_dim, config.input_dim)
        if config.implementation == "complex" and self.padding % 2:
            raise ValueError(
                f"hidden_dim={config.hidden_dim} is odd; complex RoPE rotates feature pairs, use an even head_dim."
            )
        self.register_buffer("omega", wave_omega(dim_per_axis, config.max_wavelength))

    def forward(self, coords: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """
        Args:
            coords: Positions of shape (..., input_dim), typically (batch, tokens, input_dim).

        Returns:
            "complex": unit complex rotations of shape (..., hidden_dim // 2).
            "real": a tuple with one tensor of angles per axis, each (..., dim_per_axis).
        """
        angles = wave_angles(coords, self.omega, self.input_dim)
        if self.implementation == "complex":
            angles = angles.flatten(start_dim=-2)
            if self.padding:
                angles = torch.cat([angles, angles.new_zeros(*angles.shape[:-1], self.padding // 2)], dim=-1)
            return torch.polar(torch.ones_like(angles), angles)
        return tuple(torch.cat([angles, angles], dim=-1).unbind(-2))

    def extra_repr(self) -> str:
        return f"hidden_dim={self.hidden_dim}, input_dim={self.input_dim}, implementation={self.implementation}"
