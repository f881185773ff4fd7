"""The shape of the Streamlit app: thin entry scripts, tabs in a fixed order, small modules, a Streamlit-free engine."""

import importlib.resources
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from noether.explorer.ui.registry import TABS, VIEWS

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "noether" / "explorer" / "ui"
MAX_UI_LINES = 400


def test_tabs_keep_their_order_and_titles():
    assert TABS == ("Mask", "Weights", "Statistics", "Cost", "KV cache", "Spatial", "Compare", "Edit as text", "Export")
    assert {view.title for view in VIEWS if view.fragment} == {"Weights", "Statistics", "Spatial", "Compare"}


def test_entry_scripts_only_call_main():
    installed = importlib.resources.files("noether.explorer.ui") / "streamlit_app.py"
    assert installed.is_file()
    assert installed.read_text() == (ROOT / "app.py").read_text()
    code = [line for line in (ROOT / "app.py").read_text().splitlines() if line and not line.startswith("#")]
    assert code == ["from noether.explorer.ui.main import main", "main()"]


def test_installed_script_runs_the_app():
    at = AppTest.from_file(str(importlib.resources.files("noether.explorer.ui") / "streamlit_app.py"))
    at.run(timeout=60)
    assert not at.exception, [e.message for e in at.exception]
    assert [t.label for t in at.tabs][: len(TABS)] == list(TABS)


def test_ui_modules_stay_small():
    lengths = {path.name: len(path.read_text().splitlines()) for path in UI.glob("*.py")}
    assert len(lengths) > 10
    assert {name: n for name, n in lengths.items() if n > MAX_UI_LINES} == {}


@pytest.mark.slow  # a fresh interpreter imports the whole engine
def test_engine_does_not_import_streamlit():
    modules = (ROOT / "noether" / "explorer").glob("*.py")
    engine = sorted(f"noether.explorer.{path.stem}" for path in modules if path.stem != "__main__")
    script = f"import sys\nfor name in {engine!r}:\n    __import__(name)\nprint('streamlit' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    assert result.stdout.strip() == "False", engine
