"""Views, figures and PNGs: every figure builds from a small run, payloads stay small at 100k tokens, user-given
group names are escaped, PNGs are valid, and the tables have their columns."""

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
import yaml
from PIL import Image

from noether.explorer.cost import BackendTiming
from noether.explorer.figures import (
    MAX_CLOUD_POINTS,
    MAX_LINE_POINTS,
    MUTED_COLOUR,
    backend_figure,
    colour_scale,
    group_mask_figure,
    heatmap,
    log_ticks,
    mark_query_row,
    mask_figure,
    mass_figure,
    point_cloud_figure,
    row_figure,
)
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.masks import group_mask, pooled_mask
from noether.explorer.png import MIN_SIDE, heatmap_png
from noether.explorer.presets import load_preset, preset_text
from noether.explorer.run import DEFAULT_PIXELS, ExplorerRun
from noether.explorer.views import (
    backend_table,
    cost_table,
    display_map,
    group_mask_table,
    key_axis,
    mass_matrix,
    query_axis,
    query_group_table,
    scenario_summary,
    top_keys,
    weight_map,
)
from noether.explorer.weights import WeightResult

MAX_FIGURE_BYTES = 2 * 2**20
EVIL = "<script>alert(1)</script>"


def small_doc(key: str) -> dict[str, Any]:
    data = yaml.safe_load(preset_text(key))
    data["token_specs"] = [
        {name: None if size is None else (6 if name.endswith("anchors") else 9)}
        for item in data["token_specs"]
        for name, size in item.items()
    ]
    if data["run"].get("kv_cache_sizes"):
        data["run"]["kv_cache_sizes"] = {name: 5 for name in data["run"]["kv_cache_sizes"]}
    data["run"]["device"] = "cpu"
    return data


@pytest.fixture(scope="module", params=["self_anchor", "kv_cache"])
def run(request: pytest.FixtureRequest) -> ExplorerRun:
    return ExplorerRun(small_doc(request.param))


def strings(node: Any) -> Iterator[str]:
    """Every string in a decoded JSON document (keys included)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def figure_strings(fig: go.Figure) -> list[str]:
    return list(strings(json.loads(fig.to_json())))


def all_figures(run: ExplorerRun) -> dict[str, go.Figure]:
    """One figure of every view, as the app would draw them."""
    layout = run.layout
    rows, cols = run.grids(16)
    result = run.weights(pixels=16)
    mask = group_mask(layout)
    figures: dict[str, go.Figure] = {"mask": mask_figure(layout, pooled_mask(layout, rows, cols), rows, cols)}
    figures["group mask"] = group_mask_figure(mask)
    for head in ("mean", 0):
        for pooling in ("mean", "max"):
            values, r, c = display_map(result, 12, head=head, pooling=pooling)  # type: ignore[arg-type]
            for log in (False, True):
                figures[f"weights {head} {pooling} log={log}"] = heatmap(
                    values, query_axis(layout, r), key_axis(layout, c), f"weights ({pooling})", log=log
                )
    figures["mass"] = mass_figure(
        mass_matrix(result), [g.name for g in layout.query_groups], [g.name for g in layout.groups], "mass"
    )
    figures["row"] = row_figure(run.exact_row(0)[0].mean(0).numpy(), layout, "query 0")
    figures["backends"] = backend_figure(run.backends(repeats=1, include=("mixed", "dense")))
    positions = run.inputs.positions[0].numpy()
    labels = [layout.key_group_at(i)[0].name for i in range(layout.n_keys)]
    figures["cloud groups"] = point_cloud_figure(positions, "groups", labels=labels, highlight=0)
    figures["cloud attention"] = point_cloud_figure(positions, "attention", values=run.exact_row(0)[0].mean(0).numpy())
    return figures


def test_every_view_builds_a_figure(run: ExplorerRun) -> None:
    figures = all_figures(run)
    assert len(figures) == 15
    for name, fig in figures.items():
        assert isinstance(fig, go.Figure), name
        assert fig.data, name
        assert len(fig.to_json()) < MAX_FIGURE_BYTES, name


def test_mask_figure_content(run: ExplorerRun) -> None:
    layout = run.layout
    rows, cols = run.grids(DEFAULT_PIXELS)
    assert rows.exact and cols.exact
    fig = mask_figure(layout, pooled_mask(layout, rows, cols), rows, cols)
    trace = fig.data[0]
    assert np.asarray(trace.z).shape == (layout.n_queries, layout.n_keys)
    assert (trace.zmin, trace.zmax) == (0, 100)  # whole percents of attended pairs
    assert "exact" in fig.layout.title.text
    assert list(fig.layout.xaxis.ticktext) == [g.name + (" (cached)" if g.cached else "") for g in layout.groups]
    assert list(fig.layout.yaxis.ticktext) == [g.name for g in layout.query_groups]
    # One boundary segment (three points: start, end, gap) per inner group edge on each axis, in one trace.
    (lines,) = [t for t in fig.data if t.type == "scatter"]
    assert len(lines.x) == 3 * ((len(layout.groups) - 1) + (len(layout.query_groups) - 1))
    assert not fig.layout.shapes


def test_pooled_mask_figure_says_how_many_tokens_a_cell_holds(run: ExplorerRun) -> None:
    rows, cols = run.grids(4)
    fig = mask_figure(run.layout, pooled_mask(run.layout, rows, cols), rows, cols)
    assert f"1 cell = {rows.factor:,} query x {cols.factor:,} key tokens" in fig.layout.title.text


def test_log_heatmap_ticks_are_powers_of_ten() -> None:
    values = np.array([[1e-4, 1e-2], [0.0, 1.0]])
    fig = heatmap(values, None, None, "log", log=True)
    z = np.asarray(fig.data[0].z, dtype=np.float64)
    assert z.max() == pytest.approx(0.0)
    assert z.min() == pytest.approx(-4.0)  # zeros are floored at the smallest positive value
    assert list(fig.data[0].colorbar.ticktext) == ["1e-4", "1e-3", "1e-2", "1e-1", "1e0"]


def test_log_colour_bars_under_two_decades_get_2x_and_5x_ticks() -> None:
    fig = heatmap(np.array([[3e-4, 1e-3], [4e-3, 8e-3]]), None, None, "log", log=True)
    assert list(fig.data[0].colorbar.ticktext) == ["5e-4", "1e-3", "2e-3", "5e-3"]
    np.testing.assert_allclose(fig.data[0].colorbar.tickvals, np.log10([5e-4, 1e-3, 2e-3, 5e-3]))
    # A shared colour range sets the ticks, not the map's own values.
    shared = heatmap(np.array([[3e-3, 4e-3]]), None, None, "log", log=True, zmin=1e-3, zmax=1e-1)
    assert list(shared.data[0].colorbar.ticktext) == ["1e-3", "1e-2", "1e-1"]
    assert (shared.data[0].zmin, shared.data[0].zmax) == pytest.approx((-3, -1))
    assert log_ticks(np.log10(3e-3), np.log10(4e-3))[1] == ["3e-3", "4e-3"]
    assert log_ticks(np.log10(2.1e-3), np.log10(2.3e-3))[1] == ["0.0021", "0.0023"]


def test_colour_scales_avoid_streamlits_placeholder_colours(run: ExplorerRun) -> None:
    """Streamlit swaps #000001...#0000ff for theme colours: Inferno's #000004 would draw as lavender."""
    assert colour_scale("Inferno")[0] == (0.0, "#010004") and colour_scale("Inferno")[-1] == (1.0, "#fcffa4")
    assert colour_scale("Viridis")[0][1] == "#440154"
    figures = all_figures(run)
    figures["inferno heatmap"] = heatmap(np.eye(3), None, None, "t", colorscale="Inferno")
    for name, fig in figures.items():
        data = strings(json.loads(fig.to_json())["data"])
        placeholders = [t for t in data if re.fullmatch(r"#0000[0-9a-fA-F]{2}", t)]
        assert not placeholders, name


def test_point_cloud_greys_out_muted_points_and_keeps_the_legend_below() -> None:
    positions = np.arange(30, dtype=np.float64).reshape(10, 3)
    values = np.linspace(0.0, 0.9, 10)
    muted = np.arange(10) >= 6
    fig = point_cloud_figure(positions, "t", values=values, muted=muted, highlight=2)
    grey, coloured, selected = fig.data
    assert grey.name == "not attended" and grey.marker.color == MUTED_COLOUR and list(grey.x) == [18, 21, 24, 27]
    # Only the attended points carry values, so the colour scale spans them alone.
    np.testing.assert_allclose(coloured.marker.color, values[:6], rtol=1e-6)
    assert list(coloured.x) == [0, 3, 6, 9, 12, 15] and list(selected.x) == [6]
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y <= 0
    unmuted = point_cloud_figure(positions, "t", values=values)
    assert len(unmuted.data) == 1 and len(unmuted.data[0].x) == 10
    # Subsampling keeps the mask aligned with the points it belongs to.
    big = np.random.default_rng(0).normal(size=(MAX_CLOUD_POINTS + 5000, 3))
    flags = big[:, 0] > 0
    sampled = point_cloud_figure(big, "t", values=big[:, 1], muted=flags)
    assert (np.asarray(sampled.data[0].x) > 0).all() and (np.asarray(sampled.data[1].x) <= 0).all()
    assert sum(len(trace.x) for trace in sampled.data) == MAX_CLOUD_POINTS


def test_mark_query_row_outlines_the_row() -> None:
    fig = mark_query_row(go.Figure(), 3, 10)
    assert fig.layout.shapes[0].y0 == 2.5 and fig.layout.shapes[0].y1 == 3.5 and fig.layout.shapes[0].x1 == 9.5


def test_group_mask_figure_annotates_pairs(run: ExplorerRun) -> None:
    mask = group_mask(run.layout)
    fig = group_mask_figure(mask)
    text = np.asarray(fig.data[0].text)
    assert text.shape == mask.allowed.shape
    for i, j in zip(*np.nonzero(mask.allowed), strict=True):
        assert text[i][j] == f"{int(mask.pairs[i, j]):,}"
    assert all(text[i][j] == "" for i, j in zip(*np.nonzero(~mask.allowed), strict=True))


def test_backend_figure_shows_only_available_backends() -> None:
    timings = [
        BackendTiming("per-pattern MixedAttention", True, 0.002, 0.0),
        BackendTiming("dense masked SDPA", False, note="refused"),
        BackendTiming("FlexAttention", True, 0.001, 1e-7),
    ]
    fig = backend_figure(timings)
    assert list(fig.data[0].x) == ["per-pattern MixedAttention", "FlexAttention"]
    assert list(fig.data[0].text) == ["2 ms", "1 ms"]


# ----------------------------------------------------------------------------------------------------------------------
# Payload at 100k tokens
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_layout() -> TokenLayout:
    layout = TokenLayout.from_scenario(load_preset("abupt_sized"))
    assert layout.n_queries == layout.n_keys == 98_304
    return layout


def fake_result(layout: TokenLayout, pixels: int, heads: int = 3) -> WeightResult:
    """A WeightResult with the shapes a run of ``layout`` at ``pixels`` gives, filled with random weights."""
    rows, cols = PoolGrid.fit(layout.n_queries, pixels), PoolGrid.fit(layout.n_keys, pixels)
    generator = torch.Generator().manual_seed(0)
    shape = (1, heads, rows.bins, cols.bins)
    n_query, n_key = len(layout.query_groups), len(layout.groups)
    return WeightResult(
        rows=rows,
        cols=cols,
        mean=torch.rand(shape, generator=generator) * 1e-3,
        max=torch.rand(shape, generator=generator),
        head_mean_max=torch.rand((1, rows.bins, cols.bins), generator=generator),
        group_mass=torch.full((1, heads, n_query, n_key), 1.0 / n_key),
        received=torch.rand((1, heads, layout.n_keys), generator=generator),
    )


def big_figures(layout: TokenLayout, budget: int) -> dict[str, go.Figure]:
    result = fake_result(layout, DEFAULT_PIXELS)
    figures = {}
    for pooling in ("mean", "max"):
        values, rows, cols = display_map(result, budget, pooling=pooling)  # type: ignore[arg-type]
        assert values.shape == (rows.bins, cols.bins)
        assert rows.bins <= budget and cols.bins <= budget
        figures[f"weights {pooling}"] = heatmap(values, query_axis(layout, rows), key_axis(layout, cols), pooling)
        figures[f"weights {pooling} log"] = heatmap(
            values, query_axis(layout, rows), key_axis(layout, cols), pooling, log=True
        )
    rows, cols = PoolGrid.fit(layout.n_queries, budget), PoolGrid.fit(layout.n_keys, budget)
    figures["mask"] = mask_figure(layout, pooled_mask(layout, rows, cols), rows, cols)
    rng = np.random.default_rng(0)
    figures["row"] = row_figure(rng.random(layout.n_keys) / layout.n_keys, layout, "row")
    positions = rng.normal(size=(layout.n_keys, 3))
    figures["cloud"] = point_cloud_figure(positions, "cloud", values=rng.random(layout.n_keys), highlight=5)
    labels = [g.name for g in layout.groups for _ in range(g.size)]
    figures["cloud groups"] = point_cloud_figure(positions, "cloud", labels=labels)
    return figures


@pytest.mark.parametrize("budget", [256, 400, 512])  # 400 = DISPLAY_BINS of the app (noether.explorer.ui.context)
def test_figure_payloads_stay_small_at_100k_tokens(big_layout: TokenLayout, budget: int) -> None:
    for name, fig in big_figures(big_layout, budget).items():
        size = len(fig.to_json())
        assert size < MAX_FIGURE_BYTES, f"{name}: {size / 2**20:.1f} MB"


def test_big_row_and_cloud_are_subsampled(big_layout: TokenLayout) -> None:
    figures = big_figures(big_layout, 64)
    assert len(figures["row"].data[0].x) <= MAX_LINE_POINTS
    assert "max-pooled" in figures["row"].layout.title.text
    assert sum(len(trace.x) for trace in figures["cloud groups"].data) == MAX_CLOUD_POINTS
    assert f"{MAX_CLOUD_POINTS:,} of {big_layout.n_keys:,}" in figures["cloud"].layout.title.text


# ----------------------------------------------------------------------------------------------------------------------
# Escaping of user-given names
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evil_run() -> ExplorerRun:
    names = [EVIL, "b&<i>"]
    data = {
        "attention": {"hidden_dim": 8, "num_heads": 2},
        "token_specs": [{names[0]: 4}, {names[1]: 5}],
        "attention_patterns": [{"query_tokens": names, "key_value_tokens": names}],
        "run": {"device": "cpu"},
    }
    return ExplorerRun(data)


def test_group_names_are_escaped_in_every_figure(evil_run: ExplorerRun) -> None:
    figures = all_figures(evil_run)
    figures["titled heatmap"] = heatmap(np.eye(2), None, None, f"weights of {EVIL}")
    figures["titled row"] = row_figure(np.ones(9) / 9, evil_run.layout, f"row of {EVIL}")
    for name, fig in figures.items():
        texts = figure_strings(fig)
        assert not any("<script" in text or "<i>" in text for text in texts), name
    escaped = [t for fig in figures.values() for t in figure_strings(fig) if "&lt;script&gt;" in t]
    assert len(escaped) >= 10
    assert any("b&amp;&lt;i&gt;" in t for fig in figures.values() for t in figure_strings(fig))


def test_raw_figure_would_contain_the_tag() -> None:
    """Control: decoding the JSON does reveal an unescaped name (plotly's \\u003c escaping hides it textually)."""
    fig = go.Figure(go.Bar(x=[EVIL], y=[1]))
    assert "<script>" not in fig.to_json()
    assert any("<script>" in text for text in figure_strings(fig))


# ----------------------------------------------------------------------------------------------------------------------
# PNG
# ----------------------------------------------------------------------------------------------------------------------


def open_png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def map_area(image: Image.Image, side: int) -> np.ndarray:
    from noether.explorer.png import MARGIN_LEFT, MARGIN_TOP

    return np.asarray(image.convert("RGB"))[MARGIN_TOP : MARGIN_TOP + side, MARGIN_LEFT : MARGIN_LEFT + side]


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("n", [3, 100, 700])
def test_heatmap_png_is_a_valid_png(log: bool, n: int) -> None:
    values = (np.logspace(-5, 0, n * n) if log else np.linspace(0, 1, n * n)).reshape(n, n)
    image = open_png(heatmap_png(values, title="weights", log=log))
    assert image.width >= MIN_SIDE and image.height >= MIN_SIDE
    side = max(MIN_SIDE, n) if n >= MIN_SIDE else n * int(np.ceil(MIN_SIDE / n))
    colours = np.unique(map_area(image, side).reshape(-1, 3), axis=0)
    assert len(colours) >= min(n * n, 20)


def test_heatmap_png_of_a_run_with_axes(run: ExplorerRun) -> None:
    values, rows, cols = display_map(run.weights(pixels=16), 16)
    image = open_png(heatmap_png(values, query_axis(run.layout, rows), key_axis(run.layout, cols), "run", log=True))
    assert max(image.size) >= MIN_SIDE


def test_heatmap_png_of_a_constant_map() -> None:
    image = open_png(heatmap_png(np.zeros((4, 4)), log=True))
    assert len(np.unique(map_area(image, 640).reshape(-1, 3), axis=0)) == 1


def test_heatmap_png_log_with_zero_lower_bound_still_shows_the_values() -> None:
    values = np.logspace(-4, 0, 64).reshape(8, 8)
    image = open_png(heatmap_png(values, log=True, zmin=0, zmax=1))
    assert len(np.unique(map_area(image, 640).reshape(-1, 3), axis=0)) > 10


def test_png_colour_bar_ends_read_differently_on_a_narrow_range() -> None:
    from noether.explorer.png import colour_bar_labels

    assert colour_bar_labels(-2.41, -2.38, log=True) == ("0.0042", "0.0039")  # both read "1e-2.4" before
    assert colour_bar_labels(-5.3, -3.1, log=True) == ("0.00079", "5e-06")
    assert colour_bar_labels(0.0, 1.0, log=False) == ("1", "0")


# ----------------------------------------------------------------------------------------------------------------------
# Tables and summaries
# ----------------------------------------------------------------------------------------------------------------------


def test_group_mask_table(run: ExplorerRun) -> None:
    mask = group_mask(run.layout)
    table = group_mask_table(mask)
    assert len(table) == int(mask.allowed.sum())
    assert all(
        list(row) == ["query group", "query tokens", "key group", "key tokens", "attended pairs"] for row in table
    )
    assert sum(row["attended pairs"] for row in table) == mask.total_pairs  # type: ignore[misc]


def test_query_group_table(run: ExplorerRun) -> None:
    result = run.weights(pixels=16)
    table = query_group_table(result, run.layout)
    assert [row["query group"] for row in table] == [g.name for g in run.layout.query_groups]
    expected = ["query group", "tokens", "keys attended", "entropy (nats)", "max entropy", f"top-{result.top_k} mass"]
    assert all(list(row) == expected for row in table)
    for row in table:
        assert 0 <= row["entropy (nats)"] <= row["max entropy"] + 1e-4  # type: ignore[operator]
        assert 0 < row[f"top-{result.top_k} mass"] <= 1.0001  # type: ignore[operator]


def test_top_keys(run: ExplorerRun) -> None:
    result = run.weights(pixels=16)
    table = top_keys(result, run.layout, count=5, head=0)
    assert [row["rank"] for row in table] == [1, 2, 3, 4, 5]
    assert list(table[0]) == ["rank", "key token", "group", "index in group", "attention received", "share"]
    received = result.received[0, 0]
    assert table[0]["key token"] == int(received.argmax())
    values = [row["attention received"] for row in table]
    assert values == sorted(values, reverse=True)  # type: ignore[type-var]
    for row in table:
        group = run.layout.by_name[row["group"]]  # type: ignore[index]
        assert row["key token"] == group.key_offset + row["index in group"]  # type: ignore[operator]


def test_mass_matrix_rows_sum_to_one(run: ExplorerRun) -> None:
    matrix = mass_matrix(run.weights(pixels=16), head=1)
    assert matrix.shape == (len(run.layout.query_groups), len(run.layout.groups))
    np.testing.assert_allclose(matrix.sum(1), 1.0, atol=1e-5)


def test_cost_table(run: ExplorerRun) -> None:
    table = cost_table(run.cost())
    assert all(list(row) == ["quantity", "value"] for row in table)
    quantities = [row["quantity"] for row in table]
    assert "sparsity" in quantities and "attended pairs (per head and sample)" in quantities
    pairs = next(row["value"] for row in table if row["quantity"].startswith("attended pairs"))
    assert pairs == f"{group_mask(run.layout).total_pairs:,}"


def test_backend_table() -> None:
    timings = [
        BackendTiming("per-pattern MixedAttention", True, 0.004, 0.0, "one call"),
        BackendTiming("dense masked SDPA", True, 0.002, 3e-7, "mask"),
        BackendTiming("FlexAttention", False, note="unavailable here"),
    ]
    table = backend_table(timings)
    assert all(list(row) == ["backend", "time", "vs per-pattern", "max |diff|", "note"] for row in table)
    assert table[1]["vs per-pattern"] == "0.50x"
    assert table[1]["max |diff|"] == "3.00e-07"
    assert table[2]["time"] == "—" and table[2]["note"] == "unavailable here"


def test_scenario_summary(run: ExplorerRun) -> None:
    text = scenario_summary(run.layout, group_mask(run.layout))
    assert f"{len(run.layout.groups)} groups" in text
    assert f"{run.layout.n_queries:,} query x {run.layout.n_keys:,} key tokens" in text
    assert ("cached" in text) == run.layout.has_cache


def test_axes_are_in_bin_units(run: ExplorerRun) -> None:
    rows = PoolGrid(run.layout.n_queries, 2)
    axis = query_axis(run.layout, rows)
    assert axis.names == [g.name for g in run.layout.query_groups]
    assert axis.starts[0] == 0 and axis.stops[-1] == run.layout.n_queries / 2
    assert axis.centres == [(a + b) / 2 for a, b in zip(axis.starts, axis.stops, strict=True)]


def test_weight_map_selects_head_and_batch(run: ExplorerRun) -> None:
    result = run.weights(pixels=16)
    np.testing.assert_allclose(weight_map(result, head="mean"), result.mean[0].mean(0).double().numpy())
    np.testing.assert_array_equal(weight_map(result, head=2, pooling="max"), result.max[0, 2].double().numpy())  # type: ignore[index]
