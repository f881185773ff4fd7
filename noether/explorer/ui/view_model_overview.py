"""Model overview (Model mode): every recorded call in order as a table and a diagram, the depth x (query group →
key group) attention mass with a head picker, and entropy / top-k mass per query group over depth."""

import streamlit as st

from noether.explorer import views
from noether.explorer.model_overview import ModelOverview, call_table, model_overview
from noether.explorer.overview_figures import calls_diagram, depth_lines_figure, mass_depth_figure
from noether.explorer.ui.context import Context
from noether.explorer.ui.model_store import capture_store, progress_bar, sources_of
from noether.explorer.ui.widgets import chart, ensure


def render(ctx: Context) -> None:
    store = capture_store()
    if store is None:
        st.info("Open a capture in the sidebar to see the whole model at a glance.")
        return
    sources = sources_of(store)
    for note in store["notes"]:
        st.caption(f"Note: {note}")
    if not sources:
        st.warning("No recorded call of this capture can be recomputed, so there is nothing to summarise.")
        return
    if "overview" not in store:
        bar, report = progress_bar(f"Attention statistics of {len(sources)} calls…")
        store["overview"] = model_overview(sources, progress=report)
        bar.empty()
    _draw(store["overview"])


def _draw(overview: ModelOverview) -> None:
    st.markdown(f"**{len(overview.calls)} calls in model order**")
    st.dataframe(call_table(overview), hide_index=True, width="stretch")
    chart(calls_diagram(overview), key="ov_diagram")
    choices = views.head_options(overview.max_heads)
    ensure("ov_head", choices, "mean")
    head = st.selectbox(
        "Head",
        choices,
        format_func=views.head_label,
        key="ov_head",
        help="Head-mean, or one head (calls with fewer heads are left blank).",
    )
    label = views.head_label(head)
    chart(mass_depth_figure(overview.mass_table(head), f"Attention mass by depth ({label})"), key="ov_mass")
    st.caption(
        "Row = call in model order, column = query group → key group: the mean share of a query's attention that "
        "lands on the key group in that call. Blank: the call does not attend that pair."
    )
    left, right = st.columns(2)
    with left:
        chart(
            depth_lines_figure(overview.row_stat_table("entropy", head), f"Mean entropy ({label})", "nats"),
            key="ov_entropy",
        )
    with right:
        title = f"Top-{overview.top_k} mass ({label})"
        chart(depth_lines_figure(overview.row_stat_table("top_k_mass", head), title, "mass"), key="ov_topk")
    st.caption(
        "Per query group over depth: entropy of a query's weights (low = focused) and the share of attention on "
        f"its {overview.top_k} largest keys."
    )
    for note in overview.notes:
        st.caption(f"Note: {note}")
