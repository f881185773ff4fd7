"""The draft itself: creating it, reading its sections tolerantly, setting values, and its text form.

Part of :mod:`noether.explorer.editing`, which describes the draft and re-exports everything here.
"""

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from noether.explorer.io import FlowList, FlowMap, format_for_path, parse_document, validate_document, yaml_text
from noether.explorer.presets import load_preset
from noether.explorer.problems import Problem, errors
from noether.explorer.scenario import Scenario, scenario_to_dict

Draft = dict[str, Any]
"""The document being edited: a mapping with (ideally) attention, token_specs, attention_patterns and run."""

ATTENTION_DEFAULTS: dict[str, Any] = {
    "kind": "mixed",
    "hidden_dim": 128,
    "num_heads": 4,
    "use_rope": False,
    "qk_norm": False,
    "dropout": 0.0,
    "bias": True,
    "init_weights": "truncnormal002",
}


# --------------------------------------------------------------------------------------------------------------------
# The draft: creating it, reading sections tolerantly, setting values, text form
# --------------------------------------------------------------------------------------------------------------------


def empty_draft() -> Draft:
    """A blank mixed-attention scenario: default attention config, no groups, no rules (validation says what to add)."""
    return {"attention": dict(ATTENTION_DEFAULTS), "token_specs": [], "attention_patterns": [], "run": {}}


def draft_from_scenario(scenario: Scenario) -> Draft:
    """The canonical mapping as a draft; anchor kinds leave their patterns out because the module generates them.

    Keeping generated patterns in the draft would turn every later group edit into a "patterns differ" error.
    """
    draft = scenario_to_dict(scenario)
    if scenario.attention.kind != "mixed":
        draft.pop("attention_patterns", None)
    return draft


def preset_draft(key: str) -> Draft:
    return draft_from_scenario(load_preset(key))


def section(draft: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A top-level section as a mapping ({} when missing or not a mapping)."""
    value = draft.get(name)
    return dict(value) if isinstance(value, Mapping) else {}


def set_value(draft: Mapping[str, Any], path: Sequence[str], value: Any) -> Draft:
    """A copy of ``draft`` with ``value`` at ``path`` (intermediate mappings created, non-mappings replaced)."""
    result = copy.deepcopy(dict(draft))
    node = result
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value
    return result


def remove_value(draft: Mapping[str, Any], path: Sequence[str]) -> Draft:
    """A copy of ``draft`` without the key at ``path`` (unchanged when it is not there)."""
    result = copy.deepcopy(dict(draft))
    node: Any = result
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)
    return result


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _flow_styled(value: Any, depth: int = 0) -> Any:
    """Short collections of plain values on one line, like the example files (token specs, group lists)."""
    if isinstance(value, Mapping):
        items = {key: _flow_styled(child, depth + 1) for key, child in value.items()}
        if depth >= 2 and all(_is_scalar(child) for child in value.values()):
            return FlowMap(items)
        return items
    if isinstance(value, list | tuple):
        items = [_flow_styled(child, depth + 1) for child in value]
        return FlowList(items) if all(_is_scalar(child) for child in value) else items
    return value


def draft_to_text(draft: Mapping[str, Any], fmt: Literal["yaml", "json"] = "yaml") -> str:
    """The draft as YAML (token specs and group lists in flow style) or indented JSON."""
    if fmt == "json":
        return json.dumps(draft, indent=2, ensure_ascii=False, default=str) + "\n"
    try:
        return yaml_text(_flow_styled(draft))
    except yaml.YAMLError:
        return json.dumps(draft, indent=2, ensure_ascii=False, default=str) + "\n"


@dataclass(frozen=True)
class ParsedText:
    """Text from the editor or a file: the document when it could be read (valid or not), the scenario when it
    is valid, and the problems found."""

    document: Draft | None
    problems: list[Problem]
    scenario: Scenario | None = None


def parse_text(text: str | bytes, name: str = "editor") -> ParsedText:
    """Read YAML or JSON (text, or a file's bytes) with the bounded, safe loader of :mod:`noether.explorer.io` and
    validate it, once.

    ``document`` is None when the input is not a readable mapping of plain values (a syntax error, bad bytes, an
    over-large or over-deep document, dates or NaN, a list); otherwise it is the mapping, even when the scenario is
    invalid.
    """
    document, reading = parse_document(text, name=name)
    if errors(reading):
        return ParsedText(None, reading)
    report = validate_document(document, reading, quoting_hints=format_for_path(name) != "json")
    return ParsedText(document if isinstance(document, dict) else None, report.problems, report.scenario)
