"""The app's page: page config, sidebar, the summary and messages, and the tabs dispatched to the views."""

import streamlit as st

from noether.explorer import views
from noether.explorer.scenario import validate_scenario
from noether.explorer.ui.context import Context, prepare
from noether.explorer.ui.registry import TABS, VIEWS
from noether.explorer.ui.sidebar import render_sidebar
from noether.explorer.ui.state import ACTIVE, DRAFT, FLASH, PERSISTENT, VIEW, init_state, problem_lines, ss
from noether.explorer.ui.widgets import guarded


def _page(ctx: Context) -> None:
    st.title("Noether attention explorer")
    for level, text in ss.get(FLASH, []):
        getattr(st, level)(text)
    ss[FLASH] = []
    if ctx.scenario is None:
        st.info("No valid scenario yet: add token groups and rules in the sidebar, or open the “Edit as text” tab.")
    else:
        assert ctx.mask is not None
        st.caption(views.scenario_summary(ctx.mask.layout, ctx.mask.groups))
        if not ctx.edited_is_valid:
            st.warning(
                "The edited scenario has problems (listed in the sidebar next to the settings). The views show the "
                "last valid scenario; running the edited one is paused until it is valid."
            )
        if ctx.run is not None:
            for note in ctx.run.notes:
                if note == ctx.run.choice.note:
                    st.warning(f"Device: {note}")
                else:
                    st.caption(f"Note: {note}")
        elif ctx.run_problems:
            st.error("The scenario cannot be prepared for running:\n" + problem_lines(ctx.run_problems, ctx.draft))
    tabs = st.tabs(TABS, key=VIEW, on_change="rerun")
    for tab, view in zip(tabs, VIEWS, strict=True):
        if not tab.open:
            continue
        with tab:
            if ctx.scenario is None and view.title != "Edit as text":
                st.info("Nothing to show until the scenario is valid.")
            elif view.fragment:
                view.render(ctx)
            else:
                guarded(view.title, view.render, ctx)


def main() -> None:
    """One run of the app's script: restore the session, validate the draft, draw the sidebar and the page."""
    st.set_page_config(
        page_title="Noether attention explorer", page_icon=":material/hub:", layout="wide", initial_sidebar_state=460
    )
    init_state()
    for key in PERSISTENT:
        if key in ss:
            ss[key] = ss[key]
    draft = ss[DRAFT]
    report = validate_scenario(draft)
    if report.ok:
        ss[ACTIVE] = report.scenario
    with st.sidebar:
        render_sidebar(draft, report)
    _page(prepare(draft, report))
