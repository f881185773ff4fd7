"""A perceiver's maps: the key axis holds only what its queries attend to (the key/value group), so counts, sparsity,
legends and pictures show no blocked query columns; and its projection FLOPs are those the module really computes."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from noether.explorer import views
from noether.explorer.cli import main
from noether.explorer.cost import cost_summary, projection_flops
from noether.explorer.layout import PoolGrid, TokenLayout, group_mask
from noether.explorer.masks import dense_mask, pooled_mask
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import Scenario, validate_scenario
from noether.modeling.modules.attention import PerceiverAttention, PerceiverAttentionConfig

QUERIES, KEYS, CACHED = 40, 8, 12


def perceiver(kv_size: int | None = KEYS, **attention: Any) -> dict[str, Any]:
    return {
        "attention": {"kind": "perceiver", "hidden_dim": 24, "num_heads": 2, **attention},
        "token_specs": [{"queries": QUERIES}, {"keys_values": kv_size}],
        "run": {"kv_cache_sizes": {"keys_values": CACHED}} if kv_size is None else {},
    }


def scenario_of(doc: dict[str, Any]) -> Scenario:
    report = validate_scenario(doc)
    assert report.scenario is not None, report.problems
    return report.scenario


@pytest.mark.parametrize(("kv_size", "keys"), [(KEYS, KEYS), (None, CACHED)])
def test_the_key_axis_holds_only_the_key_value_group(kv_size: int | None, keys: int) -> None:
    layout = TokenLayout.from_scenario(scenario_of(perceiver(kv_size)))
    query, kv = layout.groups
    assert [g.name for g in layout.key_groups] == ["keys_values"]
    assert (query.query_offset, query.key_offset, query.input_offset) == (0, None, 0)
    assert (kv.query_offset, kv.key_offset, kv.input_offset) == (None, 0, QUERIES)
    assert (layout.n_queries, layout.n_keys, layout.n_key_tokens, layout.n_inputs) == (
        QUERIES,
        keys,
        keys,
        QUERIES + keys,
    )
    assert layout.allowed.tolist() == [[True]]
    mask = group_mask(layout)
    assert mask.key_names == ["keys_values"] and mask.key_sizes.tolist() == [keys]
    assert (mask.total_pairs, mask.density) == (QUERIES * keys, 1.0)
    # Every cell of the exact token-level mask is attended: nothing is blocked.
    rows, cols = PoolGrid.fit(QUERIES, 1024), PoolGrid.fit(keys, 1024)
    pooled = pooled_mask(layout, rows, cols)
    assert pooled.shape == (QUERIES, keys) and bool((pooled == 1.0).all())
    assert dense_mask(layout).shape == (QUERIES, keys) and bool(dense_mask(layout).all())
    assert not views.blocked_cells(layout, rows, cols).any()
    spec = views.mask_map(layout, pooled, rows, cols)
    assert spec.cols.names == ["keys_values" + (" (cached)" if kv_size is None else "")]
    assert layout.key_group_at(keys - 1) == (kv, keys - 1)
    with pytest.raises(IndexError):
        layout.key_group_at(keys)


def test_a_mixed_layer_keeps_every_group_on_every_axis() -> None:
    doc = {
        "attention": {"kind": "mixed", "hidden_dim": 24, "num_heads": 2},
        "token_specs": [{"queries": QUERIES}, {"latents": KEYS}],
        "attention_patterns": [{"query_tokens": ["queries", "latents"], "key_value_tokens": ["latents"]}],
    }
    layout = TokenLayout.from_scenario(scenario_of(doc))
    assert [g.key_offset for g in layout.groups] == [g.input_offset for g in layout.groups] == [0, QUERIES]
    assert layout.n_keys == layout.n_inputs == QUERIES + KEYS
    assert group_mask(layout).density == pytest.approx(KEYS / (QUERIES + KEYS))


def test_weights_summary_and_statistics_of_a_perceiver_use_its_key_group_only() -> None:
    run = ExplorerRun(perceiver())
    result = run.weights(pixels=64)
    assert result.mean.shape[-2:] == (QUERIES, KEYS) and result.received.shape[-1] == KEYS
    spec = views.weights_map(result, run.layout, 64, 0, "mean", "mean")
    assert spec.values.shape == (QUERIES, KEYS) and spec.cols.names == ["keys_values"]
    assert spec.blocked is None or not spec.blocked.any()
    assert views.scenario_summary(run.layout, group_mask(run.layout)).endswith(
        f"{QUERIES} query x {KEYS} key tokens, 1 pattern, {QUERIES * KEYS} attended pairs, sparsity 0.0%"
    )
    top = views.top_keys(result, run.layout, count=KEYS)
    assert {row["group"] for row in top} == {"keys_values"}
    assert sorted(row["index in group"] for row in top) == list(range(KEYS))
    cost = run.cost()
    assert (cost.n_keys, cost.key_tokens, cost.dense_mask_bytes, cost.sparsity) == (KEYS, KEYS, QUERIES * KEYS, 0.0)


def test_spatial_values_land_on_the_key_value_tokens_and_mute_the_queries() -> None:
    run = ExplorerRun(perceiver())
    layout = run.layout
    assert views.token_positions(run, 0).shape == (QUERIES + KEYS, 3)
    row = views.row_weights(run, 3, 0, "mean")
    values, keyless = views.on_tokens(layout, row)
    assert values.shape == (QUERIES + KEYS,)
    np.testing.assert_array_equal(values[QUERIES:], row)
    assert keyless is not None and keyless[:QUERIES].all() and not keyless[QUERIES:].any()
    assert views.query_token_index(layout, 3) == 3
    assert views.token_labels(layout) == ["queries"] * QUERIES + ["keys_values"] * KEYS


def test_cli_render_of_a_perceiver_draws_queries_by_key_value_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    source = tmp_path / "perceiver.yaml"
    source.write_text(yaml.safe_dump(perceiver()), encoding="utf-8")
    out = tmp_path / "mask.png"
    assert main(["render", str(source), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"mask, {QUERIES} x {KEYS} cells" in printed
    with Image.open(out) as image:
        assert image.width > 0
    assert main(["render", str(source), "--out", str(tmp_path / "weights.png"), "--view", "weights"]) == 0
    assert f"weights, {QUERIES} x {KEYS} cells" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------------------------------


def _counted(fn: Any) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("kv_dim", [None, 40])
def test_perceiver_projection_flops_match_a_hand_count_and_torchs_counter(kv_dim: int | None) -> None:
    batch, hidden = 2, 24
    width = kv_dim or hidden
    layout = TokenLayout.from_scenario(scenario_of(perceiver()))
    by_hand = 2 * batch * (QUERIES * hidden * hidden + 2 * KEYS * width * hidden + QUERIES * hidden * hidden)
    assert projection_flops(layout, hidden, batch, kv_dim) == by_hand
    assert cost_summary(layout, hidden, batch, 4, kv_dim=kv_dim).projection_flops == by_hand
    torch.manual_seed(0)
    module = PerceiverAttention(PerceiverAttentionConfig(hidden_dim=hidden, num_heads=2, kv_dim=kv_dim)).eval()
    q, kv = torch.randn(batch, QUERIES, hidden), torch.randn(batch, KEYS, width)
    # torch counts the linear layers here (its CPU attention kernel has no FLOP formula): exactly ours.
    with torch.no_grad():
        assert _counted(lambda: module(q, kv)) == by_hand
        _, cache = module(q, kv)
        cached = TokenLayout.from_scenario(scenario_of(perceiver(kv_size=None)))
        assert _counted(lambda: module(q, None, kv_cache=cache)) == projection_flops(cached, hidden, batch, kv_dim)
    assert projection_flops(cached, hidden, batch, kv_dim) == 2 * batch * 2 * QUERIES * hidden * hidden


def test_perceiver_attention_flops_match_the_explicit_matmuls() -> None:
    batch, hidden, heads = 2, 24, 2
    layout = TokenLayout.from_scenario(scenario_of(perceiver()))
    queries = torch.randn(batch, heads, QUERIES, hidden // heads)
    keys, values = torch.randn(batch, heads, KEYS, hidden // heads), torch.randn(batch, heads, KEYS, hidden // heads)
    counted = _counted(lambda: torch.softmax(queries @ keys.transpose(-1, -2), -1) @ values)
    assert cost_summary(layout, hidden, batch, 4).attention_flops == counted


def test_mixed_projection_flops_are_unchanged() -> None:
    doc = {
        "attention": {"kind": "mixed", "hidden_dim": 24, "num_heads": 2},
        "token_specs": [{"queries": QUERIES}, {"latents": KEYS}],
        "attention_patterns": [{"query_tokens": ["queries", "latents"], "key_value_tokens": ["latents"]}],
    }
    layout = TokenLayout.from_scenario(scenario_of(doc))
    tokens = QUERIES + KEYS
    assert projection_flops(layout, 24, 3) == 2 * 3 * 24 * 24 * 4 * tokens


# --------------------------------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_caches")
def test_the_apps_perceiver_mask_has_only_key_value_columns() -> None:
    import json

    from app_helpers import set_text, show, start, texts

    at = start()
    set_text(at, yaml.safe_dump(perceiver()))
    show(at, "Mask")
    assert f"{QUERIES} query x {KEYS} key tokens" in texts(at.caption)
    charts = [json.loads(element.proto.spec) for element in at.get("plotly_chart")]
    blocks, token_mask = charts[0], charts[1]
    assert [label.split("<br>")[0] for label in blocks["data"][0]["x"]] == ["keys_values"]
    assert token_mask["layout"]["xaxis"]["ticktext"] == ["keys_values"]
    heatmap = token_mask["data"][0]
    names = [trace.get("name") for trace in token_mask["data"]]
    assert "blocked by the rules" not in names
    z = heatmap["z"]
    if isinstance(z, dict):  # plotly's typed-array encoding
        import base64

        z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"])).reshape(QUERIES, KEYS)
    cells = np.asarray(z)
    assert cells.shape == (QUERIES, KEYS)
    assert cells.max() > 0 and bool((cells == cells.max()).all())  # every cell fully attended, none blocked
