"""The draft and its edits: text round trip, groups table <-> token_specs, rules, kinds, problems in words."""

import pytest
import torch
import yaml
from safetensors.torch import save as save_safetensors

from noether.explorer import editing as ed
from noether.explorer.checkpoint import attention_prefixes
from noether.explorer.presets import PRESETS, load_preset, preset_text
from noether.explorer.problems import Problem
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
    for not_a_mapping in ("- just\n- a list\n", "null", "~\n", "3"):
        parsed = ed.parse_text(not_a_mapping)
        assert parsed.document is None and "must be a mapping" in " ".join(str(p) for p in parsed.problems)
    assert ed.parse_text("").document is None
    dated = ed.parse_text("attention: {hidden_dim: 16, num_heads: 2}\ntoken_specs: [{name: 2024-01-01, size: 3}]\n")
    assert dated.document is None and dated.problems
    json_doc = ed.parse_text('{"attention": {"hidden_dim": 8, "num_heads": 2}, "token_specs": [{"a": 1}]}')
    assert json_doc.document == {"attention": {"hidden_dim": 8, "num_heads": 2}, "token_specs": [{"a": 1}]}


def test_parse_text_gives_yaml_names_a_quoting_hint():
    parsed = ed.parse_text("attention: {hidden_dim: 16, num_heads: 2}\ntoken_specs: [{name: yes, size: 3}]\n")
    assert parsed.document is not None and parsed.document["token_specs"] == [{"name": True, "size": 3}]
    assert any("quote names" in p.hint for p in parsed.problems)


def test_text_round_trip_keeps_line_separators_in_values():
    draft = small_mixed(device="x\x85y")
    draft["token_specs"][0]["name"] = "a\u2028b"
    assert ed.parse_text(ed.draft_to_text(draft)).document == draft


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
    # Text typed as a size stays visible in the table, so that the user sees what validation explains.
    assert ed.group_rows({"token_specs": [{"a": "many"}]}) == [ed.GroupRow("a", "many", False)]
    for bad in ("groups", [["a", 1]], [{"a": 1, "b": 2}], [{"a": [4]}], [{"name": 3, "size": 1}]):
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


# ------------------------------------------------------------------------------------------------ keys and widgets


def test_small_coercions_for_widgets():
    assert ed.as_int("x", 4) == 4 and ed.as_int(True, 4) == 4 and ed.as_int(7.0, 4) == 7
    assert ed.as_float(float("nan"), 0.5) == 0.5 and ed.as_bool("yes", False) is False
    assert ed.as_int(10**30, 4) == 4 and ed.as_int(1e30, 4) == 4 and ed.as_float(10**400, 0.5) == 0.5
    assert ed.choice(1, [True, 1], 0) == 1 and ed.choice(True, [1], 0) == 0
    assert ed.DTYPES == ("float32", "float64", "bfloat16", "float16")


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
    assert attention_prefixes(layer) == ["blocks.0.attn."]
    assert attention_prefixes({"q.weight": 1, "k.weight": 1, "v.weight": 1, "proj.weight": 1}) == [""]
    data = save_safetensors({"x": torch.zeros(2)})
    assert ed.digest(data) == ed.digest(bytes(data)) and len(ed.digest(data)) == 16


def test_parse_text_reads_file_bytes_once_and_returns_the_valid_scenario():
    valid = (
        b"attention: {hidden_dim: 16, num_heads: 2}\ntoken_specs: [{a: 4}]\n"
        b"attention_patterns: [{query_tokens: [a], key_value_tokens: [a]}]\n"
    )
    parsed = ed.parse_text(valid, name="upload.yaml")
    assert parsed.scenario is not None and parsed.document is not None and not parsed.problems
    invalid = ed.parse_text(b"attention: {hidden_dim: 16, num_heads: 3}\ntoken_specs: [{a: 4}]\n", name="x.yaml")
    assert invalid.scenario is None and invalid.document is not None and invalid.problems
    unreadable = ed.parse_text(b"attention: \xff\xfe\n", name="x.yaml")
    assert unreadable.document is None and unreadable.scenario is None
    assert any("byte" in p.message for p in unreadable.problems)
