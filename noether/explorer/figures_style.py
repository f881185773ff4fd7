"""Colours and label escaping shared by the plotly figures."""

import html
import re

from plotly.colors import get_colorscale

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


BLOCKED_COLOUR = "#8c8c8c"
"""Cells no query may attend: their own colour, outside the colour scale, so that they never pass for small weights."""
