"""Rollout (Model mode): pick an output token by group and index and see, on the recorded geometry, which input
points it draws on through all recorded calls, with what rollout means in plain words."""

import streamlit as st

from noether.explorer.overview_figures import rollout_figure
from noether.explorer.problems import ExplorerError
from noether.explorer.rollout import EXPLANATION, attention_rollout, chosen_point, output_groups, rollout_points
from noether.explorer.ui.context import Context
from noether.explorer.ui.model_store import capture_store, progress_bar, sources_of
from noether.explorer.ui.state import problem_lines, ss
from noether.explorer.ui.widgets import chart, ensure


def render(ctx: Context) -> None:
    store = capture_store()
    if store is None:
        st.info("Open a capture in the sidebar to follow a token through the model.")
        return
    sources = sources_of(store)
    if not sources:
        st.warning("No recorded call of this capture can be recomputed, so there is nothing to follow.")
        return
    st.caption(EXPLANATION)
    sizes: dict[str, int] = {}
    for source in sources:
        for name in output_groups(source):
            sizes[name] = source.run.layout.by_name[name].size
    groups = list(sizes)
    ensure("ro_group", groups, groups[-1])
    left, right = st.columns([3, 2])
    group = left.selectbox("Output group", groups, key="ro_group", help="Its last call in the model is the start.")
    size = sizes[group]
    ss["ro_index"] = min(max(int(ss.get("ro_index", 0)), 0), size - 1)
    index = int(right.number_input(f"Token index (0 – {size - 1:,})", min_value=0, max_value=size - 1, key="ro_index"))
    key = ("rollout", group, index)
    if key not in store:
        bar, report = progress_bar(f"Following {group}:{index} back through the calls…")
        try:
            store[key] = attention_rollout(sources, group, index, positions=store["positions"], progress=report)
        except ExplorerError as exc:
            st.error(problem_lines(exc.problems))
            return
        finally:
            bar.empty()
    result = store[key]
    xyz, weights, labels, notes = rollout_points(result, store["positions"])
    title = f"Rollout of {group}:{index} through {len(result.calls)} calls"
    if len(xyz):
        chart(rollout_figure(xyz, weights, labels, title, chosen_point(store["positions"], group, index)), key="ro_3d")
    else:
        st.info("The capture has no positions for the groups this token draws on; the table lists the weights.")
    st.dataframe(
        [
            {
                "group": p.group,
                "tokens at": p.where,
                "weight": round(float(p.weights.sum()), 6),
                "tokens": len(p.weights),
            }
            for p in result.parts
        ],
        hide_index=True,
        width="stretch",
    )
    st.caption(f"Starts at the output of {result.start}; the weights sum to {result.total:.6f}.")
    for note in result.notes + notes:
        st.caption(f"Note: {note}")
