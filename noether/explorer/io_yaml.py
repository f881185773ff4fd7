"""Bounded, safe YAML parsing of scenario files: node and depth limits while composing, alias bombs, recursive
aliases and duplicate keys refused before anything is constructed, and warnings for YAML 1.1 booleans."""

from collections.abc import Iterator
from typing import Any

import yaml

from noether.explorer.io_limits import (
    _DOCUMENT,
    _NO_DOCUMENT,
    MAX_DOCUMENT_DEPTH,
    MAX_DOCUMENT_NODES,
    _at,
    _DocumentRefused,
    _short_error,
    _too_deep_problem,
    _too_many_problem,
)
from noether.explorer.problems import Problem


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
