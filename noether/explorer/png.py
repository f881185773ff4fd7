"""PNG images of pooled maps with numpy and Pillow only: works on machines without a browser."""

import functools
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from plotly.colors import get_colorscale, hex_to_rgb, unlabel_rgb

from noether.explorer.titles import wrap_to_pixels
from noether.explorer.views import Axis, MapSpec, log10_map

MIN_SIDE = 640
BLOCKED_RGB = (140, 140, 140)
"""The figures' blocked-cell grey (#8c8c8c)."""
MARGIN_LEFT, MARGIN_TOP, MARGIN_BOTTOM, BAR_WIDTH = 170, 60, 40, 24
"""MARGIN_TOP is the top margin with a one-line title; each further line of a wrapped title adds LINE_HEIGHT."""
LINE_HEIGHT = 16
FONT_SIZE = 11
FONT_FILES = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
"""A font with the title's typography (—, ×, µ) and accented group names; Pillow's built-in one draws them as
boxes, and is only the fallback where no DejaVu font is installed."""
_FALLBACK_TEXT = str.maketrans({"—": "-", "–": "-", "×": "x", "µ": "u", "…": "...", "→": "->", "±": "+/-"})


@functools.cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in FONT_FILES:
        try:
            return ImageFont.truetype(name, FONT_SIZE)
        except OSError:
            continue
    return ImageFont.load_default()


def _drawable(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """``text`` as the font can draw it: the built-in font's missing typography replaced by ASCII look-alikes."""
    if isinstance(font, ImageFont.FreeTypeFont) and "DejaVu" in (font.getname()[0] or ""):
        return text
    return text.translate(_FALLBACK_TEXT)


def colour_table(name: str = "Viridis", levels: int = 256) -> np.ndarray:
    """(levels, 3) uint8 RGB table interpolated from a plotly colour scale."""
    scale = get_colorscale(name)
    stops = np.array([float(s) for s, _ in scale])
    colours = np.array([hex_to_rgb(c) if c.startswith("#") else unlabel_rgb(c) for _, c in scale], dtype=np.float64)
    positions = np.linspace(0.0, 1.0, levels)
    return np.stack([np.interp(positions, stops, colours[:, i]) for i in range(3)], axis=1).round().astype(np.uint8)


def _normalise(
    values: np.ndarray, zmin: float | None, zmax: float | None, log: bool
) -> tuple[np.ndarray, float, float]:
    z, zmin, zmax = log10_map(values, zmin, zmax) if log else (np.asarray(values, dtype=np.float64), zmin, zmax)
    lo = float(np.nanmin(z)) if zmin is None else zmin
    hi = float(np.nanmax(z)) if zmax is None else zmax
    span = hi - lo if hi > lo else 1.0
    return np.clip((z - lo) / span, 0.0, 1.0), lo, hi


def heatmap_png(
    values: np.ndarray,
    rows: Axis | None = None,
    cols: Axis | None = None,
    title: str = "",
    *,
    colorscale: str = "Viridis",
    zmin: float | None = None,
    zmax: float | None = None,
    log: bool = False,
    blocked: np.ndarray | None = None,
) -> bytes:
    """Encode a pooled map as a PNG with group boundaries, group names and a colour bar.

    ``blocked`` cells (every pair blocked by the rules) get their own grey, outside the colour scale.
    """
    unit, lo, hi = _normalise(values, zmin, zmax, log)
    table = colour_table(colorscale)
    pixels = table[(unit * (len(table) - 1)).round().astype(np.int64)]
    has_blocked = blocked is not None and bool(np.asarray(blocked).any())
    if has_blocked:
        pixels[np.asarray(blocked, dtype=bool)] = BLOCKED_RGB
    image = Image.fromarray(pixels, mode="RGB")
    n_rows, n_cols = unit.shape
    scale = max(1, int(np.ceil(MIN_SIDE / max(n_rows, n_cols, 1))))
    image = image.resize((n_cols * scale, n_rows * scale), Image.Resampling.NEAREST)
    width = MARGIN_LEFT + image.width + 3 * BAR_WIDTH + 60
    font = _font()
    # A long title (a preview's sample size, a window's ranges) wraps to the image's width; the map moves down.
    lines = wrap_to_pixels(_drawable(title, font), width - 20, font.getlength)
    top = MARGIN_TOP + LINE_HEIGHT * (len(lines) - 1)
    height = top + image.height + MARGIN_BOTTOM
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(image, (MARGIN_LEFT, top))
    draw = ImageDraw.Draw(canvas)
    for index, line in enumerate(lines):
        draw.text((10, 10 + LINE_HEIGHT * index), line, fill="black", font=font)
    if has_blocked:
        legend = 28 + LINE_HEIGHT * (len(lines) - 1)
        draw.rectangle([(10, legend), (22, legend + 12)], fill=BLOCKED_RGB)
        draw.text((28, legend), "blocked by the rules", fill="black", font=font)
    _draw_axis(draw, rows, scale, top, vertical=True, font=font)
    _draw_axis(draw, cols, scale, top, vertical=False, font=font, extent=image.height)
    _draw_colour_bar(draw, table, lo, hi, log, (MARGIN_LEFT + image.width + BAR_WIDTH, top), image.height, font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def map_png(spec: MapSpec) -> bytes:
    """A :class:`MapSpec` as a PNG, drawn exactly as the chart shows it."""
    return heatmap_png(
        spec.values,
        spec.rows,
        spec.cols,
        spec.title,
        colorscale=spec.colorscale,
        zmin=spec.zmin,
        zmax=spec.zmax,
        log=spec.log,
        blocked=spec.blocked,
    )


def _draw_axis(
    draw: ImageDraw.ImageDraw,
    axis: Axis | None,
    scale: int,
    top: int,
    *,
    vertical: bool,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    extent: int = 0,
) -> None:
    if axis is None:
        return
    for name, start, stop in zip(axis.names, axis.starts, axis.stops, strict=True):
        a, b = start * scale, stop * scale
        if vertical:
            draw.line([(MARGIN_LEFT - 6, top + a), (MARGIN_LEFT - 1, top + a)], fill="black")
            draw.text((8, top + (a + b) / 2 - 6), _drawable(name[:26], font), fill="black", font=font)
        else:
            draw.line([(MARGIN_LEFT + a, top - 6), (MARGIN_LEFT + a, top - 1)], fill="black")
            draw.text((MARGIN_LEFT + a + 2, top - 20), _drawable(name[:24], font), fill="black", font=font)
        if start > 0:
            if vertical:
                draw.line([(MARGIN_LEFT, top + a), (MARGIN_LEFT + 10_000, top + a)], fill="white")
            else:
                draw.line([(MARGIN_LEFT + a, top), (MARGIN_LEFT + a, top + extent)], fill="white")


def _draw_colour_bar(
    draw: ImageDraw.ImageDraw,
    table: np.ndarray,
    lo: float,
    hi: float,
    log: bool,
    origin: tuple[int, int],
    height: int,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    x0, y0 = origin
    for y in range(height):
        colour = tuple(int(c) for c in table[int((1 - y / max(height - 1, 1)) * (len(table) - 1))])
        draw.line([(x0, y0 + y), (x0 + BAR_WIDTH, y0 + y)], fill=colour)
    for label, y in zip(colour_bar_labels(lo, hi, log), (y0, y0 + height - 10), strict=True):
        draw.text((x0 + BAR_WIDTH + 4, y), label, fill="black", font=font)


def colour_bar_labels(lo: float, hi: float, log: bool) -> tuple[str, str]:
    """The colour bar's top and bottom labels: values (``log``: of 10 to the power of the bounds) with as many
    significant digits as it takes to tell the ends apart (a narrow range read "1e-2.4" at both ends)."""
    top, bottom = (10.0**hi, 10.0**lo) if log else (hi, lo)
    for digits in range(2, 7):
        labels = f"{top:.{digits}g}", f"{bottom:.{digits}g}"
        if labels[0] != labels[1]:
            return labels
    return labels
