"""Captures recorded with capture_attention from models built of this package's modules, opened and re-verified."""

from pathlib import Path

import pytest
import torch
from torch import nn

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.core.schemas.modules.layers import RopeFrequencyConfig
from noether.explorer.capture import capture_attention
from noether.explorer.capture_file import load_capture
from noether.explorer.capture_layers import capture_layers, find_layer, layer_run, verify_layer
from noether.modeling.modules.attention import (
    DotProductAttention,
    DotProductAttentionConfig,
    MixedAttentionConfig,
    SelfAnchorAttention,
    SelfAnchorAttentionConfig,
)
from noether.modeling.modules.attention.anchor_attention import MixedAttention
from noether.modeling.modules.layers import RopeFrequency

HIDDEN, HEADS, ANCHORS, QUERIES = 48, 4, 40, 24


class TinyModel(nn.Module):
    """An encoder (DotProductAttention), a self-anchor block called twice (shared weights) and a decoder that runs
    either over all tokens or, given a cache, over the queries only."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = DotProductAttention(DotProductAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS, use_rope=True))
        self.block = SelfAnchorAttention(
            SelfAnchorAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS, use_rope=True, branches=["surface"])
        )
        self.decoder = MixedAttention(MixedAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS, use_rope=True))
        self.rope = RopeFrequency(
            RopeFrequencyConfig(hidden_dim=HIDDEN // HEADS, input_dim=3, implementation="complex")
        )

    def forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None):
        freqs = self.rope(positions * 10)
        specs = [TokenSpec(name="surface_anchors", size=ANCHORS), TokenSpec(name="surface_queries", size=QUERIES)]
        h = x + self.encoder(x, freqs=freqs)
        h = h + self.block(h, specs, key_padding_mask=mask, freqs=freqs)[0]
        h = h + self.block(h, specs, freqs=freqs)[0]
        patterns = [
            AttentionPattern(query_tokens=["surface_anchors", "surface_queries"], key_value_tokens=["surface_anchors"])
        ]
        out, cache = self.decoder(h, specs, patterns, freqs=freqs)
        cached = [TokenSpec(name="surface_anchors", size=None), TokenSpec(name="surface_queries", size=QUERIES)]
        queries, _ = self.decoder(h[:, ANCHORS:], cached, patterns, freqs=freqs[:, ANCHORS:], kv_cache=cache)
        return out, queries


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    model = TinyModel().eval()
    x = torch.randn(2, ANCHORS + QUERIES, HIDDEN)
    positions = torch.rand(2, ANCHORS + QUERIES, 3)
    mask = torch.ones(2, ANCHORS + QUERIES, dtype=torch.bool)
    mask[0, ANCHORS - 6 : ANCHORS] = False
    path = tmp_path_factory.mktemp("real") / "tiny.capture.safetensors"
    with (
        torch.no_grad(),
        capture_attention(
            model,
            positions={"surface_anchors": positions[:, :ANCHORS], "surface_queries": positions[:, ANCHORS:]},
        ) as cap,
    ):
        model(x, positions, mask)
    return cap.save(path)


def test_a_recorded_model_opens_with_every_call_verified(recorded: Path):
    capture = load_capture(recorded)
    layers = capture_layers(capture)
    assert [layer.id for layer in layers] == [
        "encoder#0",
        "block.mixed_attention#0",
        "block.mixed_attention#1",
        "decoder#0",
        "decoder#1",
    ]
    for layer in layers:
        assert layer.explorable, layer.reason
        verification = verify_layer(layer, layer_run(layer), capture.activations_dtype)
        assert verification.max_abs_diff <= 1e-5, (layer.id, verification.max_abs_diff)


@pytest.mark.slow
def test_recorded_padding_cache_and_positions_reach_the_views(recorded: Path):
    capture = load_capture(recorded)
    padded = layer_run(find_layer(capture, "block.mixed_attention#0"))
    result = padded.weights(pixels=64)
    assert torch.all(result.received[0, :, ANCHORS - 6 : ANCHORS] == 0)
    assert torch.all(result.received[1, :, ANCHORS - 6 : ANCHORS] > 0)
    cached = layer_run(find_layer(capture, "decoder#1"))
    check = cached.kv_cache_check()
    assert check is not None and check.equal
    torch.testing.assert_close(cached.inputs.positions, torch.cat(list(capture.positions().values()), dim=1))


def test_layers_filter_records_only_the_chosen_modules(tmp_path: Path):
    torch.manual_seed(2)
    model = TinyModel().eval()
    with torch.no_grad(), capture_attention(model, layers="decoder") as cap:
        model(torch.randn(1, ANCHORS + QUERIES, HIDDEN), torch.rand(1, ANCHORS + QUERIES, 3))
    capture = load_capture(cap.save(tmp_path / "decoder.capture.safetensors"))
    assert capture.call_ids == ["decoder#0", "decoder#1"]
    for layer in capture_layers(capture):
        assert verify_layer(layer, layer_run(layer), capture.activations_dtype).ok
