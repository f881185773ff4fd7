"""Attention weights (softmax probabilities) as the module computes them, pooled onto a pixel grid in query chunks.

Never builds the (queries x keys) matrix: each query group is processed in row chunks against the keys of its
pattern, and every chunk is folded into pooled maps and statistics before the next one is computed. Peak extra
memory is about ``3 * chunk_bytes`` plus the maps.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from noether.explorer.chunk_stats import ChunkBuffers, chunk_weights, row_statistics
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.modeling.modules.attention.anchor_attention import MixedAttention

if TYPE_CHECKING:
    from noether.explorer.sampling import PreviewSamples

Progress = Callable[[float, str], None]
DEFAULT_CHUNK_BYTES = 4 * 2**20
"""Scores of a chunk: the logits, weights and head sum of a chunk stay within a CPU's last-level cache, so softmax,
statistics and pooling read them from cache, and a chunk is big enough that the per-op overhead stays small.
Measured at one torch thread on a 32 MiB-L3, 2 MiB-L2 CPU, exact pass / forward at 24k tokens for 1/2/4/8/16 MiB:
1.39/1.41/1.27/1.32/1.47; at 98k tokens 4 MiB 1.54, 16 MiB 2.10."""
PROGRESS_STEPS = 200
"""Progress reports per pass: a callback per chunk (thousands at 100k tokens) costs more than the chunks in a UI."""


class Cancelled(Exception):
    """A pass stopped because its cancel event was set (checked between chunks)."""


@dataclass(frozen=True)
class WeightOptions:
    """What the chunked pass computes besides the head-wise mean-pooled map."""

    max_pooling: bool = True
    """Per-head max-pooled maps (one more reduction per chunk)."""
    head_mean_max: bool = True
    """Max-pooled map of the head-averaged weights (averages heads per chunk first)."""
    row_stats: bool = True
    """Entropy and top-k mass per query row (a log and a top-k per chunk: the costliest extras)."""
    top_k: int = 8
    """k of the top-k mass statistic."""
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    """Bytes of one chunk of scores; the pass holds about three of them at once."""


@dataclass
class WeightResult:
    """Pooled attention weights and per-group statistics of one scenario run (all on cpu, float32)."""

    rows: PoolGrid
    cols: PoolGrid
    mean: torch.Tensor
    """(batch, heads, row bins, column bins): mean of the weights in each cell (zeros outside the mask count)."""
    max: torch.Tensor | None
    """(batch, heads, row bins, column bins): largest weight in each cell."""
    head_mean_max: torch.Tensor | None
    """(batch, row bins, column bins): largest head-averaged weight in each cell."""
    group_mass: torch.Tensor
    """(batch, heads, query groups, key groups): mean attention mass a query of the row group gives each group."""
    received: torch.Tensor
    """(batch, heads, keys): total attention each key token receives from all queries."""
    entropy: torch.Tensor | None = None
    """(batch, heads, query groups): mean row entropy in nats."""
    top_k_mass: torch.Tensor | None = None
    """(batch, heads, query groups): mean mass of each row's ``top_k`` largest weights."""
    top_k: int = 0
    notes: list[str] = field(default_factory=list)
    origin: tuple[int, int] = (0, 0)
    """First query row and key column the maps cover (non-zero for a window of the full map)."""
    samples: "PreviewSamples | None" = None
    """None for an exact result; for a preview, the sampled rows and their statistics (see ``sampling``)."""

    @property
    def preview(self) -> bool:
        return self.samples is not None

    @property
    def sampled_rows(self) -> int:
        return 0 if self.samples is None else len(self.samples.sample.rows)


def _reduce(x: torch.Tensor, dim: int, how: str, keepdim: bool = False) -> torch.Tensor:
    return x.sum(dim, keepdim=keepdim) if how == "sum" else x.amax(dim, keepdim=keepdim)


def pool_dim(x: torch.Tensor, dim: int, offset: int, factor: int, how: str) -> tuple[int, torch.Tensor]:
    """Pool ``x`` along ``dim`` into bins of ``factor`` tokens, ``x`` starting at global token ``offset``.

    Returns the global index of the first bin touched and the pooled tensor (partial bins at either end are
    reduced over the tokens present; callers accumulate them with neighbouring chunks).
    """
    n = x.shape[dim]
    if factor == 1 or n == 0:
        return offset // factor, x
    head = min((-offset) % factor, n)
    body = (n - head) // factor * factor
    tail = n - head - body
    parts = []
    if head:
        parts.append(_reduce(x.narrow(dim, 0, head), dim, how, keepdim=True))
    if body:
        parts.append(_reduce(x.narrow(dim, head, body).unflatten(dim, (body // factor, factor)), dim + 1, how))
    if tail:
        parts.append(_reduce(x.narrow(dim, head + body, tail), dim, how, keepdim=True))
    return offset // factor, torch.cat(parts, dim) if len(parts) > 1 else parts[0]


def _accumulate(target: torch.Tensor, row0: int, col0: int, block: torch.Tensor, how: str) -> None:
    region = target[..., row0 : row0 + block.shape[-2], col0 : col0 + block.shape[-1]]
    if how == "sum":
        region += block
    else:
        torch.maximum(region, block, out=region)


@dataclass
class _Segment:
    """A key group inside a pattern's concatenated keys."""

    index: int
    start: int
    size: int
    key_offset: int


def group_keys(
    core: MixedAttention,
    layout: TokenLayout,
    x_keys: torch.Tensor,
    freqs_keys: torch.Tensor | None,
    kv_cache: dict[str, dict[str, torch.Tensor]] | None,
) -> dict[str, torch.Tensor]:
    """Keys of every group some pattern reads, as the forward pass uses them (from the cache for cached groups).

    ``x_keys`` and ``freqs_keys`` are input-axis tensors (every group, see :class:`TokenLayout`).
    """
    needed = dict.fromkeys(name for p in layout.patterns for name in p.key_value_tokens)
    keys = {}
    for name in needed:
        group = layout.by_name[name]
        if group.cached:
            assert kv_cache is not None
            keys[name] = kv_cache[name]["k"]
            continue
        part = group.input_span
        freqs = None if freqs_keys is None else freqs_keys[:, part]
        keys[name], _ = core.project_keys_values(x_keys[:, part], freqs=freqs)
    return keys


class _Pass:
    """State of one chunked pass over all query groups."""

    def __init__(
        self, layout: TokenLayout, batch: int, heads: int, rows: PoolGrid, cols: PoolGrid, opts: WeightOptions
    ):
        self.layout, self.rows, self.cols, self.opts = layout, rows, cols, opts
        shape = (batch, heads, rows.bins, cols.bins)
        self.mean = torch.zeros(shape)
        self.max = torch.zeros(shape) if opts.max_pooling else None
        self.head_mean_max = torch.zeros((batch, rows.bins, cols.bins)) if opts.head_mean_max else None
        n_query, n_key = len(layout.query_groups), len(layout.key_groups)
        self.group_mass = torch.zeros(batch, heads, n_query, n_key)
        self.received = torch.zeros(batch, heads, layout.n_keys)
        self.entropy = torch.zeros(batch, heads, n_query) if opts.row_stats else None
        self.top_k_mass = torch.zeros(batch, heads, n_query) if opts.row_stats else None
        self._head_buffer: torch.Tensor | None = None

    def add_chunk(
        self,
        weights: torch.Tensor,
        query_index: int,
        row0: int,
        segments: list[_Segment],
        logits: torch.Tensor,
    ) -> None:
        """Fold weights (batch, heads, rows, pattern keys) of query rows starting at global ``row0``."""
        opts = self.opts
        cpu = torch.device("cpu")
        bin0, summed = pool_dim(weights, 2, row0, self.rows.factor, "sum")
        per_key = summed.sum(2)
        maxed = pool_dim(weights, 2, row0, self.rows.factor, "max")[1] if opts.max_pooling else None
        head_max = None
        if opts.head_mean_max:
            # Max-pool the head sum and divide the pooled block: the mean's division costs no pass over the chunk.
            if self._head_buffer is None or self._head_buffer.numel() < weights[:, 0].numel():
                self._head_buffer = torch.empty(weights[:, 0].numel(), device=weights.device)
            total = head_sum(weights, out=self._head_buffer[: weights[:, 0].numel()].view(weights[:, 0].shape))
            head_max = pool_dim(total, 1, row0, self.rows.factor, "max")[1].div_(weights.shape[1])
        for seg in segments:
            if seg.size == 0:
                continue
            cols = slice(seg.start, seg.start + seg.size)
            col0, block = pool_dim(summed[..., cols], 3, seg.key_offset, self.cols.factor, "sum")
            _accumulate(self.mean, bin0, col0, block.to(cpu), "sum")
            if maxed is not None and self.max is not None:
                _accumulate(
                    self.max,
                    bin0,
                    col0,
                    pool_dim(maxed[..., cols], 3, seg.key_offset, self.cols.factor, "max")[1].to(cpu),
                    "max",
                )
            if head_max is not None and self.head_mean_max is not None:
                _accumulate(
                    self.head_mean_max,
                    bin0,
                    col0,
                    pool_dim(head_max[..., cols], 2, seg.key_offset, self.cols.factor, "max")[1].to(cpu),
                    "max",
                )
            self.group_mass[:, :, query_index, seg.index] += per_key[..., cols].sum(-1).to(cpu)
            self.received[..., seg.key_offset : seg.key_offset + seg.size] += per_key[..., cols].to(cpu)
        if self.entropy is not None and self.top_k_mass is not None:
            entropy, top = row_statistics(logits, weights, opts.top_k)
            self.entropy[:, :, query_index] += entropy.sum(-1).to(cpu)
            self.top_k_mass[:, :, query_index] += top.sum(-1).to(cpu)

    def result(self) -> WeightResult:
        counts = torch.outer(
            torch.as_tensor(self.rows.bin_sizes(), dtype=torch.float32),
            torch.as_tensor(self.cols.bin_sizes(), dtype=torch.float32),
        )
        sizes = torch.tensor([max(g.size, 1) for g in self.layout.query_groups], dtype=torch.float32)
        return WeightResult(
            rows=self.rows,
            cols=self.cols,
            mean=self.mean / counts,
            max=self.max,
            head_mean_max=self.head_mean_max,
            group_mass=self.group_mass / sizes[:, None],
            received=self.received,
            entropy=None if self.entropy is None else self.entropy / sizes,
            top_k_mass=None if self.top_k_mass is None else self.top_k_mass / sizes,
            top_k=self.opts.top_k if self.opts.row_stats else 0,
        )


def _pattern_keys(
    layout: TokenLayout, keys: dict[str, torch.Tensor], names: list[str], key_real: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, list[_Segment]]:
    """Concatenated keys of a pattern, its padding mask (True = real), and where each group sits in it.

    ``key_real`` (batch, key axis) is a recorded per-sample padding mask; it replaces the layout's trailing padding.
    """
    column = {g.name: j for j, g in enumerate(layout.key_groups)}
    segments, start = [], 0
    for name in names:
        group = layout.by_name[name]
        segments.append(_Segment(index=column[name], start=start, size=group.size, key_offset=group.key_span.start))
        start += group.size
    key_tensor = torch.cat([keys[name] for name in names], dim=2).float()
    real = None
    if key_real is not None:
        parts = [key_real[:, layout.by_name[n].key_span] for n in names]
        real = torch.cat(parts, dim=1)[:, None, None, :].to(key_tensor.device)
        return key_tensor, (None if bool(real.all()) else real), segments
    if any(layout.by_name[name].padding for name in names):
        real = torch.cat([torch.arange(layout.by_name[n].size) < layout.by_name[n].real_keys for n in names])
        real = real.to(key_tensor.device)
    return key_tensor, real, segments


def _logits(queries: torch.Tensor, keys: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
    """Scaled dot products in fp32, padded keys at -inf."""
    scores = (queries.float() * queries.shape[-1] ** -0.5) @ keys.transpose(-1, -2)
    if real is not None:
        scores.masked_fill_(~real, float("-inf"))
    return scores


def _scores(queries: torch.Tensor, keys: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
    """Softmax probabilities of scaled dot products, padded keys masked out."""
    return torch.softmax(_logits(queries, keys, real), dim=-1)


def head_sum(weights: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over dim 1 as element-wise adds of head slices: several times faster than a strided reduction."""
    if weights.shape[1] == 1:
        return weights[:, 0]
    total = torch.add(weights[:, 0], weights[:, 1], out=out)
    for head in range(2, weights.shape[1]):
        total += weights[:, head]
    return total


def head_mean(weights: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 (see :func:`head_sum`)."""
    return head_sum(weights).div_(weights.shape[1]) if weights.shape[1] > 1 else weights[:, 0].clone()


def chunk_rows(batch: int, heads: int, n_keys: int, factor: int, chunk_bytes: int) -> int:
    """Query rows per chunk: as many as fit in ``chunk_bytes`` of fp32 scores, a multiple of the row pooling factor."""
    row_bytes = max(1, batch * heads * n_keys * 4)
    rows = max(1, chunk_bytes // row_bytes)
    if rows < factor and factor * row_bytes <= 2 * chunk_bytes:
        return factor  # one whole row bin per chunk beats many partial ones at up to twice the bytes
    return max(factor, rows // factor * factor) if rows >= factor else rows


@torch.no_grad()
def attention_weight_maps(
    core: MixedAttention,
    layout: TokenLayout,
    x_queries: torch.Tensor,
    freqs_queries: torch.Tensor | None,
    keys: dict[str, torch.Tensor],
    rows: PoolGrid,
    cols: PoolGrid,
    options: WeightOptions | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    key_real: torch.Tensor | None = None,
) -> WeightResult:
    """Pooled attention weights and statistics of every query group, computed chunk by chunk.

    Args:
        core: The MixedAttention whose projections produce the queries.
        layout: Token axes of the scenario.
        x_queries: (batch, queries, hidden_dim) input of the pass that computes queries.
        freqs_queries: RoPE frequencies of those tokens, or None.
        keys: Keys per group (see :func:`group_keys`).
        rows, cols: Pooling of the query and key axes.
        options: What to compute besides the mean-pooled maps.
        progress: Called with (fraction done, message) at most ``PROGRESS_STEPS`` times.
        cancel: Checked between chunks; when set, the pass raises :class:`Cancelled`.
        key_real: Optional recorded (batch, key axis) padding mask, True = real key.
    """
    opts = options or WeightOptions()
    batch, heads = x_queries.shape[0], core.num_heads
    state = _Pass(layout, batch, heads, rows, cols, opts)
    total, done = max(layout.n_queries, 1), 0
    reported = -1
    for query_index, group in enumerate(layout.query_groups):
        if group.size == 0:
            continue
        pattern = layout.pattern_of(group.name)
        key_tensor, real, segments = _pattern_keys(layout, keys, list(pattern.key_value_tokens), key_real)
        step = chunk_rows(batch, heads, key_tensor.shape[2], rows.factor, opts.chunk_bytes)
        buffers = ChunkBuffers(batch * heads * min(step, group.size) * key_tensor.shape[2], key_tensor.device)
        assert group.query_offset is not None
        start = 0
        while start < group.size:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"stopped after {done:,} of {total:,} query tokens")
            # Align chunk ends to row bins so that most bins are reduced inside one chunk.
            row0 = group.query_offset + start
            stop = min(group.size, start + step - (row0 % rows.factor if step >= rows.factor else 0))
            stop = max(stop, start + 1)
            part = slice(row0, group.query_offset + stop)
            freqs = None if freqs_queries is None else freqs_queries[:, part]
            queries = core.project_queries(x_queries[:, part], freqs=freqs)
            logits, weights = chunk_weights(queries, key_tensor, real, buffers)
            state.add_chunk(weights, query_index, row0, segments, logits)
            done += stop - start
            start = stop
            step_now = done * PROGRESS_STEPS // total
            if progress is not None and step_now != reported:
                reported = step_now
                progress(done / total, f"attention weights: {group.name} ({done:,}/{total:,} query tokens)")
    return state.result()


@torch.no_grad()
def exact_row(
    core: MixedAttention,
    layout: TokenLayout,
    x_queries: torch.Tensor,
    freqs_queries: torch.Tensor | None,
    keys: dict[str, torch.Tensor],
    row: int,
    key_real: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact attention weights of one query token over the whole key axis: (batch, heads, keys), zeros outside."""
    group, _ = layout.query_group_at(row)
    pattern = layout.pattern_of(group.name)
    key_tensor, real, segments = _pattern_keys(layout, keys, list(pattern.key_value_tokens), key_real)
    freqs = None if freqs_queries is None else freqs_queries[:, row : row + 1]
    weights = _scores(core.project_queries(x_queries[:, row : row + 1], freqs=freqs), key_tensor, real)[:, :, 0]
    full = torch.zeros(x_queries.shape[0], core.num_heads, layout.n_keys)
    for seg in segments:
        full[..., seg.key_offset : seg.key_offset + seg.size] = weights[..., seg.start : seg.start + seg.size].cpu()
    return full
