"""One scenario prepared on a device: module, inputs and layout, with every result computed on demand and kept.

Views that only change what is shown (head, pooling, batch element) read the kept results; nothing recomputes.
"""

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from noether.core.schemas.modules.attention import TokenSpec
from noether.explorer import guard
from noether.explorer.checkpoint import load_into, select_attention_weights
from noether.explorer.cost import BackendTiming, CostSummary, cost_summary, time_backends
from noether.explorer.devices import DeviceChoice, resolve_device, resolve_dtype
from noether.explorer.inputs import (
    CapturedInputs,
    Inputs,
    build_inputs,
    cloud_shortfalls,
    key_padding_mask,
    key_real_mask,
    key_slice,
    query_rows,
)
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.problems import ExplorerError, Problem
from noether.explorer.sampling import PREVIEW_ELEMENTS, preview_weight_maps
from noether.explorer.scenario import ANCHOR_CONFIGS, Scenario, validate_scenario
from noether.explorer.weights import WeightOptions, WeightResult, attention_weight_maps, exact_row, group_keys
from noether.explorer.window import Window, check_window, window_weights
from noether.modeling.modules.attention import (
    CrossAnchorAttention,
    JointAnchorAttention,
    MixedAttention,
    MixedAttentionConfig,
    PerceiverAttention,
    PerceiverAttentionConfig,
    SelfAnchorAttention,
)
from noether.modeling.modules.attention.anchor_attention import GroupTensors

Progress = Callable[[float, str], None]
DEFAULT_PIXELS = 1024
SPATIAL_SCORE = 8.0
"""Score of a token with itself under "spatial" weights: sharp enough that proximity shows, soft enough to blend."""
_ANCHOR_MODULES = {
    "self_anchor": SelfAnchorAttention,
    "cross_anchor": CrossAnchorAttention,
    "joint_anchor": JointAnchorAttention,
}


@dataclass(frozen=True)
class ForwardResult:
    output: torch.Tensor
    """(batch, input tokens, hidden_dim) module output, on cpu."""
    new_kv_cache_groups: list[str]
    seconds: float


@dataclass(frozen=True)
class KVCacheCheck:
    """The two-pass run (anchor pass fills the cache, query pass reads it) against one pass over all tokens."""

    cached_groups: list[str]
    query_groups: list[str]
    max_abs_diff: float
    tolerance: float
    """Agreement expected of the run's dtype (1e-5 in fp32/fp64; reduced precision needs more)."""
    anchor_pass_seconds: float
    query_pass_seconds: float
    single_pass_seconds: float
    notes: list[str]

    @property
    def equal(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def _build_module(scenario: Scenario) -> nn.Module:
    attention = scenario.attention
    config = attention.model_dump(exclude={"kind"})
    if attention.kind == "mixed":
        return MixedAttention(MixedAttentionConfig(**config))
    if attention.kind == "perceiver":
        return PerceiverAttention(PerceiverAttentionConfig(**config))
    return _ANCHOR_MODULES[attention.kind](ANCHOR_CONFIGS[attention.kind](**config))


def core_of(module: nn.Module) -> MixedAttention:
    """The module whose projections the weight views use: a MixedAttention (anchor modules keep theirs as
    ``mixed_attention``) or a PerceiverAttention, which offers the same ``project_queries``/``project_keys_values``."""
    if isinstance(module, MixedAttention | PerceiverAttention):
        return module  # type: ignore[return-value]
    return module.mixed_attention  # type: ignore[return-value]


def _call_perceiver(
    module: PerceiverAttention,
    x: torch.Tensor,
    specs: list[TokenSpec],
    freqs: torch.Tensor | None,
    kv_cache: dict | None,
) -> tuple[torch.Tensor, Any]:
    """Run a perceiver on the group layout: ``x`` holds the query group, then the key/value group unless cached."""
    query_spec, kv_spec = specs
    n_queries = query_spec.size or 0
    q_freqs = None if freqs is None else freqs[:, :n_queries]
    if kv_spec.size is None:
        assert kv_cache is not None
        out, _ = module(x[:, :n_queries], None, q_freqs=q_freqs, kv_cache=kv_cache[kv_spec.name])
        return out, None
    k_freqs = None if freqs is None else freqs[:, n_queries:]
    out, cache = module(x[:, :n_queries], x[:, n_queries:], q_freqs=q_freqs, k_freqs=k_freqs)
    return out, {kv_spec.name: cache}


class ExplorerRun:
    """A validated scenario with its module and inputs on the chosen device; results are memoised."""

    def __init__(
        self,
        scenario: Scenario | Mapping[str, Any],
        *,
        weights: Mapping[str, torch.Tensor] | None = None,
        weights_prefix: str | None = None,
        point_cloud: Mapping[str, np.ndarray] | None = None,
        memory_budget_mb: float | None = None,
        time_budget_s: float = guard.DEFAULT_TIME_BUDGET_S,
        progress: Progress | None = None,
        captured: CapturedInputs | None = None,
    ) -> None:
        """
        Args:
            scenario: A Scenario, or a mapping validated into one (ExplorerError listing every problem otherwise).
            weights: Optional trained state_dict (a whole model's is fine; see ``weights_prefix``).
            weights_prefix: Which attention layer of ``weights`` to use when it holds several.
            point_cloud: {"surface", "volume"} (n, 3) arrays replacing the sample cloud for point-cloud inputs.
            memory_budget_mb: Memory a computation may plan to use; default half of the free memory.
            time_budget_s: Longest estimated time of a computation before it is refused.
            progress: Called with (fraction, message) during long work.
            captured: Inputs, padding mask, incoming KV cache and weights recorded from a real forward pass (a layer
                of a capture); they replace the generated inputs and the module's initialisation.
        """
        # A Scenario built by hand skips the cross-field checks, so every input is validated here.
        report = validate_scenario(scenario)
        if not report.ok or report.scenario is None:
            raise ExplorerError([p for p in report.problems if p.severity == "error"])
        scenario = report.scenario
        self.scenario = scenario
        self.layout = TokenLayout.from_scenario(scenario)
        self.choice: DeviceChoice = resolve_device(scenario.run.device)
        self.device = self.choice.device
        self.dtype, dtype_note = resolve_dtype(scenario.run.dtype, self.device)
        self.notes = [note for note in (self.choice.note, dtype_note) if note]
        self.memory_budget = guard.memory_budget(self.device, memory_budget_mb)
        self.time_budget_s = time_budget_s
        self.progress = progress
        self._cache: dict[Any, Any] = {}
        self.captured = captured
        self.check(self.setup_estimate())
        self._say(0.0, f"building the module on {self.device}")
        self.module = self._seeded_module()
        self.core = core_of(self.module)
        if weights is not None:
            layer, prefix = select_attention_weights(weights, weights_prefix)
            load_into(self.core, layer)
            self.notes.append(f"trained weights loaded{f' from {prefix!r}' if prefix else ''}.")
        if captured is not None:
            load_into(self.core, captured.state_dict)
            self.notes += ["recorded inputs and weights of a captured layer.", *captured.notes]
            self.inputs = Inputs(
                x=captured.x.to(device=self.device, dtype=self.dtype),
                positions=captured.positions.float(),
                freqs=None if captured.freqs is None else captured.freqs.to(self.device),
            )
            return
        self._say(0.1, "building inputs")
        cloud = None if point_cloud is None else dict(point_cloud)
        if cloud is not None and scenario.run.inputs == "point_cloud":
            self.notes += cloud_shortfalls(self.layout, cloud)
        self.inputs: Inputs = build_inputs(scenario, self.layout, self.device, self.dtype, cloud)
        if scenario.run.weights == "spatial" and weights is None:
            self._make_spatial()

    # ---------------------------------------------------------------- helpers

    def _say(self, fraction: float, message: str, progress: Progress | None = None) -> None:
        report = progress or self.progress
        if report is not None:
            report(fraction, message)

    def check(self, estimate: guard.Estimate) -> None:
        guard.check(estimate, self.memory_budget, self.time_budget_s)

    def _seeded_module(self) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.scenario.run.seed)
            module = _build_module(self.scenario)
        return module.to(device=self.device, dtype=self.dtype).eval()

    def _make_spatial(self) -> None:
        """Identity Q/K projections: scores become similarities of the input features (proximity for sin-cos)."""
        core = self.core
        head_dim = core.head_dim
        per_head = self.inputs.x.float().unflatten(-1, (core.num_heads, head_dim)).pow(2).sum(-1).mean()
        scale = math.sqrt(SPATIAL_SCORE * math.sqrt(head_dim) / max(float(per_head), 1e-6))
        with torch.no_grad():
            for linear in (core.q, core.k):
                linear.weight.copy_(torch.eye(linear.weight.shape[0]) * scale)
                if linear.bias is not None:
                    linear.bias.zero_()
        self.notes.append(
            "spatial weights: Q and K projections are scaled identities, so attention follows "
            "feature similarity (proximity for point-cloud inputs)."
        )

    @property
    def anchor_specs(self) -> list[TokenSpec]:
        """Token specs of the anchor pass: cached groups get their simulated sizes."""
        return [TokenSpec(name=g.name, size=g.size) for g in self.layout.groups]

    def _call(
        self,
        x: torch.Tensor,
        specs: list[TokenSpec],
        freqs: torch.Tensor | None,
        kv_cache: dict | None = None,
        padding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        if isinstance(self.module, PerceiverAttention):
            return _call_perceiver(self.module, x, specs, freqs, kv_cache)
        if isinstance(self.module, MixedAttention):
            return self.module(
                x, specs, self.scenario.patterns(), key_padding_mask=padding, freqs=freqs, kv_cache=kv_cache
            )
        return self.module(x, specs, key_padding_mask=padding, freqs=freqs, kv_cache=kv_cache)

    def padding_mask(self) -> torch.Tensor | None:
        """The key_padding_mask the module receives: the recorded one for a captured layer, else from run.padding."""
        if self.captured is not None:
            mask = self.captured.key_padding_mask
            return None if mask is None else mask.to(self.device)
        return key_padding_mask(self.layout, self.scenario.run.batch_size, self.device)

    def key_real(self) -> torch.Tensor | None:
        """A recorded padding mask on the key axis (None: padding, if any, is the layout's trailing padding)."""
        return key_real_mask(self.layout, self.padding_mask()) if self.captured is not None else None

    @property
    def _perceiver_reads_kv(self) -> bool:
        return isinstance(self.module, PerceiverAttention) and not self.layout.has_cache

    @property
    def x_queries(self) -> torch.Tensor:
        return query_rows(self.layout, self.inputs.x)

    @property
    def freqs_queries(self) -> torch.Tensor | None:
        return None if self.inputs.freqs is None else query_rows(self.layout, self.inputs.freqs)

    # ---------------------------------------------------------------- estimates

    @property
    def _element_bytes(self) -> int:
        return self.dtype.itemsize

    def setup_estimate(self) -> guard.Estimate:
        attention = self.scenario.attention
        per_token = 3 * attention.hidden_dim * 4 + 3 * 4  # features with their fp32 intermediates, positions
        if attention.use_rope:
            per_token += (attention.head_dim or 0) * 4  # complex64 rotations, head_dim // 2 of them
        inputs = self.scenario.run.batch_size * self.layout.n_keys * per_token
        # About ten floating-point operations per byte of features (sine-cosine waves, RoPE rotations).
        return guard.Estimate("building the inputs", inputs, guard.estimate_seconds(self.device, 10.0 * inputs))

    def forward_estimate(self) -> guard.Estimate:
        cost = self.cost()
        batch, hidden = self.scenario.run.batch_size, self.scenario.attention.hidden_dim
        activations = 8 * batch * self.layout.n_keys * hidden * self._element_bytes + cost.per_pattern_bytes
        return guard.Estimate(
            "the forward pass",
            activations,
            guard.estimate_seconds(self.device, cost.attention_flops + cost.projection_flops),
        )

    def weights_estimate(self, pixels: int, options: WeightOptions) -> guard.Estimate:
        batch, heads = self.scenario.run.batch_size, self.scenario.attention.num_heads
        rows, cols = self.grids(pixels)
        maps = 4 * batch * heads * rows.bins * cols.bins * (1 + options.max_pooling) + 4 * batch * rows.bins * cols.bins
        keys = 4 * batch * self.layout.n_keys * self.scenario.attention.hidden_dim
        received = 4 * batch * heads * self.layout.n_keys
        chunk = 3 * max(options.chunk_bytes, 4 * batch * heads * self.layout.n_keys)
        cost = self.cost()
        elements = batch * heads * cost.attended_pairs
        projections = 2.0 * batch * self.layout.n_queries * self.scenario.attention.hidden_dim**2
        return guard.Estimate(
            "the attention-weight maps",
            maps + keys + received + chunk + self.forward_estimate().bytes // 4,
            guard.estimate_seconds(self.device, projections, elements, row_stats=options.row_stats),
        )

    def dense_estimate(self) -> guard.Estimate:
        cost = self.cost()
        batch, heads = self.scenario.run.batch_size, self.scenario.attention.num_heads
        scores = 0 if self.device.type == "cpu" else 4 * batch * heads * cost.n_queries * cost.n_keys
        return guard.Estimate(
            "one dense masked SDPA call",
            cost.dense_mask_bytes + cost.dense_float_mask_bytes + scores + self.forward_estimate().bytes,
            guard.estimate_seconds(
                self.device, 4.0 * batch * cost.n_queries * cost.n_keys * self.scenario.attention.hidden_dim
            ),
        )

    def flex_estimate(self) -> guard.Estimate:
        """Stacked Q/K/V of the whole axes plus the tile tables of the block mask (built from the groups)."""
        cost = self.cost()
        batch, hidden = self.scenario.run.batch_size, self.scenario.attention.hidden_dim
        stacked = 4 * batch * hidden * (2 * cost.n_queries + 2 * cost.n_keys)
        tiles = 16 * (cost.n_queries // 128 + 1) * (cost.n_keys // 128 + 1)
        return guard.Estimate(
            "FlexAttention over the whole axes",
            stacked + tiles + self.forward_estimate().bytes,
            guard.estimate_seconds(self.device, cost.attention_flops),
        )

    # ---------------------------------------------------------------- results

    def grids(self, pixels: int = DEFAULT_PIXELS) -> tuple[PoolGrid, PoolGrid]:
        return PoolGrid.fit(self.layout.n_queries, pixels), PoolGrid.fit(self.layout.n_keys, pixels)

    def cost(self) -> CostSummary:
        return cost_summary(
            self.layout, self.scenario.attention.hidden_dim, self.scenario.run.batch_size, self._element_bytes
        )

    def kv_cache(self, progress: Progress | None = None) -> dict[str, dict[str, torch.Tensor]] | None:
        """The cache of the cached groups, filled by an anchor pass over all groups (None without cached groups)."""
        if not self.layout.has_cache:
            return None
        if "kv_cache" not in self._cache and self.captured is not None and self.captured.kv_cache is not None:
            cache = {
                name: {part: tensor.to(self.device, self.dtype) for part, tensor in entry.items()}
                for name, entry in self.captured.kv_cache.items()
            }
            self._cache["kv_cache"] = (cache, 0.0, ["The KV cache is the one recorded with the layer's call."])
        if "kv_cache" not in self._cache:
            self.check(self.forward_estimate())
            self._say(0.2, "anchor pass: filling the KV cache", progress)
            start = time.perf_counter()
            with torch.no_grad():
                _, cache = self._call(self.inputs.x, self.anchor_specs, self.inputs.freqs)
            cache = dict(cache or {})
            notes = []
            for group in self.layout.groups:
                if group.cached and group.name not in cache:
                    # MixedAttention caches only groups named "*_anchor*"; project the others the same way.
                    freqs = None if self.inputs.freqs is None else key_slice(self.layout, group.name, self.inputs.freqs)
                    with torch.no_grad():
                        k, v = self.core.project_keys_values(key_slice(self.layout, group.name, self.inputs.x), freqs)
                    cache[group.name] = {"k": k, "v": v}
                    notes.append(
                        f"'{group.name}' has no '_anchor' in its name, so MixedAttention's new_kv_cache "
                        "omits it; its keys/values were projected with the same module."
                    )
            self._cache["kv_cache"] = (cache, time.perf_counter() - start, notes)
        return self._cache["kv_cache"][0]

    def forward(self, progress: Progress | None = None) -> ForwardResult:
        """The module's output on the scenario (the query pass when groups are cached)."""
        if "forward" not in self._cache:
            self.check(self.forward_estimate())
            cache = self.kv_cache(progress)
            padding = self.padding_mask()
            self._say(0.3, "forward pass", progress)
            start = time.perf_counter()
            # A perceiver reads its key/value group from the input too (queries first, then keys/values).
            x, freqs = self.x_queries, self.freqs_queries
            if self._perceiver_reads_kv:
                x, freqs = self.inputs.x, self.inputs.freqs
            with torch.no_grad():
                output, new_cache = self._call(x, list(self.scenario.token_specs), freqs, cache, padding)
            seconds = time.perf_counter() - start
            self._cache["forward"] = ForwardResult(output.float().cpu(), sorted(new_cache or {}), seconds)
        return self._cache["forward"]

    def keys(self, progress: Progress | None = None) -> dict[str, torch.Tensor]:
        if "keys" not in self._cache:
            with torch.no_grad():
                self._cache["keys"] = group_keys(
                    self.core, self.layout, self.inputs.x, self.inputs.freqs, self.kv_cache(progress)
                )
        return self._cache["keys"]

    def weights(
        self,
        pixels: int = DEFAULT_PIXELS,
        options: WeightOptions | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> WeightResult:
        """Pooled attention weights and statistics (see :func:`attention_weight_maps`), memoised per arguments.

        ``progress`` (fraction, message) overrides the run's callback for this call, so that callers sharing one
        run (e.g. several app sessions) each get their own reports. ``cancel`` ends the pass between chunks
        (:class:`~noether.explorer.weights.Cancelled`); nothing is kept then.
        """
        options = options or WeightOptions(chunk_bytes=self._chunk_bytes())
        key = ("weights", pixels, options)
        if key not in self._cache:
            self.check(self.weights_estimate(pixels, options))
            rows, cols = self.grids(pixels)
            self._cache[key] = attention_weight_maps(
                self.core,
                self.layout,
                self._query_inputs()[0],
                self._query_inputs()[1],
                self.keys(progress),
                rows,
                cols,
                options,
                progress=progress or self.progress,
                cancel=cancel,
                key_real=self.key_real(),
            )
        return self._cache[key]

    def kept_weights(self, pixels: int = DEFAULT_PIXELS) -> WeightResult | None:
        """The exact result of :meth:`weights` with default options if it was computed, else None (computes nothing)."""
        return self._cache.get(("weights", pixels, WeightOptions(chunk_bytes=self._chunk_bytes())))

    def preview(self, pixels: int = DEFAULT_PIXELS, elements: int = PREVIEW_ELEMENTS) -> WeightResult:
        """Weights and statistics estimated from stratified sampled query rows (see ``sampling``), memoised."""
        key = ("preview", pixels, elements)
        if key not in self._cache:
            rows, cols = self.grids(pixels)
            x, freqs = self._query_inputs()
            self._cache[key] = preview_weight_maps(
                self.core,
                self.layout,
                x,
                freqs,
                self.keys(),
                rows,
                cols,
                seed=self.scenario.run.seed,
                elements=elements,
                key_real=self.key_real(),
            )
        return self._cache[key]

    def window(self, window: Window, pixels: int = DEFAULT_PIXELS) -> WeightResult:
        """Exact weights of a window of query rows and key columns (see :func:`window_weights`), memoised."""
        check_window(window, self.layout)
        key = ("window", window, pixels)
        if key not in self._cache:
            batch, heads = self.scenario.run.batch_size, self.scenario.attention.num_heads
            shown = min(window.rows, pixels) * min(window.cols, pixels)
            scores = max(self._chunk_bytes(), 4 * batch * heads * self.layout.n_keys)
            self.check(
                guard.Estimate(
                    f"the exact window {window}",
                    3 * scores + 4 * batch * (2 * heads + 1) * shown,
                    guard.estimate_seconds(self.device, 0.0, batch * heads * window.rows * self.layout.n_keys * 2.5),
                )
            )
            x, freqs = self._query_inputs()
            self._cache[key] = window_weights(
                self.core,
                self.layout,
                x,
                freqs,
                self.keys(),
                window,
                pixels,
                chunk_bytes=self._chunk_bytes(),
                key_real=self.key_real(),
            )
        return self._cache[key]

    def _query_inputs(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Query-axis inputs and RoPE frequencies, gathered once (they are copies of the input rows)."""
        if "query_inputs" not in self._cache:
            self._cache["query_inputs"] = (self.x_queries, self.freqs_queries)
        return self._cache["query_inputs"]

    def _chunk_bytes(self) -> int:
        # Cache-sized chunks are fastest on a CPU; a GPU wants large launches.
        return WeightOptions().chunk_bytes if self.device.type == "cpu" else 256 * 2**20

    def exact_row(self, row: int) -> torch.Tensor:
        """Exact weights of query-axis token ``row`` over all keys: (batch, heads, keys)."""
        if not 0 <= row < self.layout.n_queries:
            raise ExplorerError(
                Problem(
                    "query token",
                    f"{row} is outside 0..{self.layout.n_queries - 1}.",
                    "Pick a token on the query axis.",
                )
            )
        x, freqs = self._query_inputs()
        return exact_row(self.core, self.layout, x, freqs, self.keys(), row, key_real=self.key_real())

    def kv_cache_check(self, progress: Progress | None = None) -> KVCacheCheck | None:
        """Run anchor pass + query pass and compare the query outputs with one pass over all tokens."""
        if not self.layout.has_cache:
            return None
        if self.captured is not None and not self.captured.cached_inputs_known:
            raise ExplorerError(
                Problem(
                    "KV cache",
                    "the capture holds this call's incoming cache but not the pass that filled it, so the single pass "
                    "over all tokens cannot be rebuilt.",
                    "Record the filling pass too (same capture_attention block), or compare via the verified output.",
                )
            )
        if "kv_check" not in self._cache:
            query_pass = self.forward(progress)
            _, anchor_seconds, notes = self._cache["kv_cache"]
            self._say(0.8, "single pass over all tokens for comparison", progress)
            start = time.perf_counter()
            with torch.no_grad():
                full, _ = self._call(self.inputs.x, self.anchor_specs, self.inputs.freqs)
            single_seconds = time.perf_counter() - start
            expected = query_rows(self.layout, full.float().cpu())
            self._cache["kv_check"] = KVCacheCheck(
                cached_groups=[g.name for g in self.layout.groups if g.cached],
                query_groups=[g.name for g in self.layout.query_groups],
                max_abs_diff=float((query_pass.output - expected).abs().max()) if expected.numel() else 0.0,
                tolerance=1e-5 if self.dtype in (torch.float32, torch.float64) else 2e-2,
                anchor_pass_seconds=anchor_seconds,
                query_pass_seconds=query_pass.seconds,
                single_pass_seconds=single_seconds,
                notes=notes,
            )
        return self._cache["kv_check"]

    def _project_groups(self, cache: dict[str, dict[str, torch.Tensor]] | None) -> GroupTensors:
        if not isinstance(self.module, PerceiverAttention):
            return self.core.project_groups(self.x_queries, list(self.scenario.token_specs), self.freqs_queries, cache)
        query, kv = self.layout.groups
        if kv.cached:
            assert cache is not None
            keys, values = cache[kv.name]["k"], cache[kv.name]["v"]
        else:
            freqs = None if self.inputs.freqs is None else key_slice(self.layout, kv.name, self.inputs.freqs)
            keys, values = self.module.project_keys_values(key_slice(self.layout, kv.name, self.inputs.x), freqs)
        queries = self.module.project_queries(self.x_queries, self.freqs_queries)
        return GroupTensors(q={query.name: queries}, k={kv.name: keys}, v={kv.name: values})

    def _pattern_core(self) -> MixedAttention:
        """A MixedAttention whose per-pattern SDPA path times the attention (it uses no weights of its own)."""
        if not isinstance(self.module, PerceiverAttention):
            return self.core
        attention = self.scenario.attention
        config = MixedAttentionConfig(hidden_dim=attention.hidden_dim, num_heads=attention.num_heads)
        return MixedAttention(config).to(self.device).eval()

    def backends(
        self,
        repeats: int = 3,
        include: tuple[str, ...] = ("mixed", "dense", "flex"),
        progress: Progress | None = None,
    ) -> list[BackendTiming]:
        """Measured attention time of per-pattern MixedAttention, dense masked SDPA and FlexAttention."""
        key = ("backends", repeats, include)
        if key not in self._cache:
            self.check(self.forward_estimate())
            cache = self.kv_cache(progress)
            padding = self.padding_mask()
            with torch.no_grad():
                groups = self._project_groups(cache)
                key_masks = None
                if padding is not None:
                    key_masks = {
                        g.name: padding[:, g.query_offset : g.query_offset + g.size] for g in self.layout.query_groups
                    }

                def refuse(name: str) -> str | None:
                    estimate = self.dense_estimate() if name == "dense" else self.flex_estimate()
                    try:
                        self.check(estimate)
                    except ExplorerError as exc:
                        return str(exc.problems[0])
                    return None

                self._cache[key] = time_backends(
                    self._pattern_core(),
                    self.layout,
                    groups,
                    key_masks,
                    self.device,
                    repeats,
                    include,
                    progress or self.progress,
                    refuse,
                )
        return self._cache[key]
