"""Charts stay light at many groups, blocked cells never pass for small weights, titles keep clear of axis titles."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.many_groups import many_groups
from noether.explorer.figures import (
    BLOCKED_COLOUR,
    attended_percent,
    group_mask_figure,
    heatmap,
    map_figure,
    mask_figure,
)
from noether.explorer.figures_points import SCENE_MIN_RATIO, point_cloud_figure, scene_layout
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.model_overview import DepthTable
from noether.explorer.overview_figures import mass_depth_figure, rollout_figure, short_group_names
from noether.explorer.png import BLOCKED_RGB, map_png
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import validate_scenario
from noether.explorer.views import key_axis, mask_view, query_axis, weights_map


def scenario(count: int):
    report = validate_scenario(many_groups(count))
    assert report.scenario is not None
    return report.scenario


def test_a_thousand_group_mask_view_is_a_few_traces_and_under_two_megabytes():
    view = mask_view(scenario(1000), 1024)
    figures = [group_mask_figure(view.groups), mask_figure(view.layout, view.pooled, view.rows, view.cols)]
    for figure in figures:
        assert len(figure.layout.shapes) == 0  # boundaries are one trace, not one shape each
        assert len(figure.data) <= 3
    assert sum(len(figure.to_json()) for figure in figures) <= 2 * 2**20


def test_boundary_trace_grows_linearly_with_groups():
    sizes = {}
    for count in (50, 100):
        view = mask_view(scenario(count), 1024)
        figure = mask_figure(view.layout, view.pooled, view.rows, view.cols)
        (lines,) = [trace for trace in figure.data if trace.type == "scatter"]
        sizes[count] = len(lines.x)
    assert sizes[100] <= 2.1 * sizes[50]


def test_attended_percent_never_rounds_to_a_wrong_extreme():
    assert attended_percent(np.array([0.0, 0.001, 0.5, 0.999, 1.0])).tolist() == [0, 1, 50, 99, 100]


def test_blocked_cells_have_their_own_colour_in_the_chart_and_the_png():
    document = {
        "attention": {"kind": "mixed", "hidden_dim": 16, "num_heads": 2},
        "token_specs": [{"a": 16}, {"b": 16}],
        "attention_patterns": [
            {"query_tokens": ["a"], "key_value_tokens": ["a"]},
            {"query_tokens": ["b"], "key_value_tokens": ["a", "b"]},
        ],
        "run": {"device": "cpu", "inputs": "random"},
    }
    report = validate_scenario(document)
    assert report.scenario is not None
    torch.manual_seed(0)
    run = ExplorerRun(report.scenario)
    spec = weights_map(run.weights(), run.layout, 32, 0, "mean", "mean", log=True)
    assert spec.blocked is not None and spec.blocked[0, 20] and not spec.blocked[20, 0]
    figure = map_figure(spec)
    z = np.asarray(figure.data[0].z, dtype=np.float64)
    assert np.isnan(z[0, 20]) and np.isfinite(z[20, 0])  # blocked: no colour from the scale
    assert figure.layout.plot_bgcolor == BLOCKED_COLOUR
    assert any(trace.name == "blocked by the rules" for trace in figure.data)
    image = Image.open(io.BytesIO(map_png(spec))).convert("RGB")
    colours = {colour for _, colour in image.getcolors(maxcolors=1_000_000)}
    assert BLOCKED_RGB in colours


def test_heatmap_title_sits_above_the_top_axis_title():
    layout = TokenLayout.from_scenario(scenario(3))
    grid = PoolGrid.fit(layout.n_queries, 64)
    figure = heatmap(
        np.ones((grid.bins, grid.bins)), query_axis(layout, grid), key_axis(layout, grid), "head 0", log=False
    )
    assert figure.layout.title.yref == "container" and figure.layout.title.yanchor == "top"
    assert figure.layout.margin.t >= 110  # room for the title above the x axis's labels and title


def test_point_cloud_reads_on_white_and_anchors_stay_visible():
    from plotly.colors import hex_to_rgb, unlabel_rgb

    from noether.explorer.figures import point_cloud_figure

    rng = np.random.default_rng(0)
    positions = rng.normal(size=(1100, 3))
    values = rng.random(1100)
    figure = point_cloud_figure(positions, "t", values=values, highlight=5)
    low = figure.data[0].marker.colorscale[0][1]
    rgb = hex_to_rgb(low) if low.startswith("#") else unlabel_rgb(low)
    assert sum(rgb) / 3 > 200  # little attention is pale, not the darkest colour on a white page
    (selected,) = [t for t in figure.data if t.name == "selected token"]
    assert selected.marker.size >= 12 and selected.marker.line.width >= 1
    labels = ["anchors"] * 100 + ["queries"] * 1000
    grouped = point_cloud_figure(positions, "t", labels=labels)
    assert [t.name for t in grouped.data] == ["queries", "anchors"]  # the small group is drawn last, on top
    assert grouped.data[1].legendrank < grouped.data[0].legendrank  # the legend keeps the input order
    assert grouped.data[1].marker.size > grouped.data[0].marker.size


def test_depth_line_charts_number_a_few_calls_and_keep_the_legend_below():
    from noether.explorer.model_overview import DepthTable
    from noether.explorer.overview_figures import LEGEND_ROW_PX, MAX_CALL_TICKS, depth_lines_figure

    columns = ["tokens", "queries", "surface_anchors", "surface_queries", "volume_anchors", "volume_queries"]
    table = DepthTable([f"call#{i}" for i in range(13)], columns, np.ones((13, len(columns))))
    figure = depth_lines_figure(table, "Mean entropy (mean over heads)", "nats")
    # Half-width in the app: 13 numbered calls beside a legend overlapped; every 2nd call is numbered, hover names all.
    assert figure.layout.xaxis.dtick == 2 and 13 / figure.layout.xaxis.dtick <= MAX_CALL_TICKS
    assert figure.layout.legend.yref == "container" and figure.layout.legend.yanchor == "bottom"
    assert figure.layout.margin.b >= LEGEND_ROW_PX * len(columns)  # the legend has its own room under the axis
    assert list(figure.data[0].text) == table.layers


def test_the_3d_box_of_an_elongated_cloud_fits_the_default_view_with_its_proportions() -> None:
    rng = np.random.default_rng(0)
    car = rng.uniform([-1.0, -1.0, 0.0], [7.0, 1.0, 1.5], size=(5000, 3))  # 8 x 2 x 1.5, like the sample car
    scene = scene_layout(car)
    ratio = scene["aspectratio"]
    assert scene["aspectmode"] == "manual" and max(ratio.values()) == 1.0 == ratio["x"]
    spans = car.max(0) - car.min(0)
    assert ratio["y"] == pytest.approx(spans[1] / spans[0]) and ratio["z"] == pytest.approx(spans[2] / spans[0])
    # A flat cloud keeps a visible box, a single point or nothing finite falls back to a cube.
    flat = np.column_stack([car[:, :2], np.zeros(len(car))])
    assert scene_layout(flat)["aspectratio"]["z"] == SCENE_MIN_RATIO
    assert scene_layout(car[:1])["aspectmode"] == "cube"
    assert scene_layout(np.full((3, 3), np.nan))["aspectmode"] == "cube"
    # Both 3-D views use it.
    labels = ["anchors"] * 100 + ["queries"] * 4900
    assert point_cloud_figure(car, "Groups", labels=labels).layout.scene.aspectratio.x == 1.0
    rolled = rollout_figure(car, rng.uniform(size=len(car)), labels, "Rollout", car[0])
    assert rolled.layout.scene.aspectratio.to_plotly_json() == pytest.approx(ratio)


def test_depth_heatmap_columns_read_without_tilt_and_the_key_names_every_group() -> None:
    groups = ["surface_anchors", "surface_queries", "volume_anchors", "volume_queries"]
    columns = ["tokens → tokens", "queries → keys_values"] + [f"{q} → {k}" for q in groups for k in groups[::2]]
    table = DepthTable(["a#0", "b#0"], columns, np.full((2, len(columns)), 0.5))
    fig = mass_depth_figure(table, "Attention mass by depth")
    axis = fig.layout.xaxis
    assert axis.tickangle == 0 and len(axis.ticktext) == len(columns)
    lines = [line for label in axis.ticktext for line in label.split("<br>")]
    assert max(len(line) for line in lines) <= 9  # fits a column of ten across half a page
    assert axis.ticktext[columns.index("surface_queries → volume_anchors")] == "SQ<br>→ VA"
    key = fig.layout.annotations[0].text
    assert all(f"= {name}" in key for name in [*groups, "keys_values"])
    assert fig.data[0].customdata[1][3] == columns[3]  # the hover names the full pair
    # A few short names stay whole, with no key.
    few = mass_depth_figure(DepthTable(["a#0"], ["x → y", "y → x"], np.ones((1, 2))), "t")
    assert list(few.layout.xaxis.ticktext) == ["x<br>→ y", "y<br>→ x"] and not few.layout.annotations
    assert len(set(short_group_names(["surface_anchors", "sparse_anchors", "spare_anchors", "sa"]).values())) == 4
