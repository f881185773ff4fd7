"""Engine commands of the command line: render (mask or weights to PNG/HTML) and bench (time and memory) of a
scenario file, and the same on a prepared run of a captured layer.

The engine (and torch) is imported inside the commands, so that --help and usage errors answer at once.
"""

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noether.explorer.cli_args import (
    _add_run_options,
    _head,
    _layer_option,
    _non_negative_int,
    _positive_int,
    _render_output,
    _window,
)
from noether.explorer.cli_output import (
    EXIT_INVALID,
    EXIT_OK,
    Progress,
    _err,
    _out,
    _print_problems,
    _printable,
    _progress,
    _write_atomically,
)
from noether.explorer.cli_scenario import _load

if TYPE_CHECKING:
    from noether.explorer.scenario import Scenario


def _add_render(commands: Any) -> None:
    sub = commands.add_parser(
        "render",
        help="draw the attention mask or weights to a PNG or HTML file",
        description="Run the scenario and draw its attention mask or weights, pooled to at most --pixels per axis. "
        "Weights use a log colour scale (log10 of the pooled weight), the mask a linear one (share of attended "
        "pairs); cells the rules block entirely are drawn in their own grey, apart from the colour scale.",
    )
    _add_run_options(sub)
    sub.add_argument(
        "--view",
        choices=("mask", "weights"),
        help="what to draw (default: mask; weights with --preview or --window)",
    )
    sub.add_argument(
        "--preview",
        action="store_true",
        help="weights estimated from stratified sampled query rows (seconds at 100k tokens); prints the sample "
        "size and standard errors",
    )
    sub.add_argument(
        "--window",
        type=_window,
        metavar="Q0:Q1,K0:K1",
        help="exact weights of query tokens Q0..Q1-1 against key tokens K0..K1-1 only, one cell per token pair "
        "when the window fits in --pixels",
    )
    sub.add_argument(
        "--head", type=_head, default="mean", metavar="H|mean", help="attention head to draw (default: mean)"
    )
    sub.add_argument(
        "--pooling", choices=("mean", "max"), default="mean", help="how token blocks pool into pixels (default: mean)"
    )
    sub.add_argument("--batch", type=_non_negative_int, default=0, metavar="B", help="batch sample to draw (default 0)")
    sub.add_argument(
        "--pixels", type=_positive_int, default=1024, metavar="N", help="most pixels per axis (default: 1024)"
    )
    sub.add_argument("--out", type=_render_output, required=True, metavar="OUT.png|OUT.html", help="output file")
    _layer_option(sub)
    sub.set_defaults(handler=_render_command, parser=sub)


def _add_bench(commands: Any) -> None:
    sub = commands.add_parser(
        "bench",
        help="time the attention layer of a scenario",
        description="Run the scenario's attention layer repeatedly and report time and memory.",
    )
    _add_run_options(sub)
    sub.add_argument(
        "--repeats",
        type=_positive_int,
        default=5,
        metavar="N",
        help="timed samples per backend (default: 5); a call shorter than 10 ms is repeated within each sample",
    )
    _layer_option(sub)
    sub.set_defaults(handler=_bench_command, parser=sub)


def _render_command(args: argparse.Namespace) -> int:
    from noether.explorer import cli_capture

    refusal = _output_refusal(Path(args.out))
    if refusal:
        # Checked before anything is built or read: a typo in --out must not cost a whole run.
        _err(f"{_printable(str(args.out))}: cannot write: {refusal}")
        return EXIT_INVALID
    if cli_capture.wants_capture(args):
        return cli_capture.layer_command(args)
    return _run_engine(args, "render", render_scenario)


def _output_refusal(path: Path) -> str:
    """Why ``path`` cannot be written as an output file ('' when it can, as far as can be told before writing)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        return "it is a folder. Give a file name ending in .png or .html."
    if not folder.is_dir():
        return f"the folder '{_printable(str(folder))}' does not exist. Create it first or choose another --out."
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"no permission to write in '{_printable(str(folder))}'. Choose another --out."
    return ""


def _bench_command(args: argparse.Namespace) -> int:
    from noether.explorer import cli_capture

    if cli_capture.wants_capture(args):
        return cli_capture.layer_command(args, bench_run)
    return _run_engine(args, "bench", bench_scenario)


def _run_engine(
    args: argparse.Namespace, command: str, action: Callable[["Scenario", argparse.Namespace, Progress], int]
) -> int:
    """Validate the file, check the inputs the engine will read, then run ``action`` with progress on stderr."""
    from noether.explorer.problems import ExplorerError

    report = _load(args.file)
    _print_problems(args.file, report.problems)
    if not report.ok or report.scenario is None:
        return EXIT_INVALID
    if args.weights is not None and not Path(args.weights).is_file():
        what = "is a folder, not a checkpoint file" if Path(args.weights).is_dir() else "no such file"
        _err(f"{_printable(args.weights)}: --weights: {what}. Give the path of a checkpoint file.")
        return EXIT_INVALID
    progress = _progress(quiet=args.quiet)
    try:
        return action(report.scenario, args, progress)
    except ExplorerError as exc:
        _print_problems(args.file, exc.problems)
        return EXIT_INVALID


HTML_MAX_BINS = 512
"""Interactive pages carry every cell's value as data; beyond this many bins per axis they get heavy."""


def _engine_run(scenario: "Scenario", args: argparse.Namespace, progress: Progress) -> Any:
    """An ExplorerRun with the file's weights, progress throttled to whole tenths, device notes printed."""
    from noether.explorer.checkpoint import load_state_dict_file
    from noether.explorer.run import ExplorerRun

    report = throttled(progress)
    weights = None
    if args.weights is not None:
        progress(f"loading weights from {_printable(args.weights)}")
        weights = load_state_dict_file(args.weights)
    run = ExplorerRun(scenario, weights=weights, memory_budget_mb=args.memory_budget, progress=report)
    for note in run.notes:
        progress(note)
    return run


def throttled(progress: Progress) -> Callable[[float, str], None]:
    """An engine progress callback that reports whole tenths only."""
    last = [-1]

    def report(fraction: float, message: str) -> None:
        tenth = int(fraction * 10)
        if tenth != last[0]:
            last[0] = tenth
            progress(f"{message} [{fraction:.0%}]")

    return report


def _check_view_choice(run: Any, args: argparse.Namespace) -> None:
    from noether.explorer.problems import ExplorerError, Problem

    heads, batch = run.scenario.attention.num_heads, run.scenario.run.batch_size
    if args.head != "mean" and not 0 <= args.head < heads:
        raise ExplorerError(
            Problem(
                "--head", f"{args.head} is not a head of this layer (0..{heads - 1}).", "Pick a head index or 'mean'."
            )
        )
    if not 0 <= args.batch < batch:
        raise ExplorerError(
            Problem("--batch", f"{args.batch} is not a sample of the batch (0..{batch - 1}).", "Pick a sample index.")
        )


def render_scenario(scenario: "Scenario", args: argparse.Namespace, progress: Progress) -> int:
    """Draw the mask or the attention weights as a PNG (no browser needed) or a self-contained HTML page."""
    return render_run(_engine_run(scenario, args, progress), args, progress)


def render_run(run: Any, args: argparse.Namespace, progress: Progress) -> int:
    """Draw the mask or weights of a prepared run (a scenario's or a captured layer's)."""
    from noether.explorer.figures import map_figure
    from noether.explorer.layout import PoolGrid
    from noether.explorer.masks import pooled_mask
    from noether.explorer.png import map_png
    from noether.explorer.views import mask_map, weights_map

    view = _render_view(args)
    _check_view_choice(run, args)
    out = Path(args.out)
    html = out.suffix.lower() == ".html"
    budget = min(args.pixels, HTML_MAX_BINS) if html else args.pixels
    layout = run.layout
    if view == "mask":
        rows, cols = PoolGrid.fit(layout.n_queries, budget), PoolGrid.fit(layout.n_keys, budget)
        spec = mask_map(layout, pooled_mask(layout, rows, cols), rows, cols)
    else:
        if args.window is not None:
            result = run.window(args.window, pixels=budget)
        elif args.preview:
            result = run.preview(pixels=max(budget, 1024))
            _out(preview_summary(result, layout, args.batch, args.head))
        else:
            result = run.weights(pixels=max(budget, 1024))
        spec = weights_map(result, layout, budget, args.batch, args.head, args.pooling)
    progress(f"writing {_printable(str(out))}")
    content = map_figure(spec).to_html(include_plotlyjs=True, full_html=True) if html else map_png(spec)
    try:
        _write_atomically(out, content)
    except OSError as exc:
        _err(f"{_printable(str(out))}: cannot write ({exc.strerror or exc}). Check the folder exists and is writable.")
        return EXIT_INVALID
    _out(f"{_printable(str(out))}: {view}, {spec.values.shape[0]} x {spec.values.shape[1]} cells")
    return EXIT_OK


def _render_view(args: argparse.Namespace) -> str:
    from noether.explorer.problems import ExplorerError, Problem

    if args.preview and args.window is not None:
        raise ExplorerError(
            Problem("--window", "a window is computed exactly, so --preview does not apply.", "Give one of the two.")
        )
    option = "--preview" if args.preview else "--window" if args.window is not None else None
    if option and args.view == "mask":
        raise ExplorerError(
            Problem(option, "applies to the weights view.", "Drop --view mask (or use --view weights).")
        )
    return args.view or ("weights" if option else "mask")


def preview_summary(result: Any, layout: Any, batch: int, head: int | str) -> str:
    """One line: sample size and the largest standard error of the group masses, entropy and top-k mass."""
    import numpy as np

    from noether.explorer.sampling import standard_errors

    errors = standard_errors(result, batch, head)
    worst = {
        name: float(np.nanmax(values)) if np.isfinite(values).any() else float("nan") for name, values in errors.items()
    }
    return (
        f"preview: {result.sampled_rows:,} of {layout.n_queries:,} query rows sampled (stratified per query group); "
        f"largest standard error: group mass {worst['group_mass']:.2g}, entropy {worst['entropy']:.2g} nats, "
        f"top-{result.top_k} mass {worst['top_k_mass']:.2g}"
    )


def bench_scenario(scenario: "Scenario", args: argparse.Namespace, progress: Progress) -> int:
    """Time the layer's forward pass, the weight maps and the attention backends; print a table to stdout."""
    return bench_run(_engine_run(scenario, args, progress), args, progress)


def bench_run(run: Any, args: argparse.Namespace, progress: Progress) -> int:
    """Time a prepared run (a scenario's or a captured layer's)."""
    import time

    from noether.explorer.guard import format_duration
    from noether.explorer.views import backend_table, cost_table

    forward = run.forward()
    start = time.perf_counter()
    run.weights()
    weights_seconds = time.perf_counter() - start
    timings = run.backends(repeats=args.repeats)
    _out(f"device: {run.device}, dtype: {str(run.dtype).removeprefix('torch.')}, batch: {run.scenario.run.batch_size}")
    for row in cost_table(run.cost()):
        _out(f"  {row['quantity']:<40} {row['value']}")
    _out(f"  {'forward pass (first call)':<40} {format_duration(forward.seconds)}")
    _out(
        f"  {'pooled weight maps + statistics':<40} {format_duration(weights_seconds)} "
        f"({weights_seconds / max(forward.seconds, 1e-9):.2f}x the forward pass)"
    )
    _out("attention backends (median time per call over the timed samples, attention only):")
    for row in backend_table(timings):
        _out(
            f"  {row['backend']:<28} {row['time']:>9}  {row['vs per-pattern']:>7}  max|diff| {row['max |diff|']:>8}"
            f"  {row['note']}"
        )
    check = run.kv_cache_check()
    if check is not None:
        verdict = "equal" if check.equal else "DIFFERENT"
        _out(f"KV cache: anchor pass + query pass vs one pass: {verdict} (max |diff| {check.max_abs_diff:.2e})")
    return EXIT_OK
