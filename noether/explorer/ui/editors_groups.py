"""Sidebar editor of the token groups: a table plus reordering."""

from typing import Any

import streamlit as st

from noether.explorer import editing as ed
from noether.explorer import edits
from noether.explorer.problems import Problem
from noether.explorer.ui.state import TABLE_BASE, TABLE_REV, on_move, on_table, ss, table_seen_key
from noether.explorer.ui.widgets import problems_box


def groups_editor(draft: dict[str, Any], problems: list[Problem]) -> None:
    rows = ss[TABLE_BASE]
    if rows is None:
        st.warning("token_specs cannot be shown as a table. Fix it in the “Edit as text” tab.")
        problems_box(problems, draft)
        return
    key = f"groups@{ss[TABLE_REV]}"
    st.data_editor(
        ed.table_frame(rows),
        key=key,
        on_change=on_table,
        args=(key,),
        num_rows="dynamic",
        hide_index=True,
        width="stretch",
        column_config={
            ed.COLUMN_NAME: st.column_config.TextColumn(
                "name", help="Group name, e.g. surface_anchors (anchor kinds read the branch from it)."
            ),
            # Text, not a number column: a number cell silently rewrote what was typed (-5 became 5, 1e12 became
            # 112). What is typed is kept; validation says why it is not a size.
            ed.COLUMN_TOKENS: st.column_config.TextColumn(
                "tokens",
                help="Tokens of the group in the input, a whole number ≥ 0 (e.g. 2048 or 1e5); for a KV-cache group, "
                "the cached tokens to simulate. What you type is kept; if it is not a size, the problem says why.",
            ),
            ed.COLUMN_CACHED: st.column_config.CheckboxColumn(
                "KV cache",
                help="size null: not in the input; keys/values come from a cache an earlier pass filled, "
                "and the group has no queries.",
            ),
        },
    )
    for note in edits.table_notes(draft, rows, ss.get(table_seen_key(key)) or {}):
        st.warning(note)
    st.caption(
        "Row order is the order in the input, on both axes. Add a group in the empty last row; delete by "
        "selecting rows."
    )
    names = [r.name or "(unnamed)" for r in ed.group_rows(draft) or []]
    if len(names) > 1:
        move = f"move@{ss[TABLE_REV]}"
        pick, up, down = st.columns([3, 1, 1], vertical_alignment="bottom")
        pick.selectbox("Reorder", range(len(names)), format_func=names.__getitem__, key=move)
        up.button(
            ":material/arrow_upward:",
            key=f"up@{ss[TABLE_REV]}",
            on_click=on_move,
            args=(move, -1),
            help="Move earlier in the input",
        )
        down.button(
            ":material/arrow_downward:",
            key=f"down@{ss[TABLE_REV]}",
            on_click=on_move,
            args=(move, 1),
            help="Move later in the input",
        )
    problems_box(problems, draft)
