"""The Compare view: the current scenario's mask and cost against an example or a pasted scenario."""

import streamlit as st

from noether.explorer import compare, views
from noether.explorer import editing as ed
from noether.explorer.figures import group_mask_figure, heatmap
from noether.explorer.io import load_scenario_bytes
from noether.explorer.presets import PRESETS
from noether.explorer.ui.context import DISPLAY_BINS, Context, cached_mask_view, cached_preset
from noether.explorer.ui.state import PRESET_TITLES, problem_lines, ss
from noether.explorer.ui.widgets import chart, ensure, guarded


@st.fragment
def render(ctx: Context) -> None:
    guarded("Compare", _compare_view, ctx)


def _compare_view(ctx: Context) -> None:
    assert ctx.scenario is not None and ctx.mask is not None
    ensure("v_cmp_source", ["example", "text"], "example")
    source = st.radio(
        "Compare the current scenario with",
        ["example", "text"],
        key="v_cmp_source",
        horizontal=True,
        format_func={"example": "an example", "text": "pasted YAML or JSON"}.__getitem__,
    )
    if source == "example":
        ensure("v_cmp_preset", [p.key for p in PRESETS], "full_self_attention")
        key = st.selectbox(
            "Example", [p.key for p in PRESETS], format_func=PRESET_TITLES.__getitem__, key="v_cmp_preset"
        )
        other = cached_preset(key)
    else:
        ss.setdefault("v_cmp_text", "")
        text = st.text_area(
            "Scenario to compare with", key="v_cmp_text", height=220, placeholder="attention: ...\ntoken_specs: ..."
        )
        if not text.strip():
            st.info("Paste a scenario (YAML or JSON), e.g. an export of another design, then press Ctrl+Enter.")
            return
        report = load_scenario_bytes(text.encode("utf-8", "surrogatepass"), name="comparison")
        if report.scenario is None:
            st.error("The pasted scenario is not valid:\n" + problem_lines(report.problems))
            return
        other = report.scenario
    other_view = cached_mask_view(ed.scenario_key(other), other)
    left, right = st.columns(2)
    with left:
        st.markdown("**Current**")
        chart(group_mask_figure(ctx.mask.groups, half_width=True), key="cmp_current")
    with right:
        st.markdown("**Other**")
        chart(group_mask_figure(other_view.groups, half_width=True), key="cmp_other")
    difference = compare.mask_difference(ctx.mask.layout, other_view.layout, DISPLAY_BINS)
    if difference.values is None or difference.rows is None or difference.cols is None:
        st.info(difference.message)
    else:
        chart(
            heatmap(
                difference.values,
                views.query_axis(ctx.mask.layout, difference.rows),
                views.key_axis(ctx.mask.layout, difference.cols),
                f"Mask difference: other − current ({views.grid_note(difference.rows, difference.cols)})",
                colorscale="RdBu",
                zmin=-1,
                zmax=1,
                colorbar_title="other − current",
            )
        )
        st.caption(difference.message + " Axes are labelled with the current scenario's groups.")
    st.markdown("**Cost**")
    st.dataframe(
        compare.cost_difference(compare.scenario_cost(ctx.scenario), compare.scenario_cost(other)),
        hide_index=True,
        width="stretch",
    )
