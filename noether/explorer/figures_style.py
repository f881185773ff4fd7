"""Colours, label escaping and chart titles shared by the plotly figures."""

import html
import re
from collections.abc import Sequence

from plotly.colors import get_colorscale

from noether.explorer.titles import TITLE_CHARS, TITLE_FONT_SIZE, wrap_title

MUTED_COLOUR = "#d3d3d3"
"""Tokens outside what a view is about (keys a query may not attend)."""
KEYLESS_COLOUR = "#9ecae1"
"""Tokens that are not keys at all (a perceiver's queries), so no attention can reach them: apart from the grey of
keys a query may not attend, and outside the yellow-to-red value scale."""
SELECTED_COLOUR = "#00E5FF"
POINT_VALUE_SCALE = "YlOrRd"
"""Attention on point clouds: pale yellow for none, dark red for the most."""
GROUP_COLOURS = (
    "#4C78A8",
    "#F58518",
    "#54A24B",
    "#E45756",
    "#72B7B2",
    "#EECA3B",
    "#B279A2",
    "#FF9DA6",
    "#9D755D",
    "#BAB0AC",
)


def group_colours(order: Sequence[str], names: Sequence[str] | None = None) -> list[str]:
    """The colour of each of ``names`` (default: ``order``): that of its place in ``order``, the groups' declared
    order, whatever order they are drawn in, so that a group has one colour in the point cloud's "group" mode and in
    every picker."""
    places = {name: index for index, name in enumerate(order)}
    return [GROUP_COLOURS[places[name] % len(GROUP_COLOURS)] for name in (order if names is None else names)]


_STREAMLIT_PLACEHOLDER = re.compile(r"^#0000[0-9a-f]{2}$", re.IGNORECASE)


def colour_scale(name: str) -> list[tuple[float, str]]:
    """Plotly's named colour scale, safe to show in Streamlit.

    Streamlit's chart theme uses #000001...#0000ff as placeholders that its front end swaps for theme colours, so
    Inferno's first stop (#000004) would draw the lowest values in lavender; a red channel of 01 looks the same.
    """
    return [
        (float(stop), "#01" + colour[3:] if _STREAMLIT_PLACEHOLDER.match(colour) else colour)
        for stop, colour in get_colorscale(name)
    ]


def _label(name: str) -> str:
    """Group names come from user files: escape them before plotly renders its HTML-like labels."""
    return html.escape(name, quote=False)


TITLE_LINE_PX = 20
"""Height of one title line at the title font size: the top margin grows by it for each extra line."""
MULTILINE_TITLE_PAD = 10
"""Plotly draws a top-anchored title of several lines about 10 px higher than one of a single line (measured in
Chromium at the title font size), which cut the first line off at the chart's top edge."""


def _title(title: str, chars: int = TITLE_CHARS) -> dict[str, object]:
    """A chart title wrapped to lines of ``chars`` characters that fit the chart (plotly never wraps one: it runs
    past the right edge), at the top of the container."""
    lines = wrap_title(title, chars)
    return {
        "text": "<br>".join(_label(line) for line in lines),
        "font": {"size": TITLE_FONT_SIZE},
        "y": 0.995,
        "yref": "container",
        "yanchor": "top",
        "pad": {"t": MULTILINE_TITLE_PAD if len(lines) > 1 else 0},
    }


def _title_lines(title: str, chars: int = TITLE_CHARS) -> int:
    return len(wrap_title(title, chars))


BLOCKED_COLOUR = "#8c8c8c"
"""Cells no query may attend: their own colour, outside the colour scale, so that they never pass for small weights."""
