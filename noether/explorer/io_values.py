"""Values a parsed scenario document may not hold (so that every accepted scenario exports unchanged), and the
YAML quoting hint added to validation problems."""

import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from noether.explorer.io_limits import _DOCUMENT
from noether.explorer.problems import Problem

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
