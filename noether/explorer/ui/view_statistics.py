"""The Statistics view: attention mass between groups, per-group entropy and top-k mass, most-attended keys."""

import streamlit as st

from noether.explorer import views
from noether.explorer.figures import mass_figure
from noether.explorer.ui.context import Context, compute_weights
from noether.explorer.ui.widgets import batch_picker, chart, ensure, guarded


@st.fragment
def render(ctx: Context) -> None:
    guarded("Statistics", _statistics_view, ctx)


def _statistics_view(ctx: Context) -> None:
    assert ctx.scenario is not None and ctx.mask is not None
    result = compute_weights(ctx)
    if result is None:
        return
    layout = ctx.mask.layout
    choices = views.head_options(ctx.scenario.attention.num_heads)
    ensure("v_stats_head", choices, "mean")
    left, right = st.columns([1, 3] if ctx.scenario.run.batch_size > 1 else [3, 1])
    with right:
        batch = batch_picker(ctx)
    head = left.selectbox("Head", choices, format_func=views.head_label, key="v_stats_head")
    matrix = views.mass_matrix(result, batch, head)
    query_names = [g.name for g in layout.query_groups]
    key_names = [g.name + (" (cached)" if g.cached else "") for g in layout.key_groups]
    chart(mass_figure(matrix, query_names, key_names, f"Attention mass between groups ({views.head_label(head)})"))
    st.caption(
        "Row = query group, column = key group: the mean share of a query's attention that lands in each key "
        "group (each row sums to 1)."
    )
    st.markdown("**Per query group**")
    st.dataframe(views.query_group_table(result, layout, batch, head), hide_index=True, width="stretch")
    st.caption(
        "Entropy of a query's weights in nats, averaged over the group; it reaches max entropy = log(keys "
        "attended) when attention is uniform. Top-k mass: the share of attention on a query's k largest keys."
    )
    st.markdown("**Most-attended key tokens**")
    st.dataframe(views.top_keys(result, layout, 20, batch, head), hide_index=True, width="stretch")
    st.caption("Attention received: the sum of the weights all queries give the key token.")
