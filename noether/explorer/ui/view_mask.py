"""The Mask view: the group-level mask and the pooled token-level mask."""

import streamlit as st

from noether.explorer import views
from noether.explorer.figures import group_mask_figure, mask_figure
from noether.explorer.png import map_png
from noether.explorer.ui.context import Context
from noether.explorer.ui.widgets import chart


def render(ctx: Context) -> None:
    view = ctx.mask
    assert view is not None
    chart(group_mask_figure(view.groups))
    st.caption(
        "Each block is a (query group, key group) pair: coloured where the rules let the queries attend, with the "
        "attended token pairs. KV-cache groups appear only as keys: they have no queries."
    )
    chart(mask_figure(view.layout, view.pooled, view.rows, view.cols))
    st.caption(
        f"Token-level mask on {view.rows.bins:,} x {view.cols.bins:,} cells ({views.grid_note(view.rows, view.cols)}). "
        "A cell shows the share of its (query, key) pairs that are attended: 1 = all, 0 = none, in between where a "
        "cell straddles a group boundary or padding. White lines are group boundaries."
    )
    st.download_button(
        "Download the mask as PNG",
        data=lambda: map_png(views.mask_map(view.layout, view.pooled, view.rows, view.cols)),
        file_name="attention_mask.png",
        mime="image/png",
        on_click="ignore",
    )
    with st.expander("Attended blocks as a table"):
        st.dataframe(views.group_mask_table(view.groups), hide_index=True, width="stretch")
