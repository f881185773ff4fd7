"""The Streamlit app driven through AppTest: presets, edits, validation, views, export, links, devices, uploads.

AppTest cannot type into st.data_editor, so table edits are covered as pure functions in test_editing.py and edits
here go through the text editor and the widgets AppTest can drive.
"""

import base64
import io
import json
import re
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from app_helpers import clean, set_text, show, start, texts
from safetensors.torch import save as save_safetensors
from streamlit.testing.v1 import AppTest

from noether.explorer import editing as ed
from noether.explorer import share, views
from noether.explorer.presets import DEFAULT_PRESET, PRESETS, load_preset, preset_text
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import scenario_to_dict, validate_scenario

MAX_CHART_BYTES = 2 * 2**20


pytestmark = pytest.mark.usefixtures("fresh_caches")


# ------------------------------------------------------------------------------------------------ helpers


def by_label(widgets: Any, label: str) -> Any:
    found = [w for w in widgets if w.label == label]
    assert found, f"no widget labelled {label!r}; have {[w.label for w in widgets]}"
    return found[0]


def decode(value: Any) -> np.ndarray:
    """Plotly 7 writes arrays as {"dtype", "bdata" (base64), "shape"}; plain lists otherwise."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return array.reshape([int(part) for part in str(shape).split(",")]) if shape else array
    return np.asarray(value)


def charts(at: AppTest) -> list[dict[str, Any]]:
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert all(len(spec) < MAX_CHART_BYTES for spec in specs), [len(s) for s in specs]
    return [json.loads(spec) for spec in specs]


def title(chart: dict[str, Any]) -> str:
    """The chart's title as it reads (a long title is wrapped into lines joined by <br>)."""
    layout_title = chart["layout"].get("title", {})
    text = layout_title.get("text", "") if isinstance(layout_title, dict) else str(layout_title)
    return text.replace("<br>", " ")


def z(chart: dict[str, Any], trace: int = 0) -> np.ndarray:
    return decode(chart["data"][trace]["z"])


def active(at: AppTest) -> dict[str, Any]:
    return scenario_to_dict(at.session_state["active"])


# ------------------------------------------------------------------------------------------------ start-up


@pytest.mark.parametrize("key", [p.key for p in PRESETS])
def test_app_starts_cleanly_on_every_preset(key):
    at = start(preset=key)
    assert not at.error, texts(at.error)
    assert "Valid" in texts(at.sidebar.success)
    assert active(at) == scenario_to_dict(load_preset(key))
    group_chart, mask_chart = charts(at)
    scenario = load_preset(key)
    groups = len(scenario.token_specs)
    assert z(group_chart).shape == (groups - len(scenario.cached_names()), groups)
    mask = z(mask_chart)
    assert max(mask.shape) <= 400 and mask.min() >= 0 and mask.max() <= 100  # whole percents of attended pairs
    assert "1 cell" in title(mask_chart) or "exact" in title(mask_chart)


def test_default_example_is_the_default_preset_with_its_description():
    at = start()
    assert at.selectbox(key="preset").value == DEFAULT_PRESET
    assert "Self-anchor attention" in texts(at.sidebar.caption)
    assert ed.draft_to_text(at.session_state["draft"]) == at.session_state["text_editor"]


# ------------------------------------------------------------------------------------------------ editing


def test_text_edit_updates_validation_and_figures():
    at = start(preset="perceiver")
    before_groups, before_mask = charts(at)
    assert "queries (4,096)" in before_groups["data"][0]["y"]
    edited = (
        preset_text("perceiver")
        .replace("queries: 4096", "queries: 1024")
        .replace(
            "- {query_tokens: [queries], key_value_tokens: [latents]}",
            "- {query_tokens: [queries], key_value_tokens: [latents, queries]}",
        )
    )
    set_text(at, edited)
    assert "Valid" in texts(at.sidebar.success)
    assert active(at)["token_specs"][1] == {"name": "queries", "size": 1024}
    show(at, "Mask")
    after_groups, after_mask = charts(at)
    assert "queries (1,024)" in after_groups["data"][0]["y"]
    assert z(after_groups).tolist() == [[1, 0], [1, 1]] and z(before_groups).tolist() == [[1, 0], [1, 0]]
    assert not np.array_equal(z(before_mask), z(after_mask))
    # The sidebar editors were re-created from the new document.
    assert by_label(at.multiselect, "attend to (keys/values)").value == ["latents"]
    assert at.data_editor[0].value["tokens"].tolist() == ["256", "1024"]  # text cells: what is typed is kept


@pytest.mark.slow
def test_widget_edits_update_the_document_and_the_figures():
    at = start()
    clean(by_label(at.number_input, "num_heads").set_value(4).run())
    assert at.session_state["draft"]["attention"]["num_heads"] == 4
    assert "num_heads: 4" in at.session_state["text_editor"]
    clean(by_label(at.checkbox, "RoPE (rotary position embedding of the 3-D positions)").uncheck().run())
    assert at.session_state["draft"]["attention"]["use_rope"] is False

    # Switching to mixed turns the generated rules into editable ones.
    clean(by_label(at.selectbox, "Kind").select("mixed").run())
    rule_keys = [w.key for w in at.multiselect]
    assert len(rule_keys) == 4
    assert at.multiselect(key=rule_keys[1]).value == ["surface_anchors"]
    before = z(charts(at)[0])
    clean(at.multiselect(key=rule_keys[1]).select("volume_anchors").run())
    assert active(at)["attention_patterns"][0]["key_value_tokens"] == ["surface_anchors", "volume_anchors"]
    after = z(charts(at)[0])
    assert before[0, 2] == 0 and after[0, 2] == 1

    # Adding a rule when every group is covered leaves an empty one: invalid until removed.
    clean(by_label(at.button, "Add rule").click().run())
    assert "problem" in texts(at.sidebar.error)
    assert "Rule 3, queries" in texts(at.sidebar.error)
    removers = [b for b in at.button if b.label == "Remove rule"]
    clean(removers[-1].click().run())
    assert "Valid" in texts(at.sidebar.success)

    # Reordering moves the group on both axes.
    clean(by_label(at.selectbox, "Reorder").select(1).run())
    clean(by_label(at.button, ":material/arrow_upward:").click().run())
    assert [s["name"] for s in active(at)["token_specs"]][:2] == ["surface_queries", "surface_anchors"]
    assert charts(at)[0]["data"][0]["y"][0].startswith("surface_queries")

    # Back to an anchor kind: branches are inferred from the anchor groups, and editing them regenerates rules.
    clean(by_label(at.selectbox, "Kind").select("cross_anchor").run())
    assert by_label(at.text_input, "Branches").value == "surface, volume"
    assert active(at)["attention"]["kind"] == "cross_anchor"
    clean(by_label(at.text_input, "Branches").input("surface").run())
    assert "needs at least two branches" in texts(at.sidebar.error)
    clean(by_label(at.text_input, "Branches").input("surface, volume").run())
    assert "Valid" in texts(at.sidebar.success)


def test_invalid_edit_keeps_the_edits_and_the_last_valid_figures():
    at = start(preset="perceiver")
    before = charts(at)
    broken = preset_text("perceiver").replace("queries: 4096", "queries: -5")
    set_text(at, broken)
    assert at.text_area(key="text_editor").value == broken
    assert "Group 2 ('queries'), tokens" in texts(at.sidebar.error)
    assert "Running is paused" in texts(at.sidebar.error)
    assert at.data_editor[0].value["tokens"].tolist() == ["256", "-5"]
    show(at, "Mask")
    assert "last valid scenario" in texts(at.warning)
    assert [z(c).tolist() for c in charts(at)] == [z(c).tolist() for c in before]
    assert active(at) == scenario_to_dict(load_preset("perceiver"))

    # Text that cannot even be read stays in the editor; the document keeps its last readable state.
    unreadable = broken + "run: [oops\n"
    set_text(at, unreadable)
    assert at.text_area(key="text_editor").value == unreadable
    assert "could not be read" in texts(at.error)
    assert at.session_state["draft"]["token_specs"][1] == {"queries": -5}

    # Fixing it brings everything back.
    set_text(at, preset_text("perceiver").replace("queries: 4096", "queries: 512"))
    assert "Valid" in texts(at.sidebar.success) and "valid scenario" in texts(at.success)


def test_empty_scenario_asks_for_groups_and_keeps_showing_the_last_valid_one():
    at = start(preset="block_causal")
    clean(by_label(at.button, "Start empty").click().run())
    assert "at least one token group" in texts(at.sidebar.error)
    assert "last valid scenario" in texts(at.warning)
    assert len(charts(at)) == 2


# ------------------------------------------------------------------------------------------------ views


@pytest.mark.slow
def test_weights_view_reacts_to_view_settings_without_changing_the_scenario():
    at = start(tab="Weights")
    heatmap, row = charts(at)
    assert z(heatmap).shape == (384, 384)
    assert "mean over heads" in title(heatmap) and "token 0 of surface_anchors" in title(row)
    mean_map = z(heatmap)
    # The default example's head mean on the shared log scale spans about two decades: the colour bar still names
    # more than one value.
    clean(at.radio(key="v_colour").set_value("log").run())
    trace = charts(at)[0]["data"][0]
    ticks = [t for t in trace["colorbar"]["tickvals"] if trace["zmin"] - 1e-9 <= t <= trace["zmax"] + 1e-9]
    assert len(ticks) >= 2, (trace["zmin"], trace["zmax"], trace["colorbar"])
    clean(at.radio(key="v_colour").set_value("linear").run())
    clean(at.selectbox(key="v_head").select(1).run())
    head_map = z(charts(at)[0])
    assert not np.array_equal(mean_map, head_map)
    clean(at.radio(key="v_pooling").set_value("max").run())
    max_map = z(charts(at)[0])
    blocked = np.isnan(head_map)  # cells the rules block are gaps drawn in the blocked colour
    assert np.array_equal(np.isnan(max_map), blocked)
    assert (max_map[~blocked] >= head_map[~blocked] - 1e-6).all()
    clean(at.radio(key="v_colour").set_value("log").run())
    assert np.nanmax(z(charts(at)[0])) <= 0  # log10 of weights <= 1
    clean(at.selectbox(key="v_qgroup").select("volume_queries").run())
    clean(at.number_input(key="v_qindex").set_value(5).run())
    assert "token 5 of volume_queries" in title(charts(at)[1])
    exact = decode(charts(at)[1]["data"][0]["y"])
    assert exact.sum() == pytest.approx(1.0, abs=1e-3)
    clean(at.selectbox(key="v_head").select(views.ALL_HEADS).run())
    assert len(charts(at)) == 3
    # View settings survive a visit to another tab.
    show(at, "Mask")
    show(at, "Weights")
    assert at.selectbox(key="v_head").value == views.ALL_HEADS
    assert at.session_state["draft"] == ed.preset_draft(DEFAULT_PRESET)


def test_statistics_spatial_and_cost_views():
    at = start(preset="perceiver", tab="Statistics")
    (mass,) = charts(at)
    assert z(mass).shape == (2, 2) and z(mass).sum(1) == pytest.approx([1, 1], abs=1e-4)
    tables = at.main.dataframe
    assert len(tables) == 2 and "entropy (nats)" in tables[0].value.columns
    show(at, "Spatial")
    assert "uniform in a box" in texts(at.info)
    (cloud,) = charts(at)
    # The big group is drawn first so that the small one stays visible on top; the legend keeps the input order.
    assert [trace["name"] for trace in cloud["data"]] == ["queries", "latents"]
    assert [trace["legendrank"] for trace in cloud["data"]] == [2, 1]
    clean(at.radio(key="v_colour_by").set_value("query").run())
    picker, cloud = charts(at)  # the 2-D view to pick the query token on, then the 3-D view
    assert [trace["name"] for trace in picker["data"]] == ["queries", "latents", "chosen token"]
    grey, attended, selected = cloud["data"]
    assert (grey["name"], attended["name"], selected["name"]) == ("not attended", "attended", "selected token")
    # Latent token 0 reads only the 256 latents: the 4,096 queries are grey, not zero-valued colours.
    assert len(decode(grey["x"])) == 4096 and len(decode(attended["marker"]["color"])) == 256
    clean(at.radio(key="v_colour_by").set_value("received").run())
    received = decode(charts(at)[0]["data"][0]["marker"]["color"])
    assert received.sum() == pytest.approx(256 + 4096, rel=1e-3)
    show(at, "Cost")
    assert "attended pairs" in at.main.dataframe[0].value.to_string()
    assert by_label(at.button, "Measure backends")


def test_kv_cache_view_runs_both_passes_or_explains():
    at = start(tab="KV cache")
    assert "no KV-cache group" in texts(at.info)
    clean(by_label(at.button, "Load the KV-cache example").click().run())
    assert at.selectbox(key="preset").value == "kv_cache"
    assert "Equal" in texts(at.success)
    assert [m.label for m in at.metric] == ["time", "time", "time"]


def test_compare_view_shows_mask_and_cost_differences():
    at = start(preset="perceiver", tab="Compare")
    assert "token axes differ" in texts(at.info)
    assert at.main.dataframe[0].value["quantity"].tolist()[0] == "query tokens"
    clean(at.radio(key="v_cmp_source").set_value("text").run())
    other = preset_text("perceiver").replace("key_value_tokens: [latents]}", "key_value_tokens: [latents, queries]}")
    clean(at.text_area(key="v_cmp_text").input(other).run())
    difference = charts(at)[-1]
    assert "Mask difference" in title(difference)
    values = z(difference)
    assert values.max() == 1 and values.min() == 0
    clean(at.text_area(key="v_cmp_text").input("attention: {hidden_dim: 8}").run())
    assert "not valid" in texts(at.error)


# ------------------------------------------------------------------------------------------------ export and links


def test_export_round_trips_and_the_link_restores_the_scenario():
    at = start(preset="perceiver")
    set_text(at, preset_text("perceiver").replace("num_heads: 4", "num_heads: 8"))
    show(at, "Export")
    expected = active(at)
    assert expected["attention"]["num_heads"] == 8
    codes = {c.language: c.value for c in at.code}
    assert validate_scenario(yaml.safe_load(codes["yaml"])).scenario is not None
    assert scenario_to_dict(validate_scenario(yaml.safe_load(codes["yaml"])).scenario) == expected
    assert scenario_to_dict(validate_scenario(json.loads(codes["json"])).scenario) == expected
    compile(codes["python"], "scenario.py", "exec")
    url = next(c.value for c in at.code if c.value.startswith("http"))
    token = re.search(rf"[?&]{share.SHARE_PARAM}=([A-Za-z0-9_-]+)", url).group(1)

    restored = start(**{share.SHARE_PARAM: token})
    assert "Restored the scenario from the link" in texts(restored.success)
    assert active(restored) == expected
    assert restored.session_state["draft"]["attention"]["num_heads"] == 8


def test_a_damaged_link_explains_and_falls_back_to_the_default():
    at = start(**{share.SHARE_PARAM: "eJyrVkrLz1eyUkpKLFKqBQA"})
    assert "could not be restored" in texts(at.error)
    assert active(at) == scenario_to_dict(load_preset(DEFAULT_PRESET))
    assert len(charts(at)) == 2


# ------------------------------------------------------------------------------------------------ devices and guard


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_shows_the_fallback_note():
    at = start(preset="perceiver")
    set_text(at, preset_text("perceiver").replace("inputs: random", "inputs: random\n  device: cuda"))
    show(at, "Mask")
    note = texts(at.warning)
    assert "CUDA was requested ('cuda') but is not available" in note and "running on cpu" in note
    assert by_label(at.selectbox, "Device").value == "cuda"
    assert "not available here" in str(by_label(at.selectbox, "Device").options)


def test_resource_guard_refusals_are_messages_with_the_estimate():
    at = start(preset="perceiver")
    clean(at.number_input(key="budget_mb").set_value(1).run())
    refusal = texts(at.error)
    assert "refused building the inputs" in refusal and "memory budget is 1.0 MB" in refusal
    show(at, "Weights")
    assert "cannot be prepared for running" in texts(at.error)
    show(at, "Cost")
    assert "attended pairs" in at.main.dataframe[0].value.to_string()


# ------------------------------------------------------------------------------------------------ uploads


def test_uploaded_scenario_files():
    at = start()
    uploader = at.get("file_uploader")[0]
    clean(uploader.upload("perceiver.yaml", preset_text("perceiver").encode(), "application/yaml").run())
    assert active(at) == scenario_to_dict(load_preset("perceiver"))
    assert "Opened perceiver.yaml" in texts(at.success)
    clean(at.get("file_uploader")[0].upload("bad.yaml", b"attention: [\n", "application/yaml").run())
    assert "could not be read" in texts(at.error)
    assert at.session_state["text_editor"] == "attention: [\n"
    assert active(at) == scenario_to_dict(load_preset("perceiver"))


def test_uploaded_trained_weights_are_used_or_explained():
    scenario = load_preset("perceiver")
    module = ExplorerRun(scenario).core
    good = save_safetensors({f"blocks.0.attn.{k}": v.contiguous() for k, v in module.state_dict().items()})
    at = start(preset="perceiver")
    clean(at.get("file_uploader")[1].upload("layer.safetensors", good).run())
    assert "Read 8 tensors from layer.safetensors" in texts(at.info)
    assert "trained weights loaded from 'blocks.0.attn.'" in texts(at.caption)
    wrong = save_safetensors({k: torch.zeros(64, 64) for k in ("q.weight", "k.weight", "v.weight", "proj.weight")})
    clean(at.get("file_uploader")[1].upload("wrong.safetensors", wrong).run())
    assert "hidden_dim" in texts(at.error)
    clean(at.get("file_uploader")[1].upload("junk.pt", b"not a checkpoint").run())
    assert "could not be used" in texts(at.error)


def test_uploaded_point_cloud_places_the_tokens():
    points = np.random.default_rng(0).uniform(-1, 1, size=(3000, 3)).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, surface=points, volume=points * 3)
    at = start(tab="Spatial")
    clean(at.get("file_uploader")[2].upload("cloud.npz", buffer.getvalue()).run())
    assert "Loaded the point cloud cloud.npz" in texts(at.success)
    assert "Positions from your point cloud cloud.npz" in texts(at.caption)
    surface = charts(at)[0]["data"][0]
    assert np.abs(decode(surface["x"])).max() <= 1.0  # surface tokens now sit in the uploaded cloud's box
    assert not at.warning
    small = io.BytesIO()
    np.save(small, points[:100])
    clean(at.get("file_uploader")[2].upload("small.npy", small.getvalue()).run())
    warning = texts(at.warning)
    assert "fewer points than surface_anchors, surface_queries, volume_anchors, volume_queries" in warning
    assert "reused" in warning


@pytest.mark.slow
def test_big_computations_show_a_preview_while_the_exact_pass_runs_and_stop_keeps_it():
    at = start(preset="abupt_sized", tab="Weights")
    jobs = at.session_state["exact_jobs"]
    try:
        assert "PREVIEW from" in texts(at.info) and "sampled per query group" in texts(at.info)
        assert title(charts(at)[0]).startswith("PREVIEW (")
        assert [job.state for job in jobs._jobs.values()] == ["running"]
        show(at, "Statistics")  # switching tabs neither restarts nor blocks the pass
        assert [job.state for job in jobs._jobs.values()] == ["running"]
        assert "PREVIEW from" in texts(at.info)
        clean(by_label(at.button, "Stop").click().run())
        (job,) = jobs._jobs.values()
        assert job.wait(60) and job.state == "stopped"
        show(at, "Weights")
        assert "Exact pass stopped; the preview stays on screen." in texts(at.info)
        assert title(charts(at)[0]).startswith("PREVIEW (")
        assert len(jobs._jobs) == 1  # a rerun after Stop does not start the pass again
    finally:
        for job in jobs._jobs.values():
            job.stop()
            job.wait(60)


@pytest.mark.slow
def test_measured_backends_agree():
    at = start(preset="perceiver")
    small = preset_text("perceiver").replace("latents: 256", "latents: 32").replace("queries: 4096", "queries: 64")
    set_text(at, small)
    show(at, "Cost")
    clean(by_label(at.button, "Measure backends").click().run())
    # The timing runs in a background job of the session (the page polls it; on this tiny layer it may be done).
    assert len(at.session_state["backend_jobs"]._jobs) == 1
    finish_backend_jobs(at)
    table = at.main.dataframe[1].value
    # FlexAttention is only compiled when asked.
    assert table["backend"].tolist() == ["per-pattern MixedAttention", "dense masked SDPA"]
    clean(by_label(at.button, "Compile and time FlexAttention").click().run())
    finish_backend_jobs(at)
    table = at.main.dataframe[1].value
    assert table["backend"].tolist() == ["per-pattern MixedAttention", "dense masked SDPA", "FlexAttention"]
    diffs = [float(d) for d in table["max |diff|"] if d != "—"]
    assert diffs and max(diffs) < 1e-4
    assert len(charts(at)) == 1
    if table["time"].tolist()[2] != "—":
        assert any("first call" in c.value for c in at.caption)


def finish_backend_jobs(at: AppTest) -> None:
    """Waits for the session's backend jobs to end, then reruns the page."""
    for job in at.session_state["backend_jobs"]._jobs.values():
        assert job.wait(300), "backend timing did not finish"
        assert job.state == "done", job.error
    clean(at.run())


MALFORMED = [
    "attention: [1, 2]\ntoken_specs: tokens\n",
    "attention: {hidden_dim: 100000000000000000000000, num_heads: 4}\ntoken_specs: [{a: 1.0e+30}]\n",
    "attention: {hidden_dim: 8, num_heads: 2, kind: self_anchor, branches: 7}\ntoken_specs: [{a: 1}, 5]\n",
    "attention: {hidden_dim: 8, num_heads: 2}\ntoken_specs: [{a: 4}]\nattention_patterns: {query_tokens: a}\n",
    "attention: {hidden_dim: 8, num_heads: 2}\ntoken_specs: [{name: '', size: -1}, {name: x}]\n"
    "attention_patterns: [{query_tokens: ['', 3], key_value_tokens: [zz, zz]}]\nrun: [seed]\n",
    "attention: {hidden_dim: 8, num_heads: 2, init_weights: nope, dropout: .nan}\ntoken_specs: [{'**b**': 2}]\n"
    "run: {device: tpu, dtype: int8, inputs: x, weights: y, padding: {'**b**': 9}, kv_cache_sizes: [1]}\n",
    "[1, 2, 3]\n",
    "attention: {hidden_dim: 8, num_heads: 2}\ntoken_specs: [{a: null}]\nrun: {kv_cache_sizes: {a: -4}}\n",
]


@pytest.mark.slow
def test_malformed_documents_never_crash_and_keep_the_last_valid_views():
    at = start(preset="perceiver")
    for text in MALFORMED:
        set_text(at, text)
        assert at.text_area(key="text_editor").value == text
        assert at.error, text  # every one of them is explained
        for tab in ("Mask", "Weights", "Export"):
            show(at, tab)
            assert active(at) == scenario_to_dict(load_preset("perceiver"))
        show(at, "Edit as text")


@pytest.mark.slow
def test_the_exact_pass_replaces_the_preview_when_complete(monkeypatch: pytest.MonkeyPatch):
    import noether.explorer.ui.context as context

    monkeypatch.setattr(context, "AUTO_COMPUTE_SECONDS", 0.0)  # the built-in example then counts as big
    at = start(tab="Weights")
    assert title(charts(at)[0]).startswith("PREVIEW (")
    (job,) = at.session_state["exact_jobs"]._jobs.values()
    assert job.wait(120) and job.state == "done"
    clean(at.run())
    assert not title(charts(at)[0]).startswith("PREVIEW")
    assert "PREVIEW from" not in texts(at.info)
    assert not [b for b in at.button if b.label == "Stop"]


@pytest.mark.slow
def test_zoom_window_shows_exact_token_pairs_and_names_bad_ranges():
    at = start(tab="Weights")
    at.number_input(key="z_q0").set_value(100)
    at.number_input(key="z_q1").set_value(164)
    at.number_input(key="z_k0").set_value(0)
    at.number_input(key="z_k1").set_value(32)
    clean(by_label(at.button, "Compute window").click().run())
    zoom = [title(c) for c in charts(at) if "window queries" in title(c)]
    assert zoom and "window queries 100:164 x keys 0:32" in zoom[0] and "exact: 1 cell = 1 query-key pair" in zoom[0]
    at.number_input(key="z_q1").set_value(50)
    clean(by_label(at.button, "Compute window").click().run())
    assert "**zoom window**: the query range 100:50 is not inside 0:6144" in texts(at.error)
