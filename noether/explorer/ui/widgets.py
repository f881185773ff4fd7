"""Small widget helpers shared by the sidebar and the views: charts, pickers, the problems box, guarded rendering."""

import logging
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from noether.explorer import editing as ed
from noether.explorer import views
from noether.explorer.problems import ExplorerError, Problem
from noether.explorer.ui.context import Context
from noether.explorer.ui.state import problem_lines, ss

log = logging.getLogger("noether.explorer.app")
PLOTLY_CONFIG = {"displaylogo": False}


def problems_box(problems: Sequence[Problem], draft: dict[str, Any]) -> None:
    """Problems next to the editor they concern: errors in red, warnings in yellow."""
    found = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity != "error"]
    if found:
        st.error(problem_lines(found, draft))
    if warnings:
        st.warning(problem_lines(warnings, draft))


def ensure(key: str, options: Sequence[Any], default: Any) -> None:
    """Reset a persisted view setting that the current scenario does not offer (e.g. head 5 of 3)."""
    if key not in ss or ss[key] not in options:
        ss[key] = default


def chart(fig: Any, key: str | None = None) -> None:
    st.plotly_chart(fig, config=PLOTLY_CONFIG, key=key)


def selectable_chart(fig: Any, key: str, on_select: Callable[[], None], mode: str) -> None:
    """A chart whose selection (``mode``: "points" or "box") calls ``on_select`` before the rerun; the selection
    itself is in ``ss[key]`` (see :mod:`noether.explorer.picking` for its shape).

    A callback rather than reading the returned selection: Streamlit keeps a selection until the figure changes,
    so reading it on every run would undo what the user typed after the click.
    """
    st.plotly_chart(fig, config=PLOTLY_CONFIG, key=key, on_select=on_select, selection_mode=mode)


def batch_picker(ctx: Context, key: str = "v_batch") -> int:
    assert ctx.scenario is not None
    size = ctx.scenario.run.batch_size
    if size == 1:
        return 0
    ensure(key, list(range(size)), 0)
    return int(st.selectbox("Batch element", list(range(size)), key=key))


def query_picker(ctx: Context) -> int | None:
    """Pick a query token by group and index; returns its query-axis row (the same choice in every view)."""
    assert ctx.mask is not None
    layout = ctx.mask.layout
    groups = [g.name for g in layout.query_groups if g.size > 0]
    if not groups:
        st.info("No input group has tokens, so there is no query token to pick.")
        return None
    ensure("v_qgroup", groups, groups[0])
    left, right = st.columns([3, 2])
    group = left.selectbox("Query group", groups, key="v_qgroup")
    size = layout.by_name[group].size
    ss["v_qindex"] = min(max(int(ss.get("v_qindex", 0)), 0), size - 1)
    index = right.number_input(f"Token index (0 – {size - 1:,})", min_value=0, max_value=size - 1, key="v_qindex")
    return views.query_row(layout, group, int(index))


def guarded(name: str, render: Callable[[Context], None], ctx: Context) -> None:
    """Run one view; engine refusals become a plain message and nothing ever shows a traceback."""
    try:
        render(ctx)
    except ExplorerError as exc:
        st.error(problem_lines(exc.problems, ctx.draft))
    except Exception as exc:
        log.exception("the %s view failed", name)
        st.error(
            f"The {name} view ran into an unexpected error ({type(exc).__name__}: {ed.escape_markdown(str(exc))}). "
            "The scenario is unchanged; the details are in the server log."
        )
