"""Model mode of the app through AppTest: open a capture, pick layers, every view on a recorded layer."""

from pathlib import Path

import pytest
import torch
from app_helpers import clean, model_mode, show
from streamlit.testing.v1 import AppTest

from noether.explorer.capture_file import load_capture
from noether.explorer.capture_layers import capture_layers
from noether.explorer.capture_views import layer_label, layer_table, verify_all
from noether.explorer.ui.registry import TABS

CORPUS = Path(__file__).parent / "corpus"
TINY = CORPUS / "good" / "tiny.capture.safetensors"


pytestmark = pytest.mark.usefixtures("fresh_caches")


@pytest.fixture(scope="module")
def cached_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A capture with padding, a KV cache, RoPE and recorded positions (see test_capture_explore.TinyModel)."""
    from test_capture_explore import ANCHORS, HIDDEN, QUERIES, TinyModel

    from noether.explorer.capture import capture_attention

    torch.manual_seed(3)
    model = TinyModel().eval()
    positions = torch.rand(1, ANCHORS + QUERIES, 3)
    mask = torch.ones(1, ANCHORS + QUERIES, dtype=torch.bool)
    mask[0, ANCHORS - 3 : ANCHORS] = False
    with torch.no_grad(), capture_attention(model, positions={"surface_anchors": positions[0, :ANCHORS]}) as cap:
        model(torch.randn(1, ANCHORS + QUERIES, HIDDEN), positions, mask)
    return cap.save(tmp_path_factory.mktemp("app") / "tiny_model.capture.safetensors")


def texts(at: AppTest) -> str:
    parts = [e.value for e in (*at.info, *at.warning, *at.error, *at.success, *at.caption, *at.markdown)]
    return "\n".join(str(p) for p in parts)


def test_model_mode_starts_empty_and_single_layer_mode_is_unchanged():
    at = model_mode()
    assert "open a capture in the sidebar" in texts(at)
    assert [t.label for t in at.tabs][: len(TABS)] == list(TABS)
    clean(at.radio(key="mode").set_value("Single layer").run())
    assert at.selectbox(key="preset").value is not None
    assert len(at.get("file_uploader")) == 3  # scenario, weights, point cloud: as before


def test_a_capture_opens_with_a_verified_layer_list():
    at = model_mode(TINY)
    assert "Opened the capture tiny.capture.safetensors: 2 recorded calls." in texts(at)
    picker = at.selectbox(key="layer")
    assert picker.options == [
        "encoder#0 · dot_product · 6 x 6 tokens · 0.0e+00 ok",
        "block#0 · mixed · 6 x 6 tokens · 0.0e+00 ok",
    ]
    assert "recorded inputs and weights of a captured layer." in texts(at)
    clean(picker.set_value("block#0").run())
    assert "2 groups, 6 query x 6 key tokens, 1 pattern, 24 attended pairs" in texts(at)


@pytest.mark.parametrize("tab", [t for t in TABS if t != "Edit as text"])
def test_every_view_works_on_every_layer(cached_capture: Path, tab: str):
    at = model_mode(cached_capture)
    show(at, tab)
    for layer_id in ["encoder#0", "block.mixed_attention#0", "decoder#1"]:
        clean(at.selectbox(key="layer").set_value(layer_id).run())
        assert not at.error, [e.value for e in at.error]


def test_the_kv_cache_view_compares_the_recorded_cache_with_one_pass(cached_capture: Path):
    at = model_mode(cached_capture)
    show(at, "KV cache")
    clean(at.selectbox(key="layer").set_value("decoder#1").run())
    shown = texts(at)
    assert "The cache recorded with the layer's call: surface_anchors." in shown
    assert "Equal: the two-pass outputs match the single pass" in shown


def test_spatial_view_uses_recorded_positions(cached_capture: Path):
    at = model_mode(cached_capture)
    show(at, "Spatial")
    assert "Positions recorded with the capture" in texts(at)
    assert "Inputs are random" not in texts(at)


@pytest.mark.slow
def test_a_bad_capture_is_refused_with_its_entry_and_the_page_survives():
    bad = CORPUS / "bad" / "capture_nan_input.capture.safetensors"
    at = model_mode(bad)
    shown = texts(at)
    assert "could not be opened" in shown and "call 'encoder#0' input 'x'" in shown and "NaN" in shown
    clean(at.get("file_uploader")[0].upload(TINY.name, TINY.read_bytes()).run())
    assert at.selectbox(key="layer").value == "encoder#0"


def test_a_layer_that_is_not_explorable_says_why():
    at = model_mode(CORPUS / "good" / "tiny_unknown_group.capture.safetensors")
    clean(at.selectbox(key="layer").set_value("block#0").run())
    assert "This layer cannot be explored" in texts(at)
    assert "is not a group in token" in texts(at) and "Pick an explorable layer" in texts(at)


def test_edit_a_layer_in_single_layer_mode():
    at = model_mode(TINY)
    clean(at.selectbox(key="layer").set_value("block#0").run())
    show(at, "Edit as text")
    button = next(b for b in at.button if b.label == "Edit this layer's scenario in Single-layer mode")
    clean(button.click().run())
    assert at.radio(key="mode").value == "Single layer"
    assert [row["name"] for row in at.session_state["draft"]["token_specs"]] == ["surface_anchors", "surface_queries"]


def test_layer_list_rows_and_labels_are_plain_functions():
    capture = load_capture(TINY)
    layers = capture_layers(capture)
    statuses = verify_all(layers, capture)
    rows = layer_table(layers, statuses)
    assert [row["layer"] for row in rows] == ["encoder#0", "block#0"]
    assert rows[1]["groups"] == "surface_anchors 4, surface_queries 2"
    assert rows[1]["tokens (queries x keys)"] == "6 x 6" and rows[1]["verified max |diff|"].endswith(" ok")
    assert layer_label(layers[0], None).endswith("not verified")


def test_the_demo_capture_opens_when_shipped(monkeypatch: pytest.MonkeyPatch):
    from noether.explorer.ui import model_mode as ui_model_mode

    at = model_mode()
    assert next(b for b in at.button if b.label == "Open the demo capture").disabled is (
        ui_model_mode.demo_capture_path() is None
    )
    monkeypatch.setattr(ui_model_mode, "demo_capture_path", lambda: TINY)
    clean(at.run())
    clean(next(b for b in at.button if b.label == "Open the demo capture").click().run())
    assert "Opened the capture the demo capture: 2 recorded calls." in texts(at)
    assert at.selectbox(key="layer").value == "encoder#0"


def test_the_kv_cache_view_of_a_recorded_call_without_a_cache_points_to_the_calls_with_one(cached_capture: Path):
    at = model_mode(cached_capture)
    show(at, "KV cache")
    clean(at.selectbox(key="layer").set_value("encoder#0").run())
    shown = texts(at)
    assert "This recorded call reads no KV cache" in shown and "(KV cache)" in shown
    # Single-layer advice would not work here: there is no groups table, and an example would not open.
    assert "groups table" not in shown
    assert not [b for b in at.button if b.label == "Load the KV-cache example"]
