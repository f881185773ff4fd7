"""Rotary position embeddings (RoPE) applied to queries and keys."""

import torch


def _rope_complex(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive feature pairs of ``x`` by the unit complex numbers in ``freqs``."""
    if not torch.is_complex(freqs):
        raise ValueError(f"RoPE frequencies must be a complex tensor (from RopeFrequency), got {freqs.dtype}.")
    if x.ndim != 4:
        raise ValueError(f"RoPE expects x of shape (batch, heads, tokens, head_dim), got {tuple(x.shape)}.")
    if freqs.ndim != 3:
        raise ValueError(f"RoPE expects freqs of shape (batch, tokens, head_dim // 2), got {tuple(freqs.shape)}.")
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    rotated = torch.view_as_real(pairs * freqs.unsqueeze(1)).flatten(start_dim=3)
    return rotated.type_as(x)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def _rope_real(x: torch.Tensor, freqs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Legacy RoPE: one block of angles per coordinate axis, rotated with sin/cos; trailing features pass through."""
    if x.ndim != 4:
        raise ValueError(f"RoPE expects x of shape (batch, heads, tokens, head_dim), got {tuple(x.shape)}.")
    rotated_dim = sum(f.size(-1) for f in freqs)
    if rotated_dim > x.size(-1):
        raise ValueError(
            f"RoPE frequencies cover {rotated_dim} features but the head dimension is {x.size(-1)}; "
            "create the frequencies with the head dimension, not the hidden dimension."
        )
    block = freqs[0].size(-1)
    splits = x.split(block, dim=-1)
    rotated = [
        split * angle.unsqueeze(1).cos() + _rotate_half(split) * angle.unsqueeze(1).sin()
        for split, angle in zip(splits[: len(freqs)], freqs, strict=True)
    ]
    return torch.cat([*rotated, *splits[len(freqs) :]], dim=-1).type_as(x)


def rope(x: torch.Tensor, freqs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Apply rotary position embeddings to ``x`` of shape (batch, heads, tokens, head_dim).

    Args:
        x: Queries or keys.
        freqs: Complex rotations of shape (batch, tokens, head_dim // 2) as made by
            ``RopeFrequency(implementation="complex")``, or the legacy tuple of per-axis angles of
            ``implementation="real"``.

    Returns:
        The rotated tensor, same shape and dtype as ``x``.
    """
    if isinstance(freqs, tuple):
        return _rope_real(x, freqs)
    return _rope_complex(x, freqs)
