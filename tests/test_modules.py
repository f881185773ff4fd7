"""Tests of the attention modules, RoPE and the positional layers."""

from collections.abc import Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from noether.core.schemas.modules.attention import AttentionConfig, AttentionPattern, TokenSpec
from noether.core.schemas.modules.layers import ContinuousSincosEmbeddingConfig, RopeFrequencyConfig
from noether.modeling.functional.rope import rope
from noether.modeling.modules.attention import (
    CrossAnchorAttention,
    CrossAnchorAttentionConfig,
    DotProductAttention,
    DotProductAttentionConfig,
    JointAnchorAttention,
    JointAnchorAttentionConfig,
    MixedAttention,
    MixedAttentionConfig,
    SelfAnchorAttention,
    SelfAnchorAttentionConfig,
)
from noether.modeling.modules.attention.anchor_attention import (
    MissingAnchorTokenError,
    MissingBranchTokensError,
    MultiBranchAnchorAttention,
    UnexpectedTokenError,
)
from noether.modeling.modules.layers import ContinuousSincosEmbed, RopeFrequency

HIDDEN_DIM = 16
NUM_HEADS = 2
HEAD_DIM = HIDDEN_DIM // NUM_HEADS
BATCH = 2
ATOL = 1e-5

PatternSpec = tuple[Sequence[str], Sequence[str]]

# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------


def specs_of(**sizes: int | None) -> list[TokenSpec]:
    """TokenSpecs in keyword order, e.g. ``specs_of(a=3, b=None)``."""
    return [TokenSpec(name=name, size=size) for name, size in sizes.items()]


def patterns_of(*pairs: PatternSpec) -> list[AttentionPattern]:
    """AttentionPatterns from ``(query_tokens, key_value_tokens)`` pairs."""
    return [AttentionPattern(query_tokens=list(q), key_value_tokens=list(kv)) for q, kv in pairs]


def group_slices(token_specs: Sequence[TokenSpec]) -> dict[str, slice]:
    """Token positions of each input group in ``x``."""
    slices: dict[str, slice] = {}
    start = 0
    for spec in token_specs:
        if spec.size is None:
            continue
        slices[spec.name] = slice(start, start + spec.size)
        start += spec.size
    return slices


def total_tokens(token_specs: Sequence[TokenSpec]) -> int:
    return sum(spec.size for spec in token_specs if spec.size is not None)


def dense_mask(token_specs: Sequence[TokenSpec], patterns: Sequence[AttentionPattern]) -> torch.Tensor:
    """Boolean (tokens, tokens) mask, True where the query token (row) may attend to the key token (column)."""
    slices = group_slices(token_specs)
    n_tokens = total_tokens(token_specs)
    mask = torch.zeros(n_tokens, n_tokens, dtype=torch.bool)
    for pattern in patterns:
        for query in pattern.query_tokens:
            for key in pattern.key_value_tokens:
                mask[slices[query], slices[key]] = True
    return mask


def randn(*shape: int, seed: int, device: torch.device | str = "cpu", scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * scale).to(device)


def make_freqs(n_tokens: int, seed: int, device: torch.device | str = "cpu", input_dim: int = 3) -> torch.Tensor:
    """Complex RoPE frequencies for random coordinates, shape (BATCH, n_tokens, HEAD_DIM // 2)."""
    rope_frequency = RopeFrequency(
        RopeFrequencyConfig(hidden_dim=HEAD_DIM, input_dim=input_dim, implementation="complex")
    )
    coords = randn(BATCH, n_tokens, input_dim, seed=seed, scale=5.0)
    return rope_frequency(coords).to(device)


def randomize_norms(module: torch.nn.Module, seed: int = 123) -> None:
    """Give LayerNorm parameters non-trivial values so that QK norm visibly matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for submodule in module.modules():
            if isinstance(submodule, torch.nn.LayerNorm):
                submodule.weight.copy_(torch.rand(submodule.weight.shape, generator=generator) + 0.5)
                submodule.bias.copy_(torch.randn(submodule.bias.shape, generator=generator) * 0.1)


def make_mixed(device: torch.device | str = "cpu", seed: int = 0, **overrides: Any) -> MixedAttention:
    """A MixedAttention in eval mode with PyTorch's default init (larger weights than truncnormal002)."""
    config: dict[str, Any] = {"hidden_dim": HIDDEN_DIM, "num_heads": NUM_HEADS, "init_weights": "torch"} | overrides
    torch.manual_seed(seed)
    module = MixedAttention(MixedAttentionConfig(**config))
    randomize_norms(module)
    return module.to(device).eval()


def dense_twin(mixed: MixedAttention, device: torch.device | str) -> DotProductAttention:
    """A DotProductAttention with the same config and weights as ``mixed``."""
    config = DotProductAttentionConfig(
        hidden_dim=HIDDEN_DIM,
        num_heads=mixed.num_heads,
        use_rope=mixed.use_rope,
        qk_norm=mixed.qk_norm,
        bias=mixed.q.bias is not None,
    )
    dense = DotProductAttention(config)
    dense.load_state_dict(mixed.state_dict(), strict=True)
    return dense.to(device).eval()


def concat_groups(x: torch.Tensor, token_specs: Sequence[TokenSpec], names: Sequence[str]) -> torch.Tensor:
    """The tokens of the named groups, in the given order, along dim 1."""
    slices = group_slices(token_specs)
    return torch.cat([x[:, slices[name]] for name in names], dim=1)


OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "no_bias": {"bias": False},
    "qk_norm": {"qk_norm": True},
    "rope": {"use_rope": True},
    "rope_qk_norm_no_bias": {"use_rope": True, "qk_norm": True, "bias": False},
}

SCENARIOS: dict[str, tuple[list[TokenSpec], list[AttentionPattern]]] = {
    "two_equal_shape_patterns": (
        specs_of(a=3, b=2, c=3, d=2),
        patterns_of((["a", "b"], ["a"]), (["c", "d"], ["c"])),
    ),
    "three_patterns_of_different_shapes": (
        specs_of(a=3, b=5, c=2, d=4),
        # query order differs from input order on purpose
        patterns_of((["b", "a"], ["a"]), (["c"], ["a", "c"]), (["d"], ["d", "b", "c"])),
    ),
    "kv_set_of_two_groups": (
        specs_of(surface_anchors=4, surface_queries=3, volume_anchors=5, volume_queries=2),
        patterns_of(
            (["surface_anchors", "surface_queries"], ["surface_anchors", "volume_anchors"]),
            (["volume_anchors", "volume_queries"], ["volume_anchors"]),
        ),
    ),
    "full_self_attention": (
        specs_of(x=5, y=4),
        patterns_of((["x", "y"], ["x", "y"])),
    ),
}

ANCHOR_SPECS = specs_of(surface_anchors=4, surface_queries=3, volume_anchors=5, volume_queries=2)
SELF_ANCHOR_PATTERNS = patterns_of(
    (["surface_anchors", "surface_queries"], ["surface_anchors"]),
    (["volume_anchors", "volume_queries"], ["volume_anchors"]),
)


# ----------------------------------------------------------------------------------------------------------------------
# Shapes and state_dict layout
# ----------------------------------------------------------------------------------------------------------------------


def test_dot_product_attention_output_shape(device: torch.device) -> None:
    module = DotProductAttention(DotProductAttentionConfig(hidden_dim=HIDDEN_DIM, num_heads=NUM_HEADS)).to(device)
    out = module(randn(BATCH, 7, HIDDEN_DIM, seed=0, device=device))
    assert out.shape == (BATCH, 7, HIDDEN_DIM)
    assert out.device.type == device.type


def test_mixed_attention_output_shape_and_cache_shapes(device: torch.device) -> None:
    module = make_mixed(device)
    x = randn(BATCH, total_tokens(ANCHOR_SPECS), HIDDEN_DIM, seed=0, device=device)
    out, cache = module(x, ANCHOR_SPECS, SELF_ANCHOR_PATTERNS)
    assert out.shape == x.shape
    assert cache is not None
    assert cache["surface_anchors"]["k"].shape == (BATCH, NUM_HEADS, 4, HEAD_DIM)
    assert cache["volume_anchors"]["v"].shape == (BATCH, NUM_HEADS, 5, HEAD_DIM)


BASE_KEYS = {f"{layer}.{param}" for layer in ("q", "k", "v", "proj") for param in ("weight", "bias")}
NO_BIAS_KEYS = {f"{layer}.weight" for layer in ("q", "k", "v", "proj")}
NORM_KEYS = {f"{norm}.{param}" for norm in ("q_norm", "k_norm") for param in ("weight", "bias")}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, BASE_KEYS),
        ({"bias": False}, NO_BIAS_KEYS),
        ({"qk_norm": True}, BASE_KEYS | NORM_KEYS),
        ({"qk_norm": True, "bias": False}, NO_BIAS_KEYS | NORM_KEYS),
    ],
)
@pytest.mark.parametrize("module_cls", [DotProductAttention, MixedAttention])
def test_state_dict_keys(module_cls: type[DotProductAttention], overrides: dict[str, Any], expected: set[str]) -> None:
    module = module_cls(MixedAttentionConfig(hidden_dim=HIDDEN_DIM, num_heads=NUM_HEADS, **overrides))
    assert set(module.state_dict()) == expected


ANCHOR_MODULES: dict[str, tuple[type[MultiBranchAnchorAttention], type[AttentionConfig]]] = {
    "self": (SelfAnchorAttention, SelfAnchorAttentionConfig),
    "cross": (CrossAnchorAttention, CrossAnchorAttentionConfig),
    "joint": (JointAnchorAttention, JointAnchorAttentionConfig),
}


def make_anchor(kind: str, device: torch.device | str = "cpu", seed: int = 0, **overrides: Any) -> Any:
    module_cls, config_cls = ANCHOR_MODULES[kind]
    config: dict[str, Any] = {
        "hidden_dim": HIDDEN_DIM,
        "num_heads": NUM_HEADS,
        "init_weights": "torch",
        "branches": ["surface", "volume"],
    } | overrides
    torch.manual_seed(seed)
    module = module_cls(config_cls(**config))
    randomize_norms(module)
    return module.to(device).eval()


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("kind", list(ANCHOR_MODULES))
def test_anchor_module_state_dict_keys_are_prefixed(kind: str, qk_norm: bool) -> None:
    module = make_anchor(kind, qk_norm=qk_norm)
    expected = BASE_KEYS | (NORM_KEYS if qk_norm else set())
    assert set(module.state_dict()) == {f"mixed_attention.{key}" for key in expected}


# ----------------------------------------------------------------------------------------------------------------------
# MixedAttention == DotProductAttention with a dense mask
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_mixed_attention_equals_dense_masked_attention(device: torch.device, scenario: str, option: str) -> None:
    token_specs, patterns = SCENARIOS[scenario]
    mixed = make_mixed(device, **OPTIONS[option])
    dense = dense_twin(mixed, device)
    n_tokens = total_tokens(token_specs)
    x = randn(BATCH, n_tokens, HIDDEN_DIM, seed=1, device=device, scale=2.0)
    freqs = make_freqs(n_tokens, seed=2, device=device) if mixed.use_rope else None

    out, _ = mixed(x, token_specs, patterns, freqs=freqs)
    expected = dense(x, attn_mask=dense_mask(token_specs, patterns).to(device), freqs=freqs)

    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    # The mask matters: unmasked attention gives a different result (unless every token sees every token).
    if not bool(dense_mask(token_specs, patterns).all()):
        assert not torch.allclose(out, dense(x, freqs=freqs), atol=1e-3)


@pytest.mark.parametrize(
    ("scenario", "expected_calls"),
    [("two_equal_shape_patterns", 1), ("three_patterns_of_different_shapes", 3), ("full_self_attention", 1)],
)
def test_patterns_of_equal_shape_share_one_sdpa_call(
    monkeypatch: pytest.MonkeyPatch, scenario: str, expected_calls: int
) -> None:
    token_specs, patterns = SCENARIOS[scenario]
    calls: list[tuple[int, ...]] = []
    original = F.scaled_dot_product_attention

    def counting_sdpa(q: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(tuple(q.shape))
        return original(q, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    module = make_mixed()
    module(randn(BATCH, total_tokens(token_specs), HIDDEN_DIM, seed=0), token_specs, patterns)
    assert len(calls) == expected_calls


# ----------------------------------------------------------------------------------------------------------------------
# Pattern isolation
# ----------------------------------------------------------------------------------------------------------------------


def test_group_nobody_attends_to_does_not_influence_other_groups(device: torch.device) -> None:
    token_specs = specs_of(anchors=4, queries=3, probes=2)
    patterns = patterns_of((["anchors", "queries"], ["anchors"]), (["probes"], ["anchors", "queries"]))
    module = make_mixed(device)
    slices = group_slices(token_specs)
    x = randn(BATCH, 9, HIDDEN_DIM, seed=3, device=device)
    x_changed = x.clone()
    x_changed[:, slices["probes"]] = randn(BATCH, 2, HIDDEN_DIM, seed=4, device=device)

    out, _ = module(x, token_specs, patterns)
    out_changed, _ = module(x_changed, token_specs, patterns)

    for name in ("anchors", "queries"):
        torch.testing.assert_close(out_changed[:, slices[name]], out[:, slices[name]], atol=1e-6, rtol=0)
    assert not torch.allclose(out_changed[:, slices["probes"]], out[:, slices["probes"]], atol=1e-3)


def test_changing_an_attended_group_changes_its_attendees(device: torch.device) -> None:
    token_specs = specs_of(anchors=4, queries=3, probes=2)
    patterns = patterns_of((["anchors", "queries"], ["anchors"]), (["probes"], ["anchors", "queries"]))
    module = make_mixed(device)
    slices = group_slices(token_specs)
    x = randn(BATCH, 9, HIDDEN_DIM, seed=3, device=device)
    x_changed = x.clone()
    x_changed[:, slices["queries"]] += 1.0

    out, _ = module(x, token_specs, patterns)
    out_changed, _ = module(x_changed, token_specs, patterns)

    torch.testing.assert_close(out_changed[:, slices["anchors"]], out[:, slices["anchors"]], atol=1e-6, rtol=0)
    assert not torch.allclose(out_changed[:, slices["probes"]], out[:, slices["probes"]], atol=1e-3)


# ----------------------------------------------------------------------------------------------------------------------
# Key padding mask
# ----------------------------------------------------------------------------------------------------------------------

PADDING_SPECS = specs_of(a=4, b=3, c=5)
PADDING_PATTERNS = patterns_of((["a", "b"], ["a", "c"]), (["c"], ["c"]))


def padding_mask(device: torch.device | str) -> torch.Tensor:
    """(BATCH, 12) with some padded keys in every attended group; no query loses all its keys."""
    mask = torch.ones(BATCH, 12, dtype=torch.bool)
    mask[0, 3] = False  # a[3]
    mask[0, 11] = False  # c[4]
    mask[1, 7] = False  # c[0]
    mask[1, 8] = False  # c[1]
    mask[1, 6] = False  # b[2] (b is no key anywhere)
    return mask.to(device)


@pytest.mark.parametrize("option", ["plain", "rope"])
def test_key_padding_mask_equals_dense_mask(device: torch.device, option: str) -> None:
    mixed = make_mixed(device, **OPTIONS[option])
    dense = dense_twin(mixed, device)
    x = randn(BATCH, 12, HIDDEN_DIM, seed=5, device=device, scale=2.0)
    freqs = make_freqs(12, seed=6, device=device) if mixed.use_rope else None
    key_padding_mask = padding_mask(device)

    out, _ = mixed(x, PADDING_SPECS, PADDING_PATTERNS, key_padding_mask=key_padding_mask, freqs=freqs)
    folded = dense_mask(PADDING_SPECS, PADDING_PATTERNS).to(device)[None, None] & key_padding_mask[:, None, None, :]
    expected = dense(x, attn_mask=folded, freqs=freqs)

    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    unpadded, _ = mixed(x, PADDING_SPECS, PADDING_PATTERNS, freqs=freqs)
    assert not torch.allclose(out, unpadded, atol=1e-3)


def test_padded_keys_do_not_influence_real_tokens(device: torch.device) -> None:
    module = make_mixed(device)
    key_padding_mask = padding_mask(device)
    x = randn(BATCH, 12, HIDDEN_DIM, seed=7, device=device)
    x_changed = torch.where(key_padding_mask[..., None], x, randn(BATCH, 12, HIDDEN_DIM, seed=8, device=device))
    assert not torch.equal(x, x_changed)

    out, _ = module(x, PADDING_SPECS, PADDING_PATTERNS, key_padding_mask=key_padding_mask)
    out_changed, _ = module(x_changed, PADDING_SPECS, PADDING_PATTERNS, key_padding_mask=key_padding_mask)

    real = key_padding_mask
    torch.testing.assert_close(out_changed[real], out[real], atol=1e-6, rtol=0)


def test_all_true_key_padding_mask_equals_no_mask() -> None:
    module = make_mixed()
    x = randn(BATCH, 12, HIDDEN_DIM, seed=9)
    out, _ = module(x, PADDING_SPECS, PADDING_PATTERNS, key_padding_mask=torch.ones(BATCH, 12, dtype=torch.bool))
    expected, _ = module(x, PADDING_SPECS, PADDING_PATTERNS)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("key_padding_mask", "match"),
    [
        (torch.ones(BATCH, 12), "must be a bool tensor"),
        (torch.ones(BATCH, 12, dtype=torch.int64), "must be a bool tensor"),
        (torch.ones(12, dtype=torch.bool), r"must be 2D .* got shape \(12,\)"),
        (torch.ones(BATCH, 1, 12, dtype=torch.bool), r"must be 2D .* got shape \(2, 1, 12\)"),
        (torch.ones(BATCH, 11, dtype=torch.bool), r"n_tokens dim \(11\) must match x sequence length \(12\)"),
    ],
)
def test_key_padding_mask_errors(key_padding_mask: torch.Tensor, match: str) -> None:
    module = make_mixed()
    with pytest.raises(ValueError, match=match):
        module(randn(BATCH, 12, HIDDEN_DIM, seed=0), PADDING_SPECS, PADDING_PATTERNS, key_padding_mask=key_padding_mask)


# ----------------------------------------------------------------------------------------------------------------------
# KV cache
# ----------------------------------------------------------------------------------------------------------------------


def test_new_kv_cache_holds_exactly_the_anchor_groups(device: torch.device) -> None:
    token_specs = specs_of(surface_anchors=4, surface_queries=3, anchorless=2, volume_anchor_points=3)
    patterns = patterns_of(
        (["surface_anchors", "surface_queries", "anchorless"], ["surface_anchors"]),
        (["volume_anchor_points"], ["volume_anchor_points", "surface_anchors"]),
    )
    module = make_mixed(device)
    x = randn(BATCH, 12, HIDDEN_DIM, seed=0, device=device)
    _, cache = module(x, token_specs, patterns)
    assert cache is not None
    assert set(cache) == {"surface_anchors", "volume_anchor_points"}
    groups = module.project_groups(x, token_specs)
    for name, entry in cache.items():
        assert set(entry) == {"k", "v"}
        torch.testing.assert_close(entry["k"], groups.k[name], atol=0, rtol=0)
        torch.testing.assert_close(entry["v"], groups.v[name], atol=0, rtol=0)


def test_new_kv_cache_is_empty_dict_without_anchor_groups() -> None:
    token_specs = specs_of(points=3, queries=2)
    patterns = patterns_of((["points", "queries"], ["points"]))
    _, cache = make_mixed()(randn(BATCH, 5, HIDDEN_DIM, seed=0), token_specs, patterns)
    assert cache == {}


def cached_specs(token_specs: Sequence[TokenSpec]) -> list[TokenSpec]:
    """The same groups with the anchor groups marked as cached (size None)."""
    return [TokenSpec(name=s.name, size=None if "_anchor" in s.name else s.size) for s in token_specs]


@pytest.mark.parametrize("option", list(OPTIONS))
def test_cached_pass_reproduces_single_pass_outputs(device: torch.device, option: str) -> None:
    module = make_mixed(device, **OPTIONS[option])
    n_tokens = total_tokens(ANCHOR_SPECS)
    x = randn(BATCH, n_tokens, HIDDEN_DIM, seed=10, device=device, scale=2.0)
    freqs = make_freqs(n_tokens, seed=11, device=device) if module.use_rope else None
    query_groups = ["surface_queries", "volume_queries"]

    out, cache = module(x, ANCHOR_SPECS, SELF_ANCHOR_PATTERNS, freqs=freqs)
    assert cache is not None
    query_freqs = None if freqs is None else concat_groups(freqs, ANCHOR_SPECS, query_groups)
    out_cached, new_cache = module(
        concat_groups(x, ANCHOR_SPECS, query_groups),
        cached_specs(ANCHOR_SPECS),
        SELF_ANCHOR_PATTERNS,
        freqs=query_freqs,
        kv_cache=cache,
    )

    assert new_cache is None
    torch.testing.assert_close(out_cached, concat_groups(out, ANCHOR_SPECS, query_groups), atol=ATOL, rtol=0)


def test_cached_pass_with_cross_patterns(device: torch.device) -> None:
    patterns = patterns_of(
        (["surface_anchors", "surface_queries"], ["volume_anchors"]),
        (["volume_anchors", "volume_queries"], ["surface_anchors", "volume_anchors"]),
    )
    module = make_mixed(device)
    x = randn(BATCH, total_tokens(ANCHOR_SPECS), HIDDEN_DIM, seed=12, device=device)
    query_groups = ["surface_queries", "volume_queries"]
    out, cache = module(x, ANCHOR_SPECS, patterns)
    out_cached, _ = module(
        concat_groups(x, ANCHOR_SPECS, query_groups), cached_specs(ANCHOR_SPECS), patterns, kv_cache=cache
    )
    torch.testing.assert_close(out_cached, concat_groups(out, ANCHOR_SPECS, query_groups), atol=ATOL, rtol=0)


def _cache_for_anchor_specs(module: MixedAttention) -> dict[str, dict[str, torch.Tensor]]:
    _, cache = module(randn(BATCH, total_tokens(ANCHOR_SPECS), HIDDEN_DIM, seed=0), ANCHOR_SPECS, SELF_ANCHOR_PATTERNS)
    assert cache is not None
    return cache


@pytest.mark.parametrize("kv_cache", [None, {}])
def test_cached_pass_with_empty_cache_raises(kv_cache: dict[str, Any] | None) -> None:
    module = make_mixed()
    with pytest.raises(ValueError, match="kv_cache is empty"):
        module(randn(BATCH, 5, HIDDEN_DIM, seed=0), cached_specs(ANCHOR_SPECS), SELF_ANCHOR_PATTERNS, kv_cache=kv_cache)


def test_cached_pass_with_missing_cached_group_raises() -> None:
    module = make_mixed()
    cache = _cache_for_anchor_specs(module)
    del cache["volume_anchors"]
    with pytest.raises(ValueError, match="'volume_anchors' not found in kv_cache"):
        module(randn(BATCH, 5, HIDDEN_DIM, seed=0), cached_specs(ANCHOR_SPECS), SELF_ANCHOR_PATTERNS, kv_cache=cache)


def test_cached_pass_with_key_padding_mask_raises() -> None:
    module = make_mixed()
    cache = _cache_for_anchor_specs(module)
    with pytest.raises(ValueError, match="key_padding_mask is not supported when using KV cache"):
        module(
            randn(BATCH, 5, HIDDEN_DIM, seed=0),
            cached_specs(ANCHOR_SPECS),
            SELF_ANCHOR_PATTERNS,
            key_padding_mask=torch.ones(BATCH, 5, dtype=torch.bool),
            kv_cache=cache,
        )


def test_cached_pass_attending_to_a_non_cached_group_raises() -> None:
    module = make_mixed()
    cache = _cache_for_anchor_specs(module)
    token_specs = specs_of(surface_anchors=None, surface_queries=3, volume_queries=2)
    patterns = patterns_of(
        (["surface_anchors", "surface_queries"], ["surface_anchors"]),
        (["volume_queries"], ["surface_anchors", "surface_queries"]),
    )
    with pytest.raises(ValueError, match="'surface_queries'"):
        module(randn(BATCH, 5, HIDDEN_DIM, seed=0), token_specs, patterns, kv_cache=cache)


# ----------------------------------------------------------------------------------------------------------------------
# Validation errors name the offending token
# ----------------------------------------------------------------------------------------------------------------------

VALIDATION_CASES: dict[str, tuple[list[TokenSpec], list[AttentionPattern], int, str]] = {
    "query_twice": (
        specs_of(a=2, b=2),
        patterns_of((["a", "b"], ["a"]), (["a"], ["b"])),
        4,
        r"cannot be a query in multiple attention patterns: 'a' is a query in attention_patterns\[0\] and "
        r"attention_patterns\[1\]",
    ),
    "group_in_no_pattern": (
        specs_of(a=2, b=2, c=1),
        patterns_of((["a", "b"], ["a"])),
        5,
        r"\['c'\] is not a query in any attention pattern",
    ),
    "unknown_kv_name": (
        specs_of(a=2, b=2),
        patterns_of((["a", "b"], ["ghost"])),
        4,
        r"Token 'ghost' in `key_value_tokens` of attention_patterns\[0\] is not defined",
    ),
    "unknown_query_name": (
        specs_of(a=2, b=2),
        patterns_of((["a", "b"], ["a"]), (["ghost"], ["a"])),
        4,
        r"Token 'ghost' in `query_tokens` of attention_patterns\[1\] is not defined",
    ),
    "size_mismatch": (
        specs_of(a=2, b=2),
        patterns_of((["a", "b"], ["a"])),
        5,
        r"total size 4 != tensor size 5",
    ),
    "empty_query_list": (
        specs_of(a=2, b=2),
        patterns_of((["a", "b"], ["a"]), ([], ["a"])),
        4,
        r"attention_patterns\[1\] has no query_tokens",
    ),
    "duplicate_names": (
        [TokenSpec(name="a", size=2), TokenSpec(name="b", size=1), TokenSpec(name="a", size=1)],
        patterns_of((["a", "b"], ["a"])),
        4,
        r"Token group 'a' appears more than once",
    ),
}


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_invalid_inputs_raise_naming_the_token(case: str) -> None:
    token_specs, patterns, n_tokens, match = VALIDATION_CASES[case]
    module = make_mixed()
    with pytest.raises(ValueError, match=match):
        module(randn(BATCH, n_tokens, HIDDEN_DIM, seed=0), token_specs, patterns)


@pytest.mark.parametrize("module_kind", ["mixed", "dense"])
def test_rope_usage_mismatch_raises_both_ways(module_kind: str) -> None:
    token_specs = specs_of(a=3)
    patterns = patterns_of((["a"], ["a"]))
    x = randn(BATCH, 3, HIDDEN_DIM, seed=0)
    freqs = make_freqs(3, seed=1)

    def call(use_rope: bool, freqs: torch.Tensor | None) -> object:
        mixed = make_mixed(use_rope=use_rope)
        if module_kind == "mixed":
            return mixed(x, token_specs, patterns, freqs=freqs)
        return dense_twin(mixed, "cpu")(x, freqs=freqs)

    with pytest.raises(ValueError, match=r"RoPE usage mismatch: use_rope=True but no freqs"):
        call(True, None)
    with pytest.raises(ValueError, match=r"RoPE usage mismatch: use_rope=False but freqs were given"):
        call(False, freqs)


# ----------------------------------------------------------------------------------------------------------------------
# RoPE
# ----------------------------------------------------------------------------------------------------------------------


def expected_padding(hidden_dim: int, input_dim: int) -> int:
    """Features left over when every axis gets the same even number of features."""
    per_axis = (hidden_dim // input_dim) // 2 * 2
    return hidden_dim - per_axis * input_dim


@pytest.mark.parametrize(("head_dim", "input_dim"), [(8, 1), (8, 2), (12, 3), (16, 3), (10, 2), (8, 3)])
def test_rope_frequency_complex_shape_and_unit_modulus(device: torch.device, head_dim: int, input_dim: int) -> None:
    module = RopeFrequency(RopeFrequencyConfig(hidden_dim=head_dim, input_dim=input_dim, implementation="complex")).to(
        device
    )
    freqs = module(randn(BATCH, 7, input_dim, seed=0, device=device, scale=10.0))
    assert freqs.shape == (BATCH, 7, head_dim // 2)
    assert torch.is_complex(freqs)
    torch.testing.assert_close(freqs.abs(), torch.ones_like(freqs.abs()), atol=1e-6, rtol=0)
    # Padding pairs are not rotated.
    padded_pairs = expected_padding(head_dim, input_dim) // 2
    if padded_pairs:
        tail = freqs[..., -padded_pairs:]
        torch.testing.assert_close(tail, torch.ones_like(tail), atol=0, rtol=0)


def test_rope_frequency_at_origin_is_identity() -> None:
    module = RopeFrequency(RopeFrequencyConfig(hidden_dim=12, input_dim=3, implementation="complex"))
    freqs = module(torch.zeros(1, 4, 3))
    torch.testing.assert_close(freqs, torch.ones_like(freqs), atol=0, rtol=0)


def test_rope_frequency_odd_head_dim_with_complex_raises() -> None:
    with pytest.raises(ValueError, match="odd"):
        RopeFrequency(RopeFrequencyConfig(hidden_dim=7, input_dim=1, implementation="complex"))


def test_rope_frequency_too_small_hidden_dim_raises() -> None:
    with pytest.raises(ValueError, match="hidden_dim=2 leaves no features"):
        RopeFrequency(RopeFrequencyConfig(hidden_dim=2, input_dim=3, implementation="complex"))


def test_rope_frequency_wrong_coordinate_dim_raises() -> None:
    module = RopeFrequency(RopeFrequencyConfig(hidden_dim=8, input_dim=3, implementation="complex"))
    with pytest.raises(ValueError, match="expected input_dim=3"):
        module(torch.zeros(1, 4, 2))


def test_rope_preserves_the_norm_of_every_pair(device: torch.device) -> None:
    freqs = make_freqs(6, seed=0, device=device)
    x = randn(BATCH, NUM_HEADS, 6, HEAD_DIM, seed=1, device=device)
    rotated = rope(x, freqs)
    assert rotated.shape == x.shape
    assert rotated.dtype == x.dtype
    pair_norms = x.unflatten(-1, (-1, 2)).norm(dim=-1)
    rotated_pair_norms = rotated.unflatten(-1, (-1, 2)).norm(dim=-1)
    torch.testing.assert_close(rotated_pair_norms, pair_norms, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(rotated, x, atol=1e-3)


ONE_D_ROPE = RopeFrequency(RopeFrequencyConfig(hidden_dim=HEAD_DIM, input_dim=1, implementation="complex"))
RELATIVE_Q = randn(1, 1, 1, HEAD_DIM, seed=20)
RELATIVE_K = randn(1, 1, 1, HEAD_DIM, seed=21)


def rotated_dot(position_q: float, position_k: float) -> float:
    freqs_q = ONE_D_ROPE(torch.tensor([[[position_q]]]))
    freqs_k = ONE_D_ROPE(torch.tensor([[[position_k]]]))
    return float((rope(RELATIVE_Q, freqs_q) * rope(RELATIVE_K, freqs_k)).sum())


@given(
    position_q=st.floats(-20, 20, allow_nan=False, width=32),
    position_k=st.floats(-20, 20, allow_nan=False, width=32),
    shift=st.integers(-20, 20),
)
def test_rope_dot_product_depends_only_on_relative_position(position_q: float, position_k: float, shift: int) -> None:
    reference = rotated_dot(position_q, position_k)
    shifted = rotated_dot(position_q + shift, position_k + shift)
    assert shifted == pytest.approx(reference, abs=1e-4)


def test_rope_dot_product_changes_with_relative_position() -> None:
    assert rotated_dot(0.0, 0.0) != pytest.approx(rotated_dot(0.0, 3.0), abs=1e-3)


def complex_layout_permutation(head_dim: int, input_dim: int) -> torch.Tensor:
    """Feature order that turns the real (rotate-half per axis) layout into the complex (adjacent pairs) layout.

    The real implementation rotates features (a*d + j, a*d + d/2 + j) of axis ``a`` by the angle the complex one
    applies to pair ``a*d/2 + j`` (features 2c, 2c+1), with ``d`` the features per axis.
    """
    per_axis = (head_dim - expected_padding(head_dim, input_dim)) // input_dim
    half = per_axis // 2
    order = []
    for axis in range(input_dim):
        for j in range(half):
            order += [axis * per_axis + j, axis * per_axis + half + j]
    order += list(range(len(order), head_dim))
    return torch.tensor(order)


@pytest.mark.parametrize(("head_dim", "input_dim"), [(2, 1), (8, 1), (8, 2), (12, 3), (16, 3), (10, 2)])
def test_real_rope_matches_complex_rope_up_to_feature_order(head_dim: int, input_dim: int) -> None:
    coords = randn(BATCH, 5, input_dim, seed=30, scale=4.0)
    complex_freqs = RopeFrequency(
        RopeFrequencyConfig(hidden_dim=head_dim, input_dim=input_dim, implementation="complex")
    )(coords)
    real_freqs = RopeFrequency(RopeFrequencyConfig(hidden_dim=head_dim, input_dim=input_dim, implementation="real"))(
        coords
    )
    assert isinstance(real_freqs, tuple)
    assert len(real_freqs) == input_dim
    x = randn(BATCH, NUM_HEADS, 5, head_dim, seed=31)
    order = complex_layout_permutation(head_dim, input_dim)

    rotated_real = rope(x, real_freqs)
    rotated_complex = rope(x[..., order], complex_freqs)

    torch.testing.assert_close(rotated_real[..., order], rotated_complex, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rotated_real.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)


def test_real_rope_preserves_dtype() -> None:
    real_freqs = RopeFrequency(RopeFrequencyConfig(hidden_dim=HEAD_DIM, input_dim=2, implementation="real"))(
        randn(BATCH, 5, 2, seed=0)
    )
    x = randn(BATCH, NUM_HEADS, 5, HEAD_DIM, seed=1).to(torch.bfloat16)
    assert rope(x, real_freqs).dtype == torch.bfloat16


def test_real_rope_rejects_frequencies_wider_than_head_dim() -> None:
    real_freqs = RopeFrequency(RopeFrequencyConfig(hidden_dim=16, input_dim=2, implementation="real"))(
        randn(BATCH, 5, 2, seed=0)
    )
    with pytest.raises(ValueError, match="cover 16 features but the head dimension is 8"):
        rope(randn(BATCH, NUM_HEADS, 5, 8, seed=1), real_freqs)


@pytest.mark.parametrize(
    ("x_shape", "freqs", "match"),
    [
        ((BATCH, NUM_HEADS, 5, HEAD_DIM), torch.ones(BATCH, 5, HEAD_DIM // 2), "must be a complex tensor"),
        (
            (BATCH, NUM_HEADS, 5, HEAD_DIM),
            torch.ones(5, HEAD_DIM // 2, dtype=torch.complex64),
            r"freqs of shape \(batch, tokens, head_dim // 2\), got \(5, 4\)",
        ),
        (
            (BATCH, 5, HEAD_DIM),
            torch.ones(BATCH, 5, HEAD_DIM // 2, dtype=torch.complex64),
            r"x of shape \(batch, heads, tokens, head_dim\), got \(2, 5, 8\)",
        ),
    ],
)
def test_rope_input_errors(x_shape: tuple[int, ...], freqs: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rope(torch.ones(x_shape), freqs)


# ----------------------------------------------------------------------------------------------------------------------
# ContinuousSincosEmbed
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("hidden_dim", "input_dim"), [(8, 1), (12, 3), (10, 3), (16, 3), (7, 2), (5, 2), (9, 1)])
def test_continuous_sincos_embed_shape_padding_and_range(device: torch.device, hidden_dim: int, input_dim: int) -> None:
    module = ContinuousSincosEmbed(ContinuousSincosEmbeddingConfig(hidden_dim=hidden_dim, input_dim=input_dim))
    module = module.to(device)
    coords = randn(BATCH, 6, input_dim, seed=0, device=device, scale=100.0)
    emb = module(coords)
    assert emb.shape == (BATCH, 6, hidden_dim)
    assert emb.dtype == torch.float32
    assert bool(((emb >= -1.0) & (emb <= 1.0)).all())
    padding = expected_padding(hidden_dim, input_dim)
    assert module.padding == padding
    if padding:
        assert bool((emb[..., -padding:] == 0).all())
    assert bool((emb[..., : hidden_dim - padding] != 0).any())
    # Unbatched coordinates give the same rows.
    torch.testing.assert_close(module(coords[0]), emb[0], atol=0, rtol=0)


def test_continuous_sincos_embed_at_origin_is_sin_zero_then_cos_one() -> None:
    module = ContinuousSincosEmbed(ContinuousSincosEmbeddingConfig(hidden_dim=16, input_dim=3))
    emb = module(torch.zeros(1, 2, 3))
    per_axis = emb[..., :12].unflatten(-1, (3, 4))
    assert bool((per_axis[..., :2] == 0).all())
    assert bool((per_axis[..., 2:] == 1).all())
    assert bool((emb[..., 12:] == 0).all())


def test_continuous_sincos_embed_rejects_bad_coordinates() -> None:
    module = ContinuousSincosEmbed(ContinuousSincosEmbeddingConfig(hidden_dim=8, input_dim=2))
    with pytest.raises(ValueError, match="coords must be"):
        module(torch.zeros(5))
    with pytest.raises(ValueError, match="expected input_dim=2"):
        module(torch.zeros(1, 5, 3))


# ----------------------------------------------------------------------------------------------------------------------
# Weight initialisation
# ----------------------------------------------------------------------------------------------------------------------


def make_dense(init_weights: str, seed: int = 0, **overrides: Any) -> DotProductAttention:
    torch.manual_seed(seed)
    return DotProductAttention(
        DotProductAttentionConfig(hidden_dim=64, num_heads=4, init_weights=init_weights, **overrides)
    )


LINEARS = ("q", "k", "v", "proj")


@pytest.mark.parametrize("mode", ["truncnormal", "truncnormal002"])
def test_truncnormal_init_zero_biases_and_std_002(mode: str) -> None:
    module = make_dense(mode)
    for name in LINEARS:
        layer = getattr(module, name)
        assert bool((layer.bias == 0).all()), name
        assert float(layer.weight.detach().std()) == pytest.approx(0.02, abs=0.002), name
        assert float(layer.weight.detach().mean()) == pytest.approx(0.0, abs=0.002), name


def test_truncnormal002_identity_init_zeroes_the_output_projection() -> None:
    module = make_dense("truncnormal002-identity")
    assert bool((module.proj.weight == 0).all())
    assert bool((module.proj.bias == 0).all())
    for name in ("q", "k", "v"):
        layer = getattr(module, name)
        assert bool((layer.bias == 0).all())
        assert float(layer.weight.detach().std()) == pytest.approx(0.02, abs=0.002)
    out = module(randn(1, 5, 64, seed=0))
    assert bool((out == 0).all())


def test_torch_init_keeps_pytorch_defaults() -> None:
    module = make_dense("torch")
    bound = 1 / 64**0.5
    for name in LINEARS:
        layer = getattr(module, name)
        assert float(layer.weight.detach().abs().max()) <= bound
        assert float(layer.weight.detach().std()) == pytest.approx(bound / 3**0.5, rel=0.1)
        assert bool((layer.bias != 0).any())


@pytest.mark.parametrize("mode", ["torchs", "zeros"])
def test_unsupported_init_modes_raise_naming_the_mode(mode: str) -> None:
    with pytest.raises(NotImplementedError, match=f"'{mode}'"):
        make_dense(mode)
    with pytest.raises(NotImplementedError, match=f"'{mode}'"):
        make_anchor("self", init_weights=mode)


@pytest.mark.parametrize("mode", ["torch", "truncnormal", "truncnormal002", "truncnormal002-identity"])
def test_same_seed_gives_same_weights(mode: str) -> None:
    first = make_dense(mode, seed=5, qk_norm=True).state_dict()
    second = make_dense(mode, seed=5, qk_norm=True).state_dict()
    other = make_dense(mode, seed=6, qk_norm=True).state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert not torch.equal(first["q.weight"], other["q.weight"])


def test_qk_norm_starts_as_plain_layer_norm() -> None:
    module = make_dense("truncnormal002", qk_norm=True)
    for norm in (module.q_norm, module.k_norm):
        assert isinstance(norm, torch.nn.LayerNorm)
        assert norm.normalized_shape == (16,)
        assert bool((norm.weight == 1).all())
        assert bool((norm.bias == 0).all())


def test_anchor_module_applies_init_to_inner_mixed_attention() -> None:
    module = make_anchor("joint", init_weights="truncnormal002-identity")
    assert bool((module.mixed_attention.proj.weight == 0).all())
    assert bool((module.mixed_attention.q.bias == 0).all())


# ----------------------------------------------------------------------------------------------------------------------
# Self / Cross / Joint anchor attention
# ----------------------------------------------------------------------------------------------------------------------

DOCUMENTED_PATTERNS: dict[str, list[tuple[list[str], list[str]]]] = {
    "self": [
        (["surface_anchors", "surface_queries"], ["surface_anchors"]),
        (["volume_anchors", "volume_queries"], ["volume_anchors"]),
    ],
    "cross": [
        (["surface_anchors", "surface_queries"], ["volume_anchors"]),
        (["volume_anchors", "volume_queries"], ["surface_anchors"]),
    ],
    "joint": [
        (
            ["surface_anchors", "surface_queries", "volume_anchors", "volume_queries"],
            ["surface_anchors", "volume_anchors"],
        ),
    ],
}


def as_pairs(patterns: Sequence[AttentionPattern]) -> list[tuple[list[str], list[str]]]:
    return [(list(p.query_tokens), list(p.key_value_tokens)) for p in patterns]


@pytest.mark.parametrize("kind", list(ANCHOR_MODULES))
def test_anchor_patterns_match_documentation(kind: str) -> None:
    module = make_anchor(kind)
    assert as_pairs(module.attention_patterns(ANCHOR_SPECS)) == DOCUMENTED_PATTERNS[kind]


def test_cross_anchor_patterns_with_three_branches() -> None:
    module = make_anchor("cross", branches=["surface", "volume", "wake"])
    token_specs = specs_of(surface_anchors=2, volume_anchors=2, volume_queries=1, wake_anchors=2)
    assert as_pairs(module.attention_patterns(token_specs)) == [
        (["surface_anchors"], ["volume_anchors", "wake_anchors"]),
        (["volume_anchors", "volume_queries"], ["surface_anchors", "wake_anchors"]),
        (["wake_anchors"], ["surface_anchors", "volume_anchors"]),
    ]


def test_self_anchor_with_custom_anchor_suffix() -> None:
    module = make_anchor("self", branches=["surface"], anchor_suffix="_anchor")
    token_specs = specs_of(surface_anchor=3, surface_queries=2)
    assert as_pairs(module.attention_patterns(token_specs)) == [
        (["surface_anchor", "surface_queries"], ["surface_anchor"])
    ]


@pytest.mark.parametrize("option", ["plain", "qk_norm", "rope"])
@pytest.mark.parametrize("kind", list(ANCHOR_MODULES))
def test_anchor_forward_equals_mixed_attention_with_its_patterns(device: torch.device, kind: str, option: str) -> None:
    module = make_anchor(kind, device, **OPTIONS[option])
    mixed = make_mixed(device, seed=99, **OPTIONS[option])
    mixed.load_state_dict(
        {key.removeprefix("mixed_attention."): value for key, value in module.state_dict().items()}, strict=True
    )
    n_tokens = total_tokens(ANCHOR_SPECS)
    x = randn(BATCH, n_tokens, HIDDEN_DIM, seed=40, device=device, scale=2.0)
    freqs = make_freqs(n_tokens, seed=41, device=device) if mixed.use_rope else None
    patterns = patterns_of(*DOCUMENTED_PATTERNS[kind])

    out, cache = module(x, ANCHOR_SPECS, freqs=freqs)
    expected, expected_cache = mixed(x, ANCHOR_SPECS, patterns, freqs=freqs)

    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    assert cache is not None
    assert expected_cache is not None
    assert set(cache) == set(expected_cache) == {"surface_anchors", "volume_anchors"}
    # ...and differs from the other anchor schemes.
    other_kind = "joint" if kind != "joint" else "self"
    other, _ = mixed(x, ANCHOR_SPECS, patterns_of(*DOCUMENTED_PATTERNS[other_kind]), freqs=freqs)
    assert not torch.allclose(out, other, atol=1e-3)


@pytest.mark.parametrize("kind", list(ANCHOR_MODULES))
def test_anchor_cached_pass_reproduces_single_pass(kind: str) -> None:
    module = make_anchor(kind)
    x = randn(BATCH, total_tokens(ANCHOR_SPECS), HIDDEN_DIM, seed=42)
    query_groups = ["surface_queries", "volume_queries"]
    out, cache = module(x, ANCHOR_SPECS)
    out_cached, new_cache = module(
        concat_groups(x, ANCHOR_SPECS, query_groups), cached_specs(ANCHOR_SPECS), kv_cache=cache
    )
    assert new_cache is None
    torch.testing.assert_close(out_cached, concat_groups(out, ANCHOR_SPECS, query_groups), atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", list(ANCHOR_MODULES))
def test_anchor_unexpected_token_raises(kind: str) -> None:
    token_specs = [*ANCHOR_SPECS, TokenSpec(name="pressure_queries", size=1)]
    with pytest.raises(UnexpectedTokenError, match="'pressure_queries'"):
        make_anchor(kind).attention_patterns(token_specs)


@pytest.mark.parametrize("kind", list(ANCHOR_MODULES))
def test_anchor_missing_branch_tokens_raises(kind: str) -> None:
    token_specs = specs_of(surface_anchors=2, surface_queries=2)
    with pytest.raises(MissingBranchTokensError, match="'volume'"):
        make_anchor(kind).attention_patterns(token_specs)


@pytest.mark.parametrize("kind", list(ANCHOR_MODULES))
def test_anchor_missing_anchor_token_raises(kind: str) -> None:
    token_specs = specs_of(surface_anchors=2, surface_queries=2, volume_queries=2)
    module = make_anchor(kind)
    with pytest.raises(MissingAnchorTokenError, match="'volume_anchors'"):
        module(randn(BATCH, 6, HIDDEN_DIM, seed=0), token_specs)


def test_anchor_errors_are_value_errors() -> None:
    for error in (UnexpectedTokenError, MissingBranchTokensError, MissingAnchorTokenError):
        assert issubclass(error, ValueError)


@pytest.mark.parametrize("kind", ["cross", "joint"])
def test_cross_and_joint_need_two_branches(kind: str) -> None:
    with pytest.raises(ValueError, match="at least two branches"):
        make_anchor(kind, branches=["surface"])


def test_self_anchor_accepts_one_branch() -> None:
    module = make_anchor("self", branches=["surface"])
    token_specs = specs_of(surface_anchors=3, surface_queries=2)
    out, _ = module(randn(BATCH, 5, HIDDEN_DIM, seed=0), token_specs)
    assert out.shape == (BATCH, 5, HIDDEN_DIM)


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("kind", list(ANCHOR_MODULES))
def test_anchor_settings_pass_through_to_mixed_attention(kind: str, qk_norm: bool) -> None:
    module = make_anchor(kind, qk_norm=qk_norm, use_rope=True, bias=False, dropout=0.25)
    inner = module.mixed_attention
    assert isinstance(inner, MixedAttention)
    assert inner.qk_norm is qk_norm
    assert hasattr(inner, "q_norm") is qk_norm
    assert inner.use_rope is True
    assert inner.q.bias is None
    assert inner.dropout == 0.25


# ----------------------------------------------------------------------------------------------------------------------
# dtype, dropout
# ----------------------------------------------------------------------------------------------------------------------


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.detach().float() - expected.detach()).norm() / expected.detach().norm())


def test_dot_product_bfloat16_forward_close_to_float32() -> None:
    module = make_mixed()
    dense = dense_twin(module, "cpu")
    x = randn(BATCH, 9, HIDDEN_DIM, seed=50)
    freqs = None
    expected = dense(x, freqs=freqs)
    out = dense.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert relative_error(out, expected) < 0.03


@pytest.mark.parametrize("option", ["plain", "rope", "qk_norm"])
def test_mixed_bfloat16_forward_close_to_float32(option: str) -> None:
    module = make_mixed(**OPTIONS[option])
    token_specs, patterns = SCENARIOS["three_patterns_of_different_shapes"]
    x = randn(BATCH, 14, HIDDEN_DIM, seed=51)
    freqs = make_freqs(14, seed=52) if module.use_rope else None
    expected, _ = module(x, token_specs, patterns, freqs=freqs)
    out, cache = module.to(torch.bfloat16)(x.to(torch.bfloat16), token_specs, patterns, freqs=freqs)
    assert out.dtype == torch.bfloat16
    assert cache is not None
    assert relative_error(out, expected) < 0.03


def test_dot_product_dropout_train_vs_eval(device: torch.device) -> None:
    module = DotProductAttention(
        DotProductAttentionConfig(hidden_dim=HIDDEN_DIM, num_heads=NUM_HEADS, dropout=0.5, init_weights="torch")
    ).to(device)
    x = randn(BATCH, 9, HIDDEN_DIM, seed=60, device=device)
    module.train()
    assert not torch.equal(module(x), module(x))
    module.eval()
    assert torch.equal(module(x), module(x))


def test_dot_product_dropout_also_drops_output_features() -> None:
    # Attention dropout alone almost never yields exact zeros; the output-projection dropout does.
    module = DotProductAttention(
        DotProductAttentionConfig(hidden_dim=HIDDEN_DIM, num_heads=NUM_HEADS, dropout=0.5, init_weights="torch")
    ).train()
    out = module(randn(BATCH, 9, HIDDEN_DIM, seed=63))
    assert int((out == 0).sum()) > out.numel() // 4


def test_mixed_dropout_train_vs_eval(device: torch.device) -> None:
    module = make_mixed(device, dropout=0.5)
    token_specs, patterns = SCENARIOS["kv_set_of_two_groups"]
    x = randn(BATCH, 14, HIDDEN_DIM, seed=61, device=device)
    module.train()
    assert not torch.equal(module(x, token_specs, patterns)[0], module(x, token_specs, patterns)[0])
    module.eval()
    assert torch.equal(module(x, token_specs, patterns)[0], module(x, token_specs, patterns)[0])


def test_train_mode_without_dropout_is_deterministic(device: torch.device) -> None:
    module = make_mixed(device, dropout=0.0).train()
    token_specs, patterns = SCENARIOS["kv_set_of_two_groups"]
    x = randn(BATCH, 14, HIDDEN_DIM, seed=62, device=device)
    assert torch.equal(module(x, token_specs, patterns)[0], module(x, token_specs, patterns)[0])
