"""Scenario-file commands of the command line: validate, export and schema, and the one-line scenario summary.

These never import the engine or torch (a test checks it), so that they answer at once.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noether.explorer.cli_args import _layer_option
from noether.explorer.cli_output import EXIT_INVALID, EXIT_OK, PROG, _emit, _err, _out, _print_problems, _printable

if TYPE_CHECKING:
    from noether.explorer.scenario import Scenario, ScenarioReport

EXPORT_FORMATS = ("json", "yaml", "python")
_EXPORT_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".py": "python"}
_STDIN = "-"


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
        queries, groups = layout.query_groups, layout.key_groups
        pairs = sum(
            queries[i].size * groups[j].real_keys
            for i in range(len(queries))
            for j in range(len(groups))
            if layout.allowed[i, j]
        )
        cells = layout.n_queries * layout.n_key_tokens
        return pairs, (pairs / cells if cells else 0.0)
