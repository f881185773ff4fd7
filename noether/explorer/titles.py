"""Chart titles that fit their chart: a long title (a preview's sample size, a window's token ranges, a layer's path)
wraps at word boundaries instead of running past the right edge, in plotly charts and in PNGs alike."""

import textwrap
from collections.abc import Callable

TITLE_CHARS = 72
"""Characters per title line in plotly charts: about 540 px at their 15 px title font, so a title fits the main
column of the app at a 1280 px wide window."""
HALF_WIDTH_TITLE_CHARS = 36
"""Characters per title line of a chart in half the main column (the Compare view's side-by-side diagrams)."""
TITLE_FONT_SIZE = 15


def wrap_title(title: str, width: int = TITLE_CHARS) -> list[str]:
    """``title`` in lines of at most ``width`` characters, broken at spaces (a longer word is split)."""
    lines = textwrap.wrap(title, width, break_long_words=True, break_on_hyphens=False)
    return lines or [""]


def wrap_to_pixels(title: str, max_width: float, measure: Callable[[str], float]) -> list[str]:
    """``title`` in lines no wider than ``max_width`` as ``measure`` (a font's text length) sees them."""
    if measure(title) <= max_width:
        return [title]
    width = len(title)
    while width > 1:
        width -= max(1, width // 20)
        lines = wrap_title(title, width)
        if all(measure(line) <= max_width for line in lines):
            return lines
    return wrap_title(title, 1)
