"""Mixed attention: named token groups attend to other named groups, one SDPA call per pattern shape."""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.modeling.functional.rope import rope
from noether.modeling.modules.attention.anchor_attention.patterns import query_patterns
from noether.modeling.modules.attention.configs import MixedAttentionConfig
from noether.modeling.modules.attention.dot_product import DotProductAttention

KVCache = dict[str, dict[str, torch.Tensor]]


@dataclass
class GroupTensors:
    """Per-group projections exactly as the forward pass uses them (after QK norm and RoPE).

    Shapes are (batch, heads, group_tokens, head_dim). ``q`` holds the input groups; ``k``/``v`` hold the input
    groups on a normal pass and the cached groups on a cached pass.
    """

    q: dict[str, torch.Tensor]
    k: dict[str, torch.Tensor]
    v: dict[str, torch.Tensor]


def _split_by_specs(x: torch.Tensor, specs: Sequence[TokenSpec], dim: int) -> dict[str, torch.Tensor]:
    sizes = [spec.size for spec in specs if spec.size is not None]
    return {spec.name: part for spec, part in zip(specs, x.split(sizes, dim=dim), strict=True)}


class MixedAttention(DotProductAttention):
    """Structured attention between named token groups.

    Groups are defined by ``TokenSpec`` (name and size, in the order they appear in ``x``), and
    ``AttentionPattern``s say which query groups attend to which key/value groups. Every group is a query in exactly
    one pattern. Patterns whose concatenated query and key/value lengths agree are stacked along the batch dimension
    and run in a single ``scaled_dot_product_attention`` call, so the cost is that of the attended blocks only.

    KV cache: a group with ``size=None`` is not in ``x``; its keys/values come from ``kv_cache`` and only queries
    are computed for the input groups. A normal pass returns the keys/values of groups whose name contains
    "_anchor" as ``new_kv_cache``, ready for later cached passes.

    Example (anchor attention with two branches)::

        token_specs = [
            TokenSpec(name="surface_anchors", size=100),
            TokenSpec(name="surface_queries", size=50),
            TokenSpec(name="volume_anchors", size=80),
            TokenSpec(name="volume_queries", size=60),
        ]
        attention_patterns = [
            AttentionPattern(query_tokens=["surface_anchors", "surface_queries"], key_value_tokens=["surface_anchors"]),
            AttentionPattern(query_tokens=["volume_anchors", "volume_queries"], key_value_tokens=["volume_anchors"]),
        ]
        module = MixedAttention(MixedAttentionConfig(hidden_dim=192, num_heads=3))
        out, cache = module(x, token_specs, attention_patterns)
    """

    def __init__(self, config: MixedAttentionConfig) -> None:
        """
        Args:
            config: Attention settings; see :class:`MixedAttentionConfig`.
        """
        super().__init__(config=config)

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        token_specs: Sequence[TokenSpec],
        attention_patterns: Sequence[AttentionPattern],
        key_padding_mask: torch.Tensor | None = None,
        freqs: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache | None]:
        """Apply the attention patterns.

        Args:
            x: Input tokens (batch, n_tokens, hidden_dim), groups concatenated in ``token_specs`` order; cached
                groups (``size=None``) are not part of it.
            token_specs: The groups, in input order.
            attention_patterns: Exhaustive, non-overlapping patterns: every group is a query in exactly one.
            key_padding_mask: Optional bool (batch, n_tokens); True = real token, False = padding never attended.
                Not supported together with cached groups.
            freqs: RoPE frequencies of the input tokens; required exactly when ``use_rope`` is set.
            kv_cache: ``{group: {"k": tensor, "v": tensor}}`` for the cached groups.

        Returns:
            ``(output, new_kv_cache)``: output has the shape of ``x``; ``new_kv_cache`` holds the keys/values of the
            "_anchor" groups on a normal pass and is None on a cached pass.
        """
        cached_names = {spec.name for spec in token_specs if spec.size is None}
        self._validate_inputs(x, token_specs, attention_patterns, key_padding_mask, freqs, kv_cache)
        groups = self.project_groups(x, token_specs, freqs=freqs, kv_cache=kv_cache)
        input_specs = [spec for spec in token_specs if spec.size is not None]
        key_masks = None if key_padding_mask is None else _split_by_specs(key_padding_mask, input_specs, dim=1)
        outputs = self.attend_groups(groups, query_patterns(attention_patterns, cached_names), key_masks)
        merged = self._merge_heads(torch.cat([outputs[spec.name] for spec in input_specs], dim=2))
        new_cache = None
        if not cached_names:
            new_cache = {
                spec.name: {"k": groups.k[spec.name], "v": groups.v[spec.name]}
                for spec in input_specs
                if "_anchor" in spec.name
            }
        return self.proj(merged), new_cache

    def project_groups(
        self,
        x: torch.Tensor,
        token_specs: Sequence[TokenSpec],
        freqs: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> GroupTensors:
        """Queries, keys and values per group, exactly as ``forward`` computes them (inputs are not validated)."""
        input_specs = [spec for spec in token_specs if spec.size is not None]
        cached_names = [spec.name for spec in token_specs if spec.size is None]
        if cached_names:
            # Cached groups bring their own (already rotated) keys/values; only queries are computed.
            assert kv_cache is not None
            k = {name: kv_cache[name]["k"] for name in cached_names}
            v = {name: kv_cache[name]["v"] for name in cached_names}
            q = self.project_queries(x, freqs=freqs)
            return GroupTensors(q=_split_by_specs(q, input_specs, dim=2), k=k, v=v)
        q, k, v = self._project_qkv(x)
        if freqs is not None:
            q, k = rope(q, freqs=freqs), rope(k, freqs=freqs)
        return GroupTensors(
            q=_split_by_specs(q, input_specs, dim=2),
            k=_split_by_specs(k, input_specs, dim=2),
            v=_split_by_specs(v, input_specs, dim=2),
        )

    def project_queries(self, x: torch.Tensor, freqs: torch.Tensor | None = None) -> torch.Tensor:
        """Queries of any slice of input tokens as the forward pass computes them: (batch, heads, tokens, head_dim).

        Lets tools recompute attention weights chunk by chunk without holding all queries at once.
        """
        q = self._project_q(x)
        return q if freqs is None else rope(q, freqs=freqs)

    def project_keys_values(
        self, x: torch.Tensor, freqs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (after QK norm and RoPE) and values of any slice of input tokens, as the forward pass computes them."""
        k, v = self._project_kv(x)
        return (k if freqs is None else rope(k, freqs=freqs)), v

    def attend_groups(
        self,
        groups: GroupTensors,
        attention_patterns: Sequence[AttentionPattern],
        key_masks: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Attention output per query group; patterns of equal (query, key) length share one SDPA call.

        Args:
            groups: Projections from :meth:`project_groups`.
            attention_patterns: Patterns whose query groups all have queries (see :func:`query_patterns`).
            key_masks: Optional per-group bool (batch, group_tokens), True = real token.

        Returns:
            ``{group: (batch, heads, group_tokens, head_dim)}`` for every query group.
        """
        buckets: dict[tuple[int, int], list[AttentionPattern]] = defaultdict(list)
        for pattern in attention_patterns:
            query_len = sum(groups.q[name].shape[2] for name in pattern.query_tokens)
            key_len = sum(groups.k[name].shape[2] for name in pattern.key_value_tokens)
            buckets[(query_len, key_len)].append(pattern)

        outputs: dict[str, torch.Tensor] = {}
        for bucket in buckets.values():
            q = torch.cat([torch.cat([groups.q[n] for n in p.query_tokens], dim=2) for p in bucket], dim=0)
            k = torch.cat([torch.cat([groups.k[n] for n in p.key_value_tokens], dim=2) for p in bucket], dim=0)
            v = torch.cat([torch.cat([groups.v[n] for n in p.key_value_tokens], dim=2) for p in bucket], dim=0)
            mask = None
            if key_masks is not None:
                # (batch, 1, 1, keys): one key mask per pattern, broadcast over heads and queries.
                mask = torch.cat(
                    [torch.cat([key_masks[n] for n in p.key_value_tokens], dim=1)[:, None, None, :] for p in bucket],
                    dim=0,
                )
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self._attention_dropout())
            for pattern, pattern_out in zip(bucket, out.chunk(len(bucket), dim=0), strict=True):
                sizes = [groups.q[name].shape[2] for name in pattern.query_tokens]
                outputs.update(zip(pattern.query_tokens, pattern_out.split(sizes, dim=2), strict=True))
        return outputs

    def _validate_inputs(
        self,
        x: torch.Tensor,
        token_specs: Sequence[TokenSpec],
        attention_patterns: Sequence[AttentionPattern],
        key_padding_mask: torch.Tensor | None,
        freqs: torch.Tensor | None,
        kv_cache: KVCache | None,
    ) -> None:
        """Raise a ValueError naming the offending group, pattern or tensor."""
        self._check_freqs(freqs)
        _check_key_padding_mask(key_padding_mask, x)
        _check_token_specs(token_specs, x)
        _check_patterns_cover_groups(token_specs, attention_patterns)
        cached_names = {spec.name for spec in token_specs if spec.size is None}
        if cached_names:
            _check_cached_pass(cached_names, attention_patterns, key_padding_mask, kv_cache)


def _check_key_padding_mask(key_padding_mask: torch.Tensor | None, x: torch.Tensor) -> None:
    if key_padding_mask is None:
        return
    if key_padding_mask.dtype != torch.bool:
        raise ValueError(f"key_padding_mask must be a bool tensor (True = real token), got {key_padding_mask.dtype}.")
    if key_padding_mask.ndim != 2:
        raise ValueError(
            f"key_padding_mask must be 2D with shape (batch_size, n_tokens), got shape {tuple(key_padding_mask.shape)}."
        )
    if key_padding_mask.shape[1] != x.shape[1]:
        raise ValueError(
            f"key_padding_mask n_tokens dim ({key_padding_mask.shape[1]}) must match x sequence length ({x.shape[1]})."
        )


def _check_token_specs(token_specs: Sequence[TokenSpec], x: torch.Tensor) -> None:
    seen: set[str] = set()
    for spec in token_specs:
        if spec.name in seen:
            raise ValueError(f"Token group '{spec.name}' appears more than once in token_specs; names must be unique.")
        seen.add(spec.name)
    expected = sum(spec.size for spec in token_specs if spec.size is not None)
    if expected != x.shape[1]:
        raise ValueError(
            f"Token specs total size {expected} != tensor size {x.shape[1]}: the sizes of the input groups "
            "(size not None) must add up to x.shape[1]."
        )


def _check_patterns_cover_groups(
    token_specs: Sequence[TokenSpec], attention_patterns: Sequence[AttentionPattern]
) -> None:
    names = {spec.name for spec in token_specs}
    query_of: dict[str, int] = {}
    for index, pattern in enumerate(attention_patterns):
        if not pattern.query_tokens:
            raise ValueError(f"attention_patterns[{index}] has no query_tokens; list at least one group.")
        for name in pattern.query_tokens:
            if name in query_of:
                raise ValueError(
                    f"A token type cannot be a query in multiple attention patterns: '{name}' is a query in "
                    f"attention_patterns[{query_of[name]}] and attention_patterns[{index}]."
                )
            if name not in names:
                raise ValueError(
                    f"Token '{name}' in `query_tokens` of attention_patterns[{index}] is not defined in `token_specs`."
                )
            query_of[name] = index
        for name in pattern.key_value_tokens:
            if name not in names:
                raise ValueError(
                    f"Token '{name}' in `key_value_tokens` of attention_patterns[{index}] is not defined in "
                    "`token_specs`."
                )
    missing = [spec.name for spec in token_specs if spec.name not in query_of]
    if missing:
        raise ValueError(
            "The set of query tokens must exactly match the set of tokens in token_specs: "
            f"{missing} is not a query in any attention pattern."
        )


def _check_cached_pass(
    cached_names: set[str],
    attention_patterns: Sequence[AttentionPattern],
    key_padding_mask: torch.Tensor | None,
    kv_cache: KVCache | None,
) -> None:
    if not kv_cache:
        raise ValueError("Cannot use cached tokens: kv_cache is empty. Pass the new_kv_cache of an earlier pass.")
    for name in sorted(cached_names):
        if name not in kv_cache:
            raise ValueError(f"Cached token '{name}' not found in kv_cache (it has {sorted(kv_cache)}).")
    if key_padding_mask is not None:
        raise ValueError("key_padding_mask is not supported when using KV cache.")
    for index, pattern in enumerate(attention_patterns):
        if all(name in cached_names for name in pattern.query_tokens):
            continue
        for name in pattern.key_value_tokens:
            if name not in cached_names:
                raise ValueError(
                    f"attention_patterns[{index}] reads keys/values of '{name}', but a cached pass computes only "
                    "queries for input groups: key/value groups of input queries must come from kv_cache (size None)."
                )


__all__ = ["GroupTensors", "KVCache", "MixedAttention", "MixedAttentionConfig", "query_patterns"]
