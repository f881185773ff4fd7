"""Attention statistics of one layer in one pass: per-group mass and entropy from every query row, top-k mass from
a stratified sample of rows, with its standard error.

Masses and entropies come from the fused attention kernel (:mod:`noether.explorer.fused_stats`) in tall query chunks,
so the pass costs about one forward and holds no (queries x keys) tensor. A top-k needs each row's scores; those are
computed only for the sampled rows, a chunk of scores at a time.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from noether.explorer import guard
from noether.explorer.chunk_stats import masked_scores, top_k_values
from noether.explorer.fused_stats import KeySegment, row_stats
from noether.explorer.run import ExplorerRun
from noether.explorer.sampling import stratified_error
from noether.explorer.weights import DEFAULT_CHUNK_BYTES, Cancelled, _pattern_keys, chunk_rows

HeadChoice = int | Literal["mean"]
DEFAULT_TOP_K = 8
DEFAULT_TOP_K_ROWS = 64
"""Query rows per group whose top-k mass is computed. A top-k needs each row's scores, which the fused kernel behind
the other statistics never holds, and torch's CPU top-k costs microseconds per row: on the demo capture at one
thread, every row took 3.3x the forward passes, 256 rows 2.0x, 64 rows 1.3x, without top-k 1.0x. At 64 rows the
standard error is a median 3% of the value (6% at most); the mean comes with it, and None computes every row."""


@dataclass(frozen=True)
class TopKSample:
    """Top-k mass of sampled rows of one query group: one random row per stratum of consecutive rows."""

    values: np.ndarray
    """(batch, heads, sampled rows): mass of each sampled row's k largest weights."""
    strata: np.ndarray
    """Rows of the stratum each sampled row stands for (sums to ``size``)."""
    size: int
    """Rows of the group."""

    def mean(self) -> np.ndarray:
        """(heads,) stratified estimate of the group's mean top-k mass, averaged over batch elements."""
        return (self.values.mean(0) * self.strata).sum(-1) / self.size

    def error(self, head: HeadChoice = "mean") -> float:
        """Standard error of the estimate for one head or the head mean; 0 when every row was computed."""
        per_row = self.values.mean(0)
        values = per_row.mean(0) if head == "mean" else per_row[head]
        return float(stratified_error(values, self.strata, self.size))


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
    top_k_samples: list[TopKSample | None]
    """Per query group, the rows behind its top-k mass (None for an empty group or when top-k was not asked)."""
    query_sizes: np.ndarray
    """Tokens of each query group (for size-weighted means)."""

    @property
    def top_k_mass(self) -> np.ndarray:
        """(heads, query groups): mean mass of a row's ``top_k`` largest weights (NaN where not computed)."""
        heads = self.entropy.shape[0]
        columns = [np.full(heads, np.nan) if s is None else s.mean() for s in self.top_k_samples]
        return np.stack(columns, axis=-1) if columns else np.zeros((heads, 0))

    def top_k_error(self, head: HeadChoice = "mean") -> np.ndarray:
        """(query groups,): standard error of the top-k mass of one head or the head mean."""
        return np.array([np.nan if s is None else s.error(head) for s in self.top_k_samples])


def statistics_estimate(
    run: ExplorerRun,
    *,
    top_k: int = DEFAULT_TOP_K,
    top_k_rows: int | None = DEFAULT_TOP_K_ROWS,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> guard.Estimate:
    """Memory and time of :func:`layer_statistics`: about one forward pass, plus the scores of the top-k rows.

    Memory: the keys, a tall query chunk with its per-group outputs, and a chunk of scores with its top-k buffers.
    """
    layout, attention = run.layout, run.scenario.attention
    batch, heads = run.scenario.run.batch_size, attention.num_heads
    keys = 4 * batch * layout.n_keys * attention.hidden_dim
    scored = 0
    if top_k > 0:
        for group in layout.query_groups:
            rows = group.size if top_k_rows is None else min(group.size, top_k_rows)
            pattern_keys = sum(layout.by_name[n].size for n in layout.pattern_of(group.name).key_value_tokens)
            scored += batch * heads * rows * pattern_keys
    forward = run.forward_estimate()
    return guard.Estimate(
        "the attention statistics of the overview",
        keys + 5 * chunk_bytes + forward.bytes // 4,
        forward.seconds + guard.estimate_seconds(run.device, 0.0, scored, row_stats=True),
    )


def _top_k_strata(size: int, rows: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a group whose top-k mass is computed, and the stratum size each stands for (one random row per
    equal run of rows; every row when ``rows`` is None or covers the group)."""
    if rows is None or rows >= size:
        return np.arange(size), np.ones(size, dtype=np.int64)
    edges = np.arange(rows + 1, dtype=np.int64) * size // rows
    low, width = edges[:-1], np.diff(edges)
    return low + (rng.random(rows) * width).astype(np.int64), width


@torch.no_grad()
def layer_statistics(
    run: ExplorerRun,
    *,
    top_k: int = DEFAULT_TOP_K,
    top_k_rows: int | None = DEFAULT_TOP_K_ROWS,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    seed: int = 0,
    fused: bool = True,
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> LayerStatistics:
    """Group mass, entropy and top-k mass of one layer in a single chunked pass over its query rows.

    Group masses and entropies use every query row and come from one fused attention call per key group
    (:mod:`noether.explorer.fused_stats`). Top-k mass needs the row's scores, so it is computed from ``top_k_rows``
    stratified random rows per query group (every row when None or when the group is no larger), with a standard
    error. ``fused=False`` computes masses and entropies from materialised scores (the reference).
    ``progress`` is called with the number of query rows finished so far; a set ``cancel`` event stops the pass
    between chunks (:class:`~noether.explorer.weights.Cancelled`).
    """
    layout, core = run.layout, run.core
    x_queries, freqs_queries, keys = run.x_queries, run.freqs_queries, run.keys()
    batch, heads = x_queries.shape[0], core.num_heads
    query_groups = layout.query_groups
    rng = np.random.default_rng(seed)
    mass = torch.zeros(batch, heads, len(query_groups), len(layout.key_groups), dtype=torch.float64)
    entropy = torch.zeros(batch, heads, len(query_groups), dtype=torch.float64)
    samples: list[TopKSample | None] = []
    done = 0
    for qi, group in enumerate(query_groups):
        if group.size == 0:
            samples.append(None)
            continue
        pattern = layout.pattern_of(group.name)
        key_tensor, real, segments = _pattern_keys(layout, keys, list(pattern.key_value_tokens), run.key_real())
        parts = [
            KeySegment(
                key_tensor[:, :, seg.start : seg.start + seg.size],
                None if real is None else real[..., seg.start : seg.start + seg.size],
            )
            for seg in segments
        ]
        picked, strata = _top_k_strata(group.size, top_k_rows, rng) if top_k > 0 else (np.zeros(0, int), None)
        top = torch.zeros(batch, heads, len(picked))
        # The fused pass holds no scores, only (rows x head_dim) per key group: its chunks can be far taller than
        # those of the scores the top-k rows need, and a tall chunk keeps the kernel's per-call overhead small.
        head_dim = key_tensor.shape[-1]
        step = max(1, chunk_bytes // (4 * batch * heads * head_dim * (len(parts) + 3)))
        score_rows = chunk_rows(batch, heads, key_tensor.shape[2], 1, chunk_bytes)
        assert group.query_offset is not None
        for start in range(0, group.size, step):
            if cancel is not None and cancel.is_set():
                raise Cancelled("overview stopped")
            stop = min(group.size, start + step)
            part = slice(group.query_offset + start, group.query_offset + stop)
            freqs = None if freqs_queries is None else freqs_queries[:, part]
            queries = core.project_queries(x_queries[:, part], freqs=freqs)
            stats = row_stats(queries, parts, fused=fused)
            for seg, share in zip(segments, stats.mass.unbind(-1), strict=True):
                mass[:, :, qi, seg.index] += share.sum(-1).cpu()
            entropy[:, :, qi] += stats.entropy.sum(-1).cpu()
            here = np.flatnonzero((picked >= start) & (picked < stop))
            for lo in range(0, len(here), score_rows):
                chosen = here[lo : lo + score_rows]
                rows = torch.as_tensor(picked[chosen] - start, device=queries.device)
                # The k largest logits are the k largest weights; exp(l - lse) turns them into weights.
                values = top_k_values(masked_scores(queries[:, :, rows], key_tensor, real), top_k)
                top[:, :, torch.as_tensor(chosen)] = torch.exp(values - stats.lse[:, :, rows, None]).sum(-1).cpu()
            done += stop - start
            if progress is not None:
                progress(done)
        samples.append(None if strata is None else TopKSample(values=top.numpy(), strata=strata, size=group.size))
    sizes = torch.tensor([max(g.size, 1) for g in query_groups], dtype=torch.float64)
    return LayerStatistics(
        query_groups=[g.name for g in query_groups],
        key_groups=[g.name for g in layout.key_groups],
        allowed=layout.allowed.copy(),
        group_mass=(mass / sizes[:, None]).mean(0).numpy(),
        entropy=(entropy / sizes).mean(0).numpy(),
        top_k_samples=samples,
        query_sizes=sizes.numpy(),
    )
