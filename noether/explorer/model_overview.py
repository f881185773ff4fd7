"""A whole model at a glance: every attention call of a sequence of layers, summarised in one pass per layer.

For each call: its groups, patterns and analytic cost, plus the statistics of its real attention weights — how much
of each query group's attention lands on each key group (per head), mean row entropy and top-k mass per query group.
The statistics are recomputed with the layer's own projections (:mod:`noether.explorer.layer_stats`): masses and
entropies from every query row through the fused attention kernel, top-k mass from a stratified sample of rows with
its standard error; no pooled maps, no (queries x keys) tensor. The result is a pure function of the layers (and the
seed), so a caller can keep it and redraw any head or statistic without recomputing.
"""

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from noether.explorer import guard
from noether.explorer.layer_stats import (
    DEFAULT_TOP_K,
    DEFAULT_TOP_K_ROWS,
    HeadChoice,
    LayerStatistics,
    layer_statistics,
    statistics_estimate,
)
from noether.explorer.layout import TokenLayout
from noether.explorer.run import ExplorerRun
from noether.explorer.weights import DEFAULT_CHUNK_BYTES

Progress = Callable[[float, str], None]
RowStat = Literal["entropy", "top_k_mass"]


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
    top_k_rows: int | None = DEFAULT_TOP_K_ROWS
    """Rows per query group behind the top-k mass (None: every row)."""
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

    def top_k_error_table(self, head: HeadChoice = "mean") -> DepthTable:
        """Standard errors of :meth:`row_stat_table` ``("top_k_mass", head)``, cell for cell (0 where exact)."""
        table = self.row_stat_table("top_k_mass", head)
        errors = np.full_like(table.values, np.nan)
        for row, stats in enumerate(self.layers):
            if head != "mean" and not 0 <= head < stats.entropy.shape[0]:
                continue
            for i, name in enumerate(stats.query_groups):
                errors[row, table.columns.index(name)] = stats.top_k_error(head)[i]
        return DepthTable(table.layers, table.columns, errors)

    @property
    def top_k_note(self) -> str:
        """How the top-k mass was computed, in words for a caption."""
        if self.top_k_rows is None:
            return f"Top-{self.top_k} mass: every query row."
        sampled = sum(len(s.strata) < s.size for stats in self.layers for s in stats.top_k_samples if s is not None)
        if not sampled:
            return f"Top-{self.top_k} mass: every query row (no group is larger than {self.top_k_rows:,} rows)."
        return (
            f"Top-{self.top_k} mass: mean over {self.top_k_rows:,} stratified random rows of each larger query group "
            f"({sampled} group{'s' if sampled != 1 else ''} in all), error bars ±1 standard error; masses and "
            "entropies use every row."
        )


def _pick_head(values: np.ndarray, head: HeadChoice) -> np.ndarray | None:
    """Head-mean, or one head (None when the layer has fewer heads)."""
    if head == "mean":
        return values.mean(0)
    return values[head] if 0 <= head < values.shape[0] else None


def pattern_texts(layout: TokenLayout) -> list[str]:
    """Each pattern as one line of text, as the computing pass applies it."""
    return [f"{', '.join(p.query_tokens)} -> {', '.join(p.key_value_tokens)}" for p in layout.patterns]


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
    top_k_rows: int | None = DEFAULT_TOP_K_ROWS,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> ModelOverview:
    """Summaries and attention statistics of every call, one chunked pass per layer, in call order.

    Args:
        layers: The calls, in the order the model made them.
        top_k: k of the top-k mass statistic (0: none).
        top_k_rows: Rows per query group whose top-k mass is computed (None: every row, at about twice the cost).
        chunk_bytes: Bytes of one chunk of scores (the pass holds about three at once).
        seed: Seed of the top-k row sample (the same seed gives the same overview).
        progress: Called with (fraction done, message) after each chunk; fractions count query rows of all layers.
        cancel: When set, the pass stops between chunks with :class:`~noether.explorer.weights.Cancelled`.
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

        run.check(statistics_estimate(run, top_k=top_k, top_k_rows=top_k_rows, chunk_bytes=chunk_bytes))
        layer_stats = layer_statistics(
            run,
            top_k=top_k,
            top_k_rows=top_k_rows,
            chunk_bytes=chunk_bytes,
            seed=seed + number,
            progress=report,
            cancel=cancel,
        )
        stats.append(layer_stats)
        calls.append(call_summary(layer, layer_stats))
        finished += run.layout.n_queries
        if layer.max_abs_diff is None:
            notes.append(f"{layer.path}: not verified against a recorded output.")
    if progress is not None:
        progress(1.0, f"overview of {len(layers)} calls done")
    return ModelOverview(calls=calls, layers=stats, top_k=top_k, top_k_rows=top_k_rows, notes=notes)


def overview_estimate(
    layers: Sequence[LayerSource], *, top_k: int = DEFAULT_TOP_K, top_k_rows: int | None = DEFAULT_TOP_K_ROWS
) -> guard.Estimate:
    """The whole overview's time (summed over layers) and memory (the largest layer's)."""
    parts = [statistics_estimate(layer.run, top_k=top_k, top_k_rows=top_k_rows) for layer in layers]
    return guard.Estimate(
        f"the overview of {len(layers)} calls",
        max((p.bytes for p in parts), default=0),
        sum(p.seconds for p in parts),
    )


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
