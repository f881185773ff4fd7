"""``noether-explorer rollout FILE --token GROUP:INDEX --out OUT.png|.html``: where one output token of a captured
model draws from, through every recorded call (attention rollout), drawn on the capture's positions."""

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from noether.explorer.cli_args import _non_negative_int, _positive_float, _render_output
from noether.explorer.cli_engine import throttled

if TYPE_CHECKING:
    from noether.explorer.capture_file import Capture
    from noether.explorer.model_overview import LayerSource

from noether.explorer.cli_output import (
    EXIT_INVALID,
    EXIT_OK,
    _err,
    _out,
    _print_problems,
    _printable,
    _progress,
    _write_atomically,
)


def add_rollout(commands: Any) -> None:
    sub = commands.add_parser(
        "rollout",
        help="attention rollout of one output token of a capture, as a 3-D scatter on the recorded positions",
        description="Follow one output token back through every recorded attention call (Abnar & Zuidema 2020: "
        "0.5*A + 0.5*I per call, head-mean A, rows re-normalised) and draw the weights on the capture's positions. "
        "It ignores the MLPs and the value vectors. Keys read from a KV cache count as the anchors they were "
        "computed from. Exit 1 for a bad file or token.",
    )
    sub.add_argument("file", metavar="FILE", help="capture file (.safetensors)")
    sub.add_argument("--token", required=True, metavar="GROUP:INDEX", help="output token, e.g. surface_queries:0")
    sub.add_argument("--out", type=_render_output, required=True, metavar="OUT.png|OUT.html", help="output file")
    sub.add_argument("--batch", type=_non_negative_int, default=0, help="batch element to follow (default 0)")
    add_capture_run_options(sub)
    sub.set_defaults(handler=rollout_command)


def add_capture_run_options(sub: argparse.ArgumentParser) -> None:
    """Options of the commands that recompute a capture's calls: memory budget and quiet."""
    sub.add_argument(
        "--memory-budget", type=_positive_float, metavar="MB", help="largest working memory of a layer, in MiB"
    )
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")


def explorable_sources(
    capture: "Capture", args: argparse.Namespace, progress: Callable[[str], None], what: str, *, verify: bool
) -> list["LayerSource"]:
    """The capture's explorable calls (notes on the others go to ``progress``); a problem when there are none."""
    from noether.explorer.capture_overview import capture_sources
    from noether.explorer.problems import ExplorerError

    sources, notes = capture_sources(
        capture, verify=verify, memory_budget_mb=args.memory_budget, progress=throttled(progress)
    )
    for note in notes:
        progress(note)
    if not sources:
        raise ExplorerError(cli_problem(args.file, f"has no explorable call to {what}."))
    return sources


def rollout_command(args: argparse.Namespace) -> int:
    from noether.explorer.capture_file import load_capture
    from noether.explorer.capture_overview import capture_positions
    from noether.explorer.overview_figures import rollout_figure, rollout_png
    from noether.explorer.problems import ExplorerError
    from noether.explorer.rollout import attention_rollout, chosen_point, parse_token, rollout_points

    progress = _progress(quiet=args.quiet)
    try:
        group, index = parse_token(args.token)
        capture = load_capture(args.file)
        sources = explorable_sources(capture, args, progress, "follow", verify=False)
        positions = capture_positions(capture)
        result = attention_rollout(
            sources, group, index, batch=args.batch, positions=positions, progress=throttled(progress)
        )
    except ExplorerError as exc:
        _print_problems(args.file, exc.problems)
        return EXIT_INVALID
    xyz, weights, labels, point_notes = rollout_points(result, positions, batch=args.batch)
    for note in result.notes + point_notes:
        progress(note)
    marked = chosen_point(positions, group, index, args.batch)
    title = f"rollout of {group}:{index} from {result.start} through {len(result.calls)} calls"
    try:
        if args.out.suffix.lower() == ".html":
            figure = rollout_figure(xyz, weights, labels, title, marked)
            _write_atomically(args.out, figure.to_html(include_plotlyjs=True, full_html=True))
        else:
            _write_atomically(args.out, rollout_png(xyz, weights, title, marked))
    except OSError as exc:
        _err(f"{_printable(str(args.out))}: cannot write ({exc.strerror or exc}).")
        return EXIT_INVALID
    _out(f"{_printable(str(args.out))}: {title}; {len(xyz):,} points drawn, total weight {result.total:.6f}")
    for part in result.parts:
        _out(f"  {part.group:<20} {part.where:<60} {part.weights.sum():.4f}")
    return EXIT_OK


def cli_problem(where: str, message: str) -> Any:
    from noether.explorer.problems import Problem

    return Problem(where, message, "Record a capture with at least one explorable call (see capture-info).")
