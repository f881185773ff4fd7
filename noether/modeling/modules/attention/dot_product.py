"""Multi-head scaled dot-product attention and its config."""

import torch
import torch.nn.functional as F
from torch import nn

from noether.core.schemas.modules.attention import AttentionConfig
from noether.modeling.functional.init import apply_init_method
from noether.modeling.functional.rope import rope
from noether.modeling.modules.attention.configs import DotProductAttentionConfig


class DotProductAttention(nn.Module):
    """Scaled dot-product attention with fused Q/K/V projections, optional RoPE and optional QK layer norm.

    Parameters are named ``q``, ``k``, ``v`` and ``proj`` (plus ``q_norm``/``k_norm`` when ``qk_norm`` is on) so
    that state_dicts of upstream Noether load unchanged.
    """

    def __init__(self, config: AttentionConfig) -> None:
        """
        Args:
            config: Attention settings; see :class:`~noether.core.schemas.modules.attention.AttentionConfig`.
        """
        super().__init__()
        config = DotProductAttentionConfig(**config.model_dump())
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_dim // config.num_heads
        self.init_weights = config.init_weights
        self.use_rope = config.use_rope
        self.qk_norm = config.qk_norm
        self.dropout = config.dropout
        self.proj_dropout = nn.Dropout(config.dropout)

        self.q = nn.Linear(config.hidden_dim, config.hidden_dim, bias=config.bias)
        self.k = nn.Linear(config.hidden_dim, config.hidden_dim, bias=config.bias)
        self.v = nn.Linear(config.hidden_dim, config.hidden_dim, bias=config.bias)
        self.proj = nn.Linear(config.hidden_dim, config.hidden_dim, bias=config.bias)
        if config.qk_norm:
            self.q_norm = nn.LayerNorm(self.head_dim)
            self.k_norm = nn.LayerNorm(self.head_dim)
        apply_init_method(self, self.proj.weight, self.init_weights)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, heads * head_dim) -> (batch, heads, tokens, head_dim)."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    @staticmethod
    def _merge_heads(x: torch.Tensor) -> torch.Tensor:
        """(batch, heads, tokens, head_dim) -> (batch, tokens, heads * head_dim)."""
        return x.transpose(1, 2).flatten(start_dim=2)

    def _project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One fused GEMM for Q, K and V, split into heads; QK norm applied when configured."""
        weight = torch.cat([self.q.weight, self.k.weight, self.v.weight], dim=0)
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias], dim=0) if self.q.bias is not None else None
        q, k, v = F.linear(x, weight, bias).chunk(3, dim=-1)
        q, k = self._normalize_qk(self._split_heads(q), self._split_heads(k))
        return q, k, self._split_heads(v)

    def _project_q(self, x: torch.Tensor) -> torch.Tensor:
        """Queries only, split into heads and normalised when configured."""
        q = self._split_heads(self.q(x))
        return self.q_norm(q) if self.qk_norm else q

    def _project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (normalised when configured) and values, split into heads."""
        k = self._split_heads(self.k(x))
        return (self.k_norm(k) if self.qk_norm else k), self._split_heads(self.v(x))

    def _normalize_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.qk_norm:
            return q, k
        return self.q_norm(q), self.k_norm(k)

    def _check_freqs(self, freqs: object) -> None:
        if self.use_rope and freqs is None:
            raise ValueError("RoPE usage mismatch: use_rope=True but no freqs were given; pass RopeFrequency output.")
        if not self.use_rope and freqs is not None:
            raise ValueError("RoPE usage mismatch: use_rope=False but freqs were given; drop freqs or set use_rope.")

    def _attention_dropout(self) -> float:
        return self.dropout if self.training else 0.0

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        freqs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Self-attention over all tokens of ``x``.

        Args:
            x: Tokens, shape (batch, tokens, hidden_dim).
            attn_mask: Optional mask broadcastable to (batch, heads, tokens, tokens); boolean True = may attend,
                or an additive float mask.
            freqs: RoPE frequencies for the tokens; required exactly when ``use_rope`` is set.

        Returns:
            Output tokens, shape (batch, tokens, hidden_dim).
        """
        self._check_freqs(freqs)
        q, k, v = self._project_qkv(x)
        if freqs is not None:
            q, k = rope(q, freqs=freqs), rope(k, freqs=freqs)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self._attention_dropout())
        return self.proj_dropout(self.proj(self._merge_heads(out)))


__all__ = ["DotProductAttention", "DotProductAttentionConfig"]
