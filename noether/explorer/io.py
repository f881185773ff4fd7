"""Reading and writing scenario files: bounded, safe parsing of JSON/YAML and canonical JSON, YAML and Python exports.

Every function here is pure (no Streamlit). Bad input never raises: it comes back as problems in a ScenarioReport.
This module loads files and re-exports the rest: the limits (io_limits), the JSON and YAML parsers (io_json,
io_yaml), the value checks (io_values) and the writers (io_export, io_snippet).
"""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from noether.explorer.io_export import (
    FlowList,
    FlowMap,
    dump_json,
    dump_yaml,
    scenario_json_schema,
    upstream_payload,
    yaml_text,
)
from noether.explorer.io_json import _parse_json
from noether.explorer.io_limits import _FILE, _NO_DOCUMENT, MAX_DOCUMENT_DEPTH, MAX_DOCUMENT_NODES
from noether.explorer.io_snippet import dump_python
from noether.explorer.io_values import _unsupported_values, _with_yaml_quoting_hint
from noether.explorer.io_yaml import _parse_yaml
from noether.explorer.problems import Problem, errors
from noether.explorer.scenario import ScenarioReport, validate_scenario

__all__ = [
    "MAX_DOCUMENT_DEPTH",
    "MAX_DOCUMENT_NODES",
    "MAX_SCENARIO_BYTES",
    "FlowList",
    "FlowMap",
    "Format",
    "dump_json",
    "dump_python",
    "dump_yaml",
    "format_for_path",
    "load_scenario_bytes",
    "load_scenario_file",
    "parse_document",
    "scenario_json_schema",
    "upstream_payload",
    "validate_document",
    "yaml_text",
]

Format = Literal["json", "yaml"]

MAX_SCENARIO_BYTES = 1 << 20
"""Largest scenario file accepted (1 MiB); real scenarios are a few kilobytes."""

_SUFFIX_FORMATS: dict[str, Format] = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
_MIB = 1 << 20


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------


def format_for_path(path: str | os.PathLike[str]) -> Format | None:
    """The format a file name implies by its extension (.json, .yaml, .yml), or None."""
    return _SUFFIX_FORMATS.get(Path(path).suffix.lower())


def load_scenario_file(path: str | os.PathLike[str]) -> ScenarioReport:
    """Read and validate a scenario file; oversized, unreadable or malformed files come back as problems."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return _refused("does not exist.", "Check the path.")
    except (OSError, ValueError) as exc:  # ValueError: a NUL character in the path
        return _refused(f"cannot be read ({getattr(exc, 'strerror', None) or exc}).", "Check the path.")
    if os.path.isdir(path):
        return _refused("is a directory, not a scenario file.", "Give the path of a .yaml or .json file.")
    # Refuse by size before reading anything, so that a huge file costs nothing.
    if stat.st_size > MAX_SCENARIO_BYTES:
        return ScenarioReport(None, [_too_large(stat.st_size)])
    try:
        with open(path, "rb") as handle:
            # Read one byte more than allowed: files whose size stat cannot tell (pipes, devices) stay bounded.
            data = handle.read(MAX_SCENARIO_BYTES + 1)
    except OSError as exc:
        return _refused(f"cannot be read ({exc.strerror or exc}).", "Check the path and its permissions.")
    return load_scenario_bytes(data, name=str(path), fmt=format_for_path(path))


def load_scenario_bytes(data: bytes, *, name: str = "<input>", fmt: Format | None = None) -> ScenarioReport:
    """Parse JSON or YAML bytes (format from ``fmt``, the extension of ``name``, or sniffed) and validate them."""
    document, problems = parse_document(data, name=name, fmt=fmt)
    if errors(problems):
        return ScenarioReport(None, problems)
    return validate_document(document, problems, quoting_hints=(fmt or format_for_path(name)) != "json")


def parse_document(
    data: bytes | str, *, name: str = "<input>", fmt: Format | None = None
) -> tuple[Any | None, list[Problem]]:
    """Read JSON or YAML (format from ``fmt``, the extension of ``name``, or sniffed) into plain data, without
    validating it as a scenario.

    Input that is too large, not UTF-8, not valid JSON/YAML, over the size or depth limits, or holding values JSON
    cannot (dates, NaN) comes back as None with error problems saying which. Otherwise the problems are warnings at
    most and the document comes back whatever it is: a valid scenario or not, a mapping or not (null included).
    """
    if isinstance(data, str):
        # Lone surrogates from an editor survive encoding, so that the decoder names them like any bad byte.
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > MAX_SCENARIO_BYTES:
        return None, [_too_large(len(data))]
    text, problem = _decode(data)
    if problem is not None:
        return None, [problem]
    if not text.strip():
        return None, [Problem(_FILE, "is empty.", "Write a scenario mapping that starts with 'attention:'.")]
    chosen = fmt or format_for_path(name) or _sniff_format(text)
    document, problems = _parse_json(text) if chosen == "json" else _parse_yaml(text)
    if fmt is None and format_for_path(name) is None and chosen == "json" and problems:
        # Sniffed JSON that is not JSON may still be YAML (flow style looks the same); keep the JSON error otherwise.
        yaml_document, yaml_problems = _parse_yaml(text)
        if not errors(yaml_problems):
            document, problems = yaml_document, yaml_problems
    if errors(problems):
        return None, problems
    if document is _NO_DOCUMENT:
        hint = "Write a mapping that starts 'attention:'."
        return None, [Problem(_FILE, "holds no document (only comments or separators).", hint)]
    unsupported = _unsupported_values(document)
    if unsupported:
        return None, problems + unsupported
    return document, problems


def validate_document(document: Any, warnings: Sequence[Problem] = (), *, quoting_hints: bool = True) -> ScenarioReport:
    """Validate a document from :func:`parse_document`; its reading ``warnings`` come first.

    ``quoting_hints`` adds to "not a valid string" problems that YAML reads yes/no/null/1e3 unquoted as other
    types (off for declared JSON, where such a value was written as one).
    """
    report = validate_scenario(document)
    problems = [_with_yaml_quoting_hint(p) for p in report.problems] if quoting_hints else report.problems
    return ScenarioReport(report.scenario, [*warnings, *problems])


def _refused(message: str, hint: str) -> ScenarioReport:
    return ScenarioReport(None, [Problem(_FILE, message, hint)])


def _too_large(size: int) -> Problem:
    return Problem(
        _FILE,
        f"is {_human_size(size)}; scenario files are limited to {_human_size(MAX_SCENARIO_BYTES)}.",
        "Scenarios describe token groups, not data; remove anything else from the file.",
    )


def _human_size(size: int) -> str:
    if size < _MIB:
        return f"{size:,} bytes"
    return f"{size // _MIB} MiB" if size % _MIB == 0 else f"{size / _MIB:.2f} MiB ({size:,} bytes)"


def _decode(data: bytes) -> tuple[str, Problem | None]:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "", Problem(_FILE, "is UTF-16 text (it starts with a UTF-16 byte order mark).", "Save it as UTF-8.")
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return "", Problem(
            _FILE,
            f"is not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line}) {exc.reason}.",
            "Save the file as UTF-8 text.",
        )


def _sniff_format(text: str) -> Format:
    return "json" if text.lstrip()[:1] in ("{", "[") else "yaml"
