"""The shared context the views receive, the cached engine objects, and the progress and compute-gate helpers."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import streamlit as st

from noether.explorer import editing as ed
from noether.explorer import views
from noether.explorer.presets import load_preset
from noether.explorer.problems import ExplorerError, Problem
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import Scenario, ScenarioReport
from noether.explorer.ui.state import ACTIVE, BUDGET, CLOUD, REQUESTED, WEIGHTS, on_request, problem_lines, ss
from noether.explorer.weights import WeightOptions, WeightResult

# Pixels per axis of every map; the weights are computed on this grid, so the displays never re-pool.
DISPLAY_BINS = 400
# Estimated seconds below which weights and KV-cache checks run without asking.
AUTO_COMPUTE_SECONDS = 3.0

# One prepared run per scenario (+ weights, cloud, budget); its memoisation does the rest. Cached functions live at
# module level of an imported module so that Streamlit keeps one cache across reruns.


@st.cache_resource(max_entries=4, show_spinner="Preparing the module and inputs…")
def prepared_run(
    run_key: str,
    _scenario: Scenario,
    _weights: dict | None,
    _prefix: str | None,
    _cloud: dict | None,
    _budget_mb: float | None,
) -> ExplorerRun | list[Problem]:
    """The run, or why it cannot be prepared (cached too, so that a refusal is not retried on every rerun)."""
    try:
        return ExplorerRun(
            _scenario, weights=_weights, weights_prefix=_prefix, point_cloud=_cloud, memory_budget_mb=_budget_mb
        )
    except ExplorerError as exc:
        return exc.problems


@st.cache_resource(max_entries=16, show_spinner=False)
def cached_mask_view(key: str, _scenario: Scenario) -> views.MaskView:
    return views.mask_view(_scenario, DISPLAY_BINS)


@st.cache_resource(max_entries=16, show_spinner=False)
def cached_preset(key: str) -> Scenario:
    return load_preset(key)


@dataclass
class Context:
    """What the views need: the draft and its report, and the last valid scenario prepared for running."""

    draft: dict[str, Any]
    report: ScenarioReport
    scenario: Scenario | None
    mask: views.MaskView | None = None
    run: ExplorerRun | None = None
    run_key: str = ""
    run_problems: list[Problem] | None = None

    @property
    def edited_is_valid(self) -> bool:
        return self.report.ok


def prepare(draft: dict[str, Any], report: ScenarioReport) -> Context:
    scenario = ss.get(ACTIVE)
    ctx = Context(draft, report, scenario)
    if scenario is None:
        return ctx
    key = ed.scenario_key(scenario)
    ctx.mask = cached_mask_view(key, scenario)
    weights, cloud = ss.get(WEIGHTS), ss.get(CLOUD)
    prefix = (ss.get("w_prefix") or None) if weights else None
    budget = float(ss.get(BUDGET) or 0)
    ctx.run_key = ed.run_cache_key(
        scenario,
        weights_digest=weights["digest"] if weights else "",
        weights_prefix=prefix or "",
        cloud_digest=cloud["digest"] if cloud else "",
        memory_budget_mb=budget,
    )
    prepared = prepared_run(
        ctx.run_key,
        scenario,
        weights["state_dict"] if weights else None,
        prefix,
        cloud["arrays"] if cloud and scenario.run.inputs == "point_cloud" else None,
        budget or None,
    )
    if isinstance(prepared, ExplorerRun):
        ctx.run = prepared
    else:
        ctx.run_problems = prepared
    return ctx


@contextmanager
def progress(label: str) -> Iterator[Callable[[float, str], None]]:
    """A progress bar fed by the engine's per-call callback (the cached run is shared, so nothing is set on it)."""
    bar = st.progress(0.0, text=label)

    def report(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

    try:
        yield report
    finally:
        bar.empty()


def needs_run(ctx: Context) -> ExplorerRun | None:
    if ctx.run is None:
        st.error("The scenario cannot be prepared for running:\n" + problem_lines(ctx.run_problems or [], ctx.draft))
    return ctx.run


def gate(ctx: Context, what: str, estimate: Any, button: str) -> bool:
    """Small jobs run at once; bigger ones wait for a click (the estimate says how big)."""
    token = f"{what}:{ctx.run_key}"
    if estimate.seconds <= AUTO_COMPUTE_SECONDS or token in ss[REQUESTED]:
        return True
    st.info(
        f"This is a bigger computation: {estimate} (a rough estimate; a busy CPU can take several times longer). "
        "It runs when you ask for it, with a progress bar."
    )
    st.button(button, type="primary", on_click=on_request, args=(token,), key=f"request_{what}")
    return False


def compute_weights(ctx: Context) -> WeightResult | None:
    run = needs_run(ctx)
    if run is None or not gate(ctx, "weights", run.weights_estimate(DISPLAY_BINS, WeightOptions()), "Compute weights"):
        return None
    with progress("Computing attention weights…") as report:
        return run.weights(DISPLAY_BINS, progress=report)
