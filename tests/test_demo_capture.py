"""The shipped demo capture (upstream emmiai-noether's own AB-UPT, recorded by scripts/make_demo_capture.py):
every layer re-verifies within 1e-5 against the output upstream computed, and every view works on it."""

from functools import cache

import pytest
import torch

from noether.explorer.capture_file import Capture, load_capture
from noether.explorer.capture_layers import capture_layers, find_layer, layer_run, verify_layer
from noether.explorer.capture_views import DEMO_CAPTURE_NAME
from noether.explorer.resources import asset_path

MAX_FILE_BYTES = 20 * 10**6
DEMO = asset_path(DEMO_CAPTURE_NAME)
UPSTREAM_CLASSES = {"MixedAttention", "PerceiverAttention", "DotProductAttention"}


@cache
def demo() -> Capture:
    if not DEMO.is_file():
        pytest.fail(f"the demo capture is missing: {DEMO} (run scripts/make_demo_capture.py)")
    return load_capture(DEMO)


def _ids() -> list[str]:
    return [call.id for call in load_capture(DEMO).manifest.calls] if DEMO.is_file() else ["<missing>"]


@pytest.mark.slow
def test_demo_capture_is_small_float32_and_records_both_passes() -> None:
    assert DEMO.stat().st_size <= MAX_FILE_BYTES
    capture = demo()
    assert capture.activations_dtype == torch.float32
    calls = capture.manifest.calls
    kinds = {call.kind for call in calls}
    assert {"mixed", "perceiver", "dot_product"} <= kinds
    assert {module.class_name for module in capture.manifest.modules.values()} == UPSTREAM_CLASSES
    # The second pass is the KV-cache inference: every physics and decoder module is called again with a cache.
    second = [call for call in calls if call.call_index == 1]
    assert second and all(call.kv_cache for call in second)
    assert {call.module for call in second} == {call.module for call in calls if call.kind != "dot_product"}


@pytest.mark.slow
def test_every_demo_layer_is_explorable() -> None:
    layers = capture_layers(demo())
    assert [layer.id for layer in layers] == _ids()
    assert all(layer.explorable for layer in layers), [(layer.id, layer.reason) for layer in layers]


@pytest.mark.parametrize("layer_id", _ids())
def test_demo_layer_reproduces_upstreams_output_within_1e_5(layer_id: str) -> None:
    capture = demo()
    layer = find_layer(capture, layer_id)
    verification = verify_layer(layer, layer_run(layer), capture.activations_dtype)
    assert verification.tolerance == 1e-5
    assert verification.max_abs_diff <= 1e-5, verification


@pytest.mark.parametrize("layer_id", _ids())
@pytest.mark.slow
def test_every_view_computes_on_every_demo_layer(layer_id: str) -> None:
    run = layer_run(find_layer(demo(), layer_id))
    weights = run.weights(pixels=48)
    assert torch.isfinite(weights.mean).all()
    # Each query row's weights sum to one over the groups it attends to.
    torch.testing.assert_close(weights.group_mass.sum(-1), torch.ones_like(weights.group_mass.sum(-1)))
    assert run.cost().attended_pairs > 0
    row = run.exact_row(run.layout.n_queries - 1)
    torch.testing.assert_close(row.sum(-1), torch.ones(row.shape[:2]))
    if run.layout.has_cache:
        check = run.kv_cache_check()
        assert check is not None and check.equal, check


@pytest.mark.slow
def test_demo_attention_is_learned_not_uniform() -> None:
    """Trained, the anchor attention is far from the near-uniform weights of upstream's 0.02 initialisation."""
    run = layer_run(find_layer(demo(), "physics_blocks.1.attention_block.mixed_attention#0"))
    weights = run.weights(pixels=4096)  # unpooled at these token counts
    assert weights.rows.exact and weights.cols.exact and weights.top_k_mass is not None
    uniform_top8 = 8 / 896  # the top-8 mass of uniform attention over one domain's 896 anchors
    # Measured: about 3.4x uniform after training, 1.07x for the same model after 4 training steps.
    assert float(weights.top_k_mass.mean()) > 2 * uniform_top8


def test_demo_positions_are_the_car() -> None:
    capture = demo()
    run = layer_run(find_layer(capture, "domain_decoder_blocks.surface.0.attention_block.mixed_attention#0"))
    recorded = capture.positions()["surface_anchors"].float()
    torch.testing.assert_close(run.inputs.positions[0, :896], recorded.reshape(-1, 3))
    assert float(recorded[..., 0].max() - recorded[..., 0].min()) > 3.5  # metres: a car length


def test_inference_perceiver_queries_sit_at_the_recorded_query_positions() -> None:
    """Its 896 ``queries`` are the next call's surface_queries then volume_queries, whose positions are recorded."""
    capture = demo()
    run = layer_run(find_layer(capture, "physics_blocks.0.attn#1"))
    recorded = capture.positions()
    expected = torch.cat([recorded[name].float().reshape(-1, 3) for name in ("surface_queries", "volume_queries")])
    queries = run.layout.by_name["queries"]
    placed = run.inputs.positions[0, queries.input_span]
    torch.testing.assert_close(placed, expected, rtol=0, atol=0)
    assert not [note for note in run.notes if "no recorded positions" in note]


@pytest.mark.slow
def test_demo_opens_in_model_mode_and_its_perceiver_layers_show(fresh_caches: None) -> None:
    """The app's Model mode opens the shipped demo; the perceiver layers render in every view."""
    from app_helpers import model_mode

    from noether.explorer.ui.registry import TABS

    app = model_mode(timeout=300)
    next(b for b in app.button if b.label == "Open the demo capture").click().run()
    assert not app.exception, [e.message for e in app.exception]
    options = app.selectbox(key="layer").options
    assert len(options) == len(_ids()) and all(option.endswith(" ok") for option in options), options
    for tab in [t for t in TABS if t != "Edit as text"]:
        app.session_state["view"] = tab
        for layer_id in ("physics_blocks.0.attn#0", "physics_blocks.0.attn#1"):
            app.selectbox(key="layer").set_value(layer_id).run()
            assert not app.exception, (tab, layer_id, [e.message for e in app.exception])
            assert not [e.value for e in app.error], (tab, layer_id, [e.value for e in app.error])
