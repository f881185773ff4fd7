"""What a scenario costs: attended pairs, FLOPs, memory, and measured times of equivalent attention backends."""

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from noether.explorer.layout import TokenLayout
from noether.explorer.masks import dense_mask, flex_block_mask, group_mask
from noether.modeling.modules.attention.anchor_attention import GroupTensors, MixedAttention

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class CostSummary:
    """Analytic cost of one forward pass, from the group structure alone."""

    n_queries: int
    n_keys: int
    """Tokens on the key axis, which the dense and flex backends span (a perceiver's queries have no keys)."""
    key_tokens: int
    """Tokens that have keys: what the layer attends over (the key axis)."""
    attended_pairs: int
    """(query, key) pairs the patterns attend, padded keys excluded (per batch element and head)."""
    sparsity: float
    """Share of the full query x key matrix that is not attended."""
    attention_flops: float
    """QK^T and weights @ V over the attended pairs, all heads and batch elements."""
    projection_flops: float
    """Q/K/V and output projections of the pass (multiply-adds x 2, biases not counted, as torch's flop counter
    counts them): Q and the output for every query token, K and V for every token whose keys the pass projects
    (none of a cached group's), from ``kv_dim`` features for a perceiver."""
    dense_mask_bytes: int
    """A boolean (queries x keys) mask, as one dense masked SDPA call needs."""
    dense_float_mask_bytes: int
    """The additive float mask SDPA builds from it on CPU."""
    per_pattern_bytes: int
    """Extra activations of the per-pattern path (concatenated Q/K/V per pattern); no mask at all."""


def projection_flops(layout: TokenLayout, hidden_dim: int, batch: int, kv_dim: int | None = None) -> float:
    """FLOPs of the pass's linear layers (see :attr:`CostSummary.projection_flops`).

    A mixed layer projects Q, K and V from every input token (its queries); a perceiver projects Q from its query
    group and K, V from its key/value group (``kv_dim`` features, default ``hidden_dim``); cached groups are read,
    not projected. The output projection maps every query token's attention output.
    """
    n_q = layout.n_queries
    if layout.perceiver:
        projected_keys = sum(group.size for group in layout.key_groups if not group.cached)
        key_features = kv_dim or hidden_dim
    else:
        # With cached groups MixedAttention projects only queries (project_groups); otherwise K, V of every input.
        projected_keys, key_features = (0 if layout.has_cache else n_q), hidden_dim
    per_token = 2.0 * batch * hidden_dim
    return per_token * (2 * n_q * hidden_dim + 2 * projected_keys * key_features)


def cost_summary(
    layout: TokenLayout, hidden_dim: int, batch: int, element_bytes: int, kv_dim: int | None = None
) -> CostSummary:
    """The analytic cost of one forward pass; ``kv_dim`` is a perceiver's key/value input width."""
    mask = group_mask(layout)
    n_q, n_k = layout.n_queries, layout.n_keys
    pattern_tokens = sum(
        sum(layout.by_name[name].size for name in p.query_tokens)
        + 2 * sum(layout.by_name[name].size for name in p.key_value_tokens)
        for p in layout.patterns
    )
    return CostSummary(
        n_queries=n_q,
        n_keys=n_k,
        key_tokens=layout.n_key_tokens,
        attended_pairs=mask.total_pairs,
        sparsity=1.0 - mask.density,
        attention_flops=4.0 * batch * mask.total_pairs * hidden_dim,
        projection_flops=projection_flops(layout, hidden_dim, batch, kv_dim),
        dense_mask_bytes=n_q * n_k,
        dense_float_mask_bytes=4 * n_q * n_k,
        per_pattern_bytes=batch * hidden_dim * element_bytes * pattern_tokens,
    )


# --------------------------------------------------------------------------------------------------------------------
# Backends: the same attention computed three ways, timed on the run's device and checked against each other.
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendTiming:
    """One backend's measured time and agreement with the per-pattern MixedAttention path."""

    name: str
    available: bool
    seconds: float | None = None
    """Median seconds per call over the timed samples (attention only: projections are shared and excluded)."""
    max_abs_diff: float | None = None
    """Largest absolute difference of the attention output from MixedAttention's."""
    note: str = ""
    first_call_seconds: float | None = None
    """Seconds of the first call, when it differs in kind from the timed ones (FlexAttention compiles in it)."""


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


MIN_SAMPLE_S = 0.01
"""Shortest timed sample: calls faster than this are repeated within one sample (a tiny layer's attention takes
microseconds, close to the clock's and the scheduler's noise)."""
MAX_CALLS_PER_SAMPLE = 10_000


def _calls_per_sample(seconds_per_call: float) -> int:
    if seconds_per_call >= MIN_SAMPLE_S:
        return 1
    return min(MAX_CALLS_PER_SAMPLE, math.ceil(MIN_SAMPLE_S / max(seconds_per_call, 1e-9)))


def _median_time(
    fn: Callable[[], torch.Tensor],
    device: torch.device,
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, torch.Tensor]:
    """Median seconds per call over ``repeats`` timed samples, and the warm-up call's output.

    A sample runs the call as often as it takes to last about ``MIN_SAMPLE_S``; a call that is already that slow
    runs once per sample, so large layers cost no extra call.
    """
    start = clock()
    out = fn()  # warm-up, also the result that is compared
    _sync(device)
    per_call = clock() - start
    if per_call < MIN_SAMPLE_S:
        start = clock()  # the warm-up's first-call costs would undercount the calls a sample needs
        fn()
        _sync(device)
        per_call = clock() - start
    calls = _calls_per_sample(per_call)
    times = []
    for _ in range(repeats):
        start = clock()
        for _ in range(calls):
            fn()
        _sync(device)
        times.append((clock() - start) / calls)
    return statistics.median(times), out


def _stack_axes(layout: TokenLayout, groups: GroupTensors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries of the input groups and keys/values of the whole key axis, in axis order.

    On a cached pass input groups have no keys; zeros stand in for them (the mask never selects them).
    """
    q = torch.cat([groups.q[g.name] for g in layout.query_groups], dim=2)
    reference = next(iter(groups.k.values()))
    shape = (*reference.shape[:2], 0, reference.shape[-1])

    def column(store: dict[str, torch.Tensor], name: str, size: int) -> torch.Tensor:
        return store[name] if name in store else reference.new_zeros(shape[0], shape[1], size, shape[3])

    k = torch.cat([column(groups.k, g.name, g.size) for g in layout.key_groups], dim=2)
    v = torch.cat([column(groups.v, g.name, g.size) for g in layout.key_groups], dim=2)
    return q, k, v


def _with_key_masks(mask: torch.Tensor, layout: TokenLayout, key_masks: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """The layout's (queries x keys) mask, narrowed per sample by key masks it does not know (recorded ones)."""
    if not key_masks:
        return mask
    batch = next(iter(key_masks.values())).shape[0]
    real = torch.cat(
        [
            key_masks[g.name].to(mask.device) if g.name in key_masks else mask.new_ones(batch, g.size)
            for g in layout.key_groups
        ],
        dim=1,
    )
    return mask[None, None] & real[:, None, None, :]


def _layout_has(layout: TokenLayout, key_masks: dict[str, torch.Tensor] | None) -> bool:
    """Whether the key masks are the layout's own trailing padding (so that a mask built from groups includes them)."""
    for name, mask in (key_masks or {}).items():
        group = layout.by_name[name]
        expected = (torch.arange(group.size, device=mask.device) < group.real_keys).expand_as(mask)
        if not torch.equal(mask.bool(), expected):
            return False
    return True


def _mixed_output(
    core: MixedAttention, layout: TokenLayout, groups: GroupTensors, key_masks: dict[str, torch.Tensor] | None
) -> torch.Tensor:
    outputs = core.attend_groups(groups, layout.patterns, key_masks)
    return torch.cat([outputs[g.name] for g in layout.query_groups], dim=2)


_COMPILED_FLEX: dict[str, Callable[..., torch.Tensor]] = {}


def _flex_attention() -> Callable[..., torch.Tensor]:
    """FlexAttention compiled once per process (CPU and GPU kernels are generated by torch.compile)."""
    if "flex" not in _COMPILED_FLEX:
        from torch.nn.attention.flex_attention import flex_attention

        _COMPILED_FLEX["flex"] = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX["flex"]


def time_backends(
    core: MixedAttention,
    layout: TokenLayout,
    groups: GroupTensors,
    key_masks: dict[str, torch.Tensor] | None,
    device: torch.device,
    repeats: int = 3,
    include: tuple[str, ...] = ("mixed", "dense", "flex"),
    progress: Progress | None = None,
    refuse: Callable[[str], str | None] = lambda name: None,
) -> list[BackendTiming]:
    """Time the attention of the scenario with each backend and compare outputs to the per-pattern path.

    ``refuse(name)`` may return a reason (from the resource guard) to skip a backend.
    """

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    results = []
    report(0.0, "timing per-pattern MixedAttention")
    seconds, reference = _median_time(lambda: _mixed_output(core, layout, groups, key_masks), device, repeats)
    results.append(BackendTiming("per-pattern MixedAttention", True, seconds, 0.0, "one SDPA call per pattern shape"))
    if "dense" in include:
        reason = refuse("dense")
        if reason:
            results.append(BackendTiming("dense masked SDPA", False, note=reason))
        else:
            report(0.3, "timing one dense masked SDPA call")
            q, k, v = _stack_axes(layout, groups)
            mask = _with_key_masks(dense_mask(layout, device), layout, key_masks)
            seconds, out = _median_time(
                lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), device, repeats
            )
            results.append(
                BackendTiming(
                    "dense masked SDPA",
                    True,
                    seconds,
                    _max_abs_diff(out, reference),
                    f"bool mask of {mask.numel():,} cells",
                )
            )
            del mask, q, k, v, out
    if "flex" in include:
        reason = refuse("flex")
        if not _layout_has(layout, key_masks):
            reason = "the recorded key mask differs per sample; the block mask is built from the groups alone."
        if reason:
            results.append(BackendTiming("FlexAttention", False, note=reason))
        else:
            results.append(_time_flex(layout, groups, reference, device, repeats, report))
    report(1.0, "backends timed")
    return results


def _time_flex(
    layout: TokenLayout,
    groups: GroupTensors,
    reference: torch.Tensor,
    device: torch.device,
    repeats: int,
    report: Progress,
) -> BackendTiming:
    try:
        import torch.nn.attention.flex_attention  # absent in old torch releases
    except ImportError:
        return BackendTiming("FlexAttention", False, note=f"not in torch {torch.__version__}")
    try:
        q, k, v = _stack_axes(layout, groups)
        report(0.5, "building the FlexAttention block mask from the group structure")
        start = time.perf_counter()
        block_mask = flex_block_mask(layout, device)
        mask_seconds = time.perf_counter() - start
        report(0.6, "compiling FlexAttention kernels (first run only; can take ~20 s on a CPU)")
        flex = _flex_attention()
        start = time.perf_counter()
        out = flex(q, k, v, block_mask=block_mask)
        _sync(device)
        compile_seconds = time.perf_counter() - start
        report(0.8, "timing FlexAttention")
        seconds, out = _median_time(lambda: flex(q, k, v, block_mask=block_mask), device, repeats)
    except Exception as exc:  # compile toolchains and device support vary; the report says why it is absent
        return BackendTiming("FlexAttention", False, note=f"unavailable here: {type(exc).__name__}: {exc}"[:300])
    return BackendTiming(
        "FlexAttention",
        True,
        seconds,
        _max_abs_diff(out, reference),
        f"block mask built in {mask_seconds:.1f} s; first call (compile) {compile_seconds:.1f} s",
        first_call_seconds=compile_seconds,
    )
