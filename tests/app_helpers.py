"""Driving the app through Streamlit's AppTest: start it, switch views, type scenario text, read messages.

Modules that use these also take the `fresh_caches` fixture (tests/conftest.py), so that no test sees another's
cached results.
"""

import json
import re
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

from noether.explorer.presets import DEFAULT_PRESET

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def clean(at: AppTest) -> AppTest:
    """No exception blocks and no unexpected-error messages."""
    assert not at.exception, [e.message for e in at.exception]
    assert not [e.value for e in at.error if "unexpected error" in e.value]
    return at


def show(at: AppTest, tab: str) -> AppTest:
    at.session_state["view"] = tab
    return clean(at.run())


def start(preset: str | None = None, tab: str | None = None, **query: str) -> AppTest:
    """The app in single-layer mode on ``preset`` (default: the default example), query parameters set first."""
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    clean(at.run())
    if preset is not None and preset != DEFAULT_PRESET:
        clean(at.selectbox(key="preset").select(preset).run())
    if tab is not None:
        show(at, tab)
    return at


def model_mode(path: Path | None = None, timeout: float = 120) -> AppTest:
    """The app in Model mode, with the capture at ``path`` uploaded when given."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    clean(at.run())
    clean(at.radio(key="mode").set_value("Model").run())
    if path is not None:
        clean(at.get("file_uploader")[0].upload(path.name, path.read_bytes()).run())
    return at


def set_text(at: AppTest, text: str) -> AppTest:
    """Type into the scenario text editor (its on_change applies it)."""
    if at.session_state["view"] != "Edit as text":
        show(at, "Edit as text")
    return clean(at.text_area(key="text_editor").input(text).run())


def texts(elements: Any) -> str:
    """The text of elements with markdown escapes removed (the app escapes names that come from user input)."""
    return re.sub(r"\\(.)", r"\1", "\n".join(e.value for e in elements))


def select_on_chart(at: AppTest, key: str, points: list[dict[str, Any]] | None = None, box: Any = None) -> AppTest:
    """Run the app as if the user had selected on the plotly chart with ``key``: points clicked, or a box drawn.

    AppTest has no plotly chart widget, so this sends the widget state the browser would send for the chart's
    element id, through AppTest's own run path (Streamlit's deserializer and the chart's on_select callback run as
    in the app). The JSON is what Streamlit 1.67's front end builds from plotly's selection event (``handleSelection``
    in frontend/lib/src/components/elements/PlotlyChart/utils.ts; ``PlotlySelectionState`` in
    streamlit/elements/plotly_chart.py): snake_case point fields and boxes as ``{"xref", "yref", "x": [x0, x1],
    "y": [y0, y1]}``.
    """
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    ids = [e.proto.id for e in at.get("plotly_chart") if e.proto.id.endswith(f"-{key}")]
    assert len(ids) == 1, f"expected one chart with key {key!r}, found {len(ids)}"
    points = points or []
    selection = {
        "selection": {
            "points": points,
            "point_indices": [p["point_index"] for p in points],
            "box": [box] if box is not None else [],
            "lasso": [],
        }
    }
    states = at._tree.get_widget_states()
    states.widgets.append(WidgetState(id=ids[0], string_value=json.dumps(selection)))
    return clean(at._run(states))
