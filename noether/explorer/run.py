"""One scenario prepared on a device: module, inputs and layout, with every result computed on demand and kept.

Views that only change what is shown (head, pooling, batch element) read the kept results; nothing recomputes.
Building and calling the module lives in :mod:`run_modules`, the estimates and the guard in :mod:`run_estimates`,
the KV-cache passes in :mod:`run_kvcache` and the backends comparison in :mod:`run_backends`; this module
re-exports their public names so that importers keep one place.
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
from noether.explorer.devices import DeviceChoice, resolve_device, resolve_dtype
from noether.explorer.inputs import (
    CapturedInputs,
    Inputs,
    build_inputs,
    cloud_shortfalls,
    key_padding_mask,
    key_real_mask,
    key_value_features,
    query_rows,
)
from noether.explorer.layout import TokenLayout
from noether.explorer.problems import ExplorerError, Problem
from noether.explorer.run_backends import RunBackends
from noether.explorer.run_estimates import DEFAULT_PIXELS, RunEstimates
from noether.explorer.run_kvcache import KVCacheCheck, RunKVCache
from noether.explorer.run_modules import _build_module, _call_perceiver, core_of
from noether.explorer.sampling import PREVIEW_ELEMENTS, preview_weight_maps
from noether.explorer.scenario import Scenario, validate_scenario
from noether.explorer.weights import WeightOptions, WeightResult, attention_weight_maps, exact_row, group_keys
from noether.explorer.window import Window, check_window, window_weights
from noether.modeling.modules.attention import MixedAttention, PerceiverAttention

__all__ = [
    "DEFAULT_PIXELS",
    "SPATIAL_SCORE",
    "ExplorerRun",
    "ForwardResult",
    "KVCacheCheck",
    "Progress",
    "core_of",
]

Progress = Callable[[float, str], None]
SPATIAL_SCORE = 8.0
"""Score of a token with itself under "spatial" weights: sharp enough that proximity shows, soft enough to blend."""


@dataclass(frozen=True)
class ForwardResult:
    output: torch.Tensor
    """(batch, input tokens, hidden_dim) module output, on cpu."""
    new_kv_cache_groups: list[str]
    seconds: float


class ExplorerRun(RunEstimates, RunKVCache, RunBackends):
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
            return _call_perceiver(self.module, x, specs, freqs, kv_cache, padding)
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
        """Features of the query-axis tokens, as wide as the query projection reads (hidden_dim)."""
        return query_rows(self.layout, self.inputs.x)[..., : self.scenario.attention.hidden_dim]

    @property
    def x_keys(self) -> torch.Tensor:
        """Input-axis features as wide as the key/value projections read (a perceiver's kv_dim, else hidden_dim)."""
        return self.inputs.x[..., : key_value_features(self.scenario)]

    @property
    def freqs_queries(self) -> torch.Tensor | None:
        return None if self.inputs.freqs is None else query_rows(self.layout, self.inputs.freqs)

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
                    self.core, self.layout, self.x_keys, self.inputs.freqs, self.kv_cache(progress)
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
