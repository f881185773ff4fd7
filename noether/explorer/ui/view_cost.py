"""The Cost view: the analytic cost table and measured backends."""

import streamlit as st

from noether.explorer import compare, views
from noether.explorer.figures import backend_figure
from noether.explorer.ui.context import Context, needs_run, progress
from noether.explorer.ui.state import REQUESTED, on_request, ss
from noether.explorer.ui.widgets import chart


def render(ctx: Context) -> None:
    assert ctx.scenario is not None
    run = ctx.run
    cost = run.cost() if run is not None else compare.scenario_cost(ctx.scenario)
    st.dataframe(views.cost_table(cost), hide_index=True, width="stretch")
    st.caption(
        "Analytic, from the groups alone. The per-pattern path (MixedAttention) computes only the attended blocks; "
        "one dense masked SDPA call would need the full (queries x keys) mask and compute every pair."
    )
    st.subheader("Measured backends")
    if needs_run(ctx) is None or run is None:
        return
    token = f"backends:{ctx.run_key}"
    if token not in ss[REQUESTED]:
        st.caption(
            f"Times per-pattern MixedAttention, one dense masked SDPA call and FlexAttention on {run.device} and "
            "checks that their outputs agree. Takes seconds; FlexAttention compiles its kernel the first time."
        )
        st.button("Measure backends", on_click=on_request, args=(token,), type="primary")
        return
    with st.status("Measuring backends; FlexAttention is compiling its kernel the first time…", expanded=True) as box:
        with progress("Timing…") as report:
            timings = run.backends(progress=report)
        box.update(label="Backends measured", state="complete", expanded=False)
    st.dataframe(views.backend_table(timings), hide_index=True, width="stretch")
    chart(backend_figure(timings))
    st.caption("max |diff|: the largest difference of a backend's attention output from per-pattern MixedAttention.")
