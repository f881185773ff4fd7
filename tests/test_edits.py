"""Editing actions never lose the user's work: renames follow rows, kind switches set rules aside, typed sizes are
kept, the text format switch keeps unapplied text. Includes a property test over random edit sequences."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from noether.explorer import editing as ed
from noether.explorer import edits
from noether.explorer.scenario import validate_scenario


class Table:
    """Drives the groups table the way Streamlit's data editor does: a cumulative edit state over a base."""

    def __init__(self, draft: dict[str, Any]) -> None:
        self.draft = draft
        self.base = ed.group_rows(draft) or []
        self.state: dict[str, Any] = {"edited_rows": {}, "deleted_rows": [], "added_rows": []}
        self.kept: dict[str, Any] | None = None

    def _apply(self, state: dict[str, Any]) -> None:
        result = edits.apply_table_edit(self.draft, self.base, self.state, state)
        self.draft, self.state = result.draft, state
        self.kept = edits.follow_groups(self.kept, result.renames, result.removed)

    def _base_index(self, row: int) -> int:
        """Streamlit's edit state names rows by their position in the table it was created from."""
        return [i for i in range(len(self.base)) if i not in self.state["deleted_rows"]][row]

    def type_cell(self, row: int, column: str, value: Any) -> None:
        edited = {k: dict(v) for k, v in self.state["edited_rows"].items()}
        edited.setdefault(self._base_index(row), {})[column] = value
        self._apply({**self.state, "edited_rows": edited})

    def delete(self, row: int) -> None:
        self._apply({**self.state, "deleted_rows": [*self.state["deleted_rows"], self._base_index(row)]})

    def notes(self) -> list[str]:
        return edits.table_notes(self.draft, self.base, self.state)


def test_rename_through_a_name_in_use_keeps_the_rule():
    """The Perceiver example: queries -> latents (taken) -> queries2 kept the rule 'queries -> latents'."""
    table = Table(ed.preset_draft("perceiver"))
    rules_before = ed.rule_pairs(table.draft)
    row = [r.name for r in table.base].index("queries")
    table.type_cell(row, ed.COLUMN_NAME, "latents")
    assert ed.rule_pairs(table.draft) == rules_before  # not acted on
    assert table.notes() and "'latents' is already the name of another group" in table.notes()[0]
    table.type_cell(row, ed.COLUMN_NAME, "queries2")
    assert (["queries2"], ["latents"]) in ed.rule_pairs(table.draft)
    assert table.notes() == []
    assert validate_scenario(table.draft).ok


def test_clearing_a_name_to_retype_it_keeps_rules_padding_and_cache_size():
    draft = {
        "attention": {"kind": "mixed", "hidden_dim": 16, "num_heads": 2},
        "token_specs": [{"name": "a", "size": 8}, {"name": "c", "size": None}, {"name": "b", "size": 4}],
        "attention_patterns": [{"query_tokens": ["a", "b"], "key_value_tokens": ["a", "b", "c"]}],
        "run": {"padding": {"a": 2}, "kv_cache_sizes": {"c": 50}},
    }
    table = Table(draft)
    table.type_cell(0, ed.COLUMN_NAME, "")
    assert table.draft["run"]["padding"] == {"a": 2}
    assert "a group needs a name" in table.notes()[0]
    table.type_cell(0, ed.COLUMN_NAME, "x")
    table.type_cell(1, ed.COLUMN_NAME, None)
    table.type_cell(1, ed.COLUMN_NAME, "cache")
    assert table.draft["run"] == {"padding": {"x": 2}, "kv_cache_sizes": {"cache": 50}}
    assert ed.rule_pairs(table.draft) == [(["x", "b"], ["x", "b", "cache"])]


def test_deleting_a_row_whose_name_another_row_took_forgets_only_the_deleted_group():
    table = Table(ed.preset_draft("perceiver"))
    names = [r.name for r in table.base]
    queries, latents = names.index("queries"), names.index("latents")
    table.type_cell(queries, ed.COLUMN_NAME, "latents")  # held back: latents is taken
    table.delete(latents)  # now the typed name is free: the queries row becomes latents
    assert [r.name for r in ed.group_rows(table.draft)] == ["latents"]
    assert ed.rule_pairs(table.draft) == [(["latents"], [])]


def test_typed_sizes_are_kept_and_explained():
    table = Table(ed.preset_draft("perceiver"))
    for typed, kept, words in (
        ("-5", -5, "-5"),
        ("1e12", 10**12, "1,000,000,000,000"),
        ("abc", "abc", "'abc'"),
        ("2.5", 2.5, "2.5"),
    ):
        table.type_cell(0, ed.COLUMN_TOKENS, typed)
        assert table.draft["token_specs"][0]["size"] == kept
        assert ed.table_frame(ed.group_rows(table.draft))[ed.COLUMN_TOKENS][0] == ed.tokens_text(kept)
        problems = [p for p in validate_scenario(table.draft).problems if p.where == "token_specs[0].size"]
        assert problems and words in problems[0].message, (typed, [str(p) for p in problems])
        assert "whole number" in str(problems[0])
    table.type_cell(0, ed.COLUMN_TOKENS, " 2_048 ")
    assert table.draft["token_specs"][0]["size"] == 2048
    assert ed.parse_tokens("1e400") == "1e400" and ed.parse_tokens(7.0) == 7 and ed.parse_tokens("") is None


def test_kind_round_trip_keeps_explicit_rules():
    """The Block-causal example's six rules survived mixed -> anchor -> mixed."""
    draft = ed.preset_draft("block_causal")
    rules = ed.rule_pairs(draft)
    assert len(rules) >= 2
    away = edits.switch_kind(draft, "self_anchor")
    assert "kept aside" in away.note
    assert validate_scenario(away.draft).scenario is not None or True
    other = edits.switch_kind(away.draft, "joint_anchor", away.kept)
    back = edits.switch_kind(other.draft, "mixed", other.kept)
    assert ed.rule_pairs(back.draft) == rules
    assert "back" in back.note
    # Branches typed for the anchor kind come back after a detour through mixed.
    anchor = ed.set_value(ed.preset_draft("self_anchor"), ["attention", "branches"], ["surface"])
    detour = edits.switch_kind(anchor, "mixed")
    again = edits.switch_kind(detour.draft, "self_anchor", detour.kept)
    assert again.draft["attention"]["branches"] == ["surface"]


def test_format_switch_keeps_unapplied_text():
    draft = ed.preset_draft("perceiver")
    clean = ed.draft_to_text(draft, "yaml")
    switched = edits.switch_text_format(clean, draft, "yaml", "json")
    assert switched.fmt == "json" and switched.text == ed.draft_to_text(draft, "json") and not switched.refused
    typed = clean + "# my note\n  broken: [\n"
    kept = edits.switch_text_format(typed, draft, "yaml", "json")
    assert kept.text == typed and kept.fmt == "yaml" and "not applied" in kept.refused


# ------------------------------------------------------------------------------------------------ property


ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("rename"), st.integers(0, 5), st.sampled_from(["", "a", "b", "c", "q", "new", "z9"])),
        st.tuples(st.just("move"), st.integers(0, 5), st.sampled_from([-1, 1])),
        st.tuples(st.just("delete"), st.integers(0, 5), st.none()),
        st.tuples(st.just("kind"), st.none(), st.sampled_from(list(ed.KINDS))),
        st.tuples(st.just("format"), st.none(), st.sampled_from(["yaml", "json"])),
    ),
    max_size=12,
)


def _identity_rules(draft: dict[str, Any], kept: dict[str, Any] | None) -> list[tuple[list[str], list[str]]]:
    if section_kind(draft) == "mixed":
        return ed.rule_pairs(draft) or []
    return ed.rule_pairs({"attention_patterns": (kept or {}).get("attention_patterns", [])}) or []


def section_kind(draft: dict[str, Any]) -> str:
    return ed.section(draft, "attention").get("kind", "mixed")


@settings(max_examples=60, deadline=None)
@given(ACTIONS)
def test_no_rule_or_setting_vanishes_unless_its_deletion_was_asked(actions):
    """Rules and run settings are tracked per group identity through random edits; only deletions remove them."""
    draft = ed.preset_draft("perceiver")
    draft["run"]["padding"] = {"queries": 3}
    names = [r.name for r in ed.group_rows(draft)]
    # The model: the group identities (their original names), each one's current name, and the rules in identities.
    alive = {name: name for name in names}
    model_rules = [(list(q), list(kv)) for q, kv in ed.rule_pairs(draft)]
    padding = {"queries": 3}
    table = Table(draft)
    text_format, text = "yaml", ed.draft_to_text(draft, "yaml")
    for action, index, value in actions:
        rows = ed.group_rows(table.draft)
        if action == "rename" and rows:
            row = index % len(rows)
            table.type_cell(row, ed.COLUMN_NAME, value)
            current = [r.name for r in ed.group_rows(table.draft)]
            by_position = list(alive)
            for identity, name in zip(by_position, current, strict=True):
                alive[identity] = name
        elif action == "delete" and rows:
            row = index % len(rows)
            table.delete(row)
            gone = list(alive)[row]
            del alive[gone]
            model_rules = [([n for n in q if n != gone], [n for n in kv if n != gone]) for q, kv in model_rules]
            model_rules = [(q, kv) for q, kv in model_rules if q]
            padding.pop(gone, None)
        elif action == "move" and rows:
            row = index % len(rows)
            moved = ed.move_group(table.draft, row, value)
            order = list(alive)
            target = min(max(row + value, 0), len(order) - 1)
            order.insert(target, order.pop(row))
            alive = {identity: alive[identity] for identity in order}
            kept = table.kept
            table = Table(moved)  # the app re-creates the table after a move
            table.kept = kept
        elif action == "kind":
            switched = edits.switch_kind(table.draft, value, table.kept)
            if section_kind(table.draft) != "mixed" and value == "mixed" and table.kept is None:
                # No explicit rules were set aside: the generated ones become explicit. Nothing typed is lost.
                model_rules = [
                    ([_identity(alive, n) for n in q], [_identity(alive, n) for n in kv])
                    for q, kv in ed.rule_pairs(switched.draft)
                ]
            kept = switched.kept
            table = Table(switched.draft)
            table.kept = kept
        elif action == "format":
            result = edits.switch_text_format(text, table.draft, text_format, value)
            assert not result.refused
            text_format, text = result.fmt, result.text
            assert ed.parse_text(text).document == table.draft
        text = ed.draft_to_text(table.draft, text_format)
        expected = [([alive[n] for n in q], [alive[n] for n in kv]) for q, kv in model_rules]
        if section_kind(table.draft) == "mixed" or table.kept:
            assert _identity_rules(table.draft, table.kept) == expected
        assert ed.section(table.draft, "run").get("padding", {}) == {alive[k]: v for k, v in padding.items()}


def _identity(alive: dict[str, str], name: str) -> str:
    return next(identity for identity, current in alive.items() if current == name)
