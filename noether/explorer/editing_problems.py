"""Validation problems of a draft in the words of the editors, sorted to the editor they concern.

Part of :mod:`noether.explorer.editing`, which re-exports everything here.
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from noether.explorer.editing_groups import _spec_parts
from noether.explorer.problems import Problem

# --------------------------------------------------------------------------------------------------------------------
# Problems, in plain words and next to what they concern
# --------------------------------------------------------------------------------------------------------------------

Section = Literal["document", "groups", "rules", "attention", "run"]
_INDEXED = re.compile(r"^(token_specs|attention_patterns|generated patterns)\[(\d+)\](.*)$")
_FIELD_WORDS = {
    "query_tokens": "queries",
    "key_value_tokens": "keys/values",
    "size": "tokens",
    "name": "name",
}


def problem_section(where: str) -> Section:
    """Which editor a problem belongs to."""
    if where.startswith(("token_specs", "run.kv_cache_sizes")):
        return "groups"
    if where.startswith(("attention_patterns", "generated patterns", "attention.branches", "attention.anchor_suffix")):
        return "rules"
    if where.startswith("attention.kind"):
        return "rules"
    if where.startswith("attention"):
        return "attention"
    if where.startswith("run"):
        return "run"
    return "document"


def problems_by_section(problems: Sequence[Problem]) -> dict[Section, list[Problem]]:
    grouped: dict[Section, list[Problem]] = {"document": [], "groups": [], "rules": [], "attention": [], "run": []}
    for problem in problems:
        grouped[problem_section(problem.where)].append(problem)
    return grouped


def problem_index(where: str) -> int | None:
    """The group or rule index a problem is about (token_specs[2] -> 2), if any."""
    match = _INDEXED.match(where)
    return int(match.group(2)) if match else None


def describe_location(where: str, draft: Mapping[str, Any]) -> str:
    """A problem's location in the words of the editors: "Group 2 ('surface_queries'), tokens", "Rule 1, queries"."""
    match = _INDEXED.match(where)
    if match:
        what, index, rest = match.group(1), int(match.group(2)), match.group(3).lstrip(".")
        field_text = _FIELD_WORDS.get(rest, rest)
        if what == "token_specs":
            specs = draft.get("token_specs")
            parts = _spec_parts(specs[index]) if isinstance(specs, list) and index < len(specs) else None
            name = f" ('{parts[0]}')" if parts and isinstance(parts[0], str) and parts[0] else ""
            head = f"Group {index + 1}{name}"
        else:
            head = f"{'Rule' if what == 'attention_patterns' else 'Generated rule'} {index + 1}"
        return f"{head}, {field_text}" if field_text else head
    if where == "token_specs":
        return "Token groups"
    if where == "attention":
        return "Attention config"
    if where == "run":
        return "Run settings"
    if where == "attention_patterns":
        return "Rules"
    if where == "generated patterns":
        return "Generated rules"
    for prefix, words in (("run.kv_cache_sizes.", "Cached tokens of"), ("run.padding.", "Padding of")):
        if where.startswith(prefix):
            return f"{words} '{where[len(prefix) :]}'"
    if where.startswith("attention."):
        return f"Attention config, {where.removeprefix('attention.')}"
    if where.startswith("run."):
        return f"Run settings, {where.removeprefix('run.')}"
    if where.startswith("line "):
        return f"Text, {where}"
    return {"(file)": "File", "(document)": "Document"}.get(where, where)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~$])")


def escape_markdown(text: str) -> str:
    """Names come from user files; escape them so that Streamlit's markdown shows them literally."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def problem_markdown(problem: Problem, draft: Mapping[str, Any]) -> str:
    """One problem as a markdown line: **where** what is wrong. What to do."""
    message = problem.message.rstrip()
    if problem.hint and not message.endswith((".", "!", "?")):
        message += "."  # pydantic's messages have no final stop; the hint is a new sentence
    text = f"**{escape_markdown(describe_location(problem.where, draft))}**: {escape_markdown(message)}"
    return f"{text} {escape_markdown(problem.hint)}".rstrip()
