"""The views, in tab order: a new view is one module with a ``render(ctx)`` function plus one line here."""

from collections.abc import Callable
from dataclasses import dataclass

from noether.explorer.ui import (
    view_compare,
    view_cost,
    view_export,
    view_kv_cache,
    view_mask,
    view_model_overview,
    view_rollout,
    view_spatial,
    view_statistics,
    view_text,
    view_weights,
)
from noether.explorer.ui.context import Context


@dataclass(frozen=True)
class View:
    """One tab of the page."""

    title: str
    """Tab title; also the value of the tab widget's session-state key."""
    render: Callable[[Context], None]
    """Draws the view into the open tab."""
    fragment: bool = False
    """The view is a Streamlit fragment that guards itself, so that its own widgets rerun only it."""


VIEWS: tuple[View, ...] = (
    View("Mask", view_mask.render),
    View("Weights", view_weights.render, fragment=True),
    View("Statistics", view_statistics.render, fragment=True),
    View("Cost", view_cost.render),
    View("KV cache", view_kv_cache.render),
    View("Spatial", view_spatial.render, fragment=True),
    View("Compare", view_compare.render, fragment=True),
    View("Edit as text", view_text.render),
    View("Export", view_export.render),
)
TABS = tuple(view.title for view in VIEWS)
MODEL_VIEWS: tuple[View, ...] = (
    View("Model overview", view_model_overview.render),
    View("Rollout", view_rollout.render),
)
"""Views of a whole capture, shown after the layer views in Model mode only."""
MODEL_TABS = tuple(view.title for view in MODEL_VIEWS)
