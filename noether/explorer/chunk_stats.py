"""Row statistics of a chunk of attention scores with as few passes over the chunk as possible.

The overview needs, per query row, the mass on each key group, the entropy and the top-k mass — not the weights
themselves. Softmax, entropy and top-k each read the chunk again when done one by one; here the block maxima give
the row maximum and the top-k candidates at once, the unnormalised weights are made once, and the entropy and
group masses are read from them before they are normalised (which is never needed):

    e = exp(l - m),  s = Σ e,  w = e / s
    H = -Σ w log w = log s - Σ e·(l - m) / s
    top-k mass = Σ_top-k e / s,  group mass = Σ_group e / s
"""

import torch

MASKED_SCORE = torch.finfo(torch.float32).min
"""Score of a padded key: exp() of it is exactly 0, and 0 times it is 0 (unlike -inf), so sums stay finite."""
TOP_K_BLOCK = 64
"""Keys per block whose maximum narrows the top-k candidates."""


def masked_scores(
    queries: torch.Tensor, keys: torch.Tensor, real: torch.Tensor | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Scaled dot products in fp32; padded keys (``real`` False) get :data:`MASKED_SCORE`.

    ``out``: a buffer to write them to (reusing one buffer saves the page faults of a fresh chunk-sized tensor).
    """
    scores = torch.matmul(queries.float() * queries.shape[-1] ** -0.5, keys.transpose(-1, -2), out=out)
    if real is not None:
        scores.masked_fill_(~real, MASKED_SCORE)
    return scores


def _block_maxima(scores: torch.Tensor, block: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Maxima of whole blocks of keys (None when there are too few) and each row's maximum.

    Block j holds keys j, j + nb, j + 2·nb, ... (nb blocks): a maximum over a strided view runs along contiguous
    memory, several times faster than one over short contiguous runs, and the top-k argument holds for any
    partition of the keys.
    """
    n = scores.shape[-1]
    count = n // block
    body = count * block
    if count == 0:
        return None, scores.amax(-1)
    maxima = scores[..., :body].unflatten(-1, (block, count)).amax(-2)
    row_max = maxima.amax(-1)
    if body < n:
        row_max = torch.maximum(row_max, scores[..., body:].amax(-1))
    return maxima, row_max


def top_k_scores(scores: torch.Tensor, k: int, maxima: torch.Tensor | None, block: int) -> torch.Tensor:
    """The ``k`` largest scores of each row.

    A row's k largest entries lie in the k blocks with the largest maxima (a block holding one of them has a
    maximum at least that large, and fewer than k other blocks can hold a larger one), so a top-k over the block
    maxima and one over those k blocks (plus the tail) are exact.
    """
    if maxima is None or maxima.shape[-1] <= 2 * k:
        return scores.topk(k, dim=-1, sorted=False).values
    count = maxima.shape[-1]
    body = count * block
    chosen = maxima.topk(k, dim=-1, sorted=False).indices
    columns = (chosen.unsqueeze(-1) + count * torch.arange(block, device=scores.device)).flatten(-2)
    candidates = scores.gather(-1, columns)
    if body < scores.shape[-1]:
        candidates = torch.cat([candidates, scores[..., body:]], dim=-1)
    return candidates.topk(k, dim=-1, sorted=False).values


def top_k_block(keys: int, k: int) -> int:
    """Block size that leaves about 4k block maxima: both top-k searches then stay small."""
    return max(8, keys // max(4 * k, 1))


def fold_rows(
    scores: torch.Tensor,
    bounds: list[tuple[int, int]],
    k: int,
    block: int | None = None,
    workspace: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row statistics of a chunk of scores (..., rows, keys), summed over the rows.

    Args:
        scores: Scaled dot products, padded keys at :data:`MASKED_SCORE`; overwritten (shifted by the row maxima).
        bounds: (start, stop) of each key group inside the chunk's keys.
        k: Top-k size (0 = skip).
        block: Keys per block for the top-k search (default :func:`top_k_block`).
        workspace: A buffer of at least ``scores.numel()`` elements for the unnormalised weights.

    Returns:
        mass (..., groups): summed share of each group; entropy (...,): summed row entropy in nats;
        top (...,): summed top-k mass.
    """
    k = min(k, scores.shape[-1])
    block = block or top_k_block(scores.shape[-1], k)
    maxima, row_max = _block_maxima(scores, block)
    top_values = top_k_scores(scores, k, maxima, block) if k else None
    shifted = scores.sub_(row_max.unsqueeze(-1))
    exp = torch.exp(shifted, out=None if workspace is None else workspace[: shifted.numel()].view(shifted.shape))
    total = exp.sum(-1)
    # einsum, not linalg.vecdot: on a freshly written operand vecdot ran ten times slower here (torch 2.13, CPU).
    dot = torch.einsum("...k,...k->...", exp, shifted)
    entropy = total.log() - dot / total
    top = torch.zeros_like(total) if top_values is None else (top_values - row_max.unsqueeze(-1)).exp().sum(-1) / total
    shares = []
    for start, stop in bounds[:-1]:
        shares.append(exp[..., start:stop].sum(-1) / total)
    if bounds:
        # The last group's share is what the others leave: one pass fewer over the chunk.
        rest = 1.0 - torch.stack(shares, -1).sum(-1) if shares else torch.ones_like(total)
        shares.append(rest)
    mass = torch.stack(shares, -1).sum(-2) if shares else total.new_zeros(*total.shape[:-1], 0)
    return mass, entropy.sum(-1), top.sum(-1)
