"""The Weights view: pooled attention-weight maps per head and the exact weights of one query token."""

import streamlit as st

from noether.explorer import views
from noether.explorer.figures import add_box_layer, heatmap, map_figure, mark_query_row, row_figure
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.picking import window_of_box
from noether.explorer.png import map_png
from noether.explorer.problems import ExplorerError
from noether.explorer.ui.context import DISPLAY_BINS, Context, compute_weights
from noether.explorer.ui.state import problem_lines, ss
from noether.explorer.ui.widgets import batch_picker, chart, ensure, guarded, query_picker, selectable_chart
from noether.explorer.window import Window, check_window, parse_window

WINDOW, MAP, ZOOM_MAP = "z_window", "w_map", "zoom_map"
Q0, Q1, K0, K1 = "z_q0", "z_q1", "z_k0", "z_k1"

# Pixels per axis of the small maps when all heads are shown side by side.
GRID_BINS = 200
MAX_GRID_HEADS = 8


@st.fragment
def render(ctx: Context) -> None:
    guarded("Weights", _weights_view, ctx)


def _weights_view(ctx: Context) -> None:
    assert ctx.scenario is not None and ctx.mask is not None
    result = compute_weights(ctx)
    if result is None:
        return
    layout, heads = ctx.mask.layout, ctx.scenario.attention.num_heads
    head_choices = views.head_options(heads, with_all=True)
    ensure("v_head", head_choices, "mean")
    ensure("v_pooling", ["mean", "max"], "mean")
    ensure("v_colour", ["linear", "log"], "linear")
    ss.setdefault("v_shared", True)
    has_batch = ctx.scenario.run.batch_size > 1
    cols = st.columns([1, 1.4, 1, 1, 1.4] if has_batch else [1.4, 1, 1, 1.4], vertical_alignment="bottom")
    if has_batch:
        with cols[0]:
            batch = batch_picker(ctx)
        cols = cols[1:]
    else:
        batch = 0
    head = cols[0].selectbox("Head", head_choices, format_func=views.head_label, key="v_head")
    pooling = cols[1].radio(
        "Pooling",
        ["mean", "max"],
        key="v_pooling",
        horizontal=True,
        help="mean: average weight of the pairs in a cell. max: the largest one (finds peaks).",
    )
    log_colour = cols[2].radio("Colour", ["linear", "log"], key="v_colour", horizontal=True) == "log"
    # A short label: the column cut "Same colour scale for all heads" to "Same colour scale for all…".
    shared = cols[3].checkbox(
        "Shared scale",
        key="v_shared",
        help="The same colour scale for every head and the head mean, so that their colours compare.",
    )
    zrange = views.head_colour_range(result, batch, pooling, log=log_colour) if shared else None
    zmin, zmax = zrange if zrange else (None, None)
    row = None
    if head == views.ALL_HEADS:
        shown = list(range(min(heads, MAX_GRID_HEADS)))
        if heads > MAX_GRID_HEADS:
            st.caption(f"Showing the first {MAX_GRID_HEADS} of {heads} heads; pick a head for the others.")
        grid = st.columns(2)
        for head_index, (values, rows, columns) in zip(
            shown, views.weight_maps(result, GRID_BINS, batch, shown, pooling), strict=True
        ):
            fig = heatmap(
                values,
                views.query_axis(layout, rows),
                views.key_axis(layout, columns),
                f"head {head_index} ({views.grid_note(rows, columns)})",
                zmin=zmin,
                zmax=zmax,
                log=log_colour,
                colorbar_title="weight",
            )
            fig.update_layout(height=460)
            with grid[head_index % 2]:
                chart(fig)
    else:
        spec = views.weights_map(result, layout, DISPLAY_BINS, batch, head, pooling, log=log_colour, zrange=zrange)
        st.markdown("**Query token** (its row is outlined on the map; its exact weights are below)")
        row = query_picker(ctx)
        fig = add_box_layer(map_figure(spec), spec.values.shape)
        if row is not None:
            mark_query_row(fig, spec.grid[0].bin_of(row), spec.values.shape[1])
        selectable_chart(fig, MAP, lambda: _on_box(spec.grid, MAP), "box")
        st.caption(
            "Drag a box on the map to compute that window exactly (below); the chart's zoom tool magnifies instead."
        )
        st.download_button(
            "Download this map as PNG",
            data=lambda: map_png(spec),
            file_name="attention_weights.png",
            mime="image/png",
            on_click="ignore",
        )
        _zoom(ctx, batch, head, pooling, log_colour)
    st.caption(
        "Softmax weights pooled onto the grid: a cell shows the mean (or max) weight of the query-key pairs it "
        "covers, 0 where the rules block attention. Pooled values are averages, not sums: a query's row of exact "
        "weights sums to 1. The colour scale is "
        + ("shared by all heads and the head mean." if shared else "fitted to this map.")
    )
    if row is not None:
        run = ctx.run
        assert run is not None
        group, index = layout.query_group_at(row)
        values = views.row_weights(run, row, batch, head if head != views.ALL_HEADS else "mean")
        title = f"Exact weights of token {index:,} of {group.name} ({views.head_label(head)})"
        chart(row_figure(values, layout, title))
        st.caption(
            f"Exact, not pooled: query row {row:,} against all {layout.n_keys:,} keys; 0 where the rules block "
            "attention."
        )


def _zoom(ctx: Context, batch: int, head: views.HeadChoice, pooling: views.Pooling, log_colour: bool) -> None:
    """Exact weights of typed query/key token ranges, one cell per token pair when the window fits the map."""
    assert ctx.mask is not None and ctx.run is not None
    layout = ctx.mask.layout
    with st.expander("Zoom to tokens: exact weights of a window", expanded=WINDOW in ss):
        _window_inputs(layout)
        cols = st.columns(5, vertical_alignment="bottom")
        q0 = cols[0].number_input("First query token", 0, layout.n_queries - 1, key=Q0)
        q1 = cols[1].number_input("End query token (excluded)", 1, layout.n_queries, key=Q1)
        k0 = cols[2].number_input("First key token", 0, layout.n_keys - 1, key=K0)
        k1 = cols[3].number_input("End key token (excluded)", 1, layout.n_keys, key=K1)
        if cols[4].button("Compute window", key="z_go"):
            ss[WINDOW] = str(Window(int(q0), int(q1), int(k0), int(k1)))
        if WINDOW not in ss:
            st.caption("Rows are whole softmax rows; only the window's keys are kept, so this is exact at any size.")
            return
        try:
            window = parse_window(ss[WINDOW], "zoom window")
            check_window(window, layout, "zoom window")
            result = ctx.run.window(window, DISPLAY_BINS)
        except ExplorerError as exc:
            st.error(problem_lines(exc.problems, ctx.draft))
            return
        spec = views.weights_map(result, layout, DISPLAY_BINS, batch, head, pooling, log=log_colour)
        # A box on the window's map narrows the window further, down to one cell per token pair.
        fig = add_box_layer(map_figure(spec), spec.values.shape)
        selectable_chart(fig, ZOOM_MAP, lambda: _on_box(spec.grid, ZOOM_MAP, result.origin), "box")


def _window_inputs(layout: TokenLayout) -> None:
    """The typed ranges inside the map (a box or another layer may have left them outside); 0:1024 at first."""
    for key, low, high, first in (
        (Q0, 0, layout.n_queries - 1, 0),
        (Q1, 1, layout.n_queries, min(layout.n_queries, 1024)),
        (K0, 0, layout.n_keys - 1, 0),
        (K1, 1, layout.n_keys, min(layout.n_keys, 1024)),
    ):
        ss[key] = min(max(int(ss.get(key, first)), low), high)


def _on_box(grid: tuple[PoolGrid, PoolGrid], key: str, origin: tuple[int, int] = (0, 0)) -> None:
    """Runs before the rerun that a box on a map causes: its window fills the typed ranges and is computed."""
    window = window_of_box(ss.get(key), grid, origin)
    if window is not None:
        ss[Q0], ss[Q1], ss[K0], ss[K1] = window.q0, window.q1, window.k0, window.k1
        ss[WINDOW] = str(window)
