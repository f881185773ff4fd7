"""Sidebar editor of the attention rules: explicit rules for mixed attention, branches for the anchor kinds."""

from typing import Any

import streamlit as st

from noether.explorer import editing as ed
from noether.explorer.problems import Problem
from noether.explorer.ui.state import (
    FORM_REV,
    on_add_rule,
    on_branch_groups,
    on_branches,
    on_field,
    on_infer_branches,
    on_kind,
    on_remove_rule,
    on_rule,
    ss,
)
from noether.explorer.ui.widgets import problems_box


def rules_editor(draft: dict[str, Any], problems: list[Problem]) -> None:
    rev = ss[FORM_REV]
    attention = ed.section(draft, "attention")
    kind = ed.choice(attention.get("kind", "mixed"), ed.KINDS, "mixed")
    key = f"kind@{rev}"
    st.selectbox(
        "Kind",
        ed.KINDS,
        index=ed.KINDS.index(kind),
        format_func=ed.KIND_LABELS.__getitem__,
        key=key,
        on_change=on_kind,
        args=(key,),
        help="mixed: you write the rules. Anchor kinds generate them from branch names (Noether's anchor modules).",
    )
    if kind == "mixed":
        _explicit_rules(draft, rev)
    elif kind == "perceiver":
        st.caption("A perceiver has one rule: the first group's queries attend to the second group's keys/values.")
        st.dataframe(
            [{"queries": ", ".join(q), "attend to": ", ".join(kv)} for q, kv in ed.generated_rules(draft) or []],
            hide_index=True,
            width="stretch",
        )
    else:
        _anchor_rules(draft, rev)
    problems_box(problems, draft)


def _explicit_rules(draft: dict[str, Any], rev: int) -> None:
    pairs = ed.rule_pairs(draft)
    if pairs is None:
        st.warning("attention_patterns cannot be shown as rules. Fix it in the “Edit as text” tab.")
        return
    names = ed.group_names(draft)
    st.caption("Each group is a query in exactly one rule; its tokens attend to every token of the listed groups.")
    for index, (queries, keys) in enumerate(pairs):
        options = list(dict.fromkeys([*names, *queries, *keys]))

        def label(name: str) -> str:
            return name if name in names else f"{name} (not a group)"

        with st.container(border=True):
            q_key, kv_key = f"rule{index}_q@{rev}", f"rule{index}_kv@{rev}"
            st.multiselect(
                f"Rule {index + 1}: queries",
                options,
                default=list(dict.fromkeys(queries)),
                format_func=label,
                key=q_key,
                on_change=on_rule,
                args=(index, "q", q_key),
            )
            st.multiselect(
                "attend to (keys/values)",
                options,
                default=list(dict.fromkeys(keys)),
                format_func=label,
                key=kv_key,
                on_change=on_rule,
                args=(index, "kv", kv_key),
            )
            st.button("Remove rule", key=f"rm_rule{index}@{rev}", on_click=on_remove_rule, args=(index,))
    st.button("Add rule", on_click=on_add_rule, key=f"add_rule@{rev}", help="Starts with the uncovered groups.")


def _anchor_rules(draft: dict[str, Any], rev: int) -> None:
    branches, suffix = ed.branches_of(draft)
    key = f"branches@{rev}"
    st.text_input(
        "Branches",
        value=", ".join(branches),
        key=key,
        on_change=on_branches,
        args=(key,),
        help="Comma-separated, e.g. surface, volume. A group belongs to the branch its name starts with.",
    )
    suffix_key = f"suffix@{rev}"
    st.text_input(
        "Anchor suffix",
        value=suffix,
        key=suffix_key,
        on_change=on_field,
        args=(("attention", "anchor_suffix"), suffix_key),
        help='The anchor group of branch "surface" is "surface" + suffix.',
    )
    left, right = st.columns(2)
    left.button("Branches from groups", on_click=on_infer_branches, key=f"infer@{rev}", width="stretch")
    right.button("Add branch groups", on_click=on_branch_groups, key=f"bgroups@{rev}", width="stretch")
    generated = ed.generated_rules(draft)
    if generated:
        st.caption("Generated rules (they follow the branches and group names):")
        st.dataframe(
            [{"queries": ", ".join(q), "attend to": ", ".join(kv)} for q, kv in generated],
            hide_index=True,
            width="stretch",
        )
