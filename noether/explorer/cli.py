"""The noether-explorer command line: validate, export, schema, render and bench scenario files (and captures), list
the built-in examples and start the app.

Exit codes: 0 ok, 1 invalid input or refused, 2 usage error. Problems go to stderr as ``FILE: where: message hint``;
bad input never produces a traceback.
"""

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from noether.explorer.problems import Problem
    from noether.explorer.scenario import Scenario, ScenarioReport

# The engine (and torch) is imported inside the commands, so that --help and usage errors answer at once.

PROG = "noether-explorer"
EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
MAX_PROBLEMS_SHOWN = 100
"""Problems printed per file; a file of thousands of broken items is summarised after this many."""

EXPORT_FORMATS = ("json", "yaml", "python")
_EXPORT_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".py": "python"}
_STDIN = "-"

Progress = Callable[[str], None]


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
    _add_examples(commands)
    _add_app(commands)
    return parser


def _add_validate(commands: Any) -> None:
    sub = commands.add_parser(
        "validate",
        help="check scenario files and summarise them",
        description="Check scenario files (.yaml, .yml or .json; '-' reads stdin). Prints one summary line per valid "
        "file; every problem goes to stderr as 'FILE: where: message hint'. Exit 1 when any file is invalid.",
    )
    sub.add_argument("files", nargs="+", metavar="FILE", help="scenario files to check")
    sub.add_argument("-q", "--quiet", action="store_true", help="print only problems, no summary lines")
    sub.set_defaults(handler=_validate_command)


def _add_export(commands: Any) -> None:
    sub = commands.add_parser(
        "export",
        help="write a scenario as canonical JSON or YAML, or as a runnable Python snippet",
        description="Validate FILE and write it in canonical form (the same scenario always gives the same text).",
    )
    sub.add_argument("file", metavar="FILE", help="scenario file ('-' reads stdin)")
    sub.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        help="output format; defaults to the extension of --out (.json, .yaml/.yml, .py)",
    )
    sub.add_argument("-o", "--out", metavar="OUT", help="output file (default: stdout)")
    _layer_option(sub)
    sub.set_defaults(handler=_export_command, parser=sub)


def _add_schema(commands: Any) -> None:
    sub = commands.add_parser(
        "schema",
        help="print the JSON Schema of scenario files",
        description="Print the JSON Schema of scenario files, e.g. for editor completion.",
    )
    sub.add_argument("-o", "--out", metavar="OUT", help="output file (default: stdout)")
    sub.set_defaults(handler=_schema_command)


def _add_run_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("file", metavar="FILE", help="scenario file")
    sub.add_argument(
        "--memory-budget",
        type=_positive_float,
        metavar="MB",
        help="largest working memory the engine may use, in MiB (default: the engine's choice)",
    )
    sub.add_argument("--weights", metavar="CKPT", help="checkpoint (.safetensors or .pt) with the attention weights")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")


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
    sub.add_argument("--repeats", type=_positive_int, default=5, metavar="N", help="timed runs (default: 5)")
    _layer_option(sub)
    sub.set_defaults(handler=_bench_command, parser=sub)


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


def _layer_option(sub: argparse.ArgumentParser) -> None:
    from noether.explorer import cli_capture

    cli_capture.add_layer_option(sub)


def _version() -> str:
    from noether import __version__

    return __version__


# Argument types ------------------------------------------------------------------------------------------------------


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def _positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _port(text: str) -> int:
    number = _whole_number(text)
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a port number (1 to 65535)")
    return number


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _head(text: str) -> int | str:
    return "mean" if text == "mean" else _non_negative_int(text)


def _window(text: str) -> Any:
    from noether.explorer.problems import ExplorerError
    from noether.explorer.window import parse_window

    try:
        return parse_window(text)
    except ExplorerError as exc:
        problem = exc.problems[0]
        raise argparse.ArgumentTypeError(f"{problem.message} {problem.hint}") from None


def _render_output(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in (".png", ".html"):
        raise argparse.ArgumentTypeError(f"'{text}' must end in .png or .html")
    return path


# --------------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------------


def _validate_command(args: argparse.Namespace) -> int:
    from noether.explorer.capture_names import is_capture_name
    from noether.explorer.cli_capture import validate_capture

    invalid = 0
    for path in args.files:
        if is_capture_name(path):
            invalid += not validate_capture(path, args.quiet)
            continue
        report = _load(path)
        _print_problems(path, report.problems)
        if not report.ok or report.scenario is None:
            invalid += 1
        elif not args.quiet:
            _out(f"{_printable(path)}: ok: {scenario_summary(report.scenario)}")
    if len(args.files) > 1:
        _err(f"{PROG}: {invalid} of {len(args.files)} files invalid." if invalid else f"{PROG}: all files valid.")
    return EXIT_INVALID if invalid else EXIT_OK


def _export_command(args: argparse.Namespace) -> int:
    from noether.explorer.io import dump_json, dump_python, dump_yaml

    fmt = args.format or (_EXPORT_SUFFIXES.get(Path(args.out).suffix.lower()) if args.out else None)
    if fmt is None:
        args.parser.error("give --format json|yaml|python (or an --out file ending in .json, .yaml, .yml or .py)")
    from noether.explorer import cli_capture

    if cli_capture.wants_capture(args):
        return cli_capture.export_layer_command(args, fmt)
    report = _load(args.file)
    _print_problems(args.file, report.problems)
    if not report.ok or report.scenario is None:
        return EXIT_INVALID
    dump = {"json": dump_json, "yaml": dump_yaml, "python": dump_python}[fmt]
    return _emit(dump(report.scenario), args.out)


def _schema_command(args: argparse.Namespace) -> int:
    from noether.explorer.io import scenario_json_schema

    return _emit(json.dumps(scenario_json_schema(), indent=2, ensure_ascii=False) + "\n", args.out)


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

    from noether.explorer.guard import format_seconds
    from noether.explorer.views import backend_table, cost_table

    forward = run.forward()
    start = time.perf_counter()
    run.weights()
    weights_seconds = time.perf_counter() - start
    timings = run.backends(repeats=args.repeats)
    _out(f"device: {run.device}, dtype: {str(run.dtype).removeprefix('torch.')}, batch: {run.scenario.run.batch_size}")
    for row in cost_table(run.cost()):
        _out(f"  {row['quantity']:<40} {row['value']}")
    _out(f"  {'forward pass (first call)':<40} {format_seconds(forward.seconds)}")
    _out(
        f"  {'pooled weight maps + statistics':<40} {format_seconds(weights_seconds)} "
        f"({weights_seconds / max(forward.seconds, 1e-9):.2f}x the forward pass)"
    )
    _out("attention backends (median of the timed runs, attention only):")
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


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def _load(path: str) -> "ScenarioReport":
    from noether.explorer.io import MAX_SCENARIO_BYTES, load_scenario_bytes, load_scenario_file

    if path == _STDIN:
        data = sys.stdin.buffer.read(MAX_SCENARIO_BYTES + 1)
        return load_scenario_bytes(data, name="<stdin>")
    return load_scenario_file(path)


def scenario_summary(scenario: "Scenario") -> str:
    """One line: kind, groups, tokens, patterns, attended pairs and sparsity (the share of the full query x key
    matrix that is not attended, as the app's cost view says)."""
    from noether.explorer.layout import TokenLayout

    layout = TokenLayout.from_scenario(scenario)
    cached = len(scenario.cached_names())
    pairs, density = _attended(layout)
    return (
        f"{scenario.attention.kind}, {_count(len(scenario.token_specs), 'group')} ({cached} cached), "
        f"{_count(layout.n_queries, 'query token')} x {_count(layout.n_key_tokens, 'key')}, "
        f"{_count(len(scenario.patterns()), 'pattern')}, {_count(pairs, 'attended pair')} "
        f"(sparsity {1.0 - density:.2%})"
    )


def _count(number: int, noun: str) -> str:
    from noether.explorer.problems import count

    return count(number, noun)


def _attended(layout: Any) -> tuple[int, float]:
    """Attended (query, key) pairs and their share of the full matrix, from the group structure."""
    from noether.explorer.layout import group_mask

    try:
        mask = group_mask(layout)
        return mask.total_pairs, mask.density
    except OverflowError:
        # Sizes beyond int64: count with Python integers instead.
        queries, groups = layout.query_groups, layout.groups
        pairs = sum(
            queries[i].size * groups[j].real_keys
            for i in range(len(queries))
            for j in range(len(groups))
            if layout.allowed[i, j]
        )
        cells = layout.n_queries * layout.n_key_tokens
        return pairs, (pairs / cells if cells else 0.0)


def _print_problems(label: str, problems: Sequence["Problem"]) -> None:
    label = _printable(label)
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        prefix = f"{label}: warning: " if problem.severity == "warning" else f"{label}: "
        _err(prefix + _printable(str(problem)))
    if len(problems) > MAX_PROBLEMS_SHOWN:
        _err(f"{label}: ... and {len(problems) - MAX_PROBLEMS_SHOWN} more problems not shown.")


def _printable(text: str) -> str:
    """Escape control, format and separator characters so that a name cannot rewrite the terminal or split lines."""
    return "".join(
        f"\\u{ord(char):04x}" if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") else char
        for char in text
    )


def _emit(text: str, out: str | None) -> int:
    if out is None:
        _write_stdout(text)
        return EXIT_OK
    try:
        _write_atomically(Path(out), text)
    except OSError as exc:
        _err(f"{_printable(out)}: cannot write ({exc.strerror or exc}). Check the folder exists and is writable.")
        return EXIT_INVALID
    return EXIT_OK


def _write_atomically(path: Path, content: str | bytes) -> None:
    """Write via a temporary file in the same folder, so that a failed write never leaves half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_stdout(text: str) -> None:
    """Exports are UTF-8 whatever the terminal's encoding, so that piping them to a file keeps them exact."""
    stream = sys.stdout
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    buffer = getattr(stream, "buffer", None)
    if encoding != "utf8" and buffer is not None:
        stream.flush()
        buffer.write(text.encode("utf-8"))
        buffer.flush()
    else:
        stream.write(text)
        stream.flush()


def _make_streams_safe() -> None:
    # A name the terminal's encoding cannot show is escaped rather than crashing the command.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _progress(quiet: bool) -> Progress:
    def report(message: str) -> None:
        if not quiet:
            _err(f"{PROG}: {message}")

    return report


def _out(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
