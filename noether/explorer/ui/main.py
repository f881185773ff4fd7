"""The app's page: page config, sidebar, the summary and messages, and the tabs dispatched to the views."""

import streamlit as st

from noether.explorer import views
from noether.explorer.scenario import validate_scenario
from noether.explorer.ui.context import Context, exact_panel, prepare
from noether.explorer.ui.model_mode import (
    MODE,
    MODEL,
    MODES,
    init_mode,
    prepare_model,
    render_edit_as_text,
    render_model_sidebar,
)
from noether.explorer.ui.registry import MODEL_TABS, MODEL_VIEWS, TABS, VIEWS
from noether.explorer.ui.sidebar import render_sidebar
from noether.explorer.ui.state import ACTIVE, DRAFT, FLASH, PERSISTENT, VIEW, init_state, problem_lines, ss
from noether.explorer.ui.widgets import guarded


def _page(ctx: Context, model: bool) -> None:
    st.title("Noether attention explorer")
    for level, text in ss.get(FLASH, []):
        getattr(st, level)(text)
    ss[FLASH] = []
    if ctx.scenario is None and model:
        if ctx.run_problems:
            st.warning("This layer cannot be explored:\n" + problem_lines(ctx.run_problems))
        else:
            st.info("Model mode: open a capture in the sidebar (upload one, or the demo), then pick a layer.")
    elif ctx.scenario is None:
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
    if not model and ss.get(VIEW) in MODEL_TABS:
        ss[VIEW] = TABS[0]
    # Filled after the views ran: a view asking for weights is what starts the background exact pass.
    exact_slot = st.container()
    tabs = st.tabs((*TABS, *MODEL_TABS) if model else TABS, key=VIEW, on_change="rerun")
    for tab, view in zip(tabs[len(TABS) :], MODEL_VIEWS if model else (), strict=True):
        if tab.open:
            with tab:
                guarded(view.title, view.render, ctx)
    for tab, view in zip(tabs[: len(TABS)], VIEWS, strict=True):
        if not tab.open:
            continue
        with tab:
            if model and view.title == "Edit as text":
                render_edit_as_text()
            elif ctx.scenario is None and view.title != "Edit as text":
                st.info(
                    "Pick an explorable layer to see this view."
                    if model
                    else "Nothing to show until the scenario is valid."
                )
            elif view.fragment:
                view.render(ctx)
            else:
                guarded(view.title, view.render, ctx)
    if ctx.run is not None:
        with exact_slot:
            exact_panel(ctx.run_key)


def main() -> None:
    """One run of the app's script: restore the session, validate the draft, draw the sidebar and the page."""
    st.set_page_config(
        page_title="Noether attention explorer", page_icon=":material/hub:", layout="wide", initial_sidebar_state=460
    )
    init_state()
    init_mode()
    for key in PERSISTENT:
        if key in ss:
            ss[key] = ss[key]
    draft = ss[DRAFT]
    report = validate_scenario(draft)
    if report.ok:
        ss[ACTIVE] = report.scenario
    with st.sidebar:
        st.radio("Mode", MODES, key=MODE, horizontal=True, help="Single layer: design a layer. Model: open a capture.")
        model = ss[MODE] == MODEL
        if model:
            render_model_sidebar()
        else:
            render_sidebar(draft, report)
    _page(prepare_model() if model else prepare(draft, report), model)
