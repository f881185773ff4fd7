"""Row statistics of attention without the weights: log-sum-exp, group masses and entropy from a fused kernel.

Softmax weights split over key groups g (the segments of a pattern's keys) obey

    lse = logsumexp_g(lse_g)              mass_g = exp(lse_g - lse)
    H = lse - Σ_j w_j l_j = lse - Σ_g mass_g · scale · q·(Σ_{j in g} w_j^(g) k_j)

where lse_g is the log-sum-exp of the row's scaled logits over group g alone and Σ w^(g) k is the output of
attention restricted to g with the keys as values. One fused attention call per group (values = keys) returns both,
so entropy and group masses cost about one forward pass and never hold a (rows x keys) tensor. On CPU the call is
torch's flash-attention kernel, the one ``scaled_dot_product_attention`` runs; elsewhere, or if that private op is
missing or refuses the inputs, the same quantities are computed from materialised scores, chunk by chunk as before.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from noether.explorer.chunk_stats import masked_scores

FALLBACK_CHUNK_BYTES = 4 * 2**20
"""Scores built at once by the fallback without the fused kernel."""
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


@dataclass(frozen=True)
class KeySegment:
    """Keys of one key group as a pattern sees them, with the group's padding."""

    keys: torch.Tensor
    """(batch, heads, keys, head_dim), float32."""
    real: torch.Tensor | None
    """True at real keys, broadcastable to (batch, heads, rows, keys); None when every key is real."""


@dataclass(frozen=True)
class RowStats:
    """Per query row: log-sum-exp of the scaled logits over all the pattern's keys, mass per key group, entropy."""

    lse: torch.Tensor
    """(batch, heads, rows)."""
    mass: torch.Tensor
    """(batch, heads, rows, segments): share of the row's weight on each key group; sums to 1 over segments."""
    entropy: torch.Tensor
    """(batch, heads, rows), nats."""


def _materialised(
    queries: torch.Tensor, keys: torch.Tensor, real: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output (values = keys) and log-sum-exp from explicit scores: the reference and the fallback.

    The caller's query chunks are sized for the fused kernel (no scores), so the scores are built a few rows at a
    time here, within :data:`FALLBACK_CHUNK_BYTES`.
    """
    batch_heads = queries.shape[:-2].numel()
    step = max(1, FALLBACK_CHUNK_BYTES // max(1, 4 * batch_heads * keys.shape[-2]))
    outs, lses = [], []
    for block in queries.split(step, dim=-2):
        logits = masked_scores(block, keys, real)
        lses.append(torch.logsumexp(logits, dim=-1))
        outs.append(torch.softmax(logits, dim=-1) @ keys)
    return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)


def _additive(real: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A boolean key mask as the additive float mask the flash kernel takes (it refuses booleans)."""
    return torch.zeros(real.shape, dtype=like.dtype, device=like.device).masked_fill_(~real, float("-inf"))


def _fused(queries: torch.Tensor, keys: torch.Tensor, real: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and log-sum-exp of one group from the fused CPU kernel, or from scores when it cannot run."""
    if _CPU_FLASH is not None and queries.device.type == "cpu" and keys.shape[-1] == queries.shape[-1]:
        mask = None if real is None else _additive(real, queries)
        try:
            out, lse = _CPU_FLASH(queries, keys, keys, 0.0, False, attn_mask=mask, scale=None)
        except RuntimeError:
            pass
        else:
            if real is not None:
                # The kernel answers a row with no real key with lse 0 (a mass of one) instead of -inf.
                lse = lse.masked_fill(~real.any(-1).expand_as(lse), float("-inf"))
            return out, lse
    return _materialised(queries, keys, real)


def row_stats(queries: torch.Tensor, segments: Sequence[KeySegment], *, fused: bool = True) -> RowStats:
    """Log-sum-exp, per-group mass and entropy of every query row against the keys of ``segments``.

    Args:
        queries: (batch, heads, rows, head_dim) projected queries (RoPE applied); cast to float32.
        segments: The pattern's key groups, in key order; empty groups are allowed (mass 0).
        fused: False computes from materialised scores (the reference the fused path is tested against).
    """
    queries = queries.float()
    scale = queries.shape[-1] ** -0.5
    lses, weighted = [], []
    for segment in segments:
        if segment.keys.shape[-2] == 0:
            lses.append(torch.full(queries.shape[:-1], float("-inf"), device=queries.device))
            weighted.append(torch.zeros(queries.shape[:-1], device=queries.device))
            continue
        out, lse = (_fused if fused else _materialised)(queries, segment.keys, segment.real)
        lses.append(lse)
        weighted.append((queries * out).sum(-1) * scale)
    group_lse = torch.stack(lses, dim=-1)
    lse = torch.logsumexp(group_lse, dim=-1)
    # A group whose keys are all padding has lse_g = -inf: mass 0, and its output (undefined) must not leak in.
    mass = torch.exp(group_lse - lse.unsqueeze(-1)).nan_to_num_(0.0)
    mean_logit = (mass * torch.stack(weighted, dim=-1).nan_to_num_(0.0)).sum(-1)
    return RowStats(lse=lse, mass=mass, entropy=lse - mean_logit)
