"""Limits on scenario documents and the refusal plumbing the JSON and YAML parsers share."""

from noether.explorer.problems import Problem

MAX_DOCUMENT_NODES = 100_000
"""Most values (mappings, lists, scalars) a document may hold, YAML aliases counted each time they are used."""

MAX_DOCUMENT_DEPTH = 32
"""Deepest nesting of mappings and lists accepted; a scenario needs about five levels."""

_FILE = "(file)"
_DOCUMENT = "(document)"


def _at(line: int, column: int) -> str:
    return f"line {line}, column {column}"


class _DocumentRefused(Exception):
    """Raised inside the parsers to stop at the first structural limit exceeded."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


_NO_DOCUMENT = object()


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


def _short_error(exc: Exception) -> str:
    text = str(exc)
    if "digits" in text and "limit" in text:
        return "a number with more than 4,300 digits"
    return f"{type(exc).__name__}: {text[:120]}"
