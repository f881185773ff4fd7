"""Picking by pointing: a click on the 2-D picker maps back to its true token for any subsample, a box on a pooled map
becomes a clamped token window, and both reach the app through the chart's selection (AppTest)."""

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
from app_helpers import clean, model_mode, select_on_chart, show, start
from hypothesis import given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest
from test_app import charts, decode

from noether.explorer import views
from noether.explorer.figures import (
    GROUP_COLOURS,
    add_box_layer,
    group_colours,
    groups_pick_figure,
    pick_figure,
    point_cloud_figure,
    query_pick_figure,
)
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.picking import (
    MAX_PICK_POINTS,
    PLANES,
    pick_layout,
    picked_token,
    project,
    share_budget,
    shown_tokens,
    window_of_box,
)
from noether.explorer.scenario import validate_scenario
from noether.explorer.ui.context import DISPLAY_BINS
from noether.explorer.window import Window, parse_window

TINY = Path(__file__).parent / "corpus" / "good" / "tiny.capture.safetensors"


def click(curve: int, point: int) -> dict:
    """The chart state after one click, as Streamlit keeps it (JSON round trip included)."""
    points = [{"curve_number": curve, "point_number": point, "point_index": point, "x": 0.5, "y": 0.25}]
    state = {"selection": {"points": points, "point_indices": [point], "box": [], "lasso": []}}
    return json.loads(json.dumps(state))


def box(x: tuple[float, float], y: tuple[float, float]) -> dict:
    return {"selection": {"points": [], "point_indices": [], "box": [{"xref": "x", "yref": "y", "x": x, "y": y}]}}


# --- picking a token -------------------------------------------------------------------------------------------------


def test_small_groups_are_drawn_whole_and_big_ones_share_the_rest() -> None:
    assert share_budget([500, 100_000, 100_000], 6000) == [500, 2750, 2750]
    assert share_budget([10, 20], 6000) == [10, 20]
    assert share_budget([0, 7], 3) == [0, 3]


@given(st.lists(st.integers(0, 200_000), min_size=1, max_size=8), st.integers(0, 10_000))
def test_the_budget_is_kept_and_never_exceeds_a_group(sizes: list[int], budget: int) -> None:
    counts = share_budget(sizes, budget)
    assert sum(counts) <= budget
    assert all(0 <= c <= s for c, s in zip(counts, sizes, strict=True))
    if sum(sizes) <= budget:
        assert counts == sizes


def test_a_hundred_thousand_points_draw_at_most_the_budget_and_stay_small() -> None:
    positions = np.random.default_rng(0).normal(size=(100_000, 3)).astype(np.float32)
    layout = pick_layout({"surface": 100_000, "anchors": 512})
    assert layout.points == MAX_PICK_POINTS
    assert len(layout.shown[1]) == 512  # the small group whole
    fig = pick_figure(layout, [positions, positions[:512]], PLANES["x – y (top)"], ("surface", 99_999), "Pick")
    assert sum(len(t.x) for t in fig.data) == MAX_PICK_POINTS + 1  # plus the chosen token's marker
    assert len(fig.to_json()) < 250_000  # bytes sent to the browser, whatever the group size
    assert "6,000 of 100,512 tokens drawn" in fig.layout.title.text


def test_the_subsample_is_deterministic_and_distinct() -> None:
    first, again = shown_tokens(100_000, 3000), shown_tokens(100_000, 3000)
    np.testing.assert_array_equal(first, again)
    assert len(np.unique(first)) == 3000 and first.min() >= 0 and first.max() < 100_000
    np.testing.assert_array_equal(shown_tokens(40, 3000), np.arange(40))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 30_000), min_size=1, max_size=5),
    st.integers(1, 4000),
    st.integers(0, 2**16),
    st.data(),
)
def test_a_click_maps_back_to_its_true_token_for_any_subsample(
    sizes: list[int], budget: int, seed: int, data: st.DataObject
) -> None:
    names = [f"group{i}" for i in range(len(sizes))]
    layout = pick_layout(dict(zip(names, sizes, strict=True)), budget, seed)
    drawn = [c for c in range(len(names)) if len(layout.shown[c])]
    if not drawn:
        return
    curve = data.draw(st.sampled_from(drawn))
    point = data.draw(st.integers(0, len(layout.shown[curve]) - 1))
    rng = np.random.default_rng(seed)
    positions = [rng.normal(size=(s, 3)) for s in sizes]
    plane = data.draw(st.sampled_from(list(PLANES.values())))
    fig = pick_figure(layout, positions, plane)

    group, index = picked_token(click(curve, point), layout)  # type: ignore[misc]
    assert group == names[curve] and 0 <= index < sizes[curve]
    # The point drawn at (curve, point) is that token: its hover label and its coordinates.
    trace = fig.data[curve]
    assert trace.name == group and int(trace.customdata[point]) == index
    x, y = project(positions[curve][index : index + 1], plane)
    assert (float(trace.x[point]), float(trace.y[point])) == pytest.approx((float(x[0]), float(y[0])), rel=1e-6)


def test_clicks_that_are_not_a_token_pick_nothing() -> None:
    layout = pick_layout({"a": 10, "b": 5})
    assert picked_token(click(2, 0), layout) is None  # the chosen-token marker (last trace)
    assert picked_token(click(0, 10), layout) is None
    assert picked_token({"selection": {"points": [], "point_indices": [], "box": [], "lasso": []}}, layout) is None
    assert picked_token(None, layout) is None
    assert picked_token({"selection": {"points": [{"curve_number": "0"}]}}, layout) is None
    # Shift-clicks add points: the last one is the pick.
    both = click(0, 3)
    both["selection"]["points"].append(click(1, 4)["selection"]["points"][0])
    assert picked_token(both, layout) == ("b", 4)


# --- a box on a pooled map -------------------------------------------------------------------------------------------


def test_a_box_covers_the_cells_whose_centres_it_holds() -> None:
    exact = (PoolGrid(100, 1), PoolGrid(80, 1))
    assert window_of_box(box((9.6, 20.2), (30.4, 2.7)), exact) == Window(3, 31, 10, 21)
    # Narrower than a cell: the cell under it.
    assert window_of_box(box((4.1, 4.3), (7.0, 7.2)), exact) == Window(7, 8, 4, 5)
    # Pooled: whole bins of 96 tokens, the last one shorter.
    pooled = (PoolGrid(98_304, 96), PoolGrid(1000, 3))
    assert window_of_box(box((-3, 1.2), (1023.9, 1000)), pooled) == Window(1000 * 96, 98_304, 0, 6)
    assert window_of_box(box((332.6, 400), (0, 0)), pooled) == Window(0, 96, 999, 1000)


def test_boxes_off_the_map_or_malformed_give_no_window() -> None:
    grid = (PoolGrid(10, 1), PoolGrid(10, 1))
    assert window_of_box(box((11, 20), (0, 5)), grid) is None
    assert window_of_box(box((0, 5), (-9, -0.6)), grid) is None
    assert window_of_box({"selection": {"box": []}}, grid) is None
    assert window_of_box({"selection": {"box": [{"x": [1], "y": [2, 3]}]}}, grid) is None
    assert window_of_box({"selection": {"box": [{"x": ["a", 2], "y": [2, 3]}]}}, grid) is None
    assert window_of_box({"selection": {"box": [{"x": [math.nan, 2], "y": [2, 3]}]}}, grid) is None
    assert window_of_box(None, grid) is None


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 200_000),
    st.integers(1, 200_000),
    st.integers(1, 400),
    st.tuples(*[st.floats(-50, 450, allow_nan=False)] * 4),
    st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)),
)
def test_a_box_gives_a_clamped_window_of_whole_bins(
    n_rows: int, n_cols: int, bins: int, corners: tuple[float, ...], origin: tuple[int, int]
) -> None:
    rows, cols = PoolGrid.fit(n_rows, bins), PoolGrid.fit(n_cols, bins)
    x0, x1, y0, y1 = corners
    window = window_of_box(box((x0, x1), (y0, y1)), (rows, cols), origin)
    misses = max(y0, y1) < -0.5 or min(y0, y1) > rows.bins - 0.5 or max(x0, x1) < -0.5 or min(x0, x1) > cols.bins - 0.5
    assert (window is None) == misses
    if window is None:
        return
    q0, k0 = origin
    assert q0 <= window.q0 < window.q1 <= q0 + n_rows and k0 <= window.k0 < window.k1 <= k0 + n_cols
    assert (window.q0 - q0) % rows.factor == 0 and (window.k0 - k0) % cols.factor == 0
    assert window.q1 == q0 + n_rows or (window.q1 - q0) % rows.factor == 0
    # Every cell whose centre lies in the box is inside the window.
    for lo, hi, grid, first, end, offset in (
        (y0, y1, rows, window.q0, window.q1, q0),
        (x0, x1, cols, window.k0, window.k1, k0),
    ):
        for centre in range(max(math.ceil(min(lo, hi)), 0), min(math.floor(max(lo, hi)), grid.bins - 1) + 1):
            assert first - offset <= centre * grid.factor < end - offset


def test_the_box_layer_is_four_invisible_points_on_the_corner_cells() -> None:
    fig = add_box_layer(go.Figure(go.Heatmap(z=np.zeros((30, 50)))), (30, 50))
    layer = fig.data[-1]
    assert list(layer.x) == [0, 49, 0, 49] and list(layer.y) == [0, 0, 29, 29]
    assert layer.marker.opacity == 0 and layer.hoverinfo == "skip"


# --- in the app ------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_caches")
def test_a_click_on_the_picker_sets_group_and_index_and_keeps_the_rest() -> None:
    at = model_mode(TINY)
    at.session_state["view"] = "Rollout"
    clean(at.run())
    clean(at.radio(key="ro_plane").set_value("x – z (side)").run())
    clean(at.number_input(key="ro_index").set_value(1).run())
    assert at.selectbox(key="ro_group").value == "surface_queries"
    spec = json.loads(next(e for e in at.get("plotly_chart") if e.proto.id.endswith("-ro_pick")).proto.spec)
    assert spec["data"][0]["name"] == "surface_anchors"

    select_on_chart(at, "ro_pick", [{"curve_number": 0, "point_number": 2, "point_index": 2, "x": 0.1, "y": 0.2}])
    assert (at.selectbox(key="ro_group").value, at.number_input(key="ro_index").value) == ("surface_anchors", 2)
    assert at.radio(key="ro_plane").value == "x – z (side)"  # nothing else moved
    titles = [json.loads(e.proto.spec)["layout"]["title"]["text"] for e in at.get("plotly_chart")]
    assert any(t.startswith("Rollout of surface_anchors:2 ") for t in titles)

    # The index box follows the click, and a later edit is not undone by that old click.
    clean(at.number_input(key="ro_index").set_value(0).run())
    assert at.number_input(key="ro_index").value == 0
    # A click on the chosen-token marker picks nothing.
    picker = next(e for e in at.get("plotly_chart") if e.proto.id.endswith("-ro_pick"))
    marker = len(json.loads(picker.proto.spec)["data"]) - 1
    select_on_chart(at, "ro_pick", [{"curve_number": marker, "point_number": 0, "point_index": 0}])
    assert (at.selectbox(key="ro_group").value, at.number_input(key="ro_index").value) == ("surface_anchors", 0)


@pytest.mark.usefixtures("fresh_caches")
def test_a_box_on_the_weights_map_computes_that_window() -> None:
    at = start(tab="Weights")
    clean(at.selectbox(key="v_head").set_value(0).run())
    map_spec = json.loads(next(e for e in at.get("plotly_chart") if e.proto.id.endswith("-w_map")).proto.spec)
    assert map_spec["data"][-1]["name"] == "box select"
    select_on_chart(at, "w_map", box={"xref": "x", "yref": "y", "x": [2.6, 9.2], "y": [4.4, 0.8]})
    assert at.session_state["z_window"] == str(
        Window(at.session_state["z_q0"], at.session_state["z_q1"], at.session_state["z_k0"], at.session_state["z_k1"])
    )
    assert at.number_input(key="z_q0").value == at.session_state["z_q0"]
    titles = [json.loads(e.proto.spec)["layout"]["title"]["text"] for e in at.get("plotly_chart")]
    window = at.session_state["z_window"]
    q, k = window.split(",")
    assert any(f"window queries {q} x keys {k}" in t for t in titles), titles
    # A box on the window's own map narrows it (its cells are relative to the window's first tokens).
    first = parse_window(window)
    inner = {"xref": "x", "yref": "y", "x": [10.4, 20.6], "y": [3.5, 7.5]}
    select_on_chart(at, "zoom_map", box=inner)
    grid = (PoolGrid.fit(first.rows, DISPLAY_BINS), PoolGrid.fit(first.cols, DISPLAY_BINS))
    narrowed = window_of_box({"selection": {"box": [inner]}}, grid, (first.q0, first.k0))
    assert narrowed is not None and first.q0 < narrowed.q0 < narrowed.q1 < first.q1
    assert at.session_state["z_window"] == str(narrowed)
    # Typing a range afterwards is kept (the old boxes do not come back).
    clean(at.number_input(key="z_q0").set_value(0).run())
    assert at.number_input(key="z_q0").value == 0


@pytest.mark.usefixtures("fresh_caches")
def test_a_picked_token_and_a_boxed_window_survive_a_visit_to_another_tab() -> None:
    at = model_mode(TINY)
    at.session_state["view"] = "Rollout"
    clean(at.run())
    select_on_chart(at, "ro_pick", [{"curve_number": 0, "point_number": 3, "point_index": 3}])
    clean(at.radio(key="ro_plane").set_value("y – z (front)").run())
    at.session_state["view"] = "Model overview"
    clean(at.run())
    at.session_state["view"] = "Rollout"
    clean(at.run())
    assert at.selectbox(key="ro_group").value == "surface_anchors"
    assert at.number_input(key="ro_index").value == 3
    assert at.radio(key="ro_plane").value == "y – z (front)"

    at.session_state["view"] = "Weights"
    clean(at.run())
    select_on_chart(at, "w_map", box={"xref": "x", "yref": "y", "x": [0.6, 2.4], "y": [1.0, 3.0]})
    window = at.session_state["z_window"]
    assert window == "1:4,1:3"  # a 6-token layer: one cell per token
    at.session_state["view"] = "Mask"
    clean(at.run())
    at.session_state["view"] = "Weights"
    clean(at.run())
    assert (at.number_input(key="z_q0").value, at.number_input(key="z_k1").value) == (1, 3)


# --- the Spatial view's query token ----------------------------------------------------------------------------------


def test_a_click_on_the_query_picker_maps_back_to_its_query_row_at_a_hundred_thousand_tokens() -> None:
    doc = {
        "attention": {"kind": "self_anchor", "hidden_dim": 8, "num_heads": 1, "branches": ["surface", "volume"]},
        "token_specs": [
            {"surface_anchors": 512},
            {"surface_queries": 100_000},
            {"volume_anchors": 512},
            {"volume_queries": 50_000},
        ],
    }
    report = validate_scenario(doc)
    assert report.scenario is not None, report.problems
    layout = TokenLayout.from_scenario(report.scenario)
    positions = np.random.default_rng(1).normal(size=(layout.n_inputs, 3))
    assert list(views.query_points(layout, positions)) == [g.name for g in layout.query_groups]
    plane = PLANES["y – z (front)"]
    chosen = views.query_row(layout, "volume_queries", 49_999)
    picks, fig = query_pick_figure(layout, positions, chosen, plane, seed=3)
    again, _ = query_pick_figure(layout, positions, 0, PLANES["x – y (top)"], seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(picks.shown, again.shown, strict=True))  # deterministic
    assert picks.points == MAX_PICK_POINTS and len(fig.to_json()) < 250_000
    # Big groups drawn first, the anchors whole on top, each group in its colour of the "group" mode.
    assert picks.groups == ("surface_queries", "volume_queries", "surface_anchors", "volume_anchors")
    assert len(picks.shown[2]) == len(picks.shown[3]) == 512
    colours = {trace.name: trace.marker.color for trace in fig.data[:4]}
    assert colours == {g.name: GROUP_COLOURS[i] for i, g in enumerate(layout.groups)}
    assert fig.data[-1].name == "chosen token"
    x, y = project(positions[layout.n_inputs - 1 :], plane)
    assert (float(fig.data[-1].x[0]), float(fig.data[-1].y[0])) == pytest.approx((float(x[0]), float(y[0])), rel=1e-6)
    for curve in range(len(picks.groups)):
        for point in (0, len(picks.shown[curve]) // 2, len(picks.shown[curve]) - 1):
            group, index = picked_token(click(curve, point), picks)  # type: ignore[misc]
            token = views.query_token_index(layout, views.query_row(layout, group, index))
            # The drawn point sits where the picked query token is on the geometry.
            x, y = project(positions[token : token + 1], plane)
            trace = fig.data[curve]
            assert trace.name == group
            assert (float(trace.x[point]), float(trace.y[point])) == pytest.approx((float(x[0]), float(y[0])), rel=1e-6)


@pytest.mark.usefixtures("fresh_caches")
def test_a_click_on_the_spatial_picker_sets_the_query_token_and_keeps_the_rest() -> None:
    at = start(tab="Spatial")
    clean(at.radio(key="v_colour_by").set_value("query").run())
    clean(at.selectbox(key="v_spatial_head").set_value(1).run())
    clean(at.radio(key="v_spatial_plane").set_value("x – z (side)").run())
    picker = _chart(at, "v_spatial_pick")
    names = [trace["name"] for trace in picker["data"]]
    curve = names.index("volume_queries")
    shown = decode(picker["data"][curve]["customdata"])
    assert len(shown) < 2048  # the default example's 6,144 query tokens are subsampled for the picker
    point = len(shown) - 1
    token = int(shown[point])
    assert token != point  # so that the pick goes through the subsample's map back to the group
    clicked = (float(decode(picker["data"][curve]["x"])[point]), float(decode(picker["data"][curve]["y"])[point]))

    select_on_chart(at, "v_spatial_pick", [{"curve_number": curve, "point_number": point, "point_index": point}])
    assert (at.selectbox(key="v_qgroup").value, at.number_input(key="v_qindex").value) == ("volume_queries", token)
    # Nothing else moved.
    assert at.radio(key="v_colour_by").value == "query"
    assert at.selectbox(key="v_spatial_head").value == 1
    assert at.radio(key="v_spatial_plane").value == "x – z (side)"
    # The 3-D view now shows that token's attention, its diamond where the click was.
    cloud = next(c for c in charts(at) if "Attention from token" in c["layout"]["title"]["text"])
    assert f"token {token:,} of volume_queries" in cloud["layout"]["title"]["text"]
    selected = next(trace for trace in cloud["data"] if trace["name"] == "selected token")
    assert (float(decode(selected["x"])[0]), float(decode(selected["z"])[0])) == pytest.approx(clicked, rel=1e-6)

    # The index box follows the click, and a later edit is not undone by that old click.
    clean(at.number_input(key="v_qindex").set_value(0).run())
    assert at.number_input(key="v_qindex").value == 0
    # A click on the chosen-token marker picks nothing.
    marker = len(_chart(at, "v_spatial_pick")["data"]) - 1
    select_on_chart(at, "v_spatial_pick", [{"curve_number": marker, "point_number": 0, "point_index": 0}])
    assert (at.selectbox(key="v_qgroup").value, at.number_input(key="v_qindex").value) == ("volume_queries", 0)
    # The pick is the shared query token: the Weights view marks the same one.
    show(at, "Weights")
    assert at.selectbox(key="v_qgroup").value == "volume_queries"


def _chart(at: AppTest, key: str) -> dict[str, Any]:
    return json.loads(next(e for e in at.get("plotly_chart") if e.proto.id.endswith(f"-{key}")).proto.spec)


def test_every_picker_colours_a_group_by_its_declared_place_not_its_drawing_order() -> None:
    rng = np.random.default_rng(0)
    order = ["anchors", "surface", "volume"]
    points = {
        "anchors": rng.normal(size=(64, 3)),
        "volume": rng.normal(size=(900, 3)),
        "surface": rng.normal(size=(500, 3)),
    }
    picks, fig = groups_pick_figure(points, order, PLANES["x – y (top)"], ("surface", 3), "Pick")
    assert picks.groups == ("volume", "surface", "anchors")  # big groups drawn first
    colours = {trace.name: trace.marker.color for trace in fig.data[:3]}
    assert colours == {"anchors": GROUP_COLOURS[0], "surface": GROUP_COLOURS[1], "volume": GROUP_COLOURS[2]}
    # The point cloud's "group" mode gives the same groups the same colours.
    labels = [name for name in order for _ in range(len(points[name]))]
    cloud = point_cloud_figure(np.concatenate([points[n] for n in order]), "Groups", labels=labels)
    assert {trace.name: trace.marker.color for trace in cloud.data} == colours


@pytest.mark.usefixtures("fresh_caches")
def test_the_rollout_picker_colours_each_output_group_as_the_spatial_picker_would() -> None:
    at = model_mode(TINY)
    at.session_state["view"] = "Rollout"
    clean(at.run())
    order = list(at.selectbox(key="ro_group").options)
    spec = json.loads(next(e for e in at.get("plotly_chart") if e.proto.id.endswith("-ro_pick")).proto.spec)
    colours = {t["name"]: t["marker"]["color"] for t in spec["data"] if t["name"] in order}
    # Only the anchors have recorded positions here: drawn first, yet in the colour of their place (second).
    assert order.index("surface_anchors") == 1 and colours == {"surface_anchors": GROUP_COLOURS[1]}
    assert colours == {
        name: colour for name, colour in zip(order, group_colours(order), strict=True) if name in colours
    }
