"""The app's pure logic: groups table <-> token_specs, rules, kinds, problems in words, share links, comparisons."""

import base64
import zlib

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
import yaml
from safetensors.torch import save as save_safetensors

from noether.explorer import editing as ed
from noether.explorer.layout import TokenLayout
from noether.explorer.presets import PRESETS, load_preset, preset_text
from noether.explorer.problems import Problem
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import DEFAULT_CACHE_SIZE, scenario_to_dict, validate_scenario

PRESET_KEYS = [p.key for p in PRESETS]


def small_mixed(**run: object) -> dict:
    """A tiny valid mixed scenario: two groups, b reads a and b, a reads itself."""
    return {
        "attention": {"kind": "mixed", "hidden_dim": 16, "num_heads": 2},
        "token_specs": [{"name": "a", "size": 8}, {"name": "b", "size": 12}],
        "attention_patterns": [
            {"query_tokens": ["a"], "key_value_tokens": ["a"]},
            {"query_tokens": ["b"], "key_value_tokens": ["a", "b"]},
        ],
        "run": dict(run),
    }


def canonical(draft: dict) -> dict:
    report = validate_scenario(draft)
    assert report.ok, [str(p) for p in report.problems]
    assert report.scenario is not None
    return scenario_to_dict(report.scenario)


# ------------------------------------------------------------------------------------------------ drafts and text


@pytest.mark.parametrize("key", PRESET_KEYS)
def test_preset_drafts_are_valid_and_text_round_trips(key):
    draft = ed.preset_draft(key)
    assert canonical(draft) == scenario_to_dict(load_preset(key))
    for fmt in ("yaml", "json"):
        parsed = ed.parse_text(ed.draft_to_text(draft, fmt))
        assert parsed.document == draft
        assert not [p for p in parsed.problems if p.severity == "error"]


def test_anchor_drafts_leave_generated_patterns_out():
    assert "attention_patterns" not in ed.preset_draft("self_anchor")
    assert ed.preset_draft("perceiver")["attention_patterns"]


def test_yaml_text_uses_flow_style_for_groups_and_lists():
    text = ed.draft_to_text(ed.preset_draft("perceiver"))
    assert "- {name: latents, size: 256}" in text
    assert "query_tokens: [queries]" in text


def test_empty_draft_lists_what_to_add():
    report = validate_scenario(ed.empty_draft())
    assert not report.ok
    assert any("at least one token group" in p.message for p in report.problems)


def test_parse_text_keeps_invalid_scenarios_and_refuses_unreadable_text():
    invalid = ed.parse_text("attention: {hidden_dim: 16, num_heads: 3}\ntoken_specs: [{a: 4}]\n")
    assert invalid.document is not None and invalid.document["token_specs"] == [{"a": 4}]
    assert invalid.problems
    broken = ed.parse_text("attention: [unclosed\n")
    assert broken.document is None
    assert broken.problems[0].where.startswith("line ")
    assert ed.parse_text("- just\n- a list\n").document is None
    assert ed.parse_text("").document is None
    dated = ed.parse_text("attention: {hidden_dim: 16, num_heads: 2}\ntoken_specs: [{name: 2024-01-01, size: 3}]\n")
    assert dated.document is None and dated.problems
    json_doc = ed.parse_text('{"attention": {"hidden_dim": 8, "num_heads": 2}, "token_specs": [{"a": 1}]}')
    assert json_doc.document == {"attention": {"hidden_dim": 8, "num_heads": 2}, "token_specs": [{"a": 1}]}


def test_parse_text_refuses_alias_bombs():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    parsed = ed.parse_text(bomb)
    assert parsed.document is None and parsed.problems


def test_set_and_remove_value_copy_and_create_sections():
    draft = {"attention": "oops"}
    changed = ed.set_value(draft, ["attention", "hidden_dim"], 64)
    assert changed == {"attention": {"hidden_dim": 64}} and draft == {"attention": "oops"}
    assert ed.remove_value(changed, ["attention", "hidden_dim"]) == {"attention": {}}
    assert ed.remove_value(changed, ["run", "padding", "x"]) == changed


# ------------------------------------------------------------------------------------------------ groups table


def test_group_rows_read_both_item_forms_and_cache_sizes():
    draft = {
        "token_specs": [{"a": 3}, {"name": "b_anchors", "size": None}, {"name": "c"}, {"name": "name", "size": 2}],
        "run": {"kv_cache_sizes": {"b_anchors": 77}},
    }
    assert ed.group_rows(draft) == [
        ed.GroupRow("a", 3, False),
        ed.GroupRow("b_anchors", 77, True),
        ed.GroupRow("c", None, False),
        ed.GroupRow("name", 2, False),
    ]
    assert ed.group_rows({"token_specs": [{"x": None}]}) == [ed.GroupRow("x", DEFAULT_CACHE_SIZE, True)]
    assert ed.group_rows({}) == []
    for bad in ("groups", [["a", 1]], [{"a": 1, "b": 2}], [{"a": "many"}], [{"name": 3, "size": 1}]):
        assert ed.group_rows({"token_specs": bad}) is None


def test_table_frame_keeps_column_types_when_empty():
    frame = ed.table_frame([])
    assert list(frame.columns) == [ed.COLUMN_NAME, ed.COLUMN_TOKENS, ed.COLUMN_CACHED]
    assert str(frame[ed.COLUMN_CACHED].dtype) == "bool"
    filled = ed.table_frame([ed.GroupRow("a", 3, False), ed.GroupRow("b", None, True)])
    assert filled[ed.COLUMN_NAME].tolist() == ["a", "b"]
    assert ed.table_records([ed.GroupRow("a", 3, True)]) == [{"name": "a", "tokens": 3, "from KV cache": True}]


def test_apply_table_delta_follows_streamlits_order():
    rows = [ed.GroupRow("a", 1), ed.GroupRow("b", 2), ed.GroupRow("c", 3)]
    delta = {
        "edited_rows": {"0": {"name": " x ", "tokens": 5.0}, 2: {"from KV cache": True}},
        "deleted_rows": [1],
        "added_rows": [{"name": "d", "tokens": 7}, {}],
    }
    assert ed.apply_table_delta(rows, delta) == [
        ed.GroupRow("x", 5, False),
        ed.GroupRow("c", 3, True),
        ed.GroupRow("d", 7, False),
        ed.GroupRow("", None, False),
    ]
    assert ed.apply_table_delta(rows, {"edited_rows": {1: {"tokens": 2.5, "name": None}}})[1] == ed.GroupRow("", 2.5)
    assert ed.apply_table_delta(rows, {}) == rows


def test_rows_to_token_specs():
    rows = [ed.GroupRow("a", 4), ed.GroupRow("b", 9, True), ed.GroupRow("c", None)]
    assert ed.rows_to_token_specs(rows) == [{"name": "a", "size": 4}, {"name": "b", "size": None}, {"name": "c"}]


def test_detect_rename_only_for_one_unambiguous_change():
    assert ed.detect_rename(["a", "b"], ["a", "c"]) == {"b": "c"}
    assert ed.detect_rename(["a", "b"], ["x", "y"]) == {}
    assert ed.detect_rename(["a", "b"], ["a", "a"]) == {}
    assert ed.detect_rename(["a", "b"], ["a"]) == {}
    assert ed.detect_rename(["a", ""], ["a", "z"]) == {}
    assert ed.removed_names(["a", "b", "c"], ["a", "c"]) == ["b"]


def test_update_groups_follows_a_rename_everywhere():
    draft = small_mixed(padding={"b": 2})
    rows = ed.group_rows(draft)
    rows[1] = ed.GroupRow("queries", 12)
    updated = ed.update_groups(draft, rows)
    assert updated["attention_patterns"][1] == {"query_tokens": ["queries"], "key_value_tokens": ["a", "queries"]}
    assert updated["run"]["padding"] == {"queries": 2}
    assert canonical(updated)["token_specs"][1] == {"name": "queries", "size": 12}
    assert draft["token_specs"][1]["name"] == "b"  # the input is not mutated


def test_update_groups_forgets_deleted_groups():
    draft = small_mixed(padding={"a": 1})
    updated = ed.update_groups(draft, [ed.GroupRow("b", 12)])
    assert updated["attention_patterns"] == [{"query_tokens": ["b"], "key_value_tokens": ["b"]}]
    assert updated["run"]["padding"] == {}
    canonical(updated)


def test_update_groups_moves_tokens_of_cached_rows_to_cache_sizes():
    draft = ed.preset_draft("kv_cache")
    rows = ed.group_rows(draft)
    assert rows[0] == ed.GroupRow("surface_anchors", 1024, True)
    rows[0] = ed.GroupRow("surface_anchors", 300, True)
    rows[1] = ed.GroupRow("surface_queries", 100, False)
    updated = ed.update_groups(draft, rows)
    assert updated["run"]["kv_cache_sizes"]["surface_anchors"] == 300
    assert canonical(updated)["token_specs"][1] == {"name": "surface_queries", "size": 100}
    uncached = ed.update_groups(updated, [ed.GroupRow("surface_anchors", 64, False), *rows[1:]])
    assert "surface_anchors" not in uncached["run"]["kv_cache_sizes"]
    # A newly cached group with the default size needs no entry; padding of a cached group is dropped.
    padded = ed.update_groups(small_mixed(padding={"a": 1}), [ed.GroupRow("a", DEFAULT_CACHE_SIZE, True)])
    assert padded["run"]["padding"] == {} and "a" not in padded["run"].get("kv_cache_sizes", {})


def test_move_group_reorders_and_clamps():
    draft = small_mixed()
    assert [s["name"] for s in ed.move_group(draft, 1, -1)["token_specs"]] == ["b", "a"]
    assert [s["name"] for s in ed.move_group(draft, 1, 5)["token_specs"]] == ["a", "b"]
    assert ed.move_group({"token_specs": "x"}, 0, 1) == {"token_specs": "x"}


def test_compose_draft_rebuilds_a_preset():
    for key in ("perceiver", "kv_cache", "self_anchor"):
        draft = ed.preset_draft(key)
        rules = ed.rule_pairs(draft) if draft["attention"]["kind"] == "mixed" else None
        composed = ed.compose_draft(draft["attention"], ed.group_rows(draft), rules, draft["run"])
        assert canonical(composed) == scenario_to_dict(load_preset(key))


# ------------------------------------------------------------------------------------------------ rules and kinds


def test_rule_edits():
    draft = small_mixed()
    assert ed.rule_pairs(draft) == [(["a"], ["a"]), (["b"], ["a", "b"])]
    changed = ed.set_rule(draft, 1, keys=["b"])
    assert ed.rule_pairs(changed)[1] == (["b"], ["b"])
    removed = ed.remove_rule(draft, 0)
    assert ed.uncovered_groups(removed) == ["a"]
    added = ed.add_rule(removed)
    assert ed.rule_pairs(added)[-1] == (["a"], ["a", "b"])
    canonical(added)
    assert ed.rule_pairs(ed.add_rule(draft))[-1] == ([], [])
    assert ed.rule_pairs({"attention_patterns": [{"query_tokens": "a"}]}) is None
    assert ed.set_rule(draft, 9, queries=["a"]) == draft


def test_kind_switches_carry_the_rules_across():
    anchor = ed.preset_draft("self_anchor")
    mixed = ed.set_kind(anchor, "mixed")
    assert "branches" not in mixed["attention"]
    assert ed.rule_pairs(mixed) == [
        (["surface_anchors", "surface_queries"], ["surface_anchors"]),
        (["volume_anchors", "volume_queries"], ["volume_anchors"]),
    ]
    assert canonical(mixed)["attention_patterns"] == canonical(anchor)["attention_patterns"]
    back = ed.set_kind(mixed, "joint_anchor")
    assert "attention_patterns" not in back
    assert back["attention"]["branches"] == ["surface", "volume"]
    assert back["attention"]["anchor_suffix"] == "_anchors"
    canonical(back)
    assert ed.generated_rules(back) == [
        (
            ["surface_anchors", "surface_queries", "volume_anchors", "volume_queries"],
            ["surface_anchors", "volume_anchors"],
        )
    ]
    assert ed.generated_rules(mixed) is None


def test_branches_helpers():
    assert ed.parse_branches("surface, volume  surface,") == ["surface", "volume"]
    assert ed.infer_branches(["surface_anchors", "surface_q", "_anchors", "vol_anchors"]) == ["surface", "vol"]
    draft = ed.set_value(ed.empty_draft(), ["attention", "kind"], "self_anchor")
    draft = ed.set_value(draft, ["attention", "branches"], ["surface", "volume"])
    filled = ed.add_branch_groups(draft)
    assert [s["name"] for s in filled["token_specs"]] == [
        "surface_anchors",
        "surface_queries",
        "volume_anchors",
        "volume_queries",
    ]
    filled.pop("attention_patterns", None)
    canonical(filled)
    assert ed.add_branch_groups(filled)["token_specs"] == filled["token_specs"]
    assert ed.branches_of({"attention": {"branches": "x", "anchor_suffix": 3}}) == ([], "_anchors")


# ------------------------------------------------------------------------------------------------ problems in words


def test_problems_are_placed_next_to_their_editor_in_plain_words():
    draft = small_mixed(padding={"b": 99})
    draft["token_specs"][1]["size"] = -1
    draft["attention"]["num_heads"] = 3
    draft["attention_patterns"][1]["key_value_tokens"] = ["a", "zz"]
    report = validate_scenario(draft)
    grouped = ed.problems_by_section(report.problems)
    assert grouped["groups"] and grouped["attention"]
    size_problem = grouped["groups"][0]
    assert ed.describe_location(size_problem.where, draft) == "Group 2 ('b'), tokens"
    assert ed.problem_index(size_problem.where) == 1
    assert ed.describe_location("attention_patterns[1].key_value_tokens", draft) == "Rule 2, keys/values"
    assert ed.describe_location("generated patterns[0].query_tokens", draft) == "Generated rule 1, queries"
    assert ed.describe_location("run.padding.b", draft) == "Padding of 'b'"
    assert ed.describe_location("run.kv_cache_sizes.x", draft) == "Cached tokens of 'x'"
    assert ed.describe_location("attention.hidden_dim", draft) == "Attention config, hidden_dim"
    assert ed.describe_location("line 3, column 4", draft) == "Text, line 3, column 4"
    assert ed.describe_location("(file)", draft) == "File"
    assert ed.describe_location("attention", draft) == "Attention config"
    assert ed.problem_markdown(Problem("run.seed", "Input should be valid (got -1)", "Use 0."), {}).endswith(
        "(got -1). Use 0."
    )
    assert ed.problem_section("run.kv_cache_sizes.x") == "groups"
    assert ed.problem_section("attention.branches") == "rules"
    assert ed.problem_section("run.seed") == "run"
    assert ed.problem_section("extra_key") == "document"


def test_problem_markdown_escapes_user_names():
    text = ed.problem_markdown(Problem("token_specs[0].name", "'**x**' is used twice.", "Rename [it]."), {})
    assert "\\*\\*x\\*\\*" in text and "\\[it\\]" in text and text.startswith("**Group 1, name**")


# ------------------------------------------------------------------------------------------------ share links


@pytest.mark.parametrize("key", PRESET_KEYS)
def test_share_links_round_trip(key):
    scenario = load_preset(key)
    token = ed.encode_share(scenario)
    assert len(token) < 2000 and set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    report = ed.decode_share(token)
    assert report.ok and scenario_to_dict(report.scenario) == scenario_to_dict(scenario)
    url = ed.share_url("http://host:8501/app?old=1#frag", token)
    assert url == f"http://host:8501/app?{ed.SHARE_PARAM}={token}"


def _token(data: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.compress(data)).decode().rstrip("=")


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("", "empty"),
        ("abc$%", "characters"),
        ("A", "base64"),
        ("AAAA", "decompress"),
        (_token(b'{"attention": 1}')[:-6], "cut"),
        ("A" * (ed.MAX_SHARE_CHARS + 1), "at most"),
        (_token(b" " * (ed.MAX_SHARE_JSON_BYTES + 10)), "expands"),
        (_token(b"not json"), "JSON"),
        (_token(b'{"attention": {"hidden_dim": 8, "num_heads": 3}, "token_specs": [{"a": 1}]}'), "divisible"),
    ],
)
def test_bad_share_links_come_back_as_problems(token, words):
    report = ed.decode_share(token)
    assert report.scenario is None and report.problems
    assert words in " ".join(str(p) for p in report.problems)


# ------------------------------------------------------------------------------------------------ comparison


def test_mask_difference_on_equal_axes():
    a = validate_scenario(small_mixed()).scenario
    changed = small_mixed()
    changed["attention_patterns"][0]["key_value_tokens"] = ["a", "b"]
    b = validate_scenario(changed).scenario
    la, lb = TokenLayout.from_scenario(a), TokenLayout.from_scenario(b)
    same = ed.mask_difference(la, la, 400)
    assert same.values is not None and not same.values.any() and "identical" in same.message
    diff = ed.mask_difference(la, lb, 400)
    assert diff.rows is not None and diff.rows.exact
    assert diff.values is not None and diff.values[:8, 8:].min() == 1 and diff.values[8:].max() == 0
    pooled = ed.mask_difference(la, lb, 3)  # 7 tokens per cell: cells straddling the a|b boundary are fractions
    assert pooled.values is not None and pooled.values.shape == (3, 3)
    assert pooled.values[0, 1] == pytest.approx(6 / 7) and pooled.values[0, 2] == 1


def test_mask_difference_needs_equal_axes():
    result = ed.mask_difference(
        TokenLayout.from_scenario(load_preset("perceiver")), TokenLayout.from_scenario(load_preset("block_causal")), 64
    )
    assert result.values is None and "token axes differ" in result.message


def test_cost_difference_table():
    table = ed.cost_difference(ed.scenario_cost(load_preset("perceiver")), ed.scenario_cost(load_preset("perceiver")))
    assert {row["other / current"] for row in table} <= {"same", "+0.00 points"}
    full = ed.scenario_cost(load_preset("full_self_attention"))
    other = ed.cost_difference(full, ed.scenario_cost(load_preset("block_causal")))
    pairs = next(row for row in other if row["quantity"].startswith("attended pairs"))
    assert pairs["current"] == "4,194,304" and pairs["other"] == "1,376,256" and pairs["other / current"] == "0.33x"


# ------------------------------------------------------------------------------------------------ view data


@pytest.fixture(scope="module")
def small_run() -> ExplorerRun:
    draft = ed.preset_draft("kv_cache")
    draft = ed.update_groups(
        draft,
        [
            ed.GroupRow("surface_anchors", 16, True),
            ed.GroupRow("surface_queries", 24),
            ed.GroupRow("volume_anchors", 8, True),
            ed.GroupRow("volume_queries", 20),
        ],
    )
    return ExplorerRun(canonical(draft))


def test_query_rows_and_key_columns_skip_cached_groups(small_run):
    layout = small_run.layout
    assert ed.query_row(layout, "volume_queries", 3) == 24 + 3
    assert ed.query_row(layout, "volume_queries", 999) == 24 + 19
    assert ed.query_key_column(layout, 24 + 3) == 16 + 24 + 8 + 3
    with pytest.raises(KeyError):
        ed.query_row(layout, "surface_anchors", 0)
    labels = ed.key_labels(layout)
    assert len(labels) == layout.n_keys and labels[16] == "surface_queries" and labels[-1] == "volume_queries"


def test_row_received_and_positions(small_run):
    row = ed.row_weights(small_run, 5, 0, "mean")
    assert row.shape == (small_run.layout.n_keys,)
    assert row.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(row[16:], 0.0)  # surface queries attend only to the cached surface anchors
    assert ed.row_weights(small_run, 5, 0, 1).sum() == pytest.approx(1.0, abs=1e-5)
    result = small_run.weights(64)
    received = ed.received_weights(result, 0, "mean")
    assert received.sum() == pytest.approx(small_run.layout.n_queries, rel=1e-4)
    assert ed.token_positions(small_run, 0).shape == (small_run.layout.n_keys, 3)


def test_colour_ranges_and_pngs(small_run):
    result = small_run.weights(64)
    low, high = ed.head_colour_range(result, 0, "mean", log=False)
    assert low == 0.0 and high == pytest.approx(float(result.mean[0].max()))
    low_log, _ = ed.head_colour_range(result, 0, "max", log=True)
    assert low_log > 0
    assert ed.colour_range([np.zeros((2, 2))], log=True) == (1e-12, 1.0)
    maps = ed.weight_maps(result, 8, 0, [0, 1], "max")
    assert len(maps) == 2 and maps[0][0].shape[0] <= 8
    png = ed.weights_png(result, small_run.layout, 400, 0, "mean", "mean", log=True)
    assert png.startswith(b"\x89PNG")
    view = ed.mask_view(small_run.scenario, 400)
    assert ed.mask_png(view).startswith(b"\x89PNG")
    assert view.pooled.shape == (view.rows.bins, view.cols.bins)
    assert ed.grid_note(view.rows, view.cols).startswith("exact")


def test_mark_query_row_adds_an_outline():
    fig = ed.mark_query_row(go.Figure(), 3, 10)
    assert fig.layout.shapes[0].y0 == 2.5 and fig.layout.shapes[0].x1 == 9.5


def test_small_choices():
    assert ed.head_options(3) == ["mean", 0, 1, 2]
    assert ed.head_options(3, with_all=True)[-1] == ed.ALL_HEADS
    assert ed.head_options(1, with_all=True) == ["mean", 0]
    assert ed.head_label(0) == "head 0" and ed.head_label("mean") == "mean over heads"
    assert ed.device_options("cuda", ["cpu"]) == ["auto", "cpu", "cuda"]
    assert ed.device_options("cpu", ["cpu"]) == ["auto", "cpu"]
    assert ed.device_label("cuda", ["cpu"]) == "cuda (not available here)"
    assert ed.device_label("auto", ["cpu"]) == "auto (here: cpu)"
    assert ed.as_int("x", 4) == 4 and ed.as_int(True, 4) == 4 and ed.as_int(7.0, 4) == 7
    assert ed.as_float(float("nan"), 0.5) == 0.5 and ed.as_bool("yes", False) is False
    assert ed.as_int(10**30, 4) == 4 and ed.as_int(1e30, 4) == 4 and ed.as_float(10**400, 0.5) == 0.5
    assert ed.choice(1, [True, 1], 0) == 1 and ed.choice(True, [1], 0) == 0


def test_run_cache_key_names_what_changes_the_run():
    cloud_scenario, random_scenario = load_preset("self_anchor"), load_preset("perceiver")
    assert ed.run_cache_key(cloud_scenario, cloud_digest="x") != ed.run_cache_key(cloud_scenario)
    assert ed.run_cache_key(random_scenario, cloud_digest="x") == ed.run_cache_key(random_scenario)
    assert ed.run_cache_key(random_scenario, weights_digest="w") != ed.run_cache_key(random_scenario)
    assert ed.scenario_key(load_preset("self_anchor")) == ed.scenario_key(
        validate_scenario(yaml.safe_load(preset_text("self_anchor"))).scenario
    )


def test_attention_prefixes_and_digest():
    layer = {f"{p}{k}": torch.zeros(1) for p in ("blocks.0.attn.", "blocks.1.attn.") for k in ("q.weight", "k.weight")}
    layer |= {f"blocks.0.attn.{k}": torch.zeros(1) for k in ("v.weight", "proj.weight")}
    assert ed.attention_prefixes(layer) == ["blocks.0.attn."]
    assert ed.attention_prefixes({"q.weight": 1, "k.weight": 1, "v.weight": 1, "proj.weight": 1}) == [""]
    data = save_safetensors({"x": torch.zeros(2)})
    assert ed.digest(data) == ed.digest(bytes(data)) and len(ed.digest(data)) == 16


def test_cloud_shortfall_names_groups_the_cloud_cannot_fill():
    layout = TokenLayout.from_scenario(load_preset("self_anchor"))
    cloud = {"surface": np.zeros((1500, 3)), "volume": np.zeros((5000, 3))}
    assert ed.cloud_shortfall(cloud, layout) == ["surface_queries"]
    other = TokenLayout.from_scenario(load_preset("perceiver"))
    assert ed.cloud_shortfall(cloud, other) == []


def test_keep_scale_colours_avoids_streamlits_placeholder_colours():
    from noether.explorer.figures import point_cloud_figure

    fig = point_cloud_figure(np.zeros((3, 3)), "t", values=np.arange(3.0))
    assert fig.data[0].marker.colorscale[0][1] == "#000004"
    scale = ed.keep_scale_colours(fig).data[0].marker.colorscale
    assert scale[0][1] == "#010005" and scale[-1][1] == "#fcffa4"
    heat = ed.keep_scale_colours(go.Figure(go.Heatmap(z=[[1]], colorscale=[[0, "#000010"], [1, "#ffffff"]])))
    assert heat.data[0].colorscale[0][1] == "#010005"
