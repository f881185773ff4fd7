"""Perceiver calls in a capture: recorded from this package's PerceiverAttention, explorable and verified."""

from pathlib import Path

import pytest
import torch
from torch import nn

from noether.core.schemas.modules.layers import RopeFrequencyConfig
from noether.explorer.capture import capture_attention
from noether.explorer.capture_file import load_capture
from noether.explorer.capture_layers import capture_layers, find_layer, layer_run, verify_layer
from noether.explorer.capture_perceiver import PERCEIVER_KV_GROUP, PERCEIVER_QUERY_GROUP
from noether.modeling.modules.attention import PerceiverAttention, PerceiverAttentionConfig
from noether.modeling.modules.layers import RopeFrequency

HIDDEN, HEADS, QUERIES, LATENTS = 32, 4, 50, 20


class GeometryReader(nn.Module):
    """A perceiver block reading a geometry encoding; a second call reuses the first call's cache."""

    def __init__(self) -> None:
        super().__init__()
        self.perceiver = PerceiverAttention(PerceiverAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS, use_rope=True))

    def forward(
        self, queries: torch.Tensor, geometry: torch.Tensor, q_freqs: torch.Tensor, k_freqs: torch.Tensor
    ) -> torch.Tensor:
        first, cache = self.perceiver(queries, geometry, q_freqs=q_freqs, k_freqs=k_freqs)
        second, _ = self.perceiver(q=first[:, :10], kv=None, q_freqs=q_freqs[:, :10], kv_cache=cache)
        return second


@pytest.fixture(scope="module")
def capture_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = GeometryReader().eval()
    rope = RopeFrequency(RopeFrequencyConfig(hidden_dim=HIDDEN // HEADS, input_dim=3, implementation="complex"))
    query_points, latent_points = torch.rand(2, QUERIES, 3), torch.rand(2, LATENTS, 3)
    queries, geometry = torch.randn(2, QUERIES, HIDDEN) * 2, torch.randn(2, LATENTS, HIDDEN) * 2
    positions = {PERCEIVER_QUERY_GROUP: query_points, PERCEIVER_KV_GROUP: latent_points}
    with torch.no_grad(), capture_attention(model, positions=positions) as cap:
        model(queries, geometry, rope(query_points * 20), rope(latent_points * 20))
    path = tmp_path_factory.mktemp("perceiver") / "perceiver.capture.safetensors"
    cap.save(path)
    return path


def test_both_perceiver_calls_are_explorable_and_reproduce_their_outputs(capture_path: Path) -> None:
    capture = load_capture(capture_path)
    layers = capture_layers(capture)
    assert [layer.id for layer in layers] == ["perceiver#0", "perceiver#1"]
    for layer in layers:
        assert layer.explorable, layer.reason
        assert layer.kind == "perceiver"
        verification = verify_layer(layer, layer_run(layer), capture.activations_dtype)
        assert verification.ok and verification.max_abs_diff <= 1e-5, verification


def test_cached_perceiver_call_reads_the_recorded_cache_and_its_filling_pass(capture_path: Path) -> None:
    capture = load_capture(capture_path)
    layer = find_layer(capture, "perceiver#1")
    assert layer.scenario is not None
    assert [(s.name, s.size) for s in layer.scenario.token_specs] == [
        (PERCEIVER_QUERY_GROUP, 10),
        (PERCEIVER_KV_GROUP, None),
    ]
    run = layer_run(layer)
    check = run.kv_cache_check()
    assert check is not None and check.equal, check
    weights = run.weights(pixels=64)
    torch.testing.assert_close(weights.group_mass, torch.ones(2, HEADS, 1, 1))


def test_perceiver_layer_uses_recorded_positions_and_supports_every_view(capture_path: Path) -> None:
    capture = load_capture(capture_path)
    run = layer_run(find_layer(capture, "perceiver#0"))
    recorded = capture.positions()
    torch.testing.assert_close(run.inputs.positions[:, QUERIES:], recorded[PERCEIVER_KV_GROUP].float())
    torch.testing.assert_close(run.inputs.positions[:, :QUERIES], recorded[PERCEIVER_QUERY_GROUP].float())
    assert run.cost().attended_pairs == QUERIES * LATENTS
    row = run.exact_row(3)
    assert row.shape == (2, HEADS, LATENTS)  # the key axis holds the key/value tokens only
    torch.testing.assert_close(row.sum(-1), torch.ones(2, HEADS))
    assert all(t.available for t in run.backends(repeats=1, include=("mixed", "dense")))


# ----------------------------------------------------------------------------------------------------------------------
# kv_dim != hidden_dim: the key/value input is narrower (or wider) than the queries
# ----------------------------------------------------------------------------------------------------------------------

KV_DIM = 12


class NarrowGeometryReader(nn.Module):
    """A perceiver whose geometry encoding has KV_DIM features, not HIDDEN; a second call reads the first's cache."""

    def __init__(self) -> None:
        super().__init__()
        config = PerceiverAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS, use_rope=True, kv_dim=KV_DIM)
        self.perceiver = PerceiverAttention(config)

    def forward(
        self, queries: torch.Tensor, geometry: torch.Tensor, q_freqs: torch.Tensor, k_freqs: torch.Tensor
    ) -> torch.Tensor:
        first, cache = self.perceiver(queries, geometry, q_freqs=q_freqs, k_freqs=k_freqs)
        second, _ = self.perceiver(first[:, :10], None, q_freqs=q_freqs[:, :10], kv_cache=cache)
        return second


@pytest.fixture(scope="module")
def narrow_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    model = NarrowGeometryReader().eval()
    rope = RopeFrequency(RopeFrequencyConfig(hidden_dim=HIDDEN // HEADS, input_dim=3, implementation="complex"))
    query_points, latent_points = torch.rand(2, QUERIES, 3), torch.rand(2, LATENTS, 3)
    queries, geometry = torch.randn(2, QUERIES, HIDDEN) * 2, torch.randn(2, LATENTS, KV_DIM) * 2
    with torch.no_grad(), capture_attention(model) as cap:
        model(queries, geometry, rope(query_points * 20), rope(latent_points * 20))
    path = tmp_path_factory.mktemp("narrow") / "narrow.capture.safetensors"
    cap.save(path)
    return path


def test_a_perceiver_with_its_own_kv_dim_is_explorable_and_reproduces_its_outputs(narrow_capture: Path) -> None:
    capture = load_capture(narrow_capture)
    assert capture.manifest.modules["perceiver"].config["kv_dim"] == KV_DIM
    layers = capture_layers(capture)
    assert [layer.id for layer in layers] == ["perceiver#0", "perceiver#1"]
    for layer in layers:
        assert layer.explorable, layer.reason
        assert layer.scenario is not None and layer.scenario.attention.model_extra["kv_dim"] == KV_DIM
        run = layer_run(layer)
        verification = verify_layer(layer, run, capture.activations_dtype)
        assert verification.ok and verification.max_abs_diff <= 1e-5, verification
    check = layer_run(find_layer(capture, "perceiver#1")).kv_cache_check()
    assert check is not None and check.equal, check


def test_a_narrow_kv_perceivers_weights_are_its_softmax_over_the_key_value_tokens(narrow_capture: Path) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    capture = load_capture(narrow_capture)
    run = layer_run(find_layer(capture, "perceiver#0"))
    module = run.module
    assert isinstance(module, PerceiverAttention) and module.k.in_features == KV_DIM
    q = capture.tensors[capture.manifest.calls[0].inputs["q"] or ""]
    kv = capture.tensors[capture.manifest.calls[0].inputs["kv"] or ""]
    q_freqs = capture.tensor(capture.manifest.calls[0].inputs.get("q_freqs"))
    k_freqs = capture.tensor(capture.manifest.calls[0].inputs.get("k_freqs"))
    with torch.no_grad():
        keys, _ = module.project_keys_values(kv, k_freqs)
        probs = torch.softmax(module.project_queries(q, q_freqs) @ keys.transpose(-1, -2) / module.head_dim**0.5, -1)
    result = run.weights(pixels=128)
    assert result.mean.shape[-2:] == (QUERIES, LATENTS)
    torch.testing.assert_close(result.mean, probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(run.exact_row(5), probs[:, :, 5], atol=1e-5, rtol=0)
    assert all(t.available and (t.max_abs_diff or 0.0) <= 1e-5 for t in run.backends(repeats=1, include=("mixed",)))
    # The cost table's projection FLOPs are what torch counts for the recorded call (its linear layers).
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(q, kv, q_freqs=q_freqs, k_freqs=k_freqs)
    assert run.cost().projection_flops == counter.get_total_flops()


# ----------------------------------------------------------------------------------------------------------------------
# attn_mask: a mask over the key/value tokens (the same for every query and head) is a per-sample key mask
# ----------------------------------------------------------------------------------------------------------------------


class MaskedReader(nn.Module):
    """Calls with a bool key mask, an additive 0/-inf key mask, a mask that varies by query, and a cached call."""

    def __init__(self) -> None:
        super().__init__()
        config = PerceiverAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS, kv_dim=KV_DIM)
        self.perceiver = PerceiverAttention(config)

    def forward(self, queries: torch.Tensor, geometry: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
        keys_only, additive, by_query = masks
        out, cache = self.perceiver(queries, geometry, attn_mask=keys_only)
        out = out + self.perceiver(queries, geometry, attn_mask=additive)[0]
        out = out + self.perceiver(queries, geometry, attn_mask=by_query)[0]
        return out + self.perceiver(queries, None, attn_mask=keys_only, kv_cache=cache)[0]


@pytest.fixture(scope="module")
def masked_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(2)
    model = MaskedReader().eval()
    queries, geometry = torch.randn(2, QUERIES, HIDDEN), torch.randn(2, LATENTS, KV_DIM)
    # Sample 0 keeps its first 15 latents, sample 1 every other one: not trailing padding.
    keys_only = torch.ones(2, 1, 1, LATENTS, dtype=torch.bool)
    keys_only[0, ..., 15:] = False
    keys_only[1, ..., 1::2] = False
    additive = torch.zeros(2, 1, 1, LATENTS).masked_fill(~keys_only, float("-inf"))
    by_query = torch.ones(QUERIES, LATENTS, dtype=torch.bool).tril()
    with torch.no_grad(), capture_attention(model) as cap:
        model(queries, geometry, [keys_only, additive, by_query])
    path = tmp_path_factory.mktemp("masked") / "masked.capture.safetensors"
    cap.save(path)
    return path


def test_a_perceiver_call_masking_keys_is_explorable_and_reproduces_its_output(masked_capture: Path) -> None:
    capture = load_capture(masked_capture)
    layers = {layer.id: layer for layer in capture_layers(capture)}
    for layer_id in ("perceiver#0", "perceiver#1"):
        layer = layers[layer_id]
        assert layer.explorable, layer.reason
        run = layer_run(layer)
        verification = verify_layer(layer, run, capture.activations_dtype)
        assert verification.ok and verification.max_abs_diff <= 1e-5, verification
        # Masked keys get no weight; every query's weights still sum to 1 over the real ones.
        result = run.weights(pixels=128)
        assert float(result.mean[0, ..., 15:].abs().max()) == 0.0
        assert float(result.mean[1, ..., 1::2].abs().max()) == 0.0
        torch.testing.assert_close(result.mean.sum(-1), torch.ones(2, HEADS, QUERIES))
        row = run.exact_row(4)
        assert float(row[0, :, 15:].abs().max()) == 0.0 and float(row[1, :, 1::2].abs().max()) == 0.0
        timings = run.backends(repeats=1, include=("mixed", "dense", "flex"))
        assert [t.available for t in timings] == [True, True, False], timings
        assert all(t.max_abs_diff is not None and t.max_abs_diff <= 1e-5 for t in timings[:2]), timings
        assert "differs per sample" in timings[2].note  # FlexAttention's block mask knows groups, not samples


def test_perceiver_masks_the_explorer_cannot_represent_say_why(masked_capture: Path) -> None:
    layers = {layer.id: layer for layer in capture_layers(load_capture(masked_capture))}
    by_query, cached = layers["perceiver#2"], layers["perceiver#3"]
    assert not by_query.explorable and "varies by query or head" in (by_query.reason or "")
    assert not cached.explorable and "kv_cache" in (cached.reason or "") and "attn_mask" in (cached.reason or "")
