"""Driving the app through Streamlit's AppTest: start it, switch views, type scenario text, read messages.

Modules that use these also take the `fresh_caches` fixture (tests/conftest.py), so that no test sees another's
cached results.
"""

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
