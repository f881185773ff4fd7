"""Model overview (Model mode): every recorded call in order as a table and a diagram, the depth x (query group →
key group) attention mass with a head picker, and entropy / top-k mass per query group over depth.

A small overview is computed at once; a big one runs in a background job (no Streamlit calls there) polled by a
fragment, with a Stop that leaves the page usable."""

import threading
from collections.abc import Callable

import streamlit as st

from noether.explorer import views
from noether.explorer.model_overview import (
    DEFAULT_TOP_K_ROWS,
    LayerSource,
    ModelOverview,
    call_table,
    model_overview,
    overview_estimate,
)
from noether.explorer.overview_figures import calls_diagram, head_figures
from noether.explorer.problems import ExplorerError
from noether.explorer.ui.context import AUTO_COMPUTE_SECONDS, Context
from noether.explorer.ui.model_store import capture_store, progress_bar, sources_of
from noether.explorer.ui.state import problem_lines, ss
from noether.explorer.ui.widgets import chart, ensure
from noether.explorer.worker import JobKeeper

EVERY_ROW = "every row"
TOP_K_ROW_CHOICES: list[int | str] = [DEFAULT_TOP_K_ROWS, 256, 1024, EVERY_ROW]
JOBS = "overview_jobs"


def render(ctx: Context) -> None:
    store = capture_store()
    if store is None:
        st.info("Open a capture in the sidebar to see the whole model at a glance.")
        return
    sources = sources_of(store)
    for note in store["notes"]:
        st.caption(f"Note: {note}")
    if not sources:
        st.warning("No recorded call of this capture can be recomputed, so there is nothing to summarise.")
        return
    ensure("ov_topk_rows", TOP_K_ROW_CHOICES, DEFAULT_TOP_K_ROWS)
    choice = st.selectbox(
        "Top-k rows per query group",
        TOP_K_ROW_CHOICES,
        key="ov_topk_rows",
        format_func=lambda c: f"{c:,} rows (sampled)" if isinstance(c, int) else "every row (exact, slower)",
        help="Group masses and entropies always use every query row. The top-k mass needs each row's scores, so by "
        "default it is the mean over a stratified random sample of rows, shown with ±1 standard error.",
    )
    rows = None if choice == EVERY_ROW else int(choice)
    key = (store["key"], rows)
    if key not in store:
        overview = _compute(sources, key, rows)
        if overview is None:
            return
        store[key] = overview
    _draw(store[key])


def _compute(sources: list[LayerSource], key: tuple[str, int | None], rows: int | None) -> ModelOverview | None:
    """The overview now when it is quick, else from the background job (None while it runs, after a Stop or a
    failure)."""
    try:
        estimate = overview_estimate(sources, top_k_rows=rows)
        if estimate.seconds <= AUTO_COMPUTE_SECONDS:
            bar, report = progress_bar(f"Attention statistics of {len(sources)} calls…")
            try:
                return model_overview(sources, top_k_rows=rows, progress=report)
            finally:
                bar.empty()
    except ExplorerError as exc:
        st.error(problem_lines(exc.problems))
        return None

    def compute(report: Callable[[float, str], None], cancel: threading.Event) -> ModelOverview:
        return model_overview(sources, top_k_rows=rows, progress=report, cancel=cancel)

    # In the session, like the exact pass's jobs: the page that started a job is the one that polls it.
    jobs: JobKeeper[ModelOverview] = ss.setdefault(JOBS, JobKeeper[ModelOverview]())
    job = jobs.get(key) or jobs.submit(key, compute)
    if job.state == "done":
        return job.result
    if job.state == "running":
        st.caption(f"Computing {estimate} in the background; the other views stay usable.")
        _progress(key)
        return None
    left, right = st.columns([5, 1], vertical_alignment="center")
    if job.state == "failed":
        left.error(f"The overview failed: {job.error}")
    else:
        left.info(f"Overview stopped; computing it again takes {estimate}.")
    right.button("Compute", key="ov_restart", on_click=jobs.submit, args=(key, compute))
    return None


@st.fragment(run_every=1.0)
def _progress(key: tuple[str, int | None]) -> None:
    """Polls the job once a second; when it ends, the page reruns once to draw the overview."""
    job = ss[JOBS].get(key)
    if job is None:
        return
    if job.state == "running":
        left, right = st.columns([5, 1], vertical_alignment="center")
        left.progress(min(max(job.fraction, 0.0), 1.0), text=job.message)
        right.button("Stop", key="ov_stop", on_click=job.stop, icon=":material/stop:")
    else:
        st.rerun(scope="app")


def _draw(overview: ModelOverview) -> None:
    st.markdown(f"**{len(overview.calls)} calls in model order**")
    st.dataframe(call_table(overview), hide_index=True, width="stretch")
    chart(calls_diagram(overview), key="ov_diagram")
    choices = views.head_options(overview.max_heads)
    ensure("ov_head", choices, "mean")
    head = st.selectbox(
        "Head",
        choices,
        format_func=views.head_label,
        key="ov_head",
        help="Head-mean, or one head (calls with fewer heads are left blank).",
    )
    mass, entropy, top = head_figures(overview, head)
    chart(mass, key="ov_mass")
    st.caption(
        "Row = call in model order, column = query group → key group: the mean share of a query's attention that "
        "lands on the key group in that call. Blank: the call does not attend that pair."
    )
    left, right = st.columns(2)
    with left:
        chart(entropy, key="ov_entropy")
    with right:
        chart(top, key="ov_topk")
    st.caption(
        "Per query group over depth: entropy of a query's weights (low = focused) and the share of attention on "
        f"its {overview.top_k} largest keys. {overview.top_k_note}"
    )
    for note in overview.notes:
        st.caption(f"Note: {note}")
