"""The Cost view: the analytic cost table and measured backends.

Backends are timed in a background job (as the exact pass is): dense SDPA and per-pattern MixedAttention first, and
FlexAttention only when asked, since its first call compiles a kernel for up to minutes on a CPU. A fragment polls
the job; the page stays usable while it runs.
"""

import threading
from collections.abc import Callable

import streamlit as st

from noether.explorer import compare, views
from noether.explorer.cost import BackendTiming
from noether.explorer.figures import backend_figure
from noether.explorer.run import ExplorerRun
from noether.explorer.ui.context import Context, needs_run
from noether.explorer.ui.state import ss
from noether.explorer.ui.widgets import chart
from noether.explorer.weights import Cancelled
from noether.explorer.worker import JobKeeper

BACKEND_JOBS = "backend_jobs"
WITHOUT_FLEX, WITH_FLEX = ("mixed", "dense"), ("mixed", "dense", "flex")


def backend_jobs() -> JobKeeper[list[BackendTiming]]:
    """This session's backend measurements, apart from the exact passes so that neither stops the other."""
    if BACKEND_JOBS not in ss:
        ss[BACKEND_JOBS] = JobKeeper[list[BackendTiming]]()
    return ss[BACKEND_JOBS]


def measure(run: ExplorerRun, include: tuple[str, ...]) -> Callable[..., list[BackendTiming]]:
    """The job body: the run's backend timings, stoppable between backends (a compile in flight runs to its end)."""

    def compute(report: Callable[[float, str], None], cancel: threading.Event) -> list[BackendTiming]:
        def checked(fraction: float, message: str) -> None:
            if cancel.is_set():
                raise Cancelled("backend timing stopped")
            report(fraction, message)

        return run.backends(include=include, progress=checked)

    return compute


def _submit(run_key: str, run: ExplorerRun, include: tuple[str, ...]) -> None:
    backend_jobs().submit((run_key, include), measure(run, include))


def render(ctx: Context) -> None:
    assert ctx.scenario is not None
    run = ctx.run
    cost = run.cost() if run is not None else compare.scenario_cost(ctx.scenario)
    st.dataframe(views.cost_table(cost), hide_index=True, width="stretch")
    st.caption(
        "Analytic, from the groups alone. The per-pattern path (MixedAttention) computes only the attended blocks; "
        "one dense masked SDPA call would need the full (queries x keys) mask and compute every pair."
    )
    st.subheader("Measured backends")
    if needs_run(ctx) is None or run is None:
        return
    jobs = backend_jobs()
    job = jobs.get((ctx.run_key, WITH_FLEX)) or jobs.get((ctx.run_key, WITHOUT_FLEX))
    if job is None or job.state == "stopped":
        st.caption(
            f"Times per-pattern MixedAttention and one dense masked SDPA call on {run.device} and checks that their "
            "outputs agree. Runs in the background; the page stays usable."
        )
        st.button(
            "Measure backends", on_click=_submit, args=(ctx.run_key, run, WITHOUT_FLEX), type="primary", key="measure"
        )
        return
    if job.state == "running":
        _backend_progress(job.key)
        return
    if job.state == "failed" or job.result is None:
        st.error(f"Measuring the backends failed: {job.error}")
        return
    timings = job.result
    st.dataframe(views.backend_table(timings), hide_index=True, width="stretch")
    chart(backend_figure(timings))
    st.caption("max |diff|: the largest difference of a backend's attention output from per-pattern MixedAttention.")
    flex = next((t for t in timings if t.name == "FlexAttention"), None)
    if flex is None:
        st.caption(
            "FlexAttention compiles its kernel on its first call (about 100 s on a CPU at 100k tokens); it runs in "
            "the background and its first call's time is reported."
        )
        st.button("Compile and time FlexAttention", on_click=_submit, args=(ctx.run_key, run, WITH_FLEX), key="flex")
    elif flex.available and flex.first_call_seconds is not None:
        st.caption(f"FlexAttention's first call (kernel compile included) took {flex.first_call_seconds:.1f} s.")


@st.fragment(run_every=1.0)
def _backend_progress(key: tuple[str, tuple[str, ...]]) -> None:
    """Polls the job once a second; when it ends, the page reruns once to show the table."""
    job = backend_jobs().get(key)
    if job is None:
        return
    if job.state == "running":
        left, right = st.columns([5, 1], vertical_alignment="center")
        left.progress(min(max(job.fraction, 0.0), 1.0), text=f"Measuring backends in the background: {job.message}")
        right.button("Stop", key="backends_stop", on_click=job.stop, icon=":material/stop:")
        if "flex" in key[1]:
            st.caption("A FlexAttention compile in flight runs to its end; Stop takes effect after it.")
    else:
        st.rerun(scope="app")
