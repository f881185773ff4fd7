"""Frequencies shared by the sine-cosine embedding and the RoPE frequency generator."""

import torch


def wave_layout(hidden_dim: int, input_dim: int) -> tuple[int, int]:
    """Split ``hidden_dim`` features over ``input_dim`` axes.

    Returns:
        ``(dim_per_axis, padding)``: each axis gets ``dim_per_axis`` (even) features, ``padding`` trailing features
        are left over (filled with zeros / no rotation).
    """
    axis_padding = hidden_dim % input_dim
    per_axis = (hidden_dim - axis_padding) // input_dim
    padding = axis_padding + (per_axis % 2) * input_dim
    dim_per_axis = (hidden_dim - padding) // input_dim
    if dim_per_axis <= 0:
        raise ValueError(
            f"hidden_dim={hidden_dim} leaves no features per coordinate axis for input_dim={input_dim}; "
            f"use a hidden_dim of at least {2 * input_dim}."
        )
    return dim_per_axis, padding


def wave_omega(dim_per_axis: int, max_wavelength: int) -> torch.Tensor:
    """Angular frequencies of the ``dim_per_axis // 2`` waves of one axis, from 1 down to ~1/max_wavelength."""
    exponents = torch.arange(0, dim_per_axis, 2, dtype=torch.float32) / dim_per_axis
    return 1.0 / max_wavelength**exponents


def wave_angles(coords: torch.Tensor, omega: torch.Tensor, input_dim: int) -> torch.Tensor:
    """Angles ``coords * omega`` in fp32, shape (..., input_dim, len(omega))."""
    if coords.shape[-1] != input_dim:
        raise ValueError(f"coordinates have {coords.shape[-1]} dimensions, expected input_dim={input_dim}.")
    return coords.float().unsqueeze(-1) @ omega.unsqueeze(0)
