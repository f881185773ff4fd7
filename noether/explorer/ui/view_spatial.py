"""The Spatial view: token positions coloured by group or by attention."""

from typing import Any

import streamlit as st

from noether.explorer import editing as ed
from noether.explorer import views
from noether.explorer.figures import point_cloud_figure
from noether.explorer.inputs import short_of_points
from noether.explorer.ui.context import Context, compute_weights, needs_run
from noether.explorer.ui.state import CLOUD, ss
from noether.explorer.ui.widgets import batch_picker, chart, ensure, guarded, query_picker


@st.fragment
def render(ctx: Context) -> None:
    guarded("Spatial", _spatial_view, ctx)


_COLOUR_MODES = {
    "group": "group",
    "query": "attention from a query token",
    "received": "attention each key receives",
}


def _spatial_view(ctx: Context) -> None:
    assert ctx.scenario is not None and ctx.mask is not None
    run = needs_run(ctx)
    if run is None:
        return
    layout = ctx.mask.layout
    if run.captured is not None:
        st.caption("Positions recorded with the capture (groups it has none for are placed at random; see the notes).")
    elif ctx.scenario.run.inputs == "random":
        st.info(
            "Inputs are random: token positions are uniform in a box. Set Run settings → Inputs to point_cloud to "
            "place the tokens on the sample car or on your uploaded point cloud."
        )
    elif ss.get(CLOUD):
        cloud = ss[CLOUD]
        st.caption(f"Positions from your point cloud {ed.escape_markdown(cloud['name'])}.")
        short = short_of_points(layout, cloud["arrays"])
        if short:
            st.warning(
                f"Your point cloud has fewer points than {', '.join(short)} need, so points of those groups are "
                "reused (several tokens share a position). Upload more points or use smaller groups."
            )
    ensure("v_colour_by", list(_COLOUR_MODES), "group")
    left, middle, right = st.columns([2, 1, 1], vertical_alignment="bottom")
    mode = left.radio(
        "Colour tokens by",
        list(_COLOUR_MODES),
        format_func=_COLOUR_MODES.__getitem__,
        key="v_colour_by",
        horizontal=True,
    )
    with middle:
        batch = batch_picker(ctx)
    head: Any = "mean"
    if mode != "group":
        choices = views.head_options(ctx.scenario.attention.num_heads)
        ensure("v_spatial_head", choices, "mean")
        head = right.selectbox("Head", choices, format_func=views.head_label, key="v_spatial_head")
    positions = views.token_positions(run, batch)
    seed = ctx.scenario.run.seed
    if mode == "group":
        fig = point_cloud_figure(positions, "Token positions by group", labels=views.token_labels(layout), seed=seed)
        caption = "Every token of every group (KV-cache groups included) at its position."
    elif mode == "query":
        row = query_picker(ctx)
        if row is None:
            return
        group, index = layout.query_group_at(row)
        values, _ = views.on_tokens(layout, views.row_weights(run, row, batch, head))
        attended, _ = views.on_tokens(layout, views.attended_keys(layout, row))
        fig = point_cloud_figure(
            positions,
            f"Attention from token {index:,} of {group.name}",
            values=values,
            muted=~attended,
            highlight=views.query_token_index(layout, row),
            seed=seed,
        )
        caption = (
            "Exact weights the selected query token (diamond) gives the key tokens its rules let it attend; "
            "the other keys are grey."
        )
    else:
        result = compute_weights(ctx)
        if result is None:
            return
        values, keyless = views.on_tokens(layout, views.received_weights(result, batch, head))
        fig = point_cloud_figure(
            positions, "Attention received by each key token", values=values, muted=keyless, seed=seed
        )
        caption = "Sum of the weights all query tokens give each key token."
    chart(fig)
    st.caption(caption)
