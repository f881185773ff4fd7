"""A whole model at a glance: every attention call of a sequence of layers, summarised in one pass per layer.

For each call: its groups, patterns and analytic cost, plus the statistics of its real attention weights — how much
of each query group's attention lands on each key group (per head), mean row entropy and top-k mass per query group.
The weights are recomputed with the layer's own projections in cache-sized query chunks (as in
:mod:`noether.explorer.weights`) and folded into per-group sums before the next chunk: no pooled maps, no
(queries x keys) tensor, and the same bounded memory as one layer. The result is a pure function of the layers, so a
caller can keep it and redraw any head or statistic without recomputing.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from noether.explorer.chunk_stats import ChunkBuffers, chunk_weights, row_statistics
from noether.explorer.layout import TokenLayout
from noether.explorer.run import ExplorerRun
from noether.explorer.weights import DEFAULT_CHUNK_BYTES, WeightOptions, _pattern_keys, chunk_rows

Progress = Callable[[float, str], None]
HeadChoice = int | Literal["mean"]
RowStat = Literal["entropy", "top_k_mass"]
DEFAULT_TOP_K = 8


@dataclass(frozen=True)
class LayerSource:
    """One attention call ready to explore: where it sits in the model and the run that recomputes it."""

    path: str
    """Call id: the module path, plus ``#n`` when the module was called more than once."""
    kind: str
    """What kind of attention the call is (self / cross / joint anchor, mixed, decoder, dot product, perceiver)."""
    run: ExplorerRun
    max_abs_diff: float | None = None
    """Largest difference between the recomputed and the recorded output, when the call was verified."""

    @property
    def module(self) -> str:
        """The module path without the call index."""
        return self.path.split("#", 1)[0]


@dataclass(frozen=True)
class CallSummary:
    """One row of the overview table."""

    path: str
    kind: str
    groups: list[tuple[str, int, bool]]
    """(name, tokens on the key axis, cached) in input order."""
    patterns: list[str]
    """Each pattern as ``queries -> keys`` text."""
    num_heads: int
    attended_pairs: int
    attention_flops: float
    dense_mask_bytes: int
    mean_entropy: float
    """Row entropy in nats, averaged over heads, batch elements and every query token of the call."""
    max_abs_diff: float | None


@dataclass(frozen=True)
class LayerStatistics:
    """Attention statistics of one call, averaged over batch elements (numpy, float64)."""

    query_groups: list[str]
    key_groups: list[str]
    allowed: np.ndarray
    """Bool (query groups, key groups): where a query group attends a key group."""
    group_mass: np.ndarray
    """(heads, query groups, key groups): mean attention mass a query of the row group gives the column group."""
    entropy: np.ndarray
    """(heads, query groups): mean row entropy in nats."""
    top_k_mass: np.ndarray
    """(heads, query groups): mean mass of each row's ``top_k`` largest weights."""
    query_sizes: np.ndarray
    """Tokens of each query group (for size-weighted means)."""


@dataclass(frozen=True)
class DepthTable:
    """A value per layer (rows, in call order) and column; NaN where the column does not exist in a layer."""

    layers: list[str]
    columns: list[str]
    values: np.ndarray


@dataclass
class ModelOverview:
    """Every call of a model with its statistics, in call order."""

    calls: list[CallSummary]
    layers: list[LayerStatistics]
    top_k: int
    notes: list[str] = field(default_factory=list)

    @property
    def max_heads(self) -> int:
        return max((call.num_heads for call in self.calls), default=0)

    def mass_table(self, head: HeadChoice = "mean") -> DepthTable:
        """Depth x (query group -> key group) attention mass; pairs a layer does not attend are NaN."""
        pairs: dict[tuple[str, str], None] = {}
        for stats in self.layers:
            for i, j in zip(*np.nonzero(stats.allowed), strict=True):
                pairs.setdefault((stats.query_groups[i], stats.key_groups[j]))
        columns = list(pairs)
        values = np.full((len(self.layers), len(columns)), np.nan)
        for row, stats in enumerate(self.layers):
            mass = _pick_head(stats.group_mass, head)
            if mass is None:
                continue
            for col, (query, key) in enumerate(columns):
                if query in stats.query_groups and key in stats.key_groups:
                    i, j = stats.query_groups.index(query), stats.key_groups.index(key)
                    if stats.allowed[i, j]:
                        values[row, col] = mass[i, j]
        return DepthTable([c.path for c in self.calls], [f"{q} → {k}" for q, k in columns], values)

    def row_stat_table(self, stat: RowStat, head: HeadChoice = "mean") -> DepthTable:
        """Depth x query group mean entropy (nats) or top-k mass; NaN where a layer has no such query group."""
        groups = list(dict.fromkeys(name for stats in self.layers for name in stats.query_groups))
        values = np.full((len(self.layers), len(groups)), np.nan)
        for row, stats in enumerate(self.layers):
            per_group = _pick_head(getattr(stats, stat), head)
            if per_group is None:
                continue
            for i, name in enumerate(stats.query_groups):
                values[row, groups.index(name)] = per_group[i]
        return DepthTable([c.path for c in self.calls], groups, values)


def _pick_head(values: np.ndarray, head: HeadChoice) -> np.ndarray | None:
    """Head-mean, or one head (None when the layer has fewer heads)."""
    if head == "mean":
        return values.mean(0)
    return values[head] if 0 <= head < values.shape[0] else None


def pattern_texts(layout: TokenLayout) -> list[str]:
    """Each pattern as one line of text, as the computing pass applies it."""
    return [f"{', '.join(p.query_tokens)} -> {', '.join(p.key_value_tokens)}" for p in layout.patterns]


@torch.no_grad()
def layer_statistics(
    run: ExplorerRun,
    *,
    top_k: int = DEFAULT_TOP_K,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: Callable[[int], None] | None = None,
) -> LayerStatistics:
    """Group mass, entropy and top-k mass of one layer in a single chunked pass over its query rows.

    ``progress`` is called with the number of query rows finished so far.
    """
    layout, core = run.layout, run.core
    x_queries, freqs_queries, keys = run.x_queries, run.freqs_queries, run.keys()
    batch, heads = x_queries.shape[0], core.num_heads
    query_groups = layout.query_groups
    mass = torch.zeros(batch, heads, len(query_groups), len(layout.key_groups), dtype=torch.float64)
    entropy = torch.zeros(batch, heads, len(query_groups), dtype=torch.float64)
    top = torch.zeros(batch, heads, len(query_groups), dtype=torch.float64)
    done = 0
    for qi, group in enumerate(query_groups):
        if group.size == 0:
            continue
        pattern = layout.pattern_of(group.name)
        key_tensor, real, segments = _pattern_keys(layout, keys, list(pattern.key_value_tokens), run.key_real())
        step = chunk_rows(batch, heads, key_tensor.shape[2], 1, chunk_bytes)
        buffers = ChunkBuffers(batch * heads * min(step, group.size) * key_tensor.shape[2], key_tensor.device)
        assert group.query_offset is not None
        for start in range(0, group.size, step):
            part = slice(group.query_offset + start, group.query_offset + min(group.size, start + step))
            freqs = None if freqs_queries is None else freqs_queries[:, part]
            queries = core.project_queries(x_queries[:, part], freqs=freqs)
            logits, weights = chunk_weights(queries, key_tensor, real, buffers)
            row_entropy, row_top = row_statistics(logits, weights, top_k)
            # Rows first (one vectorised pass), then each group's keys of the per-key sums.
            per_key = weights.sum(-2)
            for seg in segments:
                mass[:, :, qi, seg.index] += per_key[..., seg.start : seg.start + seg.size].sum(-1).cpu()
            entropy[:, :, qi] += row_entropy.sum(-1).cpu()
            top[:, :, qi] += row_top.sum(-1).cpu()
            done += part.stop - part.start
            if progress is not None:
                progress(done)
    sizes = torch.tensor([max(g.size, 1) for g in query_groups], dtype=torch.float64)
    return LayerStatistics(
        query_groups=[g.name for g in query_groups],
        key_groups=[g.name for g in layout.key_groups],
        allowed=layout.allowed.copy(),
        group_mass=(mass / sizes[:, None]).mean(0).numpy(),
        entropy=(entropy / sizes).mean(0).numpy(),
        top_k_mass=(top / sizes).mean(0).numpy(),
        query_sizes=sizes.numpy(),
    )


def call_summary(layer: LayerSource, stats: LayerStatistics) -> CallSummary:
    """The overview row of one call."""
    run = layer.run
    cost = run.cost()
    weights = stats.query_sizes / max(stats.query_sizes.sum(), 1.0)
    return CallSummary(
        path=layer.path,
        kind=layer.kind,
        groups=[(g.name, g.size, g.cached) for g in run.layout.groups],
        patterns=pattern_texts(run.layout),
        num_heads=run.core.num_heads,
        attended_pairs=cost.attended_pairs,
        attention_flops=cost.attention_flops,
        dense_mask_bytes=cost.dense_mask_bytes,
        mean_entropy=float((stats.entropy.mean(0) * weights).sum()),
        max_abs_diff=layer.max_abs_diff,
    )


def model_overview(
    layers: Sequence[LayerSource],
    *,
    top_k: int = DEFAULT_TOP_K,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: Progress | None = None,
) -> ModelOverview:
    """Summaries and attention statistics of every call, one chunked pass per layer, in call order.

    Args:
        layers: The calls, in the order the model made them.
        top_k: k of the top-k mass statistic.
        chunk_bytes: Bytes of one chunk of scores (the pass holds about three at once).
        progress: Called with (fraction done, message) after each chunk; fractions count query rows of all layers.
    """
    total = max(sum(layer.run.layout.n_queries for layer in layers), 1)
    calls, stats, notes = [], [], []
    finished = 0
    for number, layer in enumerate(layers, start=1):
        run = layer.run

        def report(done: int, layer: LayerSource = layer, number: int = number, before: int = finished) -> None:
            if progress is not None:
                progress(
                    min(1.0, (before + done) / total),
                    f"layer {number}/{len(layers)} {layer.path}: {done:,}/{layer.run.layout.n_queries:,} queries",
                )

        run.check(run.weights_estimate(1, _overview_options(top_k, chunk_bytes)))
        layer_stats = layer_statistics(run, top_k=top_k, chunk_bytes=chunk_bytes, progress=report)
        stats.append(layer_stats)
        calls.append(call_summary(layer, layer_stats))
        finished += run.layout.n_queries
        if layer.max_abs_diff is None:
            notes.append(f"{layer.path}: not verified against a recorded output.")
    if progress is not None:
        progress(1.0, f"overview of {len(layers)} calls done")
    return ModelOverview(calls=calls, layers=stats, top_k=top_k, notes=notes)


def _overview_options(top_k: int, chunk_bytes: int) -> WeightOptions:
    """The weight-pass options whose estimate bounds the overview pass (no pooled maps)."""
    return WeightOptions(max_pooling=False, head_mean_max=False, row_stats=True, top_k=top_k, chunk_bytes=chunk_bytes)


def call_table(overview: ModelOverview) -> list[dict[str, object]]:
    """The overview rows as display records (one per call)."""
    rows = []
    for call in overview.calls:
        rows.append(
            {
                "call": call.path,
                "kind": call.kind,
                "groups": ", ".join(f"{n} ({'cache ' if cached else ''}{s:,})" for n, s, cached in call.groups),
                "patterns": "; ".join(call.patterns),
                "heads": call.num_heads,
                "attended pairs": call.attended_pairs,
                "attention GFLOP": round(call.attention_flops / 1e9, 3),
                "dense mask MB": round(call.dense_mask_bytes / 2**20, 2),
                "mean entropy (nats)": round(call.mean_entropy, 4),
                "verified max diff": "not verified" if call.max_abs_diff is None else f"{call.max_abs_diff:.2e}",
            }
        )
    return rows
