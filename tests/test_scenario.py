"""Scenario validation: every preset passes, every kind of mistake is named, all problems come at once, and the
validator agrees with what upstream MixedAttention can actually compute."""

import json
from collections.abc import Mapping
from typing import Any

import pytest
import torch
import yaml
from hypothesis import assume, event, given
from hypothesis import strategies as st

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.explorer.presets import EXAMPLES_DIR, PRESETS, load_preset
from noether.explorer.problems import ExplorerError, Problem, errors
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import DEFAULT_CACHE_SIZE, Scenario, scenario_to_dict, validate_scenario
from noether.modeling.modules.attention import MixedAttention, MixedAttentionConfig

HIDDEN, HEADS = 8, 2
ATTENTION = {"hidden_dim": HIDDEN, "num_heads": HEADS}
ANCHOR_SPECS = [{"surface_anchors": 4}, {"surface_queries": 6}, {"volume_anchors": 4}, {"volume_queries": 6}]


def doc(
    token_specs: list[Any],
    patterns: list[tuple[list[str], list[str]]] | None = None,
    attention: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A scenario document with the small default attention config."""
    data: dict[str, Any] = {"attention": dict(attention or ATTENTION), "token_specs": token_specs}
    if patterns is not None:
        data["attention_patterns"] = [{"query_tokens": q, "key_value_tokens": kv} for q, kv in patterns]
    if run is not None:
        data["run"] = dict(run)
    return data


def anchor_doc(kind: str, branches: list[str], token_specs: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    return doc(token_specs or ANCHOR_SPECS, attention={**ATTENTION, "kind": kind, "branches": branches, **extra})


def problems_at(data: Any, where: str) -> list[Problem]:
    return [p for p in validate_scenario(data).problems if p.where == where]


def only_error(data: Any) -> Problem:
    """The single error of a document that has exactly one mistake."""
    report = validate_scenario(data)
    found = errors(report.problems)
    assert not report.ok
    assert report.scenario is None
    assert len(found) == 1, [str(p) for p in report.problems]
    return found[0]


# ----------------------------------------------------------------------------------------------------------------------
# Presets and the happy path
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_file_validates_without_problems(path) -> None:
    report = validate_scenario(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert report.ok, [str(p) for p in report.problems]
    assert report.problems == []
    assert isinstance(report.scenario, Scenario)


def test_every_preset_has_a_file_and_every_file_a_preset() -> None:
    assert sorted(p.file for p in PRESETS) == sorted(path.name for path in EXAMPLES_DIR.glob("*.yaml"))


def test_valid_mixed_scenario_keeps_its_content() -> None:
    report = validate_scenario(doc([{"a": 3}, {"name": "b", "size": None}], [(["a", "b"], ["b"])]))
    assert report.ok
    assert report.scenario is not None
    assert [(s.name, s.size) for s in report.scenario.token_specs] == [("a", 3), ("b", None)]
    assert report.scenario.cached_names() == ["b"]
    assert report.scenario.key_size(report.scenario.token_specs[1]) == DEFAULT_CACHE_SIZE


def test_non_mapping_document_is_one_problem() -> None:
    problem = only_error([1, 2])
    assert problem.where == "(document)"
    assert "list" in problem.message


# ----------------------------------------------------------------------------------------------------------------------
# Names: unknown, listed twice, duplicated, empty
# ----------------------------------------------------------------------------------------------------------------------


def test_unknown_query_group_names_field_and_suggests() -> None:
    data = doc([{"surface": 3}, {"volume": 3}], [(["surface", "volum"], ["surface", "volume"])])
    found = problems_at(data, "attention_patterns[0].query_tokens")
    assert len(found) == 1
    problem = found[0]
    assert "'volum'" in problem.message
    assert "Did you mean 'volume'?" in problem.hint


def test_unknown_key_value_group_names_field_and_suggests() -> None:
    problem = only_error(doc([{"anchors": 3}, {"queries": 3}], [(["anchors", "queries"], ["anchor"])]))
    assert problem.where == "attention_patterns[0].key_value_tokens"
    assert "'anchor'" in problem.message
    assert "Did you mean 'anchors'?" in problem.hint


def test_unknown_name_far_from_every_group_has_no_suggestion() -> None:
    problem = only_error(doc([{"anchors": 3}], [(["anchors"], ["anchors", "xyzzy"])]))
    assert "'xyzzy'" in problem.message
    assert "Did you mean" not in problem.hint


def test_group_that_is_a_query_twice_names_both_patterns() -> None:
    problem = only_error(doc([{"a": 2}, {"b": 2}], [(["a"], ["a"]), (["b", "a"], ["b"])]))
    assert problem.where == "attention_patterns[1].query_tokens"
    assert "'a'" in problem.message
    assert "attention_patterns[0]" in problem.message


def test_group_in_no_pattern_is_named() -> None:
    problem = only_error(doc([{"a": 2}, {"lonely": 2}], [(["a"], ["a", "lonely"])]))
    assert problem.where == "attention_patterns"
    assert "'lonely'" in problem.message
    assert "'lonely'" in problem.hint


def test_cached_group_in_no_pattern_is_named_too() -> None:
    problem = only_error(doc([{"a": 2}, {"cache": None}], [(["a"], ["cache"])]))
    assert "'cache'" in problem.message


@pytest.mark.parametrize("field", ["query_tokens", "key_value_tokens"])
def test_empty_list_is_named(field: str) -> None:
    patterns = [(["a"], ["a"])]
    patterns[0][0 if field == "query_tokens" else 1].clear()
    found = problems_at(doc([{"a": 2}], patterns), f"attention_patterns[0].{field}")
    assert len(found) == 1
    assert "empty" in found[0].message


@pytest.mark.parametrize("field", ["query_tokens", "key_value_tokens"])
def test_name_listed_twice_in_one_list(field: str) -> None:
    patterns = [(["a", "a"], ["a"])] if field == "query_tokens" else [(["a"], ["a", "a"])]
    found = problems_at(doc([{"a": 2}], patterns), f"attention_patterns[0].{field}")
    assert len(found) == 1
    assert "'a' 2 times" in found[0].message


def test_a_duplicate_group_name_is_one_problem_naming_the_first_group() -> None:
    report = validate_scenario(doc([{"a": 2}, {"b": 2}, {"a": 3}], [(["a", "b"], ["a"])]))
    assert not report.ok
    assert [(p.where, p.message) for p in report.problems] == [
        ("token_specs[2].name", "'a' is already the name of group 1.")
    ]


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_group_name(name: str) -> None:
    found = problems_at(doc([{"a": 2}, {name: 2}], [(["a", name], ["a"])]), "token_specs[1].name")
    assert len(found) == 1
    assert "empty" in found[0].message


def test_group_item_with_two_names_is_refused() -> None:
    problem = only_error(doc([{"a": 2, "b": 3}], []))
    assert problem.where == "token_specs[0]"
    assert "['a', 'b']" in problem.message


def test_negative_size_names_the_item() -> None:
    problem = only_error(doc([{"a": 2}, {"b": -1}], [(["a", "b"], ["a"])]))
    assert problem.where == "token_specs[1].size"
    assert "-1" in problem.message


def test_empty_token_specs_and_all_cached() -> None:
    assert only_error(doc([], [])).where == "token_specs"
    problem = only_error(doc([{"a": None}], [(["a"], ["a"])]))
    assert problem.where == "token_specs"
    assert "cached" in problem.message


def test_mixed_without_patterns_is_refused() -> None:
    problem = only_error(doc([{"a": 2}]))
    assert problem.where == "attention_patterns"
    assert "empty" in problem.message


# ----------------------------------------------------------------------------------------------------------------------
# Zero-token key/value sets, padding, cache
# ----------------------------------------------------------------------------------------------------------------------


def test_zero_token_key_value_set_size_zero() -> None:
    problem = only_error(doc([{"a": 3}, {"empty": 0}], [(["a", "empty"], ["empty"])]))
    assert problem.where == "attention_patterns[0].key_value_tokens"
    assert "'empty'" in problem.message
    assert "NaN" in problem.message


def test_zero_token_key_value_set_fully_padded() -> None:
    problem = only_error(doc([{"a": 3}, {"b": 2}], [(["a"], ["b"]), (["b"], ["a"])], run={"padding": {"b": 2}}))
    assert problem.where == "attention_patterns[0].key_value_tokens"
    assert "'b'" in problem.message


def test_partly_padded_key_value_set_is_fine() -> None:
    report = validate_scenario(
        doc([{"a": 3}, {"b": 2}], [(["a"], ["a", "b"]), (["b"], ["a", "b"])], run={"padding": {"a": 3}})
    )
    assert report.ok, [str(p) for p in report.problems]


def test_zero_sized_cache_is_a_zero_token_key_value_set() -> None:
    problem = only_error(
        doc([{"anchor": None}, {"q": 3}], [(["anchor", "q"], ["anchor"])], run={"kv_cache_sizes": {"anchor": 0}})
    )
    assert problem.where == "attention_patterns[0].key_value_tokens"
    assert "'anchor'" in problem.message


def test_cached_pass_input_query_reading_input_keys() -> None:
    problem = only_error(doc([{"anchor": None}, {"q": 3}], [(["anchor", "q"], ["anchor", "q"])]))
    assert problem.where == "attention_patterns[0].key_value_tokens"
    assert "'q'" in problem.message
    assert "cached" in problem.message


def test_cached_queries_may_read_input_keys() -> None:
    """A pattern whose queries are all cached is dropped on the cached pass; upstream accepts it too."""
    report = validate_scenario(doc([{"anchor": None}, {"q": 3}], [(["anchor"], ["q"]), (["q"], ["anchor"])]))
    assert report.ok, [str(p) for p in report.problems]


def test_padding_rules_each_named() -> None:
    report = validate_scenario(
        doc([{"a": 3}, {"b": 2}], [(["a", "b"], ["a", "b"])], run={"padding": {"b": 3, "bb": 1}})
    )
    by_where = {p.where: p for p in report.problems}
    assert "pads 3 tokens but the group has 2" in by_where["run.padding.b"].message
    assert "Did you mean 'b'?" in by_where["run.padding.bb"].hint
    assert not report.ok


def test_padding_of_cached_group_and_padding_with_cache() -> None:
    report = validate_scenario(
        doc([{"anchor": None}, {"q": 3}], [(["anchor", "q"], ["anchor"])], run={"padding": {"anchor": 1, "q": 1}})
    )
    by_where = {p.where: p for p in report.problems}
    assert "cached groups cannot be padded" in by_where["run.padding.anchor"].message
    assert "['anchor']" in by_where["run.padding"].message
    assert not report.ok


def test_kv_cache_sizes_rules() -> None:
    report = validate_scenario(
        doc(
            [{"anchor": None}, {"q": 3}],
            [(["anchor", "q"], ["anchor"])],
            run={"kv_cache_sizes": {"anchr": 5, "q": 4, "anchor": 7}},
        )
    )
    by_where = {p.where: p for p in report.problems}
    assert set(by_where) == {"run.kv_cache_sizes.anchr", "run.kv_cache_sizes.q"}
    assert by_where["run.kv_cache_sizes.anchr"].severity == "error"
    assert "Did you mean 'anchor'?" in by_where["run.kv_cache_sizes.anchr"].hint
    assert by_where["run.kv_cache_sizes.q"].severity == "warning"
    assert "input group" in by_where["run.kv_cache_sizes.q"].message


def test_kv_cache_size_for_input_group_alone_is_only_a_warning() -> None:
    report = validate_scenario(doc([{"a": 3}], [(["a"], ["a"])], run={"kv_cache_sizes": {"a": 4}}))
    assert report.ok
    assert [p.severity for p in report.problems] == ["warning"]


def test_kv_cache_size_is_used() -> None:
    report = validate_scenario(
        doc([{"anchor": None}, {"q": 3}], [(["anchor", "q"], ["anchor"])], run={"kv_cache_sizes": {"anchor": 7}})
    )
    assert report.ok and report.scenario is not None
    assert report.scenario.key_size(report.scenario.token_specs[0]) == 7


# ----------------------------------------------------------------------------------------------------------------------
# Top-level keys, attention config, run settings
# ----------------------------------------------------------------------------------------------------------------------


def test_unknown_top_level_keys_with_did_you_mean() -> None:
    data = doc([{"a": 2}], [(["a"], ["a"])])
    data["attention_pattern"] = []
    data["colour"] = "red"
    report = validate_scenario(data)
    by_where = {p.where: p for p in report.problems}
    assert "Did you mean 'attention_patterns'?" in by_where["attention_pattern"].hint
    assert "Did you mean" not in by_where["colour"].hint
    assert "Allowed" in by_where["colour"].hint
    assert not report.ok


def test_missing_sections_are_named() -> None:
    report = validate_scenario({"run": {}})
    assert {p.where for p in report.problems} >= {"attention", "token_specs"}


def test_unknown_attention_extra_is_only_a_warning() -> None:
    report = validate_scenario(doc([{"a": 2}], [(["a"], ["a"])], attention={**ATTENTION, "num_head": 4, "foo": 1}))
    assert report.ok
    by_where = {p.where: p for p in report.problems}
    assert set(by_where) == {"attention.num_head", "attention.foo"}
    assert all(p.severity == "warning" for p in report.problems)
    assert "Did you mean 'num_heads'?" in by_where["attention.num_head"].hint


@pytest.mark.parametrize("mode", ["zeros", "torchs"])
def test_init_mode_accepted_by_schema_but_unsupported(mode: str) -> None:
    problem = only_error(doc([{"a": 2}], [(["a"], ["a"])], attention={**ATTENTION, "init_weights": mode}))
    assert problem.where == "attention.init_weights"
    assert f"'{mode}'" in problem.message
    assert "truncnormal002" in problem.hint


def test_hidden_dim_not_divisible_by_heads() -> None:
    problem = only_error(doc([{"a": 2}], [(["a"], ["a"])], attention={"hidden_dim": 10, "num_heads": 3}))
    assert problem.where == "attention"
    assert "divisible" in problem.message


def test_run_settings_each_named() -> None:
    report = validate_scenario(
        doc([{"a": 2}], [(["a"], ["a"])], run={"seed": -1, "device": "gpu", "dtype": "float8", "bogus": 1})
    )
    wheres = {p.where for p in report.problems}
    assert wheres == {"run.seed", "run.device", "run.dtype", "run.bogus"}
    assert not report.ok


# ----------------------------------------------------------------------------------------------------------------------
# Anchor kinds
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "self_anchor",
            [
                (["surface_anchors", "surface_queries"], ["surface_anchors"]),
                (["volume_anchors", "volume_queries"], ["volume_anchors"]),
            ],
        ),
        (
            "cross_anchor",
            [
                (["surface_anchors", "surface_queries"], ["volume_anchors"]),
                (["volume_anchors", "volume_queries"], ["surface_anchors"]),
            ],
        ),
        (
            "joint_anchor",
            [
                (
                    ["surface_anchors", "surface_queries", "volume_anchors", "volume_queries"],
                    ["surface_anchors", "volume_anchors"],
                )
            ],
        ),
    ],
)
def test_anchor_kinds_generate_patterns(kind: str, expected: list[tuple[list[str], list[str]]]) -> None:
    report = validate_scenario(anchor_doc(kind, ["surface", "volume"]))
    assert report.ok, [str(p) for p in report.problems]
    assert report.scenario is not None
    got = [(list(p.query_tokens), list(p.key_value_tokens)) for p in report.scenario.patterns()]
    assert got == expected


def test_anchor_kind_accepts_given_patterns_equal_to_generated() -> None:
    data = anchor_doc("self_anchor", ["surface", "volume"])
    data["attention_patterns"] = [
        {"query_tokens": ["surface_anchors", "surface_queries"], "key_value_tokens": ["surface_anchors"]},
        {"query_tokens": ["volume_anchors", "volume_queries"], "key_value_tokens": ["volume_anchors"]},
    ]
    assert validate_scenario(data).ok


def test_anchor_kind_rejects_different_given_patterns() -> None:
    data = anchor_doc("self_anchor", ["surface", "volume"])
    data["attention_patterns"] = [
        {"query_tokens": ["surface_anchors", "surface_queries"], "key_value_tokens": ["surface_anchors"]},
        {"query_tokens": ["volume_anchors", "volume_queries"], "key_value_tokens": ["surface_anchors"]},
    ]
    problem = only_error(data)
    assert problem.where == "attention_patterns"
    assert "self_anchor" in problem.message
    assert "kind: mixed" in problem.hint


def test_anchor_kind_missing_anchor_group() -> None:
    specs = [{"surface_anchors": 4}, {"surface_queries": 4}, {"volume_queries": 4}]
    problem = only_error(anchor_doc("self_anchor", ["surface", "volume"], specs))
    assert problem.where == "attention.branches"
    assert "'volume_anchors'" in problem.message


def test_anchor_kind_missing_branch() -> None:
    problem = only_error(anchor_doc("joint_anchor", ["surface", "volume", "wake"]))
    assert problem.where == "attention.branches"
    assert "'wake'" in problem.message


def test_anchor_kind_group_outside_every_branch() -> None:
    specs = [*ANCHOR_SPECS, {"wheels": 3}]
    problem = only_error(anchor_doc("self_anchor", ["surface", "volume"], specs))
    assert "'wheels'" in problem.message


def test_anchor_kind_without_branches() -> None:
    report = validate_scenario(doc(ANCHOR_SPECS, attention={**ATTENTION, "kind": "self_anchor"}))
    assert not report.ok
    assert "attention.branches" in {p.where for p in report.problems}


@pytest.mark.parametrize("kind", ["cross_anchor", "joint_anchor"])
def test_multi_branch_kind_with_one_branch(kind: str) -> None:
    specs = [{"surface_anchors": 4}, {"surface_queries": 4}]
    report = validate_scenario(anchor_doc(kind, ["surface"], specs))
    by_where = {p.where: p for p in report.problems}
    assert "attention.branches" in by_where
    assert kind in by_where["attention.branches"].message
    assert not report.ok


def test_anchor_kind_custom_suffix() -> None:
    specs = [{"surface_latents": 3}, {"surface_queries": 3}]
    report = validate_scenario(anchor_doc("self_anchor", ["surface"], specs, anchor_suffix="_latents"))
    assert report.ok, [str(p) for p in report.problems]


def test_anchor_kind_with_cache_and_cross_reads_only_cached_anchors() -> None:
    specs = [{"surface_anchors": None}, {"surface_queries": 4}, {"volume_anchors": None}, {"volume_queries": 4}]
    report = validate_scenario(anchor_doc("cross_anchor", ["surface", "volume"], specs))
    assert report.ok, [str(p) for p in report.problems]


# ----------------------------------------------------------------------------------------------------------------------
# All problems at once
# ----------------------------------------------------------------------------------------------------------------------


def test_four_structural_mistakes_come_at_once() -> None:
    data = {
        "attention": {"hidden_dim": 8, "num_heads": 0},
        "token_specs": [{"a": 2}, {"b": -3}],
        "attention_patterns": [{"query_tokens": ["a", "b"], "key_value_tokens": ["a"]}],
        "run": {"batch_size": 0},
        "extras": {},
    }
    report = validate_scenario(data)
    wheres = {p.where for p in report.problems}
    assert len(errors(report.problems)) >= 4
    assert {"attention.num_heads", "token_specs[1].size", "run.batch_size", "extras"} <= wheres


def test_four_semantic_mistakes_come_at_once() -> None:
    data = doc(
        [{"a": 2}, {"b": 2}, {"c": 2}],
        [(["a"], ["aa"]), (["b", "b"], ["a"])],
        run={"padding": {"a": 5}},
    )
    report = validate_scenario(data)
    wheres = [p.where for p in errors(report.problems)]
    assert len(wheres) >= 4
    assert {
        "attention_patterns[0].key_value_tokens",
        "attention_patterns[1].query_tokens",
        "attention_patterns",
        "run.padding.a",
    } <= set(wheres)


def test_semantic_problems_are_reported_beside_an_unknown_top_level_key() -> None:
    data = doc([{"a": 2}, {"b": 2}], [(["a"], ["a"])])
    data["runn"] = {}
    wheres = {p.where for p in validate_scenario(data).problems}
    assert wheres == {"runn", "attention_patterns"}


def test_explorer_run_lists_every_problem() -> None:
    data = doc([{"a": 2}, {"b": 2}], [(["a"], ["zz"])], run={"padding": {"b": 9}})
    with pytest.raises(ExplorerError) as info:
        ExplorerRun(data)
    text = str(info.value)
    assert "'zz'" in text and "'b'" in text and "run.padding.b" in text
    assert len(info.value.problems) >= 3


# ----------------------------------------------------------------------------------------------------------------------
# Agreement with upstream MixedAttention
# ----------------------------------------------------------------------------------------------------------------------


def run_mixed(scenario: Scenario, seed: int = 0) -> torch.Tensor:
    """Run upstream MixedAttention directly on the scenario's structure (random inputs, random cache)."""
    torch.manual_seed(seed)
    module = MixedAttention(MixedAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS)).eval()
    specs = list(scenario.token_specs)
    n_input = sum(s.size for s in specs if s.size is not None)
    x = torch.randn(1, n_input, HIDDEN)
    padding = None
    if any(scenario.run.padding.values()):
        padding = torch.cat(
            [torch.arange(s.size) < s.size - scenario.run.padding.get(s.name, 0) for s in specs if s.size is not None]
        )[None]
    cache = None
    if scenario.cached_names():
        cache = {
            name: {
                "k": torch.randn(1, HEADS, scenario.cache_size(name), HIDDEN // HEADS),
                "v": torch.randn(1, HEADS, scenario.cache_size(name), HIDDEN // HEADS),
            }
            for name in scenario.cached_names()
        }
    with torch.no_grad():
        out, _ = module(x, specs, scenario.patterns(), key_padding_mask=padding, kv_cache=cache)
    return out


@st.composite
def valid_structures(draw: st.DrawFn) -> dict[str, Any]:
    """Group/pattern structures upstream accepts: each group a query in exactly one pattern, every key/value set
    non-empty with at least one real token; optionally with cached groups (input queries then read caches only) or
    with padding."""
    n = draw(st.integers(1, 4))
    names = [f"g{i}" for i in range(n)]
    mode = draw(st.sampled_from(["plain", "padding", "cached"]))
    cached = set()
    if mode == "cached" and n >= 2:
        cached = set(draw(st.lists(st.sampled_from(names), min_size=1, max_size=n - 1, unique=True)))
    sizes = {name: draw(st.integers(1 if name in cached else 0, 3)) for name in names}
    padding = {}
    if mode == "padding":
        padding = {name: draw(st.integers(0, sizes[name])) for name in names if sizes[name] and draw(st.booleans())}
    owner = {name: draw(st.integers(0, n - 1)) for name in names}
    patterns = []
    for index in sorted(set(owner.values())):
        queries = [name for name in names if owner[name] == index]
        candidates = names
        if cached and any(q not in cached for q in queries):
            candidates = sorted(cached)
        kv = draw(st.lists(st.sampled_from(candidates), min_size=1, unique=True))
        assume(sum(sizes[k] - padding.get(k, 0) for k in kv) >= 1)
        patterns.append((queries, kv))
    specs = [{name: None if name in cached else sizes[name]} for name in names]
    run = {"padding": padding, "kv_cache_sizes": {name: sizes[name] for name in cached}}
    return doc(specs, patterns, run=run)


@given(valid_structures())
def test_structures_upstream_computes_are_accepted(data: dict[str, Any]) -> None:
    report = validate_scenario(data)
    assert report.ok, [str(p) for p in report.problems]
    assert report.scenario is not None
    out = run_mixed(report.scenario)
    assert torch.isfinite(out).all()


MUTATIONS = ("size", "cache", "pad", "cache_size", "add_kv", "drop_kv", "add_query", "drop_query")


@st.composite
def random_structures(draw: st.DrawFn) -> dict[str, Any]:
    """Valid structures with up to three random mutations (sizes, caching, padding, cache sizes, pattern lists), so
    that examples land on both sides of the validity boundary."""
    data = draw(valid_structures())
    names = [next(iter(item)) for item in data["token_specs"]]
    pool = [*names, "zz"]
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        index = draw(st.integers(0, len(names) - 1))
        pattern = draw(st.sampled_from(data["attention_patterns"]))
        if mutation == "size":
            data["token_specs"][index] = {names[index]: draw(st.integers(0, 3))}
        elif mutation == "cache":
            data["token_specs"][index] = {names[index]: None}
        elif mutation == "pad":
            data["run"]["padding"][draw(st.sampled_from(pool))] = draw(st.integers(0, 3))
        elif mutation == "cache_size":
            data["run"]["kv_cache_sizes"][draw(st.sampled_from(pool))] = draw(st.integers(0, 3))
        elif mutation in ("add_kv", "add_query"):
            field = "key_value_tokens" if mutation == "add_kv" else "query_tokens"
            pattern[field] = [*pattern[field], draw(st.sampled_from(pool))]
        else:
            field = "key_value_tokens" if mutation == "drop_kv" else "query_tokens"
            pattern[field] = pattern[field][1:]
    return data


@given(random_structures())
def test_accepted_structures_run_upstream_without_nan(data: dict[str, Any]) -> None:
    report = validate_scenario(data)
    event(f"accepted={report.ok}")
    if not report.ok:
        assert errors(report.problems), "a refused scenario must say why"
        return
    assert report.scenario is not None
    out = run_mixed(report.scenario)
    assert torch.isfinite(out).all()
    # The explorer's own passes run on it too.
    run = ExplorerRun(report.scenario)
    assert torch.isfinite(run.forward().output).all()
    assert torch.isfinite(run.weights(pixels=64).mean).all()


def test_random_structures_do_reach_the_upstream_run() -> None:
    """Guard against the property above passing vacuously: known-valid examples of its strategy are accepted."""
    data = doc([{"g0": 2}, {"g1": None}], [(["g0", "g1"], ["g1"])], run={"kv_cache_sizes": {"g1": 2}})
    report = validate_scenario(data)
    assert report.ok
    assert report.scenario is not None
    assert run_mixed(report.scenario).shape == (1, 2, HIDDEN)


@pytest.mark.parametrize(("hidden_dim", "num_heads"), [(8, 2), (14, 2)])
def test_rope_head_dim_that_the_explorer_cannot_embed_is_refused_or_runs(hidden_dim: int, num_heads: int) -> None:
    data = doc(
        [{"a": 3}], [(["a"], ["a"])], attention={"hidden_dim": hidden_dim, "num_heads": num_heads, "use_rope": True}
    )
    if not validate_scenario(data).ok:
        return
    run = ExplorerRun(data)
    assert torch.isfinite(run.forward().output).all()


def test_point_cloud_inputs_with_tiny_hidden_dim_are_refused_or_run() -> None:
    data = doc(
        [{"surface": 3}],
        [(["surface"], ["surface"])],
        attention={"hidden_dim": 4, "num_heads": 2},
        run={"inputs": "point_cloud"},
    )
    if not validate_scenario(data).ok:
        return
    assert torch.isfinite(ExplorerRun(data).forward().output).all()


# ----------------------------------------------------------------------------------------------------------------------
# Canonical form and round trip
# ----------------------------------------------------------------------------------------------------------------------


def round_trip(scenario: Scenario) -> dict[str, Any]:
    canonical = scenario_to_dict(scenario)
    report = validate_scenario(canonical)
    assert report.ok, [str(p) for p in report.problems]
    assert report.scenario is not None
    assert scenario_to_dict(report.scenario) == canonical
    return canonical


@pytest.mark.parametrize("key", [p.key for p in PRESETS])
def test_preset_round_trip(key: str) -> None:
    scenario = load_preset(key)
    canonical = round_trip(scenario)
    # Canonical mappings survive plain JSON and YAML, and passing the Scenario itself validates the same way.
    assert json.loads(json.dumps(canonical)) == canonical
    assert yaml.safe_load(yaml.safe_dump(canonical, sort_keys=False)) == canonical
    again = validate_scenario(scenario)
    assert again.scenario is not None
    assert scenario_to_dict(again.scenario) == canonical
    assert "head_dim" not in canonical["attention"]
    assert canonical["attention_patterns"] == [
        {"query_tokens": list(p.query_tokens), "key_value_tokens": list(p.key_value_tokens)}
        for p in scenario.patterns()
    ]


def test_canonical_form_has_stable_key_order() -> None:
    scenario = load_preset("self_anchor")
    canonical = scenario_to_dict(scenario)
    assert list(canonical) == ["attention", "token_specs", "attention_patterns", "run"]
    assert list(canonical["attention"])[:3] == ["kind", "hidden_dim", "num_heads"]
    assert canonical["attention"]["branches"] == ["surface", "volume"]


@given(
    valid_structures(),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["float32", "bfloat16"]),
    st.booleans(),
    st.sampled_from([0, 0.25]),
    st.dictionaries(st.sampled_from(["zeta", "alpha"]), st.integers(0, 9), max_size=2),
)
def test_round_trip_of_random_scenarios(
    data: dict[str, Any], seed: int, dtype: str, qk_norm: bool, dropout: float, extras: dict[str, int]
) -> None:
    data["attention"].update(qk_norm=qk_norm, dropout=dropout, **extras)
    data["run"].update(seed=seed, dtype=dtype)
    report = validate_scenario(data)
    assert report.scenario is not None
    canonical = round_trip(report.scenario)
    assert canonical["attention"]["dropout"] == float(dropout)
    assert [key for key in canonical["attention"] if key in extras] == sorted(extras)
    assert canonical["run"]["seed"] == seed


def test_group_named_name_round_trips() -> None:
    """``{name: 3}`` is a group called "name"; the canonical ``{name: ..., size: ...}`` form must not confuse it."""
    report = validate_scenario(doc([{"name": 3}, {"size": 2}], [(["name", "size"], ["name"])]))
    assert report.ok and report.scenario is not None
    assert [s.name for s in report.scenario.token_specs] == ["name", "size"]
    round_trip(report.scenario)


def test_round_trip_keeps_patterns_as_given_objects() -> None:
    report = validate_scenario(doc([{"a": 2}, {"b": 1}], [(["b", "a"], ["b", "a"])]))
    assert report.scenario is not None
    assert report.scenario.attention_patterns == [
        AttentionPattern(query_tokens=["b", "a"], key_value_tokens=["b", "a"])
    ]
    assert report.scenario.token_specs == [TokenSpec(name="a", size=2), TokenSpec(name="b", size=1)]
    round_trip(report.scenario)


@pytest.mark.parametrize("branches", [["surface", "surface"], ["s", "su"]])
def test_overlapping_branches_are_reported_at_the_branches(branches: list[str]) -> None:
    specs = [{f"{b}_anchors": 3} for b in dict.fromkeys(branches)]
    report = validate_scenario(anchor_doc("self_anchor", branches, specs))
    assert not report.ok
    assert any(p.where.startswith("attention.branches") for p in errors(report.problems))


@pytest.mark.parametrize("where", ["token_specs[0].cached", "attention_patterns[0].causal"])
def test_unknown_keys_inside_items_are_reported(where: str) -> None:
    data = doc([{"name": "a", "size": 3}], [(["a"], ["a"])])
    if where.startswith("token_specs"):
        data["token_specs"][0]["cached"] = True
    else:
        data["attention_patterns"][0]["causal"] = True
    assert where in {p.where for p in validate_scenario(data).problems}
