"""``noether-explorer overview FILE [--out OUT.html|OUT.json]``: every recorded call of a capture with its attention
statistics (the app's Model overview), printed as text and written as a page or a JSON document."""

import argparse
from typing import Any

from noether.explorer.cli_args import _head, _positive_int
from noether.explorer.cli_engine import throttled
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
from noether.explorer.cli_rollout import add_capture_run_options, explorable_sources


def _top_k_rows(text: str) -> int | None:
    return None if text == "all" else _positive_int(text)


def _overview_output(text: str) -> Any:
    from pathlib import Path

    path = Path(text)
    if path.suffix.lower() not in (".html", ".json"):
        raise argparse.ArgumentTypeError(f"'{text}' must end in .html or .json")
    return path


DEFAULT_TOP_K_ROWS = 64
"""The library's default (``layer_stats.DEFAULT_TOP_K_ROWS``, a test keeps them equal), written out because building
the parser must not import torch."""


def add_overview(commands: Any) -> None:
    sub = commands.add_parser(
        "overview",
        help="attention statistics of every recorded call of a capture (mass by group, entropy, top-k mass)",
        description="For every explorable call of a capture, in model order: kind, attended pairs, FLOPs, and the "
        "share of each query group's attention on each key group, the mean entropy and the top-k mass per query "
        "group. Masses and entropies use every query row; the top-k mass is the mean over --top-k-rows stratified "
        "random rows per group, with its standard error ('all' computes every row). Exit 1 for a bad file.",
    )
    sub.add_argument("file", metavar="FILE", help="capture file (.safetensors)")
    sub.add_argument("--out", type=_overview_output, metavar="OUT.html|OUT.json", help="also write a page or numbers")
    sub.add_argument("--head", type=_head, default="mean", help="a head number, or mean (default)")
    sub.add_argument(
        "--top-k-rows",
        type=_top_k_rows,
        default=DEFAULT_TOP_K_ROWS,
        metavar="N|all",
        help=f"rows per query group behind the top-k mass (default {DEFAULT_TOP_K_ROWS}; all = every row)",
    )
    sub.add_argument("--seed", type=int, default=0, help="seed of the top-k row sample (default 0)")
    add_capture_run_options(sub)
    sub.set_defaults(handler=overview_command)


def overview_command(args: argparse.Namespace) -> int:
    from noether.explorer.capture_file import load_capture
    from noether.explorer.model_overview import model_overview
    from noether.explorer.overview_export import overview_html, overview_json, overview_lines
    from noether.explorer.problems import ExplorerError

    progress = _progress(quiet=args.quiet)
    try:
        capture = load_capture(args.file)
        sources = explorable_sources(capture, args, progress, "summarise", verify=True)
        overview = model_overview(sources, top_k_rows=args.top_k_rows, seed=args.seed, progress=throttled(progress))
    except ExplorerError as exc:
        _print_problems(args.file, exc.problems)
        return EXIT_INVALID
    if args.head != "mean" and args.head >= overview.max_heads:
        _err(
            f"{_printable(args.file)}: --head {args.head} does not exist; the calls have at most "
            f"{overview.max_heads} heads (0 – {overview.max_heads - 1}), or use mean."
        )
        return EXIT_INVALID
    for line in overview_lines(overview, args.head):
        _out(line)
    if args.out is not None:
        content = (
            overview_html(overview, args.head)
            if args.out.suffix.lower() == ".html"
            else overview_json(overview, args.head)
        )
        try:
            _write_atomically(args.out, content)
        except OSError as exc:
            _err(f"{_printable(str(args.out))}: cannot write ({exc.strerror or exc}).")
            return EXIT_INVALID
        _out(f"{_printable(str(args.out))}: written")
    return EXIT_OK
