"""Rollout (Model mode): pick an output token by group and index and see, on the recorded geometry, which input
points it draws on through all recorded calls, with what rollout means in plain words."""

from collections.abc import Mapping
from typing import Any

import streamlit as st

from noether.explorer.figures import groups_pick_figure
from noether.explorer.overview_figures import rollout_figure
from noether.explorer.picking import PLANES, PickLayout, picked_token
from noether.explorer.problems import ExplorerError
from noether.explorer.rollout import (
    EXPLANATION,
    attention_rollout,
    chosen_point,
    output_groups,
    pickable_points,
    rollout_points,
)
from noether.explorer.ui.context import Context
from noether.explorer.ui.model_store import capture_store, progress_bar, sources_of
from noether.explorer.ui.state import problem_lines, ss
from noether.explorer.ui.widgets import chart, ensure, selectable_chart

GROUP, INDEX, PLANE, PICKER = "ro_group", "ro_index", "ro_plane", "ro_pick"


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
    ensure(GROUP, groups, groups[-1])
    ensure(PLANE, list(PLANES), next(iter(PLANES)))
    left, middle, right = st.columns([3, 2, 3], vertical_alignment="bottom")
    group = left.selectbox("Output group", groups, key=GROUP, help="Its last call in the model is the start.")
    size = sizes[group]
    ss[INDEX] = min(max(int(ss.get(INDEX, 0)), 0), size - 1)
    index = int(middle.number_input(f"Token index (0 – {size - 1:,})", min_value=0, max_value=size - 1, key=INDEX))
    right.radio("Pick on the view", list(PLANES), key=PLANE, horizontal=True, help="Which two axes the picker shows.")
    starts = store["output_positions"]  # each group's tokens where a rollout of it starts
    _picker(starts, sizes, (group, index), PLANES[ss[PLANE]])
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
    xyz, weights, labels, notes = rollout_points(result, store["positions"], by_call=store["call_positions"])
    title = f"Rollout of {group}:{index} through {len(result.calls)} calls"
    if len(xyz):
        chart(rollout_figure(xyz, weights, labels, title, chosen_point(starts, group, index)), key="ro_3d")
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


def _picker(
    positions: Mapping[str, Any], sizes: dict[str, int], chosen: tuple[str, int], plane: tuple[int, int]
) -> None:
    """The candidate output tokens in 2-D: a click on one sets the group and index above (3-D points cannot be
    selected in plotly, so the picking happens on this projection)."""
    points, notes = pickable_points(positions, sizes)
    if not points:
        st.caption("No output group has recorded positions, so tokens are picked by group and index only.")
        return
    # Each group in the colour of its place among the output groups, as the Spatial view's picker colours its own.
    layout, fig = groups_pick_figure(points, list(sizes), plane, chosen, "Click a token to follow it back")
    selectable_chart(fig, PICKER, lambda: _on_pick(layout), "points")
    for note in notes:
        st.caption(f"Note: {note}")


def _on_pick(layout: PickLayout) -> None:
    """Runs before the rerun that a click causes: the clicked token becomes the group and index (nothing else
    changes, and a later edit of the index box is not undone by the old click)."""
    token = picked_token(ss.get(PICKER), layout)
    if token is not None:
        ss[GROUP], ss[INDEX] = token
