"""What the model-wide views share: one store per opened capture (its layer sources, the overview, rollouts), kept
across reruns so that switching a head or a statistic redraws without recomputing."""

from typing import Any

import streamlit as st

from noether.explorer.capture_overview import capture_positions, capture_sources
from noether.explorer.model_overview import LayerSource
from noether.explorer.ui.model_mode import CAPTURE
from noether.explorer.ui.state import BUDGET, ss


@st.cache_resource(max_entries=4, show_spinner=False)
def _store(key: str) -> dict[str, Any]:
    return {}


def capture_store() -> dict[str, Any] | None:
    """The store of the opened capture (None while none is open), keyed by its digest and the memory budget."""
    opened = ss.get(CAPTURE)
    if not opened:
        return None
    budget = float(ss.get(BUDGET) or 0)
    key = f"{opened['digest']}:{budget}"
    store = _store(key)
    store.setdefault("key", key)
    if "sources" not in store:
        with st.spinner("Preparing every recorded call with its inputs and weights…"):
            sources, notes = capture_sources(
                opened["capture"], statuses=opened.get("statuses"), verify=False, memory_budget_mb=budget or None
            )
        store["sources"], store["notes"] = sources, notes
        store["positions"] = capture_positions(opened["capture"])
    return store


def sources_of(store: dict[str, Any]) -> list[LayerSource]:
    return store["sources"]


def progress_bar(text: str) -> tuple[Any, Any]:
    """A progress bar and the (fraction, message) callback that moves it."""
    bar = st.progress(0.0, text=text)

    def report(fraction: float, message: str) -> None:
        bar.progress(min(max(fraction, 0.0), 1.0), text=message)

    return bar, report
