"""Reading and writing scenario files: bounded, safe parsing of JSON/YAML and canonical JSON, YAML and Python exports.

Every function here is pure (no Streamlit). Bad input never raises: it comes back as problems in a ScenarioReport.
"""

import json
import keyword
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml

from noether.explorer.perceiver_snippet import perceiver_snippet
from noether.explorer.problems import Problem, errors
from noether.explorer.scenario import ANCHOR_CONFIGS, Scenario, ScenarioReport, scenario_to_dict, validate_scenario

Format = Literal["json", "yaml"]

MAX_SCENARIO_BYTES = 1 << 20
"""Largest scenario file accepted (1 MiB); real scenarios are a few kilobytes."""

MAX_DOCUMENT_NODES = 100_000
"""Most values (mappings, lists, scalars) a document may hold, YAML aliases counted each time they are used."""

MAX_DOCUMENT_DEPTH = 32
"""Deepest nesting of mappings and lists accepted; a scenario needs about five levels."""

_SUFFIX_FORMATS: dict[str, Format] = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
_FILE = "(file)"
_DOCUMENT = "(document)"
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


def _at(line: int, column: int) -> str:
    return f"line {line}, column {column}"


class _DocumentRefused(Exception):
    """Raised inside the parsers to stop at the first structural limit exceeded."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


_NO_DOCUMENT = object()


# JSON ----------------------------------------------------------------------------------------------------------------


def _reject_constant(value: str) -> Any:
    raise _DocumentRefused(
        Problem(_DOCUMENT, f"contains {value}, which is not a number JSON allows.", "Use a finite number.")
    )


def _pairs_to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        keys = [key for key, _ in pairs]
        duplicate = next(key for index, key in enumerate(keys) if key in keys[:index])
        raise _DocumentRefused(
            Problem(
                _DOCUMENT,
                f"an object lists the key '{duplicate}' more than once (JSON would silently keep the last one).",
                "Remove the duplicate key.",
            )
        )
    return result


def _parse_json(text: str) -> tuple[Any, list[Problem]]:
    try:
        document = json.loads(text, object_pairs_hook=_pairs_to_dict, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return None, [
            Problem(
                _at(exc.lineno, exc.colno),
                f"is not valid JSON: {exc.msg}.",
                "Check for a missing comma, quote or bracket here or on the line before.",
            )
        ]
    except _DocumentRefused as exc:
        return None, [exc.problem]
    except RecursionError:
        return None, [_too_deep_problem(_DOCUMENT)]
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        return None, [Problem(_DOCUMENT, f"could not be read ({_short_error(exc)}).", "Use ordinary numbers.")]
    problem = _json_limits(document)
    return (None, [problem]) if problem else (document, [])


def _json_limits(document: Any) -> Problem | None:
    """Depth and size limits of a parsed JSON document, checked without recursion."""
    count = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if depth > MAX_DOCUMENT_DEPTH:
            return _too_deep_problem(_DOCUMENT)
        if count > MAX_DOCUMENT_NODES:
            return _too_many_problem(_DOCUMENT, "values")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return None


def _too_deep_problem(where: str) -> Problem:
    return Problem(
        where,
        f"is nested more than {MAX_DOCUMENT_DEPTH} levels deep.",
        "A scenario needs a few levels (attention, token_specs, attention_patterns, run); remove the extra nesting.",
    )


def _too_many_problem(where: str, what: str) -> Problem:
    return Problem(
        where,
        f"holds more than {MAX_DOCUMENT_NODES:,} {what} once YAML aliases (*name) are expanded.",
        "A scenario needs far fewer; remove the repeated or aliased content.",
    )


# YAML ----------------------------------------------------------------------------------------------------------------


class _Limits(yaml.composer.Composer):
    """Composer that stops beyond the node and depth limits, before anything is expanded or constructed."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark
        self._nodes += 1
        if self._nodes > MAX_DOCUMENT_NODES:
            raise _DocumentRefused(_too_many_problem(_mark_where(mark), "values"))
        self._depth += 1
        try:
            if self._depth > MAX_DOCUMENT_DEPTH:
                raise _DocumentRefused(_too_deep_problem(_mark_where(mark)))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _PythonLoader(_Limits, yaml.SafeLoader):
    """Bounded SafeLoader, pure Python."""


try:
    from yaml.cyaml import CParser

    class _LibyamlLoader(_Limits, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):  # type: ignore[misc]
        """Bounded SafeLoader on libyaml's event parser: the Python composer (with the limits) is kept, scanning is
        about five times faster."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _Loader: type = _LibyamlLoader
except ImportError:  # PyYAML built without libyaml
    _Loader = _PythonLoader


def _mark_where(mark: Any) -> str:
    return _at(mark.line + 1, mark.column + 1) if mark is not None else _DOCUMENT


def _parse_yaml(text: str) -> tuple[Any, list[Problem]]:
    control = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if control is not None:
        return None, [_control_character_problem(text, control.start())]
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None or _is_empty_document(node):
            return _NO_DOCUMENT, []
        _check_node_graph(node)
        document, problems = _construct(loader, node)
        return document, problems or _boolean_words(node)
    except _DocumentRefused as exc:
        return None, [exc.problem]
    except yaml.MarkedYAMLError as exc:
        return None, [_yaml_error_problem(exc)]
    except yaml.YAMLError as exc:
        return None, [Problem(_DOCUMENT, f"is not valid YAML: {exc}.", "Check the file is a plain YAML mapping.")]
    except RecursionError:
        return None, [_too_deep_problem(_DOCUMENT)]
    finally:
        loader.dispose()


_YAML_BOOL = "tag:yaml.org,2002:bool"


def _boolean_words(root: yaml.Node) -> list[Problem]:
    """Warnings for unquoted yes/no/on/off: YAML 1.1 reads them as true/false, which is rarely what was meant."""
    warnings: list[Problem] = []
    for node in _distinct_nodes(root):
        if isinstance(node, yaml.ScalarNode) and node.tag == _YAML_BOOL and node.value.lower() not in ("true", "false"):
            spelled = "true" if yaml.constructor.SafeConstructor.bool_values.get(node.value.lower()) else "false"
            warnings.append(
                Problem(
                    _mark_where(node.start_mark),
                    f"'{node.value}' is read as the boolean {spelled} (YAML 1.1).",
                    f"Write {spelled} for a switch, or quote it ('{node.value}') for text; a number field would "
                    f"silently take it as {int(spelled == 'true')}.",
                    "warning",
                )
            )
    return warnings


def _is_empty_document(node: yaml.Node) -> bool:
    """A document of only '---' (or comments) composes to an implicit, empty null."""
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null" and node.value == ""


def _construct(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, list[Problem]]:
    try:
        return loader.construct_document(node), []
    except yaml.YAMLError:
        raise
    except Exception as exc:
        # SafeConstructor turns scalars into Python values with int(), float(), date() and base64, which raise
        # ValueError and friends for text like "!!int abc", "2024-13-45" or a 5,000-digit number.
        culprit = _unconvertible_scalar(node) or node
        return None, [
            Problem(
                _mark_where(culprit.start_mark),
                f"has a value YAML cannot convert ({_short_error(exc)}).",
                "Quote the value to make it text, or write an ordinary number.",
            )
        ]


def _unconvertible_scalar(root: yaml.Node) -> yaml.Node | None:
    """The first scalar that SafeConstructor cannot convert on its own, to point at it."""
    for node in _distinct_nodes(root):
        if isinstance(node, yaml.ScalarNode):
            try:
                yaml.constructor.SafeConstructor().construct_object(node)
            except Exception:
                return node
    return None


def _short_error(exc: Exception) -> str:
    text = str(exc)
    if "digits" in text and "limit" in text:
        return "a number with more than 4,300 digits"
    return f"{type(exc).__name__}: {text[:120]}"


def _control_character_problem(text: str, position: int) -> Problem:
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return Problem(
        _at(line, column),
        f"contains the control character U+{ord(text[position]):04X}, which YAML does not allow.",
        'Remove it (or write it as an escape inside double quotes, e.g. "\\t").',
    )


def _yaml_error_problem(exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    if "nesting depth" in (exc.problem or ""):  # libyaml's own limit (1,000 levels) met while scanning ahead
        return _too_deep_problem(_mark_where(mark))
    what = exc.problem or exc.context or "unreadable"
    if exc.context and exc.problem:
        where = f" at {_mark_where(exc.context_mark)}" if exc.context_mark and exc.context_mark != mark else ""
        what = f"{exc.context}{where}; {exc.problem}"
    hint = "Check the indentation, colons and quotes here or on the line before."
    if exc.problem and "constructor" in exc.problem:
        hint = "Only plain YAML is accepted (no !!python or other tags); remove the tag."
    elif "single document" in (exc.context or "") + (exc.problem or ""):
        hint = "Keep one scenario per file (remove the second '---')."
    return Problem(_mark_where(mark), f"is not valid YAML: {what}.", hint)


def _node_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _distinct_nodes(root: yaml.Node) -> Iterator[yaml.Node]:
    """Every node once, in document order: a node that aliases reuse is not visited again."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        stack.extend(reversed(_node_children(node)))


def _check_node_graph(root: yaml.Node) -> None:
    """Refuse alias bombs, recursive aliases, over-deep expansions and duplicate keys, before constructing anything.

    Aliases make the node graph a DAG whose expansion can be exponential; sizes and depths are memoised per node,
    so the check costs one visit per distinct node whatever the expanded size.
    """
    expanded: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded node count, expanded depth)
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            children = _node_children(node)
            count = min(1 + sum(expanded[id(child)][0] for child in children), MAX_DOCUMENT_NODES + 1)
            depth = 1 + max((expanded[id(child)][1] for child in children), default=0)
            if count > MAX_DOCUMENT_NODES:
                raise _DocumentRefused(_too_many_problem(_mark_where(node.start_mark), "values"))
            if depth > MAX_DOCUMENT_DEPTH:
                raise _DocumentRefused(_too_deep_problem(_mark_where(node.start_mark)))
            expanded[key] = (count, depth)
            visiting.discard(key)
            continue
        if key in expanded:
            continue
        visiting.add(key)
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            _check_duplicate_keys(node)
        for child in _node_children(node):
            if id(child) in visiting:
                raise _DocumentRefused(
                    Problem(
                        _mark_where(child.start_mark),
                        "uses an alias inside its own anchor (a recursive structure).",
                        "Write the value out instead of referring to itself.",
                    )
                )
            if id(child) not in expanded:
                stack.append((child, False))


def _check_duplicate_keys(node: yaml.MappingNode) -> None:
    seen: set[tuple[str, str]] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        identity = (key_node.tag, key_node.value)
        if identity in seen:
            raise _DocumentRefused(
                Problem(
                    _mark_where(key_node.start_mark),
                    f"repeats the key '{key_node.value}' of this mapping (YAML would silently keep the last one).",
                    "Remove the duplicate key.",
                )
            )
        seen.add(identity)


# Values --------------------------------------------------------------------------------------------------------------

_MAX_VALUE_PROBLEMS = 20


def _walk(document: Any) -> Iterator[tuple[str, Any, bool]]:
    """(location, value, is_key) for every value and mapping key, without recursion."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        where, value = stack.pop()
        yield where, value, False
        if isinstance(value, dict):
            for key, child in reversed(list(value.items())):
                yield where, key, True
                stack.append((f"{where}.{key}" if where else str(key), child))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", child) for i, child in reversed(list(enumerate(value))))


def _unsupported_values(document: Any) -> list[Problem]:
    """Values JSON cannot hold (YAML dates, binary, sets, non-text keys, NaN) and unpaired surrogates in text.

    Refusing them here keeps every accepted scenario exportable to JSON, YAML and Python unchanged.
    """
    problems: list[Problem] = []
    for where, value, is_key in _walk(document):
        problem = _unsupported_key(where, value) if is_key else _unsupported_value(where, value)
        if problem is not None:
            problems.append(problem)
            if len(problems) >= _MAX_VALUE_PROBLEMS:
                break
    return problems


def _unsupported_key(where: str, key: Any) -> Problem | None:
    if isinstance(key, str):
        return _unpaired_surrogate(where or _DOCUMENT, key)
    return Problem(
        where or _DOCUMENT,
        f"has the key {key!r}, which is not text.",
        f"Quote it: '{_yaml_spelling(key)}'.",
    )


def _unsupported_value(where: str, value: Any) -> Problem | None:
    where = where or _DOCUMENT
    if value is None or isinstance(value, bool | int | dict | list):
        return None
    if isinstance(value, str):
        return _unpaired_surrogate(where, value)
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return Problem(where, f"is {value}, which is not a finite number.", "Use a finite number.")
    return Problem(
        where,
        f"is a YAML {type(value).__name__} value ({value!r:.60}); scenarios hold only text, numbers, true/false, "
        "null, lists and mappings.",
        "Quote it to make it text, or remove it.",
    )


def _unpaired_surrogate(where: str, text: str) -> Problem | None:
    for index, char in enumerate(text):
        if "\ud800" <= char <= "\udfff":
            return Problem(
                where,
                f"contains an unpaired surrogate \\u{ord(char):04x} at character {index}, which cannot be saved.",
                "Remove the escape sequence.",
            )
    return None


def _yaml_spelling(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


_YAML_QUOTING_HINT = (
    "YAML reads unquoted yes/no/on/off/true/false as booleans, null/~ as null and 1e3 as a number; quote names, "
    "e.g. 'yes'."
)


def _with_yaml_quoting_hint(problem: Problem) -> Problem:
    if "must be a string" not in problem.message:
        return problem
    return replace(problem, hint=f"{problem.hint} {_YAML_QUOTING_HINT}".strip())


# --------------------------------------------------------------------------------------------------------------------
# Writing: canonical JSON and YAML, a runnable Python snippet, the JSON Schema and the upstream payload.
# --------------------------------------------------------------------------------------------------------------------


def dump_json(scenario: Scenario) -> str:
    """Canonical JSON: the scenario_to_dict mapping, indent 2, UTF-8 text, trailing newline."""
    return json.dumps(scenario_to_dict(scenario), indent=2, ensure_ascii=False) + "\n"


class FlowMap(dict):
    """A mapping written on one line ({name: a, size: 3})."""


class FlowList(list):
    """A list written on one line ([a, b])."""


class _ScenarioDumper(yaml.SafeDumper):
    """SafeDumper that writes token specs and group lists in flow style and never emits anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # PyYAML may write NEL and the Unicode line/paragraph separators raw in plain or single-quoted style, where the
    # reader turns them into "\n"; double quotes escape them (\N, \L, \P) and keep the text exact.
    style = '"' if any(char in "\x85\u2028\u2029" for char in data) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_ScenarioDumper.add_representer(str, _represent_str)
_ScenarioDumper.add_representer(
    FlowMap, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)
_ScenarioDumper.add_representer(
    FlowList, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def dump_yaml(scenario: Scenario) -> str:
    """Canonical YAML (safe types only, stable key order); token specs and pattern lists in flow style."""
    data = scenario_to_dict(scenario)
    data["token_specs"] = [FlowMap(item) for item in data["token_specs"]]
    data["attention_patterns"] = [
        {key: FlowList(names) for key, names in pattern.items()} for pattern in data["attention_patterns"]
    ]
    return yaml_text(data)


def yaml_text(data: Any) -> str:
    """Plain data as YAML in document order: FlowMap and FlowList values on one line, no anchors, text kept exact."""
    return yaml.dump(
        data, Dumper=_ScenarioDumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120
    )


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema of a scenario file; token_specs items may be {name: size} or {name: ..., size: ...}."""
    schema = Scenario.model_json_schema()
    token_specs = schema["properties"]["token_specs"]
    explicit = token_specs["items"]
    token_specs["items"] = {
        "anyOf": [
            explicit,
            {
                "type": "object",
                "description": "Shorthand {name: size}; size null = cached group.",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
            },
        ]
    }
    # validate_scenario reads an empty `run:` or `attention_patterns:` (null) as the default.
    for key in ("attention_patterns", "run"):
        schema["properties"][key] = {"anyOf": [schema["properties"][key], {"type": "null"}]}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _config_class_name(scenario: Scenario) -> str:
    kind = scenario.attention.kind
    if kind == "perceiver":
        return "PerceiverAttentionConfig"
    return "MixedAttentionConfig" if kind == "mixed" else ANCHOR_CONFIGS[kind].__name__


def _module_class_name(scenario: Scenario) -> str:
    return _config_class_name(scenario).removesuffix("Config")


def _config_kwargs(scenario: Scenario) -> dict[str, Any]:
    attention = scenario_to_dict(scenario)["attention"]
    attention.pop("kind")
    return attention


def upstream_payload(scenario: Scenario) -> dict[str, Any]:
    """What upstream Noether takes: TokenSpec(**item), AttentionPattern(**item) and <config_class>(**attention).

    For anchor kinds the patterns are the ones the module generates (the module itself takes only token_specs).
    """
    data = scenario_to_dict(scenario)
    return {
        "config_class": _config_class_name(scenario),
        "module_class": _module_class_name(scenario),
        "attention": _config_kwargs(scenario),
        "token_specs": data["token_specs"],
        "attention_patterns": data["attention_patterns"],
    }


# Python snippet ------------------------------------------------------------------------------------------------------


def _call_lines(call: str, kwargs: dict[str, Any]) -> list[str]:
    """``call(key=value, ...)`` one argument a line; keys that are not identifiers go through ``**{...}``."""
    plain = {k: v for k, v in kwargs.items() if k.isidentifier() and not keyword.iskeyword(k)}
    other = {k: v for k, v in kwargs.items() if k not in plain}
    lines = [f"{call}(", *(f"    {key}={value!r}," for key, value in plain.items())]
    if other:
        lines.append(f"    **{other!r},")
    return [*lines, ")"]


def _device_expression(device: str) -> str:
    if device == "auto":
        return (
            'torch.device("cuda" if torch.cuda.is_available() '
            'else "mps" if torch.backends.mps.is_available() else "cpu")'
        )
    return f"torch.device({device!r})"


def _spec_lines(specs: list[tuple[str, int | None]], comment_cached: bool) -> list[str]:
    lines = []
    for name, size in specs:
        note = "  # cached: keys/values come from kv_cache" if comment_cached and size is None else ""
        lines.append(f"    TokenSpec(name={name!r}, size={size!r}),{note}")
    return lines


def _rope_position_dim(head_dim: int) -> int:
    # RopeFrequency needs at least two features per coordinate axis: 3-D positions from head_dim 6 on.
    return max(1, min(3, head_dim // 2))


def _rope_lines(head_dim: int) -> list[str]:
    # Complex rotations pair up features, so an odd head_dim takes the per-axis ("real") implementation.
    implementation = "complex" if head_dim % 2 == 0 else "real"
    position_dim = _rope_position_dim(head_dim)
    return [
        f"# RoPE rotates queries and keys by each token's position (random {position_dim}-D positions here).",
        "rope = RopeFrequency(",
        f"    RopeFrequencyConfig(hidden_dim={head_dim}, input_dim={position_dim}, implementation={implementation!r})",
        ").to(device)",
        "",
    ]


def _freqs_argument(head_dim: int | None, tokens: int) -> str:
    """The ``freqs=...`` argument of a forward call when the scenario uses RoPE (head_dim given), else ''."""
    if head_dim is None:
        return ""
    return f", freqs=rope(torch.rand(batch_size, {tokens}, {_rope_position_dim(head_dim)}, device=device))"


def dump_python(scenario: Scenario) -> str:
    """A runnable snippet: builds the specs, patterns, config and module, runs random input, prints the shape."""
    data = scenario_to_dict(scenario)
    attention = data["attention"]
    run = data["run"]
    kind = attention["kind"]
    config_class, module_class = _config_class_name(scenario), _module_class_name(scenario)
    hidden_dim, num_heads = attention["hidden_dim"], attention["num_heads"]
    head_dim = hidden_dim // num_heads
    use_rope = bool(attention["use_rope"])
    rope_dim = head_dim if use_rope else None
    specs = [(item["name"], item["size"]) for item in data["token_specs"]]
    cached = [name for name, size in specs if size is None]
    input_tokens = sum(size for _, size in specs if size is not None)
    patterns_argument = ", attention_patterns" if kind == "mixed" else ""
    schema_imports = "AttentionPattern, TokenSpec" if kind == "mixed" else "TokenSpec"

    header = [
        '"""Attention scenario exported by noether-explorer: runs the layer once on random input, prints the shape.',
        "",
        "Needs PyTorch and the Noether attention API (emmiai-noether, or the explorer's own noether package).",
        '"""',
        "",
        "import torch",
        "",
    ]
    if kind == "perceiver":
        config_lines = _call_lines(f"config = {config_class}", _config_kwargs(scenario))
        return "\n".join(perceiver_snippet(data, config_lines, header, _device_expression(run["device"]))) + "\n"
    lines = [*header, f"from noether.core.schemas.modules.attention import {schema_imports}"]
    if use_rope:
        lines.append("from noether.core.schemas.modules.layers import RopeFrequencyConfig")
    lines.append(f"from noether.modeling.modules.attention import {module_class}, {config_class}")
    if use_rope:
        lines.append("from noether.modeling.modules.layers.rope_frequency import RopeFrequency")
    lines += [
        "",
        f"torch.manual_seed({run['seed']!r})",
        f"device = {_device_expression(run['device'])}",
        f"dtype = torch.{run['dtype']}",
        f"batch_size = {run['batch_size']!r}",
        "",
        "token_specs = [",
        *_spec_lines(specs, comment_cached=True),
        "]",
    ]
    pattern_lines = [
        f"    AttentionPattern(query_tokens={p['query_tokens']!r}, key_value_tokens={p['key_value_tokens']!r}),"
        for p in data["attention_patterns"]
    ]
    if kind == "mixed":
        lines += ["attention_patterns = [", *pattern_lines, "]"]
    else:
        lines += [f"# {module_class} generates its patterns from the branches; for these groups they are:"]
        lines += [f"#   {line.strip()}" for line in pattern_lines]
    lines += [
        *_call_lines(f"config = {config_class}", _config_kwargs(scenario)),
        f"module = {module_class}(config).to(device=device, dtype=dtype).eval()",
        "",
    ]
    if use_rope:
        lines += _rope_lines(head_dim)
    if cached:
        lines += _cached_pass_lines(scenario, specs, cached, patterns_argument, rope_dim)
    extra_arguments = ", kv_cache=kv_cache" if cached else ""
    if run["padding"]:
        lines += [
            "# The last tokens of these groups are padding: key_padding_mask is False there (never attended).",
            f"padding = {run['padding']!r}",
            "key_padding_mask = torch.cat([",
            "    torch.arange(spec.size, device=device) < spec.size - padding.get(spec.name, 0)",
            "    for spec in token_specs",
            "]).expand(batch_size, -1)",
        ]
        extra_arguments += ", key_padding_mask=key_padding_mask"
    extra_arguments += _freqs_argument(rope_dim, input_tokens)
    lines += [
        f"x = torch.randn(batch_size, {input_tokens}, {hidden_dim}, device=device, dtype=dtype)",
        "with torch.no_grad():",
        f"    out, _ = module(x, token_specs{patterns_argument}{extra_arguments})",
        'print("output shape:", tuple(out.shape))',
    ]
    return "\n".join(lines) + "\n"


def _cached_pass_lines(
    scenario: Scenario,
    specs: list[tuple[str, int | None]],
    cached: list[str],
    patterns_argument: str,
    rope_dim: int | None,
) -> list[str]:
    """Pass 1 (the anchor pass) that fills kv_cache for the cached groups of pass 2."""
    hidden_dim, num_heads = scenario.attention.hidden_dim, scenario.attention.num_heads
    head_dim = hidden_dim // num_heads
    anchor_specs = [(name, scenario.cache_size(name) if size is None else size) for name, size in specs]
    anchor_tokens = sum(size for _, size in anchor_specs if size is not None)
    from_pass = [name for name in cached if "_anchor" in name]
    stand_ins = [name for name in cached if "_anchor" not in name]
    lines = [
        "# Cached groups (size None) are not part of x: their keys/values come from a kv_cache that an earlier pass",
        "# returns. Pass 1 (the anchor pass) runs every group as input, the cached ones with the number of tokens to",
        '# cache; the module returns the keys/values of the groups whose name contains "_anchor" as its new kv_cache.',
        "anchor_specs = [",
        *_spec_lines(anchor_specs, comment_cached=False),
        "]",
        f"anchor_x = torch.randn(batch_size, {anchor_tokens}, {hidden_dim}, device=device, dtype=dtype)",
        "with torch.no_grad():",
        f"    _, new_kv_cache = module(anchor_x, anchor_specs{patterns_argument}"
        f"{_freqs_argument(rope_dim, anchor_tokens)})",
        f"kv_cache = {{name: new_kv_cache[name] for name in {from_pass!r}}}",
    ]
    if stand_ins:
        lines.append(
            '# These cached groups lack "_anchor" in their name, so pass 1 does not return them: stand-in keys/values'
        )
        lines.append("# of shape (batch, heads, tokens, head_dim).")
        for name in stand_ins:
            shape = f"batch_size, {num_heads}, {scenario.cache_size(name)}, {head_dim}"
            lines.append(
                f"kv_cache[{name!r}] = {{key: torch.randn({shape}, device=device, dtype=dtype) for key in ('k', 'v')}}"
            )
    return [*lines, "", "# Pass 2: only the input groups are in x; their queries read the cached keys/values."]
