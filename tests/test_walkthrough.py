"""What a newcomer reads first must be true: token counts, sparsity and limits as the app and the CLI state them."""

import re
from pathlib import Path
from typing import Any

import pytest

from noether.explorer import cli, views
from noether.explorer.capture_file import load_capture
from noether.explorer.capture_layers import capture_layers
from noether.explorer.capture_views import DEMO_CAPTURE_NAME, tokens_text
from noether.explorer.cost import cost_summary
from noether.explorer.layout import TokenLayout, group_mask
from noether.explorer.resources import asset_path
from noether.explorer.scenario import validate_scenario


def _perceiver(kv_size: int | None) -> dict[str, Any]:
    return {
        "attention": {"kind": "perceiver", "hidden_dim": 24, "num_heads": 2},
        "token_specs": [{"queries": 40}, {"keys_values": kv_size}],
        "run": {"kv_cache_sizes": {"keys_values": 8}} if kv_size is None else {},
    }


@pytest.mark.parametrize("kv_size", [8, None])
def test_a_perceivers_queries_have_no_keys_so_its_attention_is_dense(kv_size: int | None) -> None:
    report = validate_scenario(_perceiver(kv_size))
    assert report.scenario is not None, report.problems
    layout = TokenLayout.from_scenario(report.scenario)
    mask = group_mask(layout)
    assert layout.n_key_tokens == 8
    assert mask.total_pairs == 40 * 8
    assert mask.density == pytest.approx(1.0)
    summary = views.scenario_summary(layout, mask)
    assert "40 query x 8 key tokens" in summary
    assert "1 pattern," in summary
    assert "sparsity 0.0%" in summary
    assert "x 8 keys" in cli.scenario_summary(report.scenario)
    assert "(sparsity 0.00%)" in cli.scenario_summary(report.scenario)
    cost = cost_summary(layout, 24, 1, 4)
    assert (cost.n_queries, cost.key_tokens, cost.sparsity) == (40, 8, pytest.approx(0.0))
    assert ("query tokens x key tokens", "40 x 8") in [
        (row["quantity"], row["value"]) for row in views.cost_table(cost)
    ]


def test_a_mixed_layer_still_counts_every_token_as_a_key() -> None:
    report = validate_scenario(
        {
            "attention": {"kind": "mixed", "hidden_dim": 24, "num_heads": 2},
            "token_specs": [{"queries": 40}, {"latents": 8}],
            "attention_patterns": [
                {"query_tokens": ["queries"], "key_value_tokens": ["latents"]},
                {"query_tokens": ["latents"], "key_value_tokens": ["latents"]},
            ],
        }
    )
    assert report.scenario is not None, report.problems
    layout = TokenLayout.from_scenario(report.scenario)
    assert layout.n_key_tokens == layout.n_keys == 48
    assert "2 patterns" in views.scenario_summary(layout, group_mask(layout))


@pytest.mark.slow
def test_the_layer_picker_gives_a_perceivers_true_query_and_key_counts() -> None:
    capture = load_capture(asset_path(DEMO_CAPTURE_NAME))
    texts = {layer.id: tokens_text(layer) for layer in capture_layers(capture)}
    assert texts["physics_blocks.0.attn#0"] == "2,688 x 256"
    assert texts["physics_blocks.0.attn#1"] == "896 x 256"
    assert texts["physics_blocks.1.attention_block.mixed_attention#1"] == "896 x 2,688"


def test_the_capture_uploader_offers_the_size_the_reader_accepts() -> None:
    from streamlit.testing.v1 import AppTest

    from noether.explorer.capture_views import MAX_UPLOAD_CAPTURE_BYTES

    app = str(Path(__file__).resolve().parents[1] / "app.py")

    at = AppTest.from_file(app, default_timeout=120).run()
    at.radio(key="mode").set_value("Model").run()
    assert not at.exception
    uploader = at.get("file_uploader")[0]
    assert uploader.proto.max_upload_size_mb == MAX_UPLOAD_CAPTURE_BYTES // 2**20


def test_a_bad_attention_section_does_not_hide_the_rules_problems() -> None:
    report = validate_scenario(
        {
            "attention": {"kind": "mixed", "hidden_dim": 64, "num_heads": 3},
            "token_specs": [{"a": 10}, {"d": 5}],
            "attention_patterns": [
                {"query_tokens": ["a", "b"], "key_value_tokens": ["c"]},
                {"query_tokens": ["d"], "key_value_tokens": ["d"]},
            ],
        }
    )
    assert report.scenario is None
    where = [problem.where for problem in report.problems]
    assert "attention" in where
    assert "attention_patterns[0].query_tokens" in where
    assert "attention_patterns[0].key_value_tokens" in where


@pytest.mark.slow
def test_a_recorded_kv_cache_is_not_timed_as_an_anchor_pass() -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    st.cache_resource.clear()
    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=300).run()
    app.radio(key="mode").set_value("Model").run()
    next(b for b in app.button if b.label == "Open the demo capture").click().run()
    app.selectbox(key="layer").set_value("domain_decoder_blocks.surface.0.attention_block.mixed_attention#1")
    app.session_state["view"] = "KV cache"
    app.run()
    for button in app.button:
        if button.label == "Run both passes":
            button.click().run()
    assert not app.exception, [e.message for e in app.exception]
    times = [metric.value for metric in app.metric]
    assert len(times) == 3, times
    assert times[0] == "recorded"
    assert all(re.fullmatch(r"\d+(\.\d+)? (ns|µs|ms|s)", value) for value in times[1:]), times
    assert any("The KV cache is the one recorded" in caption.value for caption in app.caption)
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.mark.slow
def test_rollout_says_where_each_group_entered_the_model() -> None:
    from noether.explorer.capture_overview import capture_positions, capture_sources
    from noether.explorer.rollout import attention_rollout

    capture = load_capture(asset_path(DEMO_CAPTURE_NAME))
    sources, _ = capture_sources(capture, verify=False)
    result = attention_rollout(sources, "surface_queries", 10, positions=capture_positions(capture))
    where = {part.group: part.where for part in result.parts}
    # The anchors are the perceiver's queries: they never enter the geometry block, the model's first call.
    assert where["surface_anchors"] == "input of physics_blocks.0.attn#0"
    assert where["volume_anchors"] == "input of physics_blocks.0.attn#0"
    assert where["tokens"] == "input of geometry_blocks.0.attention_block#0"
    assert where["surface_queries"] == "input of physics_blocks.0.attn#1"
