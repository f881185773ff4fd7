"""Row statistics from the fused kernel: log-sum-exp, per-group mass and entropy equal those of the explicit softmax,
with padded keys, fully padded and empty groups, on every device, and through the fallback without the kernel."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noether.explorer import fused_stats
from noether.explorer.fused_stats import KeySegment, row_stats


def dense_reference(
    queries: torch.Tensor, segments: list[KeySegment]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """lse, per-segment mass and entropy from the whole softmax row (padding at -inf)."""
    keys = torch.cat([s.keys for s in segments], dim=-2)
    logits = queries @ keys.transpose(-1, -2) * queries.shape[-1] ** -0.5
    masks = [
        torch.ones(s.keys.shape[-2], dtype=torch.bool).expand(*queries.shape[:-1], -1)
        if s.real is None
        else s.real.expand(*queries.shape[:-1], s.keys.shape[-2])
        for s in segments
    ]
    real = torch.cat(masks, dim=-1)
    logits = logits.masked_fill(~real, float("-inf"))
    weights = torch.softmax(logits, -1)
    sizes = [s.keys.shape[-2] for s in segments]
    mass = torch.stack([part.sum(-1) for part in weights.split(sizes, -1)], -1)
    entropy = -(weights * weights.clamp_min(1e-30).log()).sum(-1)
    return torch.logsumexp(logits, -1), mass, entropy


def make_segments(
    generator: torch.Generator, batch: int, heads: int, dim: int, sizes: list[int], padded: list[int]
) -> list[KeySegment]:
    segments = []
    for size, pad in zip(sizes, padded, strict=True):
        keys = torch.randn(batch, heads, size, dim, generator=generator) * 2
        real = None
        if pad:
            real = (torch.arange(size) < size - min(pad, size)).view(1, 1, 1, size).expand(batch, 1, 1, size)
        segments.append(KeySegment(keys, real))
    return segments


@settings(max_examples=40)
@given(
    batch=st.integers(1, 2),
    heads=st.integers(1, 3),
    rows=st.integers(1, 9),
    dim=st.sampled_from([4, 8, 16]),
    sizes=st.lists(st.integers(0, 70), min_size=1, max_size=4).filter(lambda s: sum(s) > 0),
    pads=st.lists(st.integers(0, 80), min_size=4, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_fused_statistics_equal_the_softmax_row(
    batch: int, heads: int, rows: int, dim: int, sizes: list[int], pads: list[int], seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    segments = make_segments(generator, batch, heads, dim, sizes, pads[: len(sizes)])
    if all((s.real is not None and not bool(s.real.any())) or s.keys.shape[-2] == 0 for s in segments):
        segments[0] = KeySegment(torch.randn(batch, heads, 3, dim, generator=generator), None)
    queries = torch.randn(batch, heads, rows, dim, generator=generator) * 2
    lse, mass, entropy = dense_reference(queries, segments)
    for fused in (True, False):
        stats = row_stats(queries, segments, fused=fused)
        torch.testing.assert_close(stats.lse, lse, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stats.mass, mass, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(stats.entropy, entropy, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stats.mass.sum(-1), torch.ones_like(lse), atol=1e-6, rtol=0)


def test_without_the_kernel_the_same_numbers_come_from_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(3)
    segments = make_segments(generator, 2, 2, 8, [40, 25], [0, 5])
    queries = torch.randn(2, 2, 6, 8, generator=generator)
    fused = row_stats(queries, segments)
    monkeypatch.setattr(fused_stats, "_CPU_FLASH", None)
    monkeypatch.setattr(fused_stats, "FALLBACK_CHUNK_BYTES", 2 * 2 * 40 * 4 * 2)  # two rows of scores at a time
    fallback = row_stats(queries, segments)
    torch.testing.assert_close(fused.mass, fallback.mass, atol=1e-6, rtol=0)
    torch.testing.assert_close(fused.entropy, fallback.entropy, atol=1e-5, rtol=0)


def test_a_refusing_kernel_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch whose private kernel refuses the inputs (shape or dtype rules change between versions) still works."""

    def refusing(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("not supported")

    generator = torch.Generator().manual_seed(4)
    segments = make_segments(generator, 1, 2, 8, [30], [0])
    queries = torch.randn(1, 2, 5, 8, generator=generator)
    expected = row_stats(queries, segments, fused=False)
    monkeypatch.setattr(fused_stats, "_CPU_FLASH", refusing)
    torch.testing.assert_close(row_stats(queries, segments).entropy, expected.entropy, atol=1e-6, rtol=0)


def test_statistics_on_each_device(device: torch.device) -> None:
    generator = torch.Generator().manual_seed(5)
    segments = make_segments(generator, 1, 2, 16, [64, 32], [0, 7])
    queries = torch.randn(1, 2, 12, 16, generator=generator)
    expected = row_stats(queries, segments, fused=False)
    moved = [KeySegment(s.keys.to(device), None if s.real is None else s.real.to(device)) for s in segments]
    stats = row_stats(queries.to(device), moved)
    assert stats.mass.device.type == device.type
    torch.testing.assert_close(stats.mass.cpu(), expected.mass, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stats.entropy.cpu(), expected.entropy, atol=1e-4, rtol=1e-4)


def test_half_precision_queries_are_computed_in_float32() -> None:
    generator = torch.Generator().manual_seed(6)
    segments = make_segments(generator, 1, 1, 8, [20], [0])
    queries = torch.randn(1, 1, 4, 8, generator=generator)
    stats = row_stats(queries.half(), segments)
    assert stats.entropy.dtype == torch.float32
    torch.testing.assert_close(stats.entropy, row_stats(queries.half().float(), segments).entropy)
