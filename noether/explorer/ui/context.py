"""The shared context the views receive, the cached engine objects, and the progress and compute-gate helpers."""

import threading
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
from noether.explorer.ui.state import ACTIVE, BUDGET, CLOUD, REQUESTED, WEIGHTS, on_request, ss
from noether.explorer.weights import WeightOptions, WeightResult
from noether.explorer.worker import ExactJob, JobKeeper

EXACT_JOBS, STOPPED, SHOWN_EXACT = "exact_jobs", "exact_stopped", "exact_shown"

# Pixels per axis of every map; the weights are computed on this grid, so the displays never re-pool.
DISPLAY_BINS = 400
# Estimated seconds below which weights and KV-cache checks run without asking.
AUTO_COMPUTE_SECONDS = 3.0
# From this many query tokens on, weights show a preview at once and the exact pass runs in the background.
PREVIEW_FROM_TOKENS = 16384

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
    from_capture: bool = False
    """The scenario is a recorded call's (Model mode): it is picked in the layer list, not edited in the sidebar."""

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
        # The reasons are listed once, above the views; repeating them in every view doubled the list.
        st.info("This view needs the scenario to run; the reasons it cannot are listed above the views.")
    return ctx.run


def gate(ctx: Context, what: str, estimate: Any, button: str) -> bool:
    """Small jobs run at once; bigger ones wait for a click (the estimate says how big)."""
    token = f"{what}:{ctx.run_key}"
    if estimate.seconds <= AUTO_COMPUTE_SECONDS or token in ss[REQUESTED]:
        return True
    st.info(
        f"This is a bigger computation: {estimate} (estimated from this machine's measured speed; other load on "
        "it can change that). "
        "It runs when you ask for it, with a progress bar."
    )
    st.button(button, type="primary", on_click=on_request, args=(token,), key=f"request_{what}")
    return False


def exact_jobs() -> JobKeeper[WeightResult]:
    """This session's background exact passes (one per run key; a new key stops the running one)."""
    if EXACT_JOBS not in ss:
        ss[EXACT_JOBS] = JobKeeper[WeightResult]()
    return ss[EXACT_JOBS]


def start_exact(ctx: Context, run: ExplorerRun) -> ExactJob[WeightResult]:
    """The background exact pass of this run (the running or finished one if there is one)."""
    ss.setdefault(STOPPED, set()).discard(ctx.run_key)

    def compute(report: Callable[[float, str], None], cancel: threading.Event) -> WeightResult:
        return run.weights(DISPLAY_BINS, progress=report, cancel=cancel)

    return exact_jobs().submit(ctx.run_key, compute)


def stop_exact(run_key: str) -> None:
    ss.setdefault(STOPPED, set()).add(run_key)
    exact_jobs().stop(run_key)


def compute_weights(ctx: Context) -> WeightResult | None:
    """The exact weights when kept; else small jobs run at once, and big ones show a preview while the exact pass
    runs in the background (see :func:`exact_panel`), unless the user stopped it."""
    run = needs_run(ctx)
    if run is None:
        return None
    exact = run.kept_weights(DISPLAY_BINS)
    if exact is not None:
        return exact
    estimate = run.weights_estimate(DISPLAY_BINS, WeightOptions())
    if estimate.seconds <= AUTO_COMPUTE_SECONDS and run.layout.n_queries < PREVIEW_FROM_TOKENS:
        with progress("Computing attention weights…") as report:
            return run.weights(DISPLAY_BINS, progress=report)
    with st.spinner("Sampling query rows for a preview…"):
        preview = run.preview(DISPLAY_BINS)
    if ctx.run_key not in ss.get(STOPPED, set()):
        run.check(estimate)
        start_exact(ctx, run)
    st.info(views.preview_note(preview, run.layout), icon=":material/preview:")
    return preview


def exact_panel(run_key: str) -> None:
    """Where the background exact pass stands: progress and Stop while it runs, a restart button once stopped."""
    job = exact_jobs().get(run_key)
    if job is None or (job.state == "done" and ss.get(SHOWN_EXACT) == run_key):
        return
    if job.state in ("running", "done"):
        _exact_progress(run_key)
    elif job.state == "stopped":
        left, right = st.columns([5, 1], vertical_alignment="center")
        left.info("Exact pass stopped; the preview stays on screen.")
        if right.button("Compute exact", key="exact_restart"):
            ss.setdefault(STOPPED, set()).discard(run_key)
            st.rerun()
    else:
        st.error(f"The exact pass failed: {job.error}. The preview stays on screen.")


@st.fragment(run_every=1.0)
def _exact_progress(run_key: str) -> None:
    """Polls the job once a second (nothing else reruns); when the pass completes, the whole page reruns once so
    that every view swaps its preview for the exact result."""
    job = exact_jobs().get(run_key)
    if job is None:
        return
    if job.state == "running":
        left, right = st.columns([5, 1], vertical_alignment="center")
        left.progress(min(max(job.fraction, 0.0), 1.0), text=f"Exact pass in the background: {job.message}")
        right.button("Stop", key="exact_stop", on_click=stop_exact, args=(run_key,), icon=":material/stop:")
    else:
        ss[SHOWN_EXACT] = run_key if job.state == "done" else None
        st.rerun(scope="app")
