"""The Edit as text view: the whole scenario as YAML or JSON."""

import streamlit as st

from noether.explorer import editing as ed
from noether.explorer.ui.context import Context
from noether.explorer.ui.state import (
    TEXT,
    TEXT_FORMAT,
    TEXT_NOTE,
    TEXT_PROBLEMS,
    TEXT_SHOWN_FORMAT,
    on_rewrite_text,
    on_text,
    on_text_format,
    problem_lines,
    ss,
)
from noether.explorer.ui.widgets import problems_box


def render(ctx: Context) -> None:
    st.caption(
        "The whole scenario as text. Edit it and press Ctrl+Enter (or “Apply”): the editors and views follow. "
        "Text that cannot be read stays here with the reason, and the scenario keeps its last readable state."
    )
    ss.setdefault(TEXT_FORMAT, "yaml")
    st.radio(
        "Format",
        ["yaml", "json"],
        key=TEXT_FORMAT,
        horizontal=True,
        on_change=on_text_format,
        format_func=str.upper,
        help="Switching rewrites the text in the other format. Text with unapplied changes is kept as it is: apply "
        "or discard it first.",
    )
    if TEXT not in ss:
        ss[TEXT] = ed.draft_to_text(ctx.draft, ss[TEXT_FORMAT])
        ss[TEXT_SHOWN_FORMAT] = ss[TEXT_FORMAT]
    if ss.get(TEXT_NOTE):
        st.warning(ss[TEXT_NOTE])
    st.text_area("Scenario text", key=TEXT, height=520, on_change=on_text)
    left, right, _ = st.columns([1, 2, 3])
    left.button("Apply", on_click=on_text, type="primary", width="stretch")
    right.button(
        "Rewrite from the scenario",
        on_click=on_rewrite_text,
        width="stretch",
        help="Discard unapplied text and show the current scenario again.",
    )
    if ss.get(TEXT_PROBLEMS):
        st.error("The text could not be read, so the scenario was not changed:\n" + problem_lines(ss[TEXT_PROBLEMS]))
    elif ctx.report.problems:
        problems_box(ctx.report.problems, ctx.draft)
    else:
        st.success("The text is a valid scenario.")
