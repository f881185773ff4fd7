"""The KV-cache passes of an :class:`~noether.explorer.run.ExplorerRun`: the anchor pass that fills the cache of the
cached groups, and the check of anchor pass + query pass against one pass over all tokens.
"""

import time
from dataclasses import dataclass

import torch

from noether.explorer.cost import Progress
from noether.explorer.inputs import key_slice, query_rows
from noether.explorer.problems import ExplorerError, Problem


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


class RunKVCache:
    """The KV-cache passes; mixed into ExplorerRun, whose module, inputs, layout and result cache they use."""

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
                        k, v = self.core.project_keys_values(key_slice(self.layout, group.name, self.x_keys), freqs)
                    cache[group.name] = {"k": k, "v": v}
                    notes.append(
                        f"'{group.name}' has no '_anchor' in its name, so MixedAttention's new_kv_cache "
                        "omits it; its keys/values were projected with the same module."
                    )
            self._cache["kv_cache"] = (cache, time.perf_counter() - start, notes)
        return self._cache["kv_cache"][0]

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
