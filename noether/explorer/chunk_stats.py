"""The one chunk kernel behind every exact statistic: scores, softmax and row statistics of a block of query rows.

The exact weight pass (pooled maps), the model overview (group masses) and the preview all fold the same thing: the
softmax weights of a chunk of query rows against a pattern's keys, plus each row's entropy and top-k mass. Both
chunk-sized tensors live in two buffers reused by every chunk (a fresh chunk-sized tensor costs its page faults
again each time), and the statistics read the weights and logits once each:

    H = -Σ w log w = lse - Σ w·l,  lse = max(l) - log(max(w))
    top-k mass = Σ of the k largest w, found among the blocks with the k largest block maxima
"""

import math

import torch

MASKED_SCORE = torch.finfo(torch.float32).min
"""Score of a padded key: its weight is exactly 0, and 0 times it is 0 (unlike -inf), so sums stay finite."""
TOP_K_BLOCK: int | None = None
"""Keys per block when top-k candidates are narrowed by block maxima (see :func:`top_k_mass`); None picks the
power of two nearest sqrt(keys / k), which balances the top-k over block maxima against the one over candidates."""


class ChunkBuffers:
    """Two chunk-sized fp32 buffers (logits, weights) reused by every chunk of a pass."""

    def __init__(self, elements: int, device: torch.device | str = "cpu") -> None:
        self._logits = torch.empty(elements, device=device)
        self._weights = torch.empty(elements, device=device)

    def fits(self, elements: int) -> bool:
        return elements <= self._logits.numel()

    def logits(self, shape: tuple[int, ...]) -> torch.Tensor:
        return self._logits[: math.prod(shape)].view(shape)

    def weights(self, shape: tuple[int, ...]) -> torch.Tensor:
        return self._weights[: math.prod(shape)].view(shape)


def masked_scores(
    queries: torch.Tensor, keys: torch.Tensor, real: torch.Tensor | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Scaled dot products in fp32; padded keys (``real`` False) get :data:`MASKED_SCORE`."""
    scores = torch.matmul(queries.float() * queries.shape[-1] ** -0.5, keys.transpose(-1, -2), out=out)
    if real is not None:
        scores.masked_fill_(~real, MASKED_SCORE)
    return scores


def chunk_weights(
    queries: torch.Tensor, keys: torch.Tensor, real: torch.Tensor | None, buffers: ChunkBuffers | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and softmax weights (..., rows, keys) of a chunk of queries, written to ``buffers`` when given."""
    shape = (*queries.shape[:-1], keys.shape[-2])
    if buffers is None or not buffers.fits(math.prod(shape)):
        logits = masked_scores(queries, keys, real)
        return logits, torch.softmax(logits, dim=-1)
    logits = masked_scores(queries, keys, real, out=buffers.logits(shape))
    return logits, torch.ops.aten._softmax.out(logits, -1, False, out=buffers.weights(shape))


def row_entropy(
    logits: torch.Tensor,
    weights: torch.Tensor,
    row_max_weight: torch.Tensor | None = None,
    row_max_logit: torch.Tensor | None = None,
) -> torch.Tensor:
    """-Σ w log w per row without a logarithm per element (one dot product per row instead).

    With w = exp(l - lse): H = lse - Σ w·l, and lse = max(l) - log(max(w)) from the row's largest entry alone.
    Padded keys must be at :data:`MASKED_SCORE` (finite), not -inf. ``row_max_weight``, ``row_max_logit``: max(w)
    and the logit at the same key, when known (each saves a pass over the chunk).
    ``logits`` is overwritten (with w·l): an in-place product reads the chunk once and allocates nothing, where
    ``linalg.vecdot`` or ``einsum`` wrote a fresh chunk-sized product (the costliest statistic, measured).
    """
    if row_max_weight is None or row_max_logit is None:
        row_max_weight, row_max_logit = weights.amax(-1), logits.amax(-1)
    lse = row_max_logit - row_max_weight.log()
    return lse - logits.mul_(weights).sum(-1)


def _top_k(weights: torch.Tensor, k: int, block: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries of each row (unsorted) and the key index of the row's largest one (..., 1)."""
    n = weights.shape[-1]
    k = min(k, n)
    if block is None:
        block = 2 ** max(0, round(math.log2(math.sqrt(n / max(k, 1)))))
    blocks = n // block
    if blocks <= 2 * k:
        values, index = weights.topk(k, dim=-1, sorted=False)
        return values, index.gather(-1, values.argmax(-1, keepdim=True))
    body = blocks * block
    # Block c holds keys c, c + blocks, c + 2·blocks, ...: its maxima are an element-wise max of `block` contiguous
    # slices (a vectorised pass), not a reduction over short rows.
    strided = weights[..., :body].unflatten(-1, (block, blocks))
    chosen = strided.amax(-2).topk(k, dim=-1, sorted=False).indices
    candidates = strided.gather(-1, chosen.unsqueeze(-2).expand(*chosen.shape[:-1], block, k)).flatten(-2)
    if body < n:
        candidates = torch.cat([candidates, weights[..., body:]], dim=-1)
    values, position = candidates.topk(k, dim=-1, sorted=False)
    # Candidate p = i·k + j is key i·blocks + chosen[j]; candidates past block·k are the trailing keys in order.
    best = position.gather(-1, values.argmax(-1, keepdim=True))
    inside = (best // k) * blocks + chosen.gather(-1, best % k)
    return values, torch.where(best < block * k, inside, best - block * k + body)


def top_k_values(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` largest entries of each row (last dim), unsorted; logits or weights alike (softmax keeps order)."""
    return _top_k(scores, k, TOP_K_BLOCK)[0]


def top_k_mass(weights: torch.Tensor, k: int, block: int | None = TOP_K_BLOCK) -> torch.Tensor:
    """Sum of the ``k`` largest entries of each row (last dim), without a top-k over the whole row.

    A row's k largest entries lie in the k blocks with the largest block maxima (a block holding one of them has a
    maximum at least that large, and fewer than k other blocks can hold a larger entry), so one max per block, a
    top-k over the block maxima and one over k · block candidates give the exact answer at a fraction of a full-row
    top-k's cost. Any partition into blocks works; strided blocks make the maxima one vectorised pass.
    """
    return _top_k(weights, k, block)[0].sum(-1)


def row_statistics(logits: torch.Tensor, weights: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (nats) and top-k mass of every row of a chunk; the row maximum comes with the top-k for free.

    ``logits`` is overwritten (see :func:`row_entropy`); ``weights`` is left as it is.
    """
    if k <= 0:
        return row_entropy(logits, weights), torch.zeros(weights.shape[:-1], device=weights.device)
    top, best = _top_k(weights, k, TOP_K_BLOCK)
    row_max_logit = logits.gather(-1, best).squeeze(-1)
    return row_entropy(logits, weights, top.amax(-1), row_max_logit), top.sum(-1)
