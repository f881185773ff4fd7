"""Problems found in user input, phrased for people: where, what is wrong, what to do."""

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or suspicious) in a scenario, file or request."""

    where: str
    """Location in the document, e.g. "attention_patterns[1].query_tokens" or "token_specs[0].size"."""

    message: str
    """What is wrong, naming the field or token group."""

    hint: str = ""
    """What to do about it."""

    severity: Severity = "error"
    """Errors block running; warnings are shown but do not."""

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text} {self.hint}".strip()


class ExplorerError(Exception):
    """Raised by engine functions for input that cannot be processed; carries the problems to show."""

    def __init__(self, problems: Problem | Iterable[Problem]) -> None:
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def errors(problems: Iterable[Problem]) -> list[Problem]:
    """The problems that block running."""
    return [p for p in problems if p.severity == "error"]


MAX_SUGGESTION_OPTIONS = 500
"""Above this many candidates a suggestion is skipped: fuzzy matching is quadratic and must never stall validation."""


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """A ' Did you mean 'x'?' suffix when ``word`` is close to one of ``options``, else ''."""
    candidates = list(options)
    if len(candidates) > MAX_SUGGESTION_OPTIONS or len(word) > 200:
        return ""
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" Did you mean '{matches[0]}'?" if matches else ""


def count(number: int, noun: str) -> str:
    """ "1 rule", "2 rules", "1,024 tokens": a count with its noun in the right number."""
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"
