"""Perceiver attention: queries from one tensor attend to keys/values projected from another, and its config."""

import torch
import torch.nn.functional as F
from torch import nn

from noether.core.schemas.modules.attention import AttentionConfig
from noether.modeling.functional.init import apply_init_method
from noether.modeling.functional.rope import rope
from noether.modeling.modules.attention.configs import PerceiverAttentionConfig

PerceiverKVCache = dict[str, torch.Tensor]


class PerceiverAttention(nn.Module):
    """Cross-attention from query tokens to a separate set of key/value tokens (e.g. a geometry encoding).

    Parameters are named ``k``, ``v``, ``q`` and ``proj`` (created in that order, so that the same seed gives the
    same weights as upstream Noether and its state_dicts load unchanged). ``k`` and ``v`` read ``kv_dim`` features.

    KV cache: a pass with ``kv`` returns the projected keys (RoPE applied) and values as ``{"k": ..., "v": ...}``;
    a later pass may give that dict as ``kv_cache`` instead of ``kv`` to skip projecting them again.
    """

    def __init__(self, config: AttentionConfig) -> None:
        """
        Args:
            config: Attention settings; any AttentionConfig is accepted and read as a
                :class:`PerceiverAttentionConfig` (``kv_dim`` may come as an extra field).
        """
        super().__init__()
        config = PerceiverAttentionConfig(**config.model_dump())
        assert config.kv_dim is not None
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_dim // config.num_heads
        self.init_weights = config.init_weights
        self.use_rope = config.use_rope
        self.qk_norm = config.qk_norm
        self.dropout = config.dropout

        # Creation order k, v, q, proj fixes both the RNG draws of the init and the state_dict order.
        self.k = nn.Linear(config.kv_dim, config.hidden_dim, bias=config.bias)
        self.v = nn.Linear(config.kv_dim, config.hidden_dim, bias=config.bias)
        self.q = nn.Linear(config.hidden_dim, config.hidden_dim, bias=config.bias)
        self.proj = nn.Linear(config.hidden_dim, config.hidden_dim, bias=config.bias)
        self.proj_dropout = nn.Dropout(config.dropout)
        if config.qk_norm:
            self.q_norm = nn.LayerNorm(self.head_dim)
            self.k_norm = nn.LayerNorm(self.head_dim)
        apply_init_method(self, self.proj.weight, self.init_weights)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, heads * head_dim) -> (batch, heads, tokens, head_dim)."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _rope_freqs(self, freqs: torch.Tensor | None, name: str) -> torch.Tensor | None:
        if not self.use_rope:
            return None  # like upstream, frequencies given without use_rope are ignored
        if freqs is None:
            raise ValueError(f"RoPE usage mismatch: use_rope=True but {name}=None; pass RopeFrequency output.")
        return freqs

    def project_queries(self, q: torch.Tensor, freqs: torch.Tensor | None = None) -> torch.Tensor:
        """Queries of any slice of query tokens as the forward pass computes them: (batch, heads, tokens, head_dim).

        Lets tools recompute attention weights chunk by chunk without holding all queries at once.
        """
        return self._rotate_queries(self._queries_before_rope(q), freqs)

    def _queries_before_rope(self, q: torch.Tensor) -> torch.Tensor:
        queries = self._split_heads(self.q(q))
        return self.q_norm(queries) if self.qk_norm else queries

    def _rotate_queries(self, queries: torch.Tensor, freqs: torch.Tensor | None) -> torch.Tensor:
        freqs = self._rope_freqs(freqs, "q_freqs")
        return queries if freqs is None else rope(queries, freqs=freqs)

    def project_keys_values(
        self, kv: torch.Tensor, freqs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (after QK norm and RoPE) and values of any slice of key/value tokens, as the forward pass computes
        them and stores them in the KV cache."""
        weight = torch.cat([self.k.weight, self.v.weight], dim=0)
        bias = torch.cat([self.k.bias, self.v.bias], dim=0) if self.k.bias is not None else None
        keys, values = (self._split_heads(part) for part in F.linear(kv, weight, bias).chunk(2, dim=-1))
        if self.qk_norm:
            keys = self.k_norm(keys)
        freqs = self._rope_freqs(freqs, "k_freqs")
        return (keys if freqs is None else rope(keys, freqs=freqs)), values

    def forward(
        self,
        q: torch.Tensor,
        kv: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        q_freqs: torch.Tensor | None = None,
        k_freqs: torch.Tensor | None = None,
        kv_cache: PerceiverKVCache | None = None,
    ) -> tuple[torch.Tensor, PerceiverKVCache | None]:
        """Attend from ``q`` to ``kv`` (or to the keys/values in ``kv_cache``).

        Args:
            q: Query tokens, shape (batch, query tokens, hidden_dim).
            kv: Key/value tokens, shape (batch, kv tokens, kv_dim); may be None when ``kv_cache`` is given.
            attn_mask: Optional mask broadcastable to (batch, heads, query tokens, kv tokens); boolean True = may
                attend, or an additive float mask.
            q_freqs: RoPE frequencies of the queries; required when ``use_rope`` is set.
            k_freqs: RoPE frequencies of the kv tokens; required when ``use_rope`` is set and no cache is given.
            kv_cache: ``{"k": keys, "v": values}`` of an earlier pass; ``kv`` and ``k_freqs`` are then ignored.

        Returns:
            ``(output, new_kv_cache)``: output has the shape of ``q``; ``new_kv_cache`` is ``{"k", "v"}`` of this
            pass's keys/values, or None when they came from ``kv_cache``.
        """
        # Queries are projected first and rotated last, so checks fail in the same order as upstream's.
        queries = self._queries_before_rope(q)
        if kv_cache is not None:
            keys, values = kv_cache["k"], kv_cache["v"]
            new_cache = None
        else:
            if kv is None:
                raise ValueError("Either kv or kv_cache must be provided (kv_cache is the new_kv_cache of a pass).")
            keys, values = self.project_keys_values(kv, k_freqs)
            new_cache = {"k": keys, "v": values}
        queries = self._rotate_queries(queries, q_freqs)
        out = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj_dropout(self.proj(out.transpose(1, 2).flatten(start_dim=2))), new_cache


__all__ = ["PerceiverAttention", "PerceiverAttentionConfig", "PerceiverKVCache"]
