"""A preview of the weight maps and statistics from stratified samples of query rows.

Each query group is cut into strata (contiguous runs of rows that never cross a row bin of the preview grid) and one
row is drawn at random from each. Every key of a sampled row is exact; a cell, a group mass, an entropy or a top-k
mass is the stratum-size-weighted mean over the sampled rows, so the estimates are unbiased, and their standard
errors come with them (:func:`standard_errors`). Cost: ``elements`` scores instead of all of them.
"""

import itertools
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from noether.explorer.chunk_stats import chunk_weights, row_statistics
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.weights import Cancelled, WeightResult, _pattern_keys, head_mean, pool_dim
from noether.modeling.modules.attention.anchor_attention import MixedAttention

PREVIEW_ELEMENTS = 2**25
"""Scores (batch x heads x sampled rows x keys) a preview computes: well under a second on two CPU cores."""
MIN_ROWS_PER_GROUP = 16
"""Fewest rows sampled from a group (all of them when it is smaller), so that every group gets an error estimate."""
PREVIEW_CHUNK_BYTES = 16 * 2**20


@dataclass(frozen=True)
class RowSample:
    """Sampled query rows: where they are and how many rows each one stands for."""

    rows: np.ndarray
    """Global query-axis rows, grouped by query group, ascending."""
    weights: np.ndarray
    """Rows of the stratum each sampled row represents."""
    groups: np.ndarray
    """Index (in ``layout.query_groups``) of each row's group."""


@dataclass
class PreviewSamples:
    """Per sampled row statistics, kept so that errors can be computed for any head or the head mean."""

    sample: RowSample
    group_mass: torch.Tensor
    """(batch, heads, sampled rows, key groups): mass each sampled row gives each group."""
    entropy: torch.Tensor
    """(batch, heads, sampled rows)."""
    top_k_mass: torch.Tensor
    """(batch, heads, sampled rows)."""


def rows_per_group(layout: TokenLayout, batch: int, heads: int, elements: int) -> dict[str, int]:
    """Rows to sample per query group: the score budget shared in proportion to group size."""
    total = max(layout.n_queries, 1)
    counts = {}
    for group in layout.query_groups:
        keys = sum(layout.by_name[name].size for name in layout.pattern_of(group.name).key_value_tokens)
        share = elements * group.size / total / max(1, batch * heads * keys)
        counts[group.name] = min(group.size, max(MIN_ROWS_PER_GROUP, int(share)))
    return counts


def preview_grid(layout: TokenLayout, rows: PoolGrid, counts: dict[str, int]) -> PoolGrid:
    """The exact row grid coarsened until a bin is at least as tall as the largest stratum (about a sample a bin)."""
    stratum = max((math.ceil(g.size / max(counts[g.name], 1)) for g in layout.query_groups if g.size), default=1)
    return PoolGrid(n=rows.n, factor=rows.factor * max(1, math.ceil(stratum / rows.factor)))


def stratified_rows(layout: TokenLayout, grid: PoolGrid, counts: dict[str, int], seed: int) -> RowSample:
    """One random row per stratum; strata split each group at the grid's bin edges and then into equal runs."""
    rng = np.random.default_rng(seed)
    rows, weights, groups = [], [], []
    for index, group in enumerate(layout.query_groups):
        if not group.size:
            continue
        assert group.query_offset is not None
        start, stop = group.query_offset, group.query_offset + group.size
        density = counts[group.name] / group.size
        first_edge = -(-start // grid.factor) * grid.factor
        cuts = [start, *range(first_edge if first_edge > start else first_edge + grid.factor, stop, grid.factor), stop]
        for lo, hi in itertools.pairwise(cuts):
            pieces = min(hi - lo, max(1, round((hi - lo) * density)))
            edges = np.linspace(lo, hi, pieces + 1).round().astype(np.int64)
            low, high = edges[:-1], edges[1:]
            rows.append(rng.integers(low, high))
            weights.append(high - low)
            groups.append(np.full(pieces, index))
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return RowSample(empty, empty, empty)
    return RowSample(np.concatenate(rows), np.concatenate(weights), np.concatenate(groups))


@torch.no_grad()
def preview_weight_maps(
    core: MixedAttention,
    layout: TokenLayout,
    x_queries: torch.Tensor,
    freqs_queries: torch.Tensor | None,
    keys: dict[str, torch.Tensor],
    rows: PoolGrid,
    cols: PoolGrid,
    *,
    seed: int = 0,
    top_k: int = 8,
    elements: int = PREVIEW_ELEMENTS,
    cancel: threading.Event | None = None,
    key_real: torch.Tensor | None = None,
) -> WeightResult:
    """Estimated pooled maps and statistics (see the module docstring); ``WeightResult.preview`` is True.

    The maps live on a row grid coarser than ``rows`` (a multiple of its factor, so views re-pool them exactly);
    max-pooled cells are the largest weight among the sampled rows, a lower bound of the exact cell.
    """
    batch, heads = x_queries.shape[0], core.num_heads
    counts = rows_per_group(layout, batch, heads, elements)
    grid = preview_grid(layout, rows, counts)
    sample = stratified_rows(layout, grid, counts, seed)
    shape = (batch, heads, grid.bins, cols.bins)
    summed, maxed = torch.zeros(shape), torch.zeros(shape)
    head_max = torch.zeros(batch, grid.bins, cols.bins)
    received = torch.zeros(batch, heads, layout.n_keys)
    n = len(sample.rows)
    mass = torch.zeros(batch, heads, n, len(layout.key_groups))
    entropy, top = torch.zeros(batch, heads, n), torch.zeros(batch, heads, n)
    device = x_queries.device
    for index, group in enumerate(layout.query_groups):
        where = np.flatnonzero(sample.groups == index)
        if not len(where):
            continue
        key_tensor, real, segments = _pattern_keys(
            layout, keys, list(layout.pattern_of(group.name).key_value_tokens), key_real
        )
        step = max(1, PREVIEW_CHUNK_BYTES // (4 * batch * heads * max(key_tensor.shape[2], 1)))
        for lo in range(0, len(where), step):
            if cancel is not None and cancel.is_set():
                raise Cancelled("preview stopped")
            part = where[lo : lo + step]
            picked = torch.as_tensor(sample.rows[part], device=device)
            freqs = None if freqs_queries is None else freqs_queries[:, picked]
            queries = core.project_queries(x_queries[:, picked], freqs=freqs)
            logits, weights = chunk_weights(queries, key_tensor, real)
            scale = torch.as_tensor(sample.weights[part], dtype=torch.float32, device=device)
            bins = torch.as_tensor(sample.rows[part] // grid.factor)
            mean_heads = head_mean(weights)
            received_part = (scale @ weights).cpu()
            for seg in segments:
                if not seg.size:
                    continue
                cut = slice(seg.start, seg.start + seg.size)
                col0, block = pool_dim(weights[..., cut], 3, seg.key_offset, cols.factor, "sum")
                span = slice(col0, col0 + block.shape[-1])
                summed[..., span].index_add_(2, bins, (block * scale[:, None]).cpu())
                _, block_max = pool_dim(weights[..., cut], 3, seg.key_offset, cols.factor, "max")
                index_max = bins.view(1, 1, -1, 1).expand(batch, heads, -1, block_max.shape[-1])
                maxed[..., span].scatter_reduce_(2, index_max, block_max.cpu(), "amax")
                _, mean_max = pool_dim(mean_heads[..., cut], 2, seg.key_offset, cols.factor, "max")
                head_index = bins.view(1, -1, 1).expand(batch, -1, mean_max.shape[-1])
                head_max[..., span].scatter_reduce_(1, head_index, mean_max.cpu(), "amax")
                mass[:, :, torch.as_tensor(part), seg.index] = weights[..., cut].sum(-1).cpu()
                received[..., seg.key_offset : seg.key_offset + seg.size] += received_part[..., cut]
            row_entropy, row_top = row_statistics(logits, weights, top_k)
            entropy[:, :, torch.as_tensor(part)] = row_entropy.cpu()
            top[:, :, torch.as_tensor(part)] = row_top.cpu()
    counts_grid = torch.outer(
        torch.as_tensor(grid.bin_sizes(), dtype=torch.float32), torch.as_tensor(cols.bin_sizes(), dtype=torch.float32)
    )
    samples = PreviewSamples(sample, mass, entropy, top)
    per_group = _group_means(samples, len(layout.query_groups))
    return WeightResult(
        rows=grid,
        cols=cols,
        mean=summed / counts_grid,
        max=maxed,
        head_mean_max=head_max,
        group_mass=per_group["group_mass"],
        received=received,
        entropy=per_group["entropy"],
        top_k_mass=per_group["top_k_mass"],
        top_k=top_k,
        notes=[
            f"preview from {n:,} sampled query rows (of {layout.n_queries:,}); every key of a sampled row is exact; "
            "max-pooled cells are the largest sampled weight."
        ],
        samples=samples,
    )


def _weighted(values: torch.Tensor, sample: RowSample, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Rows of one group along dim 2: the values, their stratum weights, sample count and group size."""
    where = torch.as_tensor(np.flatnonzero(sample.groups == index))
    weights = torch.as_tensor(sample.weights[where.numpy()], dtype=torch.float32)
    return values.index_select(2, where), weights, len(where), int(weights.sum())


def _group_means(samples: PreviewSamples, n_query: int) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("group_mass", "entropy", "top_k_mass"):
        values = getattr(samples, name)
        trailing = values.shape[3:]
        result = torch.zeros(*values.shape[:2], n_query, *trailing)
        for index in range(n_query):
            picked, weights, count, size = _weighted(values, samples.sample, index)
            if count:
                shaped = weights.view(1, 1, -1, *([1] * len(trailing)))
                result[:, :, index] = (picked * shaped).sum(2) / size
        out[name] = result
    return out


def stratified_error(values: np.ndarray, strata: np.ndarray, size: int) -> np.ndarray | float:
    """Standard error of a stratified mean with one sampled row per stratum (rows along axis 0).

    The sampled rows' variance stands in for the within-stratum variance (conservative), times Σ(stratum / size)²,
    with the finite-population correction: 0 when every row was sampled, NaN from a single sample.
    """
    count = len(strata)
    if count >= size:
        return np.zeros(values.shape[1:]) if values.ndim > 1 else 0.0
    if count < 2:
        return np.full(values.shape[1:], np.nan) if values.ndim > 1 else float("nan")
    shares = (strata / size).reshape(-1, *([1] * (values.ndim - 1)))
    mean = (values * shares).sum(0)
    variance = ((values - mean) ** 2 * shares).sum(0) * count / (count - 1)
    return np.sqrt(variance * (shares**2).sum(0) * (1 - count / size))


def standard_errors(result: WeightResult, batch: int = 0, head: int | str = "mean") -> dict[str, np.ndarray]:
    """Standard errors of a preview's group mass (query x key groups), entropy and top-k mass (per query group).

    Stratified estimate with one row per stratum: the within-group variance of the sampled rows (a conservative
    stand-in for the within-stratum variance) times sum((stratum / group)^2), with the finite-population
    correction; 0 where every row was sampled, NaN where a group has a single sample.
    """
    samples = result.samples
    if samples is None:
        raise ValueError("standard errors exist only for a preview (WeightResult.samples)")
    out = {}
    n_query = result.group_mass.shape[2]
    for name in ("group_mass", "entropy", "top_k_mass"):
        values = getattr(samples, name)[batch]
        values = values.mean(0) if head == "mean" else values[int(head)]
        trailing = values.shape[1:]
        errors = np.zeros((n_query, *trailing))
        for index in range(n_query):
            picked, weights, count, size = _weighted(values.unsqueeze(0).unsqueeze(0), samples.sample, index)
            if count:
                errors[index] = stratified_error(picked[0, 0].double().numpy(), weights.double().numpy(), size)
        out[name] = errors
    return out
