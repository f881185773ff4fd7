"""What the app's views select and show, as plain data: heads, query and key tokens, per-token values, colour
ranges, PNG downloads, device choices and point-cloud shortfalls."""

import numpy as np
import pytest

from noether.explorer import views
from noether.explorer.devices import device_label, device_options
from noether.explorer.figures import map_figure
from noether.explorer.inputs import short_of_points
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.png import map_png
from noether.explorer.presets import load_preset
from noether.explorer.run import ExplorerRun


@pytest.fixture(scope="module")
def small_run() -> ExplorerRun:
    """Cached anchors (16 and 8 keys) and two query groups (24 and 20 tokens)."""
    return ExplorerRun(
        {
            "attention": {"kind": "self_anchor", "hidden_dim": 16, "num_heads": 2, "branches": ["surface", "volume"]},
            "token_specs": [
                {"surface_anchors": None},
                {"surface_queries": 24},
                {"volume_anchors": None},
                {"volume_queries": 20},
            ],
            "run": {
                "device": "cpu",
                "kv_cache_sizes": {"surface_anchors": 16, "volume_anchors": 8},
            },
        }
    )


def test_query_rows_and_key_columns_skip_cached_groups(small_run):
    layout = small_run.layout
    assert views.query_row(layout, "volume_queries", 3) == 24 + 3
    assert views.query_row(layout, "volume_queries", 999) == 24 + 19
    assert views.query_token_index(layout, 24 + 3) == 16 + 24 + 8 + 3
    with pytest.raises(KeyError):
        views.query_row(layout, "surface_anchors", 0)
    labels = views.token_labels(layout)
    assert len(labels) == layout.n_inputs == layout.n_keys
    assert labels[16] == "surface_queries" and labels[-1] == "volume_queries"


ANCHORS = {
    "attention": {"kind": "self_anchor", "hidden_dim": 16, "num_heads": 2, "branches": ["surface", "volume"]},
    "token_specs": [{"surface_anchors": 6}, {"surface_queries": 10}, {"volume_anchors": 4}, {"volume_queries": 9}],
    "run": {"device": "cpu"},
}
PADDED = {
    "attention": {"kind": "mixed", "hidden_dim": 16, "num_heads": 2},
    "token_specs": [{"a": 6}, {"b": 9}],
    "attention_patterns": [{"query_tokens": ["a", "b"], "key_value_tokens": ["a", "b"]}],
    "run": {"device": "cpu", "padding": {"b": 3}},
}


@pytest.mark.parametrize(
    ("document", "row", "expected"),
    [(ANCHORS, 0, range(6)), (ANCHORS, 20, range(16, 20)), (PADDED, 7, range(12))],
)
def test_attended_keys_are_where_the_weights_are(document, row, expected):
    run = ExplorerRun(document)
    for query in range(run.layout.n_queries):
        np.testing.assert_array_equal(
            views.row_weights(run, query, 0, "mean") > 0, views.attended_keys(run.layout, query)
        )
    # A query reads its pattern's groups, less their padded tokens (the last 3 of b).
    assert np.flatnonzero(views.attended_keys(run.layout, row)).tolist() == list(expected)


def test_row_received_and_positions(small_run):
    row = views.row_weights(small_run, 5, 0, "mean")
    assert row.shape == (small_run.layout.n_keys,) and row.dtype == np.float64
    assert row.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(row[16:], 0.0)  # surface queries attend only to the cached surface anchors
    heads = [views.row_weights(small_run, 5, 0, head) for head in (0, 1)]
    np.testing.assert_allclose(row, (heads[0] + heads[1]) / 2, atol=1e-7)
    result = small_run.weights(64)
    received = views.received_weights(result, 0, "mean")
    assert received.sum() == pytest.approx(small_run.layout.n_queries, rel=1e-4)
    assert views.token_positions(small_run, 0).shape == (small_run.layout.n_keys, 3)


def test_colour_ranges_titles_and_pngs(small_run):
    result = small_run.weights(64)
    low, high = views.head_colour_range(result, 0, "mean", log=False)
    assert low == 0.0 and high == pytest.approx(float(result.mean[0].max()))
    low_log, _ = views.head_colour_range(result, 0, "max", log=True)
    assert low_log > 0
    assert views.colour_range([np.zeros((2, 2))], log=True) == (1e-12, 1.0)
    maps = views.weight_maps(result, 8, 0, [0, 1], "max")
    assert len(maps) == 2 and maps[0][0].shape[0] <= 8
    spec = views.weights_map(result, small_run.layout, 400, 0, "mean", "mean", log=True, zrange=(1e-3, 1.0))
    assert map_png(spec).startswith(b"\x89PNG")
    # Chart and PNG are drawn from the same description: same values, range and title.
    chart = map_figure(spec)
    # The chart wraps a long title to lines (plotly never wraps one itself); the words are the PNG's.
    assert chart.layout.title.text.replace("<br>", " ") == spec.title and chart.data[0].zmin == pytest.approx(-3.0)
    view = views.mask_view(small_run.scenario, 400)
    mask = views.mask_map(view.layout, view.pooled, view.rows, view.cols)
    assert map_png(mask).startswith(b"\x89PNG") and (mask.zmin, mask.zmax, mask.log) == (0.0, 1.0, False)
    assert view.pooled.shape == (view.rows.bins, view.cols.bins)
    assert views.grid_note(view.rows, view.cols) == "exact: 1 cell = 1 query-key pair"
    assert views.grid_note(PoolGrid(5000, 13), PoolGrid(9000, 1200)) == "1 cell = 13 query x 1,200 key tokens"
    assert views.weights_title(0, "max", view.rows, view.cols) == (
        "Attention weights, head 0, max pooling (exact: 1 cell = 1 query-key pair)"
    )


def test_log10_map_keeps_a_shared_lower_limit():
    # Each head's map has its own smallest value; the shared lower limit must not be raised to it.
    z, low, high = views.log10_map(np.array([[0.0, 3e-3], [4e-3, 1e-2]]), 1e-3, 1e-1)
    assert (low, high) == pytest.approx((-3, -1))
    assert z[0, 0] == pytest.approx(-3)  # zeros draw in the lowest colour
    z, low, high = views.log10_map(np.array([[0.0, 2e-3]]), 0.0, None)
    assert low == pytest.approx(np.log10(2e-3)) and high is None and z.min() == pytest.approx(low)


def test_head_and_device_choices():
    assert views.head_options(3) == ["mean", 0, 1, 2]
    assert views.head_options(3, with_all=True)[-1] == views.ALL_HEADS
    assert views.head_options(1, with_all=True) == ["mean", 0]
    assert views.head_label(0) == "head 0" and views.head_label("mean") == "mean over heads"
    assert views.head_label(views.ALL_HEADS) == "all heads side by side"
    assert device_options("cuda", ["cpu"]) == ["auto", "cpu", "cuda"]
    assert device_options("cpu", ["cpu"]) == ["auto", "cpu"]
    assert device_label("cuda", ["cpu"]) == "cuda (not available here)"
    assert device_label("auto", ["cpu"]) == "auto (here: cpu)"


def test_short_of_points_names_groups_the_cloud_cannot_fill():
    layout = TokenLayout.from_scenario(load_preset("self_anchor"))
    cloud = {"surface": np.zeros((1500, 3)), "volume": np.zeros((5000, 3))}
    assert short_of_points(layout, cloud) == {"surface_queries": 1500}
    other = TokenLayout.from_scenario(load_preset("perceiver"))  # other names draw from both domains
    assert short_of_points(other, cloud) == {}
