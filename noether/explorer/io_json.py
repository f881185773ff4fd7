"""Bounded JSON parsing of scenario files: duplicate keys, NaN/Infinity and over-deep or over-large documents
are refused as problems."""

import json
from typing import Any

from noether.explorer.io_limits import (
    _DOCUMENT,
    MAX_DOCUMENT_DEPTH,
    MAX_DOCUMENT_NODES,
    _at,
    _DocumentRefused,
    _short_error,
    _too_deep_problem,
    _too_many_problem,
)
from noether.explorer.problems import Problem


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
