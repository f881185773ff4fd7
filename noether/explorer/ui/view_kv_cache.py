"""The KV cache view: the anchor pass and the query pass against one full pass."""

import streamlit as st

from noether.explorer.guard import format_duration
from noether.explorer.ui.context import Context, gate, needs_run, progress
from noether.explorer.ui.state import on_load_example


def render(ctx: Context) -> None:
    assert ctx.mask is not None
    if not ctx.mask.layout.has_cache and ctx.from_capture:
        # Model mode has no groups table and no examples: say where the recorded calls with a cache are.
        st.info(
            "This recorded call reads no KV cache. The calls that read one are marked “(KV cache)” in the Model "
            "overview's table of calls; pick one in the sidebar's layer list to compare its two passes with one pass."
        )
        return
    if not ctx.mask.layout.has_cache:
        st.info(
            "This scenario has no KV-cache group. A group with size null (tick “from KV cache” in the groups table) "
            "is not part of the input: an earlier anchor pass computes its keys and values, and the query pass "
            "reads them from the cache. Only the input groups get queries."
        )
        st.button("Load the KV-cache example", on_click=on_load_example, args=("kv_cache",))
        return
    run = needs_run(ctx)
    if run is None or not gate(ctx, "kv", run.forward_estimate(), "Run both passes"):
        return
    with progress("Running the anchor pass, the query pass and one full pass…") as report:
        check = run.kv_cache_check(progress=report)
    assert check is not None
    first, second, single = st.columns(3)
    with first, st.container(border=True):
        st.markdown("**Pass 1 — anchor pass**")
        recorded = run.captured is not None and run.captured.kv_cache is not None
        # A recorded cache was not computed here: a time of 0 ms would claim a pass that never ran.
        st.metric("time", "recorded" if recorded else format_duration(check.anchor_pass_seconds))
        st.caption(
            f"The cache recorded with the layer's call: {', '.join(check.cached_groups)}."
            if run.captured is not None
            else "Every group is input, the cached ones with their simulated tokens; the module returns their keys "
            f"and values as the cache: {', '.join(check.cached_groups)}."
        )
    with second, st.container(border=True):
        st.markdown("**Pass 2 — query pass**")
        st.metric("time", format_duration(check.query_pass_seconds))
        st.caption(f"Only {', '.join(check.query_groups)} are input; their queries read the cached keys and values.")
    with single, st.container(border=True):
        st.markdown("**Reference — one pass**")
        st.metric("time", format_duration(check.single_pass_seconds))
        st.caption("All groups in one pass, no cache; its outputs for the query groups are the reference.")
    if check.equal:
        st.success(
            f"Equal: the two-pass outputs match the single pass (max |difference| {check.max_abs_diff:.2e}, "
            f"tolerance {check.tolerance:.0e})."
        )
    else:
        st.error(
            f"Different: the two-pass outputs differ from the single pass by up to {check.max_abs_diff:.2e} "
            f"(tolerance {check.tolerance:.0e})."
        )
    for note in check.notes:
        st.caption(note)
