"""Re-drawing from kept maps: bounded memory, the kept maps untouched, the same values as pooling in torch."""

import tracemalloc

import numpy as np
import pytest
import torch

from noether.explorer.layout import PoolGrid
from noether.explorer.views import HeadChoice, Pooling, display_map
from noether.explorer.weights import WeightResult, pool_dim

BINS = 512
# The last bin holds 4 tokens rather than 6: weights of short bins are part of what is checked.
GRID = PoolGrid(n=BINS * 6 - 2, factor=6)
CASES = [(head, pooling) for head in (0, 2, "mean") for pooling in ("mean", "max")]


def kept_maps() -> WeightResult:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 3, GRID.bins, GRID.bins, generator=generator)
    return WeightResult(
        rows=GRID,
        cols=GRID,
        mean=maps,
        max=maps.flip(-1).contiguous(),
        head_mean_max=maps.amax(1),
        group_mass=torch.zeros(2, 3, 1, 1),
        received=torch.zeros(2, 3, GRID.n),
    )


def torch_repool(result: WeightResult, batch: int, head: HeadChoice, pooling: Pooling, budget: int) -> np.ndarray:
    """The same re-draw written with the engine's torch pooling: counts per cell, summed, divided back."""
    if pooling == "mean":
        maps = result.mean[batch].double()
        cells = maps.mean(0) if head == "mean" else maps[head]
    else:
        assert result.max is not None and result.head_mean_max is not None
        cells = (result.head_mean_max[batch] if head == "mean" else result.max[batch, head]).double()
    target = GRID.coarsen(budget)
    multiple = target.factor // GRID.factor
    how = "sum" if pooling == "mean" else "max"
    sizes = torch.as_tensor(GRID.bin_sizes(), dtype=torch.float64)
    counts = torch.outer(sizes, sizes)
    _, pooled = pool_dim(cells * counts if pooling == "mean" else cells, 0, 0, multiple, how)
    _, pooled = pool_dim(pooled, 1, 0, multiple, how)
    if pooling == "mean":
        _, total = pool_dim(pool_dim(counts, 0, 0, multiple, "sum")[1], 1, 0, multiple, "sum")
        pooled = pooled / total
    return pooled.numpy()


@pytest.mark.parametrize(("head", "pooling"), CASES)
@pytest.mark.parametrize("budget", [200, 100, 7])
def test_redraw_equals_pooling_in_torch(head: HeadChoice, pooling: Pooling, budget: int) -> None:
    result = kept_maps()
    values, rows, cols = display_map(result, budget, batch=1, head=head, pooling=pooling)
    assert rows == cols == GRID.coarsen(budget)
    assert values.shape == (rows.bins, cols.bins)
    np.testing.assert_allclose(values, torch_repool(result, 1, head, pooling, budget), rtol=1e-6)


def test_redraw_leaves_the_kept_maps_unchanged() -> None:
    result = kept_maps()
    before = [t.clone() for t in (result.mean, result.max, result.head_mean_max)]
    for head, pooling in CASES:
        for budget in (GRID.bins, 200):
            display_map(result, budget, head=head, pooling=pooling)
    for kept, copy in zip((result.mean, result.max, result.head_mean_max), before, strict=True):
        assert torch.equal(kept, copy)


@pytest.mark.parametrize(("head", "pooling"), CASES)
def test_redraw_allocates_one_full_size_map(head: HeadChoice, pooling: Pooling) -> None:
    """A re-draw holds one float64 copy of the kept map (plus the float32 head average and the pooled maps, which
    are smaller): a second full-size temporary, e.g. a count per cell, would double its memory traffic."""
    result = kept_maps()
    full = GRID.bins * GRID.bins * 8
    tracemalloc.start()
    try:
        display_map(result, 200, head=head, pooling=pooling)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert full <= peak < 1.6 * full, peak / full
