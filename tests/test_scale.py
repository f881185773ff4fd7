"""Preview, window and background exact pass: estimates agree with the exact pass within their errors, windows are
the exact matrix's cells, and the background pass stops, reuses and restarts as promised."""

import threading
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noether.explorer.layout import PoolGrid
from noether.explorer.problems import ExplorerError
from noether.explorer.run import ExplorerRun
from noether.explorer.sampling import preview_grid, rows_per_group, standard_errors, stratified_rows
from noether.explorer.views import repool, weight_map, weights_map
from noether.explorer.weights import Cancelled, WeightResult
from noether.explorer.window import Window, parse_window
from noether.explorer.worker import ExactJob, JobKeeper
from tests.test_masks_weights import WEIGHT_DOC, hand_pool, manual_weights, scenario_of

# Two branches of a few hundred tokens: big enough that a preview samples a fraction of the rows.
MID_DOC: dict[str, Any] = {
    "attention": {"kind": "self_anchor", "hidden_dim": 16, "num_heads": 2, "branches": ["surface", "volume"]},
    "token_specs": [{"surface_anchors": 64}, {"surface_queries": 600}, {"volume_anchors": 48}, {"volume_queries": 500}],
    "run": {"inputs": "random", "seed": 5},
}


@pytest.fixture(scope="module")
def small() -> ExplorerRun:
    return ExplorerRun(scenario_of(WEIGHT_DOC))


@pytest.fixture(scope="module")
def mid() -> ExplorerRun:
    return ExplorerRun(scenario_of(MID_DOC))


# ----------------------------------------------------------------------------------------------------------------------
# Preview
# ----------------------------------------------------------------------------------------------------------------------


def test_preview_sampling_every_row_is_the_exact_pass(small: ExplorerRun) -> None:
    preview, exact = small.preview(pixels=64), small.weights(pixels=64)
    assert preview.preview and not exact.preview
    assert preview.sampled_rows == small.layout.n_queries
    for name in ("group_mass", "entropy", "top_k_mass", "received"):
        assert torch.allclose(getattr(preview, name), getattr(exact, name), atol=1e-5), name
    expected = repool(weight_map(exact), exact.rows, exact.cols, preview.rows, preview.cols, "mean")
    assert np.allclose(weight_map(preview), expected, atol=1e-6)
    assert all((errors == 0).all() for errors in standard_errors(preview).values())


def test_preview_of_a_fraction_is_within_its_standard_errors(mid: ExplorerRun) -> None:
    elements = 2 * 80 * 64 * 2  # about 80 sampled rows per branch
    preview, exact = mid.preview(pixels=256, elements=elements), mid.weights(pixels=256)
    assert 0 < preview.sampled_rows < mid.layout.n_queries // 4
    errors = standard_errors(preview)
    for name in ("group_mass", "entropy", "top_k_mass"):
        estimate = getattr(preview, name)[0].mean(0).double().numpy()
        truth = getattr(exact, name)[0].mean(0).double().numpy()
        se = errors[name]
        assert np.all(np.isfinite(se)) and (se > 0).any(), name
        assert np.all(np.abs(estimate - truth) <= 4 * se + 1e-9), name
    # The coarser preview grid re-pools the exact map onto itself: the estimate tracks it cell by cell on average.
    exact_on_grid = repool(weight_map(exact), exact.rows, exact.cols, preview.rows, preview.cols, "mean")
    error = np.abs(weight_map(preview) - exact_on_grid).mean()
    assert error < 0.25 * exact_on_grid.mean()


def test_preview_is_deterministic_and_titled_as_a_preview(mid: ExplorerRun) -> None:
    first = mid.preview(pixels=128, elements=4096)
    again = ExplorerRun(scenario_of(MID_DOC)).preview(pixels=128, elements=4096)
    assert torch.equal(first.mean, again.mean)
    spec = weights_map(first, mid.layout, 128, 0, "mean", "mean")
    assert spec.title.startswith(f"PREVIEW ({first.sampled_rows:,} sampled query rows)")


@settings(max_examples=40, deadline=None)
@given(data=st.data(), budget=st.integers(1, 4000), pixels=st.integers(1, 300), seed=st.integers(0, 99))
def test_strata_cover_each_group_once_and_stay_inside_bins(
    mid: ExplorerRun, data: st.DataObject, budget: int, pixels: int, seed: int
) -> None:
    layout = mid.layout
    counts = rows_per_group(layout, 1, 2, budget * 64)
    grid = preview_grid(layout, PoolGrid.fit(layout.n_queries, pixels), counts)
    sample = stratified_rows(layout, grid, counts, seed)
    for index, group in enumerate(layout.query_groups):
        mine = sample.groups == index
        assert sample.weights[mine].sum() == group.size
        rows = sample.rows[mine]
        assert ((rows >= group.query_offset) & (rows < group.query_offset + group.size)).all()
        assert mine.sum() <= group.size
    assert len(np.unique(sample.rows)) == len(sample.rows)


# ----------------------------------------------------------------------------------------------------------------------
# Window
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["0:22,0:22", "3:15,2:19", "5:6,0:22", "10:22,16:17"])
def test_small_window_is_the_exact_matrix(small: ExplorerRun, window: str) -> None:
    parsed = parse_window(window)
    result = small.window(parsed, pixels=64)
    assert result.rows.exact and result.cols.exact and result.origin == (parsed.q0, parsed.k0)
    full = manual_weights(small)[..., parsed.q0 : parsed.q1, parsed.k0 : parsed.k1]
    assert torch.allclose(result.mean, full, atol=1e-6)
    assert torch.allclose(result.max, full, atol=1e-6)
    assert torch.allclose(result.head_mean_max, full.mean(1), atol=1e-6)


def test_large_window_pools_onto_the_pixel_budget(small: ExplorerRun) -> None:
    result = small.window(Window(1, 21, 0, 22), pixels=5)
    full = manual_weights(small)[..., 1:21, :]
    assert result.rows == PoolGrid(20, 4) and result.cols == PoolGrid(22, 5)
    assert torch.allclose(result.mean, hand_pool(full, 4, 5, "mean"), atol=1e-6)
    assert torch.allclose(result.max, hand_pool(full, 4, 5, "max"), atol=1e-6)
    spec = weights_map(result, small.layout, 5, 0, 0, "mean")
    assert "window queries 1:21 x keys 0:22" in spec.title
    assert spec.rows.names[0] == "lat" and spec.rows.starts[0] == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1:20", "is not a window"), ("a:b,c:d", "is not a window"), ("5:5,0:3", "query range 5:5"), ("0:3,0:99", "key")],
)
def test_bad_windows_are_named(small: ExplorerRun, text: str, expected: str) -> None:
    with pytest.raises(ExplorerError) as info:
        small.window(parse_window(text))
    assert expected in str(info.value.problems[0])


# ----------------------------------------------------------------------------------------------------------------------
# Background exact pass
# ----------------------------------------------------------------------------------------------------------------------


def _gated(result: WeightResult, release: threading.Event, started: threading.Event) -> Any:
    """A computation that waits for ``release`` while checking its cancel event, like the chunked pass does."""

    def compute(progress: Any, cancel: threading.Event) -> WeightResult:
        progress(0.5, "half")
        started.set()
        while not release.wait(0.01):
            if cancel.is_set():
                raise Cancelled("stopped")
        return result

    return compute


def test_stop_ends_the_pass_and_keeps_nothing(small: ExplorerRun) -> None:
    release, started = threading.Event(), threading.Event()
    job = ExactJob("a", _gated(small.weights(64), release, started)).start()
    assert started.wait(10) and job.state == "running" and job.fraction == 0.5
    job.stop()
    assert job.wait(10)
    assert job.state == "stopped" and job.result is None


def test_real_pass_stops_between_chunks(mid: ExplorerRun) -> None:
    from noether.explorer.weights import WeightOptions

    seen = threading.Event()

    def compute(progress: Any, cancel: threading.Event) -> WeightResult:
        def report(fraction: float, message: str) -> None:
            progress(fraction, message)
            seen.set()

        return mid.weights(pixels=97, options=WeightOptions(chunk_bytes=1), progress=report, cancel=cancel)

    job = ExactJob("mid", compute).start()
    assert seen.wait(60)
    job.stop()
    assert job.wait(60)
    assert job.state == "stopped" and job.fraction < 1.0
    assert mid.kept_weights(97) is None


def test_keeper_reuses_a_key_and_a_new_key_starts_afresh(small: ExplorerRun) -> None:
    keeper = JobKeeper()
    release, started = threading.Event(), threading.Event()
    first = keeper.submit("layer-1", _gated(small.weights(64), release, started))
    assert started.wait(10)
    assert keeper.submit("layer-1", _gated(small.weights(64), release, threading.Event())) is first
    second_started = threading.Event()
    second = keeper.submit("layer-2", _gated(small.weights(64), threading.Event(), second_started))
    assert first.wait(10) and first.state == "stopped"
    assert second is not first and second_started.wait(10)
    keeper.stop("layer-2")
    assert second.wait(10) and second.state == "stopped"
    release.set()
    done = keeper.submit("layer-1", _gated(small.weights(64), release, threading.Event()))
    assert done is not first and done.wait(10) and done.state == "done"
    assert keeper.submit("layer-1", _gated(small.weights(64), release, threading.Event())) is done


def test_failures_are_reported_not_raised() -> None:
    def compute(progress: Any, cancel: threading.Event) -> WeightResult:
        raise ValueError("bad layer")

    job = ExactJob("x", compute).start()
    assert job.wait(10)
    assert job.state == "failed" and job.error == "ValueError: bad layer"


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------

SCENARIO = "noether/explorer/assets/examples/self_anchor.yaml"


def test_render_preview_prints_sample_and_errors(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from noether.explorer.cli import main

    out = tmp_path / "preview.png"
    assert main(["render", SCENARIO, "--preview", "-q", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "query rows sampled (stratified per query group)" in printed and "standard error" in printed
    assert Image.open(out).size[0] > 0


def test_render_window_draws_one_cell_per_pair(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from noether.explorer.cli import main

    out = tmp_path / "window.png"
    assert main(["render", SCENARIO, "--window", "100:164,0:32", "-q", "--out", str(out)]) == 0
    assert "weights, 64 x 32 cells" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        (["--window", "0:10"], 2, "argument --window: '0:10' is not a window. Write Q0:Q1,K0:K1"),
        (["--window", "0:10,0:99999"], 1, "--window: the key range 0:99999 is not inside 0:"),
        (["--window", "0:10,0:10", "--preview"], 1, "--window: a window is computed exactly"),
        (["--preview", "--view", "mask"], 1, "--preview: applies to the weights view."),
    ],
)
def test_render_option_problems_are_named(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, expected: str
) -> None:
    from noether.explorer.cli import main

    try:
        result = main(["render", SCENARIO, "-q", "--out", str(tmp_path / "x.png"), *argv])
    except SystemExit as exit_:
        result = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert result == code and expected in err and "Traceback" not in err


@pytest.mark.slow
def test_backend_timing_runs_as_a_job_and_flex_only_when_asked(small: ExplorerRun) -> None:
    from noether.explorer.ui.view_cost import WITHOUT_FLEX, measure

    keeper: JobKeeper[list[Any]] = JobKeeper()
    job = keeper.submit("quick", measure(small, WITHOUT_FLEX))
    assert job.wait(120) and job.state == "done", job.error
    assert job.result is not None
    assert [t.name for t in job.result] == ["per-pattern MixedAttention", "dense masked SDPA"]
    # A fresh run (the first one keeps its timings and would not report progress again).
    stopped = ExactJob("stopped", measure(ExplorerRun(scenario_of(WEIGHT_DOC)), WITHOUT_FLEX))
    stopped.stop()  # set before the job starts: the first progress report ends it
    assert stopped.start().wait(60) and stopped.state == "stopped"
