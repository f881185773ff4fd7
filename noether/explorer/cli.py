"""The noether-explorer command line: validate, export, schema, render and bench scenario files (and captures), list
the built-in examples and start the app.

Exit codes: 0 ok, 1 invalid input or refused, 2 usage error. Problems go to stderr as ``FILE: where: message hint``;
bad input never produces a traceback.
"""

import argparse
from collections.abc import Sequence
from typing import Any

from noether.explorer.cli_args import _port
from noether.explorer.cli_engine import (
    HTML_MAX_BINS,
    _add_bench,
    _add_render,
    bench_run,
    bench_scenario,
    preview_summary,
    render_run,
    render_scenario,
    throttled,
)
from noether.explorer.cli_output import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    MAX_PROBLEMS_SHOWN,
    PROG,
    Progress,
    _err,
    _make_streams_safe,
    _out,
    _print_problems,
    _printable,
    _silence_stdout,
)
from noether.explorer.cli_scenario import EXPORT_FORMATS, _add_export, _add_schema, _add_validate, scenario_summary

# The engine (and torch) is imported inside the commands, so that --help and usage errors answer at once.

__all__ = [
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXPORT_FORMATS",
    "HTML_MAX_BINS",
    "MAX_PROBLEMS_SHOWN",
    "PROG",
    "Progress",
    "bench_run",
    "bench_scenario",
    "build_parser",
    "main",
    "preview_summary",
    "render_run",
    "render_scenario",
    "scenario_summary",
    "throttled",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse exits with 2 on usage errors)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "app":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # Options the app command does not know are Streamlit's (e.g. --server.address).
    args.streamlit_options = extra
    _make_streams_safe()
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        _err(f"{PROG}: interrupted.")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); stop quietly instead of failing again while flushing.
        _silence_stdout()
        return EXIT_INVALID
    except Exception as exc:  # last resort: one line instead of a traceback; tests prove bad input never gets here
        _err(f"{PROG}: internal error ({type(exc).__name__}: {_printable(str(exc))}); please report it with the input.")
        return EXIT_INVALID


# --------------------------------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Validate, export, render and benchmark attention-pattern scenarios of Noether transformers.",
        epilog="Exit codes: 0 ok, 1 invalid input or refused, 2 usage error. Run '%(prog)s COMMAND --help' for more.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_validate(commands)
    _add_export(commands)
    _add_schema(commands)
    _add_render(commands)
    _add_bench(commands)
    from noether.explorer import cli_capture

    cli_capture.add_capture_info(commands)
    from noether.explorer import cli_rollout

    cli_rollout.add_rollout(commands)
    from noether.explorer import cli_overview

    cli_overview.add_overview(commands)
    _add_examples(commands)
    _add_app(commands)
    return parser


def _add_examples(commands: Any) -> None:
    sub = commands.add_parser(
        "examples",
        help="list the built-in example scenarios and their installed files",
        description="List the built-in example scenarios: name, installed file, title. Any command that takes a "
        "scenario file takes these paths.",
    )
    sub.add_argument("--paths", action="store_true", help="print only the file paths, one per line")
    sub.set_defaults(handler=_examples_command)


def _add_app(commands: Any) -> None:
    sub = commands.add_parser(
        "app",
        help="start the interactive explorer (Streamlit) in the browser",
        description="Start the explorer app on http://localhost:PORT. Any other option is passed to 'streamlit run' "
        "(e.g. --server.address 0.0.0.0); it wins over the app's defaults.",
        usage="%(prog)s [-h] [--port N] [STREAMLIT_OPTION ...]",
    )
    sub.add_argument("--port", type=_port, metavar="N", help="port to serve on (default: Streamlit's, 8501)")
    sub.set_defaults(handler=_app_command)


def _version() -> str:
    from noether import __version__

    return __version__


def _examples_command(args: argparse.Namespace) -> int:
    from noether.explorer.presets import PRESETS, preset_path

    missing = [preset_path(preset.key) for preset in PRESETS if not preset_path(preset.key).is_file()]
    for path in missing:
        _err(f"{_printable(str(path))}: missing from the installed package. Reinstall noether-attention-explorer.")
    if missing:
        return EXIT_INVALID
    rows = [(preset.key, str(preset_path(preset.key)), preset.title) for preset in PRESETS]
    key_width, path_width = (max(len(row[column]) for row in rows) for column in (0, 1))
    for key, path, title in rows:
        _out(_printable(path) if args.paths else f"{key:<{key_width}}  {_printable(path):<{path_width}}  {title}")
    return EXIT_OK


def _app_command(args: argparse.Namespace) -> int:
    from noether.explorer.launch import run_app
    from noether.explorer.problems import ExplorerError

    try:
        return run_app(args.port, args.streamlit_options)
    except ExplorerError as exc:
        _print_problems(PROG, exc.problems)
        return EXIT_INVALID
