"""Capture commands of the command line: capture-info, and render/export/validate of one recorded layer.

A file named ``*.safetensors`` is a capture; ``--layer PATH[#N]`` picks one of its calls (``capture-info`` lists
them). Exit codes as for every command: 0 ok, 1 invalid input, refused or a layer that does not verify, 2 usage.
"""

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from noether.explorer.cli_args import _positive_float
from noether.explorer.cli_engine import render_run, throttled
from noether.explorer.cli_output import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    _emit,
    _err,
    _out,
    _print_problems,
    _printable,
    _progress,
)
from noether.explorer.cli_scenario import _attended, _count

if TYPE_CHECKING:
    from noether.explorer.capture_file import Capture
    from noether.explorer.capture_layers import Layer, Verification


def add_capture_info(commands: Any) -> None:
    sub = commands.add_parser(
        "capture-info",
        help="list the recorded attention calls of a capture and verify each one",
        description="Print one row per recorded call (path#n, kind, groups with sizes, patterns, attended pairs, and "
        "the max difference between the recomputed and the recorded output). Calls the explorer cannot recompute "
        "are listed with the reason. Exit 1 when the file is unusable or a layer does not verify.",
    )
    sub.add_argument("file", metavar="FILE", help="capture file (.safetensors)")
    sub.add_argument("--no-verify", action="store_true", help="skip recomputing the layers (structure only, instant)")
    sub.add_argument(
        "--memory-budget",
        type=_positive_float,
        metavar="MB",
        help="largest working memory a layer may use, in MiB (default: the engine's choice)",
    )
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    sub.set_defaults(handler=capture_info_command)


def add_layer_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--layer",
        metavar="PATH[#N]",
        help="with a capture FILE: the recorded call to use (module path, '#N' for its N-th call; see capture-info)",
    )


def wants_capture(args: argparse.Namespace) -> bool:
    """Whether a render/export/validate argument names a capture (or asks for a layer of one)."""
    from noether.explorer.capture_names import is_capture_name

    return bool(getattr(args, "layer", None)) or is_capture_name(getattr(args, "file", "") or "")


def _load(path: str) -> "Capture":
    from noether.explorer.capture_file import load_capture

    return load_capture(path)


def _usage(args: argparse.Namespace, message: str) -> int:
    parser = getattr(args, "parser", None)
    if parser is not None:
        parser.error(message)
    _err(f"{PROG}: error: {message}")
    return EXIT_USAGE


def _layer_for(args: argparse.Namespace) -> "Layer | int":
    """The layer ``--layer`` names in the capture FILE, or an exit code after a printed message."""
    from noether.explorer.capture_layers import find_layer
    from noether.explorer.capture_names import is_capture_name
    from noether.explorer.problems import ExplorerError

    if not is_capture_name(args.file):
        return _usage(args, f"--layer needs a capture file (*.safetensors), got '{_printable(args.file)}'")
    if not args.layer:
        return _usage(args, "a capture holds many layers: give --layer PATH[#N] (capture-info lists them)")
    if getattr(args, "weights", None) is not None:
        return _usage(args, "--weights does not apply to a capture: its layers carry their recorded weights")
    try:
        return find_layer(_load(args.file), args.layer)
    except ExplorerError as exc:
        _print_problems(args.file, exc.problems)
        return EXIT_INVALID


def layer_command(args: argparse.Namespace, action: Callable[..., int] | None = None) -> int:
    """``render FILE --layer L`` (or ``bench`` with ``action=cli.bench_run``): the recorded layer like any scenario."""
    from noether.explorer.capture_layers import layer_run
    from noether.explorer.problems import ExplorerError

    layer = _layer_for(args)
    if isinstance(layer, int):
        return layer
    progress = _progress(quiet=args.quiet)
    try:
        run = layer_run(layer, memory_budget_mb=args.memory_budget, progress=throttled(progress))
        for note in run.notes:
            progress(note)
        return (action or render_run)(run, args, progress)
    except ExplorerError as exc:
        _print_problems(f"{args.file}#{layer.id}" if "#" not in layer.id else f"{args.file}: {layer.id}", exc.problems)
        return EXIT_INVALID


def export_layer_command(args: argparse.Namespace, fmt: str) -> int:
    """``export FILE --layer L``: the layer's scenario (structure, sizes, batch, cache sizes, padding)."""
    from noether.explorer.io import dump_json, dump_python, dump_yaml

    layer = _layer_for(args)
    if isinstance(layer, int):
        return layer
    assert layer.scenario is not None
    dump = {"json": dump_json, "yaml": dump_yaml, "python": dump_python}[fmt]
    return _emit(dump(layer.scenario), args.out)


def validate_capture(path: str, quiet: bool) -> bool:
    """``validate`` of a capture file: every check of the reader, then one summary line."""
    from noether.explorer.capture_layers import capture_layers
    from noether.explorer.problems import ExplorerError

    try:
        capture = _load(path)
    except ExplorerError as exc:
        _print_problems(path, exc.problems)
        return False
    if not quiet:
        layers = capture_layers(capture)
        explorable = sum(layer.explorable for layer in layers)
        _out(
            f"{_printable(path)}: ok: capture, {_count(len(layers), 'call')} "
            f"({explorable} explorable), {len(capture.manifest.modules)} modules, "
            f"activations {capture.manifest.activations_dtype}"
        )
    return True


def layer_row(layer: "Layer", verification: "Verification | None") -> str:
    """One line of capture-info: id, kind, groups with sizes, patterns, attended pairs, verified difference."""
    if not layer.explorable or layer.scenario is None:
        return f"{layer.id}  {layer.kind} ({layer.class_name})  not explorable: {layer.reason}"
    from noether.explorer.layout import TokenLayout

    scenario = layer.scenario
    groups = ", ".join(
        f"{spec.name}={scenario.key_size(spec):,}{' cached' if spec.size is None else ''}"
        for spec in scenario.token_specs
    )
    patterns = "; ".join(f"{'+'.join(p.query_tokens)}->{'+'.join(p.key_value_tokens)}" for p in scenario.patterns())
    pairs, density = _attended(TokenLayout.from_scenario(scenario))
    verified = "not verified"
    if verification is not None:
        verdict = "ok" if verification.ok else "MISMATCH"
        verified = f"max|diff| {verification.max_abs_diff:.1e} {verdict} (tol {verification.tolerance:.0e})"
    return (
        f"{layer.id}  {layer.kind} ({layer.class_name})  batch {scenario.run.batch_size}  groups [{groups}]  "
        f"patterns [{patterns}]  {_count(pairs, 'attended pair')} ({density:.1%})  {verified}"
    )


def capture_info_command(args: argparse.Namespace) -> int:
    from noether.explorer.capture_layers import capture_layers, layer_run, verify_layer
    from noether.explorer.problems import ExplorerError

    try:
        capture = _load(args.file)
    except ExplorerError as exc:
        _print_problems(args.file, exc.problems)
        return EXIT_INVALID
    progress = _progress(quiet=args.quiet)
    manifest = capture.manifest
    _out(
        f"{_printable(args.file)}: {_count(len(manifest.calls), 'call')} of "
        f"{_count(len(manifest.modules), 'module')}, activations {manifest.activations_dtype}, "
        f"{capture.size_bytes / 2**20:.1f} MB, positions for {sorted(manifest.positions) or 'no groups'}"
    )
    failed = 0
    for layer in capture_layers(capture):
        verification = None
        if layer.explorable and not args.no_verify:
            progress(f"verifying {layer.id}")
            try:
                run = layer_run(layer, memory_budget_mb=args.memory_budget)
                verification = verify_layer(layer, run, capture.activations_dtype)
            except ExplorerError as exc:
                failed += 1
                _print_problems(f"{args.file}: {layer.id}", exc.problems)
            else:
                problem = verification.problem()
                if problem is not None:
                    failed += 1
                    _print_problems(args.file, [problem])
        _out("  " + _printable(layer_row(layer, verification)))
    if failed:
        _err(f"{PROG}: {failed} layer(s) could not be verified.")
    return EXIT_INVALID if failed else EXIT_OK
