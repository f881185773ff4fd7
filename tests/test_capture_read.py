"""Reading captures: layers as scenarios with their recorded tensors, every engine function on them, verification."""

from pathlib import Path

import pytest
import torch
from capture_helpers import Recorder

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.core.schemas.modules.layers import RopeFrequencyConfig
from noether.explorer.capture_file import load_capture, load_capture_bytes
from noether.explorer.capture_layers import (
    CONVERTERS,
    capture_layers,
    find_layer,
    layer_run,
    resolve_layer_id,
    verify_layer,
)
from noether.explorer.problems import ExplorerError
from noether.explorer.scenario import scenario_to_dict, validate_scenario
from noether.modeling.modules.attention import (
    DotProductAttention,
    DotProductAttentionConfig,
    MixedAttention,
    MixedAttentionConfig,
)
from noether.modeling.modules.layers import RopeFrequency

HIDDEN, HEADS = 48, 4
ANCHORS, QUERIES = 30, 20


def _rope(points: torch.Tensor) -> torch.Tensor:
    rope = RopeFrequency(RopeFrequencyConfig(hidden_dim=HIDDEN // HEADS, input_dim=3, implementation="complex"))
    return rope(points * 10)


def _specs(cached: bool = False) -> list[TokenSpec]:
    return [
        TokenSpec(name="surface_anchors", size=None if cached else ANCHORS),
        TokenSpec(name="surface_queries", size=QUERIES),
    ]


PATTERNS = [AttentionPattern(query_tokens=["surface_anchors", "surface_queries"], key_value_tokens=["surface_anchors"])]


def record_model(path: Path, activations_dtype: str = "float32") -> Path:
    """A small model's calls: a shared module called twice (padding mask, then a plain pass), a cached query pass
    reading the second pass's cache, a DotProductAttention with and without a key mask and with a causal mask, and
    an opaque kind."""
    torch.manual_seed(0)
    mixed = MixedAttention(MixedAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS, use_rope=True, qk_norm=True))
    dot = DotProductAttention(DotProductAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS, bias=False))
    recorder = Recorder(activations_dtype=activations_dtype)
    positions = torch.rand(2, ANCHORS + QUERIES, 3)
    x = torch.randn(2, ANCHORS + QUERIES, HIDDEN)
    mask = torch.ones(2, ANCHORS + QUERIES, dtype=torch.bool)
    mask[1, 25:ANCHORS] = False  # sample 1 has 5 padded anchors
    freqs = _rope(positions)
    recorder.mixed("blocks.0.attn", mixed.eval(), x, _specs(), PATTERNS, key_padding_mask=mask, freqs=freqs)
    _, cache = recorder.mixed("blocks.0.attn", mixed, x, _specs(), PATTERNS, freqs=freqs)
    recorder.mixed(
        "decoder.attn", mixed, x[:, ANCHORS:], _specs(cached=True), PATTERNS, freqs=freqs[:, ANCHORS:], kv_cache=cache
    )
    tokens = torch.randn(2, 40, HIDDEN)
    recorder.dot_product("encoder.attn", dot.eval(), tokens)
    keys = torch.ones(2, 1, 1, 40, dtype=torch.bool)
    keys[0, ..., 35:] = False
    recorder.dot_product("encoder.attn", dot, tokens, attn_mask=keys)
    recorder.dot_product("encoder.attn", dot, tokens, attn_mask=torch.ones(40, 40, dtype=torch.bool).tril())
    recorder.opaque("encoder.perceiver", "PerceiverAttention", "perceiver", "PerceiverAttention is not explorable yet.")
    recorder.position("surface_anchors", positions[:, :ANCHORS])
    recorder.position("surface_queries", positions[0, ANCHORS:])
    return recorder.save(path / f"model_{activations_dtype}.capture.safetensors")


@pytest.fixture(scope="module")
def capture_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_model(tmp_path_factory.mktemp("capture"))


@pytest.fixture(scope="module")
def capture(capture_path: Path):
    return load_capture(capture_path)


def test_every_call_is_listed_in_call_order(capture):
    layers = capture_layers(capture)
    assert [layer.id for layer in layers] == [
        "blocks.0.attn#0",
        "blocks.0.attn#1",
        "decoder.attn#0",
        "encoder.attn#0",
        "encoder.attn#1",
        "encoder.attn#2",
        "encoder.perceiver#0",
    ]
    explorable = {layer.id: layer.explorable for layer in layers}
    assert explorable["encoder.attn#2"] is False  # a causal mask is not one group with masked keys
    assert explorable["encoder.perceiver#0"] is False
    assert sum(explorable.values()) == 5
    reasons = {layer.id: layer.reason for layer in layers}
    assert "varies by query or head" in reasons["encoder.attn#2"]
    assert "not explorable yet" in reasons["encoder.perceiver#0"]


def test_every_explorable_layer_reproduces_its_recorded_output(capture):
    for layer in capture_layers(capture):
        if not layer.explorable:
            continue
        verification = verify_layer(layer, layer_run(layer), capture.activations_dtype)
        assert verification.ok, (layer.id, verification.max_abs_diff)
        assert verification.max_abs_diff <= 1e-5
        assert verification.tolerance == 1e-5 and "float32" in verification.tolerance_text
        assert verification.problem() is None


def test_layer_scenarios_validate_like_any_scenario(capture):
    for layer in capture_layers(capture):
        if layer.explorable:
            assert validate_scenario(scenario_to_dict(layer.scenario)).ok
    decoder = find_layer(capture, "decoder.attn")
    assert scenario_to_dict(decoder.scenario)["token_specs"] == [
        {"name": "surface_anchors", "size": None},
        {"name": "surface_queries", "size": QUERIES},
    ]
    assert decoder.scenario.run.kv_cache_sizes == {"surface_anchors": ANCHORS}
    assert decoder.scenario.run.batch_size == 2
    dot = find_layer(capture, "encoder.attn#0")
    assert [spec.name for spec in dot.scenario.token_specs] == ["tokens"]
    assert dot.scenario.attention.bias is False


def test_a_tampered_output_is_a_problem_naming_the_layer(capture):
    layer = find_layer(capture, "blocks.0.attn#1")
    layer.output = layer.output + 1e-3
    verification = verify_layer(layer, layer_run(layer), capture.activations_dtype)
    assert not verification.ok
    problem = verification.problem()
    assert problem is not None and "blocks.0.attn#1" in problem.where and "1e-5" in str(problem)


def test_recorded_padding_mask_reaches_weights_and_rows(capture):
    run = layer_run(find_layer(capture, "blocks.0.attn#0"))
    row = run.exact_row(ANCHORS + 3)  # a query token of sample 1, which has anchors 25..29 padded
    assert torch.all(row[1, :, 25:ANCHORS] == 0)
    assert torch.all(row[0, :, 25:ANCHORS] > 0)
    torch.testing.assert_close(row.sum(-1), torch.ones(2, HEADS))
    result = run.weights(pixels=64)
    assert torch.all(result.received[1, :, 25:ANCHORS] == 0)
    assert torch.all(result.received[0, :, 25:ANCHORS] > 0)


def test_dot_product_key_mask_becomes_padding(capture):
    layer = find_layer(capture, "encoder.attn#1")
    assert layer.scenario.run.padding == {}  # sample 0 padded, sample 1 not: kept as a recorded mask
    run = layer_run(layer)
    assert verify_layer(layer, run, capture.activations_dtype).ok
    row = run.exact_row(0)
    assert torch.all(row[0, :, 35:] == 0) and torch.all(row[1, :, 35:] > 0)


def test_cached_layer_uses_the_recorded_cache_and_its_filling_pass(capture):
    run = layer_run(find_layer(capture, "decoder.attn#0"))
    assert run.layout.n_queries == QUERIES and run.layout.n_keys == ANCHORS + QUERIES
    check = run.kv_cache_check()
    assert check is not None and check.equal
    # The anchor pass of the check is the recorded cache, not a recomputation.
    recorded = capture.tensors[capture.call("decoder.attn#0").caches()["surface_anchors"].k]
    assert torch.equal(run.kv_cache()["surface_anchors"]["k"].cpu(), recorded)


def test_every_engine_function_works_on_a_layer(capture):
    run = layer_run(find_layer(capture, "blocks.0.attn#1"))
    assert run.cost().attended_pairs == (ANCHORS + QUERIES) * ANCHORS
    result = run.weights(pixels=16)
    assert result.mean.shape == (2, HEADS, 13, 13)  # 50 tokens, at most 16 bins: 4 tokens per bin
    torch.testing.assert_close(result.group_mass.sum(-1), torch.ones(2, HEADS, 2))
    timings = run.backends(repeats=1, include=("mixed", "dense"))
    assert all(t.max_abs_diff is None or t.max_abs_diff < 1e-4 for t in timings)
    assert run.kv_cache_check() is None


def test_recorded_positions_are_the_spatial_positions(capture):
    run = layer_run(find_layer(capture, "blocks.0.attn#1"))
    recorded = capture.positions()
    torch.testing.assert_close(run.inputs.positions[:, :ANCHORS], recorded["surface_anchors"])
    torch.testing.assert_close(run.inputs.positions[1, ANCHORS:], recorded["surface_queries"])
    assert not any("no recorded positions" in note for note in run.notes)


def test_layer_names_resolve_or_explain(capture):
    assert resolve_layer_id(capture, "decoder.attn") == "decoder.attn#0"
    assert resolve_layer_id(capture, "blocks.0.attn#1") == "blocks.0.attn#1"
    with pytest.raises(ExplorerError, match=r"called 2 times.*blocks.0.attn#0"):
        resolve_layer_id(capture, "blocks.0.attn")
    with pytest.raises(ExplorerError, match=r"Did you mean 'decoder.attn#0'"):
        resolve_layer_id(capture, "decoder.atn#0")
    with pytest.raises(ExplorerError, match=r"encoder.perceiver#0.*not explorable yet"):
        find_layer(capture, "encoder.perceiver")


def test_bytes_and_file_give_the_same_capture(capture_path: Path, capture):
    same = load_capture_bytes(capture_path.read_bytes(), name="upload")
    assert same.call_ids == capture.call_ids
    assert all(torch.equal(same.tensors[key], tensor) for key, tensor in capture.tensors.items())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reduced_precision_captures_verify_with_a_tolerance_that_says_so(tmp_path: Path, dtype: str):
    capture = load_capture(record_model(tmp_path, dtype))
    for layer in capture_layers(capture):
        if layer.explorable:
            verification = verify_layer(layer, layer_run(layer), capture.activations_dtype)
            assert verification.ok, (layer.id, verification.max_abs_diff, verification.tolerance_text)
            assert verification.tolerance > 1e-5 and f"{dtype} capture" in verification.tolerance_text


def test_a_new_kind_is_one_registered_function(capture, monkeypatch: pytest.MonkeyPatch):
    from noether.explorer import capture_layers as module

    def perceiver(capture, call):
        layer = module._blank(capture, call)
        layer.reason = "converted by a test"
        return layer

    monkeypatch.setitem(CONVERTERS, "perceiver", perceiver)
    capture.manifest.not_explorable = []
    capture.manifest.modules["encoder.perceiver"].explorable = True
    try:
        assert capture_layers(capture)[-1].reason == "converted by a test"
    finally:
        capture.manifest.modules["encoder.perceiver"].explorable = False


def test_listing_layers_copies_no_tensor(capture, monkeypatch: pytest.MonkeyPatch):
    from noether.explorer import capture_mixed as module

    def refuse(*args, **kwargs):
        raise AssertionError("inputs built while listing")

    monkeypatch.setattr(module, "_captured", refuse)
    assert sum(layer.explorable for layer in capture_layers(capture)) == 5


def test_a_converter_may_set_the_inputs_directly(capture):
    layer = find_layer(capture, "decoder.attn#0")
    inputs = layer.captured
    layer.captured = inputs
    assert layer.explorable and layer.captured is inputs
    layer.captured = None
    assert not layer.explorable


def test_an_additive_key_mask_with_the_lowest_finite_value_is_kept(tmp_path: Path):
    torch.manual_seed(4)
    dot = DotProductAttention(DotProductAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS)).eval()
    recorder = Recorder()
    additive = torch.zeros(1, 1, 1, 12)
    additive[..., 9:] = torch.finfo(torch.float32).min
    recorder.dot_product("attn", dot, torch.randn(1, 12, HIDDEN), attn_mask=additive)
    capture = load_capture(recorder.save(tmp_path / "additive.capture.safetensors"))
    layer = find_layer(capture, "attn")
    assert layer.scenario.run.padding == {"tokens": 3}  # trailing and shared by the batch: exact in every view
    run = layer_run(layer)
    assert verify_layer(layer, run, capture.activations_dtype).ok
    assert torch.all(run.exact_row(0)[..., 9:] == 0)
