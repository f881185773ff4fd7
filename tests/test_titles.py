"""Long chart titles (a preview's sample size, a window's ranges) wrap to fit the chart instead of being cut off at
its right edge, in plotly charts and in PNGs."""

import io
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageFont

from noether.explorer.figures import map_figure, row_figure
from noether.explorer.figures_style import MULTILINE_TITLE_PAD, TITLE_LINE_PX
from noether.explorer.png import LINE_HEIGHT, MARGIN_TOP, _drawable, map_png
from noether.explorer.run import ExplorerRun
from noether.explorer.titles import TITLE_CHARS, wrap_title, wrap_to_pixels
from noether.explorer.views import weights_map

WORDS = st.text(alphabet="abcdefghij_:(),0123456789", min_size=1, max_size=20)


@given(st.lists(WORDS, min_size=1, max_size=40), st.integers(min_value=20, max_value=120))
def test_wrapped_lines_fit_and_keep_every_word(words: list[str], width: int) -> None:
    title = " ".join(words)
    lines = wrap_title(title, width)
    assert all(len(line) <= width for line in lines)
    assert " ".join(lines).split() == title.split()


@given(st.lists(WORDS, min_size=1, max_size=40), st.integers(min_value=150, max_value=900))
def test_pixel_wrapped_lines_fit_the_measured_width(words: list[str], max_width: int) -> None:
    title = " ".join(words)
    lines = wrap_to_pixels(title, max_width, lambda text: 7.0 * len(text))
    assert all(7.0 * len(line) <= max_width for line in lines)
    assert "".join(lines).replace(" ", "") == title.replace(" ", "")


@pytest.fixture(scope="module")
def preview_spec():
    run = ExplorerRun(
        {
            "attention": {"kind": "mixed", "hidden_dim": 32, "num_heads": 2},
            "token_specs": [{"surface_anchors": 96}, {"surface_queries": 160}, {"volume_anchors": 64}],
            "attention_patterns": [
                {"query_tokens": ["surface_anchors", "surface_queries"], "key_value_tokens": ["surface_anchors"]},
                {"query_tokens": ["volume_anchors"], "key_value_tokens": ["volume_anchors", "surface_anchors"]},
            ],
            "run": {"device": "cpu", "inputs": "random", "seed": 0},
        }
    )
    return weights_map(run.preview(pixels=64, elements=4096), run.layout, 64, 0, "mean", "mean")


def test_a_preview_title_is_wrapped_in_the_chart_and_the_top_margin_makes_room(preview_spec) -> None:
    title = preview_spec.title
    assert title.startswith("PREVIEW (") and len(title) > TITLE_CHARS
    figure = map_figure(preview_spec)
    lines = figure.layout.title.text.split("<br>")
    assert len(lines) >= 2 and all(len(line) <= TITLE_CHARS for line in lines)
    assert " ".join(lines) == title  # nothing dropped (the title has no characters that need escaping)
    assert figure.layout.margin.t == 100 + TITLE_LINE_PX * len(lines)
    assert figure.layout.title.pad.t == MULTILINE_TITLE_PAD  # plotly lifts a multi-line title out of the chart


def test_a_short_title_stays_on_one_line() -> None:
    figure = row_figure(np.ones(10), _tiny_layout(), "query token 3")
    assert figure.layout.title.text == "query token 3"
    assert figure.layout.margin.t == 40 + TITLE_LINE_PX and figure.layout.title.pad.t == 0


def test_a_long_title_in_a_png_wraps_inside_the_image_and_pushes_the_map_down(preview_spec) -> None:
    long_title = preview_spec.title + ", window queries 16000:17024 x keys 15000:16024" * 3
    spec = replace(preview_spec, title=long_title)
    image = np.asarray(Image.open(io.BytesIO(map_png(spec))).convert("L"))
    short = np.asarray(Image.open(io.BytesIO(map_png(preview_spec))).convert("L"))
    extra = image.shape[0] - short.shape[0]
    assert extra > 0 and extra % LINE_HEIGHT == 0  # more title lines, the map lower by whole lines
    title_band = image[: MARGIN_TOP - 25 + extra]
    assert (title_band[:, -12:] == 255).all()  # no text reaches the right edge
    inked_rows = np.nonzero((title_band < 128).any(axis=1))[0]
    assert inked_rows.max() - inked_rows.min() > LINE_HEIGHT  # text on several lines


def test_the_built_in_font_gets_ascii_look_alikes_for_the_titles_typography() -> None:
    assert _drawable("PREVIEW (5 rows) — 3 × 4 µs", ImageFont.load_default()) == "PREVIEW (5 rows) - 3 x 4 us"


def _tiny_layout(size: int = 10):
    from noether.explorer.layout import TokenLayout
    from noether.explorer.scenario import validate_scenario

    report = validate_scenario(
        {
            "attention": {"kind": "mixed", "hidden_dim": 8, "num_heads": 1},
            "token_specs": [{"a": size}],
            "attention_patterns": [{"query_tokens": ["a"], "key_value_tokens": ["a"]}],
        }
    )
    assert report.scenario is not None
    return TokenLayout.from_scenario(report.scenario)


def test_the_compare_views_half_width_diagrams_wrap_their_title_and_compact_their_counts() -> None:
    from noether.explorer.figures import GROUP_MASK_TITLE, group_mask_figure
    from noether.explorer.masks import group_mask
    from noether.explorer.titles import HALF_WIDTH_TITLE_CHARS

    mask = group_mask(_tiny_layout(2048))
    full = group_mask_figure(mask)
    assert full.layout.title.text == GROUP_MASK_TITLE and full.data[0].text[0][0] == "4,194,304"
    half = group_mask_figure(mask, half_width=True)
    lines = half.layout.title.text.split("<br>")
    assert len(lines) == 2 and all(len(line) <= HALF_WIDTH_TITLE_CHARS for line in lines)
    assert half.data[0].text[0][0] == "4.19M" and half.data[0].customdata[0][0] == "4,194,304"  # exact on hover


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (9_999, "9,999"),
        (10_000, "10k"),
        (204_800, "205k"),
        (1_048_576, "1.05M"),
        (4_194_304, "4.19M"),
        (1_610_612_736, "1.61G"),
        (25 * 10**12, "25T"),
    ],
)
def test_compact_counts_stay_short(count: int, text: str) -> None:
    from noether.explorer.figures import compact_count

    assert compact_count(count) == text


def test_long_key_group_names_get_room_above_the_map_for_their_tilted_labels_and_the_title() -> None:
    from noether.explorer.figures import heatmap
    from noether.explorer.views import Axis

    def top_margin(name: str) -> int:
        axis = Axis(names=[name, "b"], starts=[0, 2], stops=[2, 4])
        return heatmap(np.ones((4, 4)), axis, axis, "a title").layout.margin.t

    # A name plotly tilts (the KV-cache example's "surface_anchors (cached)") needs more than the 100 px of short ones.
    assert top_margin("surface_anchors (cached)") > top_margin("anchors") == 100 + TITLE_LINE_PX
