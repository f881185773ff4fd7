"""Exact attention weights of a window of the map: a range of query rows against a range of key columns.

Rows are whole softmax rows (every key of the pattern enters the normalisation); only the window's columns are
kept, pooled onto at most ``pixels`` bins per axis, so a small window shows one cell per query-key pair.
"""

import re
from dataclasses import dataclass

import torch

from noether.explorer.chunk_stats import ChunkBuffers, chunk_weights
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.problems import ExplorerError, Problem
from noether.explorer.weights import DEFAULT_CHUNK_BYTES, WeightResult, _pattern_keys, head_mean, pool_dim
from noether.modeling.modules.attention.anchor_attention import MixedAttention

WINDOW_SYNTAX = "Q0:Q1,K0:K1"
_WINDOW = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class Window:
    """Query rows [q0, q1) and key columns [k0, k1) of the full map."""

    q0: int
    q1: int
    k0: int
    k1: int

    @property
    def rows(self) -> int:
        return self.q1 - self.q0

    @property
    def cols(self) -> int:
        return self.k1 - self.k0

    def __str__(self) -> str:
        return f"{self.q0}:{self.q1},{self.k0}:{self.k1}"


def parse_window(text: str, field: str = "--window") -> Window:
    """``Q0:Q1,K0:K1`` (half-open token ranges on the query and key axes) as a Window; ExplorerError otherwise."""
    match = _WINDOW.match(text)
    if not match:
        raise ExplorerError(
            Problem(
                field,
                f"{text!r} is not a window.",
                f"Write {WINDOW_SYNTAX}: query tokens Q0 to Q1 (excluded) and key tokens K0 to K1, e.g. 0:1024,0:1024.",
            )
        )
    return Window(*(int(part) for part in match.groups()))


def check_window(window: Window, layout: TokenLayout, field: str = "--window") -> None:
    """ExplorerError naming the axis when a range is empty or leaves the map."""
    for axis, lo, hi, n in (
        ("query", window.q0, window.q1, layout.n_queries),
        ("key", window.k0, window.k1, layout.n_keys),
    ):
        if not 0 <= lo < hi <= n:
            raise ExplorerError(
                Problem(
                    field,
                    f"the {axis} range {lo}:{hi} is not inside 0:{n}.",
                    f"Give a non-empty {axis} range within 0:{n} (end excluded).",
                )
            )


@torch.no_grad()
def window_weights(
    core: MixedAttention,
    layout: TokenLayout,
    x_queries: torch.Tensor,
    freqs_queries: torch.Tensor | None,
    keys: dict[str, torch.Tensor],
    window: Window,
    pixels: int = 1024,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    key_real: torch.Tensor | None = None,
) -> WeightResult:
    """Mean- and max-pooled exact weights of the window (grids over the window's own tokens, factor 1 when it fits).

    ``group_mass``, ``received`` and the row statistics are not computed for a window (zeros / None).
    """
    check_window(window, layout)
    batch, heads = x_queries.shape[0], core.num_heads
    rows, cols = PoolGrid.fit(window.rows, pixels), PoolGrid.fit(window.cols, pixels)
    summed = torch.zeros(batch, heads, rows.bins, cols.bins)
    maxed = torch.zeros(batch, heads, rows.bins, cols.bins)
    head_max = torch.zeros(batch, rows.bins, cols.bins)
    for group in layout.query_groups:
        assert group.query_offset is not None
        lo, hi = max(window.q0, group.query_offset), min(window.q1, group.query_offset + group.size)
        if lo >= hi:
            continue
        key_tensor, real, segments = _pattern_keys(
            layout, keys, list(layout.pattern_of(group.name).key_value_tokens), key_real
        )
        overlaps = []
        for seg in segments:
            c0, c1 = max(window.k0, seg.key_offset), min(window.k1, seg.key_offset + seg.size)
            if c0 < c1:
                overlaps.append((seg.start + c0 - seg.key_offset, c1 - c0, c0 - window.k0))
        if not overlaps:
            continue
        step = max(1, chunk_bytes // (4 * batch * heads * max(key_tensor.shape[2], 1)))
        buffers = ChunkBuffers(batch * heads * min(step, hi - lo) * key_tensor.shape[2], key_tensor.device)
        for start in range(lo, hi, step):
            stop = min(hi, start + step)
            freqs = None if freqs_queries is None else freqs_queries[:, start:stop]
            queries = core.project_queries(x_queries[:, start:stop], freqs=freqs)
            _, weights = chunk_weights(queries, key_tensor, real, buffers)
            for column, width, offset in overlaps:
                part = weights[..., column : column + width]
                row0, block = pool_dim(part, 2, start - window.q0, rows.factor, "sum")
                col0, block = pool_dim(block, 3, offset, cols.factor, "sum")
                summed[..., row0 : row0 + block.shape[2], col0 : col0 + block.shape[3]] += block.cpu()
                _, block = pool_dim(part, 2, start - window.q0, rows.factor, "max")
                _, block = pool_dim(block, 3, offset, cols.factor, "max")
                region = maxed[..., row0 : row0 + block.shape[2], col0 : col0 + block.shape[3]]
                torch.maximum(region, block.cpu(), out=region)
                _, block = pool_dim(head_mean(part), 1, start - window.q0, rows.factor, "max")
                _, block = pool_dim(block, 2, offset, cols.factor, "max")
                region = head_max[..., row0 : row0 + block.shape[1], col0 : col0 + block.shape[2]]
                torch.maximum(region, block.cpu(), out=region)
    counts = torch.outer(
        torch.as_tensor(rows.bin_sizes(), dtype=torch.float32), torch.as_tensor(cols.bin_sizes(), dtype=torch.float32)
    )
    return WeightResult(
        rows=rows,
        cols=cols,
        mean=summed / counts,
        max=maxed,
        head_mean_max=head_max,
        group_mass=torch.zeros(batch, heads, len(layout.query_groups), len(layout.key_groups)),
        received=torch.zeros(batch, heads, window.cols),
        notes=[f"exact window {window} (query tokens {window.q0}..{window.q1 - 1}, keys {window.k0}..{window.k1 - 1})"],
        origin=(window.q0, window.k0),
    )
