"""The backends comparison of an :class:`~noether.explorer.run.ExplorerRun`: per-pattern MixedAttention, one
dense masked SDPA call and FlexAttention timed on the run's projected groups (see :func:`cost.time_backends`).
"""

import torch

from noether.explorer.cost import BackendTiming, Progress, time_backends
from noether.explorer.inputs import key_slice
from noether.explorer.layout import TokenLayout
from noether.explorer.problems import ExplorerError
from noether.modeling.modules.attention import MixedAttention, MixedAttentionConfig, PerceiverAttention
from noether.modeling.modules.attention.anchor_attention import GroupTensors


def _split_padding(layout: TokenLayout, padding: torch.Tensor) -> dict[str, torch.Tensor]:
    """The module's key_padding_mask (its input: every group not cached, in order) as one mask per group."""
    masks, start = {}, 0
    for group in layout.groups:
        if not group.cached:
            masks[group.name] = padding[:, start : start + group.size]
            start += group.size
    return masks


class RunBackends:
    """Backend timings; mixed into ExplorerRun, whose module, inputs, estimates and result cache they use."""

    def _project_groups(self, cache: dict[str, dict[str, torch.Tensor]] | None) -> GroupTensors:
        if not isinstance(self.module, PerceiverAttention):
            return self.core.project_groups(self.x_queries, list(self.scenario.token_specs), self.freqs_queries, cache)
        query, kv = self.layout.groups
        if kv.cached:
            assert cache is not None
            keys, values = cache[kv.name]["k"], cache[kv.name]["v"]
        else:
            freqs = None if self.inputs.freqs is None else key_slice(self.layout, kv.name, self.inputs.freqs)
            keys, values = self.module.project_keys_values(key_slice(self.layout, kv.name, self.x_keys), freqs)
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
                key_masks = None if padding is None else _split_padding(self.layout, padding)

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
