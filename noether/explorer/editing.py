"""The draft being edited in the app, and its edits, free of Streamlit so that it can be unit-tested.

The app keeps the document being edited (the "draft") as a plain mapping that may be invalid in any way: the user's
edits are never thrown away because they do not validate. Every function here takes and returns such mappings (new
copies, never mutated in place) and never raises on bad content; validation itself is
:func:`noether.explorer.scenario.validate_scenario`.
"""

import copy
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import pandas as pd
import yaml

from noether.core.schemas.modules.attention import TokenSpec
from noether.core.types import SUPPORTED_INIT_MODES
from noether.explorer.io import FlowList, FlowMap, format_for_path, parse_document, validate_document, yaml_text
from noether.explorer.presets import load_preset
from noether.explorer.problems import Problem, errors
from noether.explorer.scenario import DEFAULT_CACHE_SIZE, DTypeName, Scenario, perceiver_patterns, scenario_to_dict
from noether.modeling.modules.attention.anchor_attention import (
    cross_anchor_patterns,
    joint_anchor_patterns,
    self_anchor_patterns,
)

Draft = dict[str, Any]
"""The document being edited: a mapping with (ideally) attention, token_specs, attention_patterns and run."""

RulePair = tuple[list[str], list[str]]
"""(query groups, key/value groups) of one attention pattern."""

KINDS = ("mixed", "self_anchor", "cross_anchor", "joint_anchor", "perceiver")
KIND_LABELS = {
    "mixed": "mixed: explicit rules",
    "self_anchor": "self_anchor: each branch reads its own anchors",
    "cross_anchor": "cross_anchor: each branch reads the other branches' anchors",
    "joint_anchor": "joint_anchor: every group reads all anchors",
    "perceiver": "perceiver: the first group's queries read the second group's keys/values",
}
DTYPES: tuple[str, ...] = get_args(DTypeName)
INIT_MODES = tuple(SUPPORTED_INIT_MODES)
DEFAULT_ANCHOR_SUFFIX = "_anchors"
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
_ANCHOR_PATTERNS = {
    "self_anchor": self_anchor_patterns,
    "cross_anchor": cross_anchor_patterns,
    "joint_anchor": joint_anchor_patterns,
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


# --------------------------------------------------------------------------------------------------------------------
# Token groups <-> table rows
# --------------------------------------------------------------------------------------------------------------------

COLUMN_NAME, COLUMN_TOKENS, COLUMN_CACHED = "name", "tokens", "from KV cache"


@dataclass(frozen=True)
class GroupRow:
    """One row of the groups table.

    ``tokens`` is the group's size, or for a cached group the number of cached tokens simulated
    (``run.kv_cache_sizes``), so that one column says how long every group is on the key axis.
    """

    name: str
    tokens: int | float | str | None
    """A number, or the text typed into the cell when it is not one (kept so that validation can explain it)."""
    cached: bool = False


_MISSING = object()


def _spec_parts(item: Any) -> tuple[Any, Any] | None:
    """(name, size) of a token_specs item in either form (the same rule the scenario schema uses), or None."""
    if isinstance(item, Mapping) and "name" in item and (len(item) > 1 or isinstance(item["name"], str)):
        return item.get("name"), item.get("size", _MISSING)
    if isinstance(item, Mapping) and len(item) == 1:
        return next(iter(item.items()))
    return None


def group_rows(draft: Mapping[str, Any]) -> list[GroupRow] | None:
    """The token groups as table rows, or None when token_specs cannot be shown as a table (fix it as text)."""
    specs = draft.get("token_specs", [])
    if specs is None:
        return []
    if not isinstance(specs, list):
        return None
    cache_sizes = section(section(draft, "run"), "kv_cache_sizes")
    rows = []
    for item in specs:
        parts = _spec_parts(item)
        if parts is None:
            return None
        name, size = parts
        if not isinstance(name, str):
            return None
        if size is None:
            tokens = cache_sizes.get(name, DEFAULT_CACHE_SIZE)
            rows.append(GroupRow(name, tokens if _is_number(tokens) or isinstance(tokens, str) else None, True))
        elif size is _MISSING:
            rows.append(GroupRow(name, None, False))
        elif _is_number(size) or isinstance(size, str):
            rows.append(GroupRow(name, size, False))
        else:
            return None
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table_records(rows: Sequence[GroupRow]) -> list[dict[str, Any]]:
    """Rows in the data editor's column layout."""
    return [{COLUMN_NAME: r.name, COLUMN_TOKENS: r.tokens, COLUMN_CACHED: r.cached} for r in rows]


def table_frame(rows: Sequence[GroupRow]) -> pd.DataFrame:
    """The groups table with fixed column types, so that an empty table still edits text, whole numbers, booleans."""
    return pd.DataFrame(
        {
            COLUMN_NAME: pd.Series([r.name for r in rows], dtype="string"),
            COLUMN_TOKENS: pd.Series([tokens_text(r.tokens) for r in rows], dtype="string"),
            COLUMN_CACHED: pd.Series([r.cached for r in rows], dtype="bool"),
        }
    )


def _clean_name(value: Any) -> str:
    return "" if value is None else str(value).strip()


def tokens_text(tokens: int | float | str | None) -> str | None:
    """A size as the tokens cell shows it: whole numbers without a decimal point, typed text as typed."""
    if tokens is None or isinstance(tokens, str):
        return tokens
    if isinstance(tokens, float) and tokens.is_integer():
        return str(int(tokens))
    return str(tokens)


def parse_tokens(value: Any) -> int | float | str | None:
    """The size typed into a tokens cell, never rewritten: a number when the text is one, else the text itself.

    "2048", "2_048" and "1e5" are numbers (whole ones become ints); "-5" stays -5 and "abc" stays "abc", so that
    validation names the value and says what sizes may be instead of the cell silently changing it.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        for number in (int, float):
            try:
                parsed = number(text)
            except (ValueError, OverflowError):
                continue
            return _whole(parsed) if math.isfinite(parsed) else text
        return text
    if not _is_number(value):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return _whole(value)


def _whole(value: int | float) -> int | float:
    # Whole numbers become ints; others stay floats so that validation names them.
    return int(value) if float(value).is_integer() else float(value)


def _clean_tokens(value: Any) -> int | float | str | None:
    return parse_tokens(value)


def _apply_cells(row: GroupRow, cells: Mapping[str, Any]) -> GroupRow:
    name, tokens, cached = row.name, row.tokens, row.cached
    if COLUMN_NAME in cells:
        name = _clean_name(cells[COLUMN_NAME])
    if COLUMN_TOKENS in cells:
        tokens = _clean_tokens(cells[COLUMN_TOKENS])
    if COLUMN_CACHED in cells:
        cached = bool(cells[COLUMN_CACHED])
    return GroupRow(name, tokens, cached)


def apply_table_delta(rows: Sequence[GroupRow], delta: Mapping[str, Any]) -> list[GroupRow]:
    """Apply ``st.data_editor``'s edit state (edited_rows, deleted_rows, added_rows) to the rows it started from.

    Same order as Streamlit: cell edits by position, then deletions by position, then additions at the end.
    """
    result = list(rows)
    for position, cells in (delta.get("edited_rows") or {}).items():
        index = int(position)
        if 0 <= index < len(result) and isinstance(cells, Mapping):
            result[index] = _apply_cells(result[index], cells)
    deleted = {int(i) for i in delta.get("deleted_rows") or []}
    result = [row for index, row in enumerate(result) if index not in deleted]
    for cells in delta.get("added_rows") or []:
        if isinstance(cells, Mapping):
            result.append(_apply_cells(GroupRow("", None, False), cells))
    return result


def rows_to_token_specs(rows: Sequence[GroupRow]) -> list[dict[str, Any]]:
    """token_specs items: cached rows get size null; a row without tokens gets no size (validation asks for one)."""
    specs: list[dict[str, Any]] = []
    for row in rows:
        if row.cached:
            specs.append({"name": row.name, "size": None})
        elif row.tokens is None:
            specs.append({"name": row.name})
        else:
            specs.append({"name": row.name, "size": row.tokens})
    return specs


def detect_rename(old: Sequence[str], new: Sequence[str]) -> dict[str, str]:
    """{old: new} when exactly one group changed its name in place (the same rows otherwise), else {}."""
    if len(old) != len(new):
        return {}
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    if len(changed) != 1:
        return {}
    before, after = changed[0]
    if not before or not after or Counter(old)[before] != 1 or after in old:
        return {}
    return {before: after}


def removed_names(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """Names whose every row disappeared."""
    remaining = set(new)
    return [name for name in dict.fromkeys(old) if name and name not in remaining]


def _map_rule_lists(draft: Draft, change: Any) -> Draft:
    patterns = draft.get("attention_patterns")
    if not isinstance(patterns, list):
        return draft
    kept = []
    for pattern in patterns:
        if not isinstance(pattern, dict):
            kept.append(pattern)
            continue
        updated = dict(pattern)
        for field_name in ("query_tokens", "key_value_tokens"):
            names = pattern.get(field_name)
            if isinstance(names, list):
                updated[field_name] = change(names)
        # A rule whose query groups were all removed has nothing left to say.
        if pattern.get("query_tokens") and updated.get("query_tokens") == []:
            continue
        kept.append(updated)
    draft["attention_patterns"] = kept
    return draft


def _map_run_entries(draft: Draft, change: Any) -> Draft:
    run = draft.get("run")
    if not isinstance(run, dict):
        return draft
    for field_name in ("kv_cache_sizes", "padding"):
        entries = run.get(field_name)
        if isinstance(entries, dict):
            run[field_name] = change(entries)
    return draft


def rename_groups(draft: Mapping[str, Any], renames: Mapping[str, str]) -> Draft:
    """Follow group renames in the rules, cache sizes and padding."""
    result = copy.deepcopy(dict(draft))
    if not renames:
        return result
    result = _map_rule_lists(result, lambda names: [renames.get(n, n) if isinstance(n, str) else n for n in names])
    return _map_run_entries(result, lambda entries: {renames.get(k, k): v for k, v in entries.items()})


def forget_groups(draft: Mapping[str, Any], names: Sequence[str]) -> Draft:
    """Remove deleted groups from the rules (dropping rules left without queries), cache sizes and padding."""
    result = copy.deepcopy(dict(draft))
    gone = set(names)
    if not gone:
        return result
    result = _map_rule_lists(result, lambda values: [n for n in values if n not in gone])
    return _map_run_entries(result, lambda entries: {k: v for k, v in entries.items() if k not in gone})


def update_groups(draft: Mapping[str, Any], rows: Sequence[GroupRow]) -> Draft:
    """The draft with the groups table's rows as token_specs.

    A rename (one name changed in place) is followed in the rules, cache sizes and padding; deleted groups leave
    them. The tokens of a cached row go to run.kv_cache_sizes; cached groups lose their padding (not allowed).
    """
    old_rows = group_rows(draft) or []
    old_names, new_names = [r.name for r in old_rows], [r.name for r in rows]
    result = rename_groups(draft, detect_rename(old_names, new_names))
    result = forget_groups(result, removed_names(old_names, new_names))
    return set_rows(result, rows)


def set_rows(draft: Mapping[str, Any], rows: Sequence[GroupRow]) -> Draft:
    """The draft with ``rows`` as token_specs (names in the rules untouched); cached rows' tokens go to
    run.kv_cache_sizes and cached groups lose their padding (not allowed)."""
    result = copy.deepcopy(dict(draft))
    result["token_specs"] = rows_to_token_specs(rows)
    run = result.get("run", {})
    if not isinstance(run, dict):
        return result
    run = dict(run)
    cache_sizes = dict(run.get("kv_cache_sizes") or {}) if isinstance(run.get("kv_cache_sizes", {}), dict) else None
    padding = dict(run.get("padding") or {}) if isinstance(run.get("padding", {}), dict) else None
    for row in rows:
        if cache_sizes is not None:
            if not row.cached or row.tokens is None:
                cache_sizes.pop(row.name, None)
            elif row.name in cache_sizes or row.tokens != DEFAULT_CACHE_SIZE:
                cache_sizes[row.name] = row.tokens
        if padding is not None and row.cached:
            padding.pop(row.name, None)
    if cache_sizes is not None and (cache_sizes or "kv_cache_sizes" in run):
        run["kv_cache_sizes"] = cache_sizes
    if padding is not None and (padding or "padding" in run):
        run["padding"] = padding
    result["run"] = run
    return result


def move_group(draft: Mapping[str, Any], index: int, offset: int) -> Draft:
    """Move the group at ``index`` by ``offset`` places (clamped); input order is the token order on both axes."""
    result = copy.deepcopy(dict(draft))
    specs = result.get("token_specs")
    if not isinstance(specs, list) or not 0 <= index < len(specs):
        return result
    target = min(max(index + offset, 0), len(specs) - 1)
    specs.insert(target, specs.pop(index))
    return result


def group_names(draft: Mapping[str, Any]) -> list[str]:
    """Names of the groups that can be read from the draft, in order (empty names left out)."""
    return [row.name for row in group_rows(draft) or [] if row.name]


# --------------------------------------------------------------------------------------------------------------------
# Rules (attention patterns), kinds and branches
# --------------------------------------------------------------------------------------------------------------------


def rule_pairs(draft: Mapping[str, Any]) -> list[RulePair] | None:
    """The explicit rules as (queries, keys/values) lists, or None when they cannot be shown as rules."""
    patterns = draft.get("attention_patterns", [])
    if patterns is None:
        return []
    if not isinstance(patterns, list):
        return None
    pairs = []
    for pattern in patterns:
        if not isinstance(pattern, Mapping):
            return None
        lists = []
        for field_name in ("query_tokens", "key_value_tokens"):
            names = pattern.get(field_name, [])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                return None
            lists.append(list(names))
        pairs.append((lists[0], lists[1]))
    return pairs


def _with_rules(draft: Mapping[str, Any], pairs: Sequence[RulePair]) -> Draft:
    return set_value(
        draft,
        ["attention_patterns"],
        [{"query_tokens": list(q), "key_value_tokens": list(kv)} for q, kv in pairs],
    )


def set_rule(
    draft: Mapping[str, Any], index: int, *, queries: Sequence[str] | None = None, keys: Sequence[str] | None = None
) -> Draft:
    """Replace the query and/or key/value groups of rule ``index``."""
    pairs = rule_pairs(draft)
    if pairs is None or not 0 <= index < len(pairs):
        return copy.deepcopy(dict(draft))
    q, kv = pairs[index]
    pairs[index] = (list(queries) if queries is not None else q, list(keys) if keys is not None else kv)
    return _with_rules(draft, pairs)


def uncovered_groups(draft: Mapping[str, Any]) -> list[str]:
    """Groups that are not yet a query in any rule."""
    covered = {name for q, _ in rule_pairs(draft) or [] for name in q}
    return [name for name in group_names(draft) if name not in covered]


def add_rule(draft: Mapping[str, Any]) -> Draft:
    """Append a rule: the groups not yet covered as queries, attending to every group (a full-attention start)."""
    pairs = rule_pairs(draft)
    if pairs is None:
        return copy.deepcopy(dict(draft))
    queries = uncovered_groups(draft)
    pairs.append((queries, group_names(draft) if queries else []))
    return _with_rules(draft, pairs)


def remove_rule(draft: Mapping[str, Any], index: int) -> Draft:
    pairs = rule_pairs(draft)
    if pairs is None or not 0 <= index < len(pairs):
        return copy.deepcopy(dict(draft))
    del pairs[index]
    return _with_rules(draft, pairs)


def branches_of(draft: Mapping[str, Any]) -> tuple[list[str], str]:
    """Branches and anchor suffix of the attention section (tolerant of bad values)."""
    attention = section(draft, "attention")
    branches = attention.get("branches")
    suffix = attention.get("anchor_suffix", DEFAULT_ANCHOR_SUFFIX)
    names = [b for b in branches if isinstance(b, str)] if isinstance(branches, list) else []
    return names, suffix if isinstance(suffix, str) else DEFAULT_ANCHOR_SUFFIX


def parse_branches(text: str) -> list[str]:
    """Branch names from comma- or space-separated text, in order, without duplicates."""
    return list(dict.fromkeys(part for part in re.split(r"[,\s]+", text) if part))


def infer_branches(names: Sequence[str], suffix: str = DEFAULT_ANCHOR_SUFFIX) -> list[str]:
    """Branches named by the anchor groups: "surface_anchors" -> "surface"."""
    return list(dict.fromkeys(n[: -len(suffix)] for n in names if suffix and n.endswith(suffix) and n != suffix))


def generated_rules(draft: Mapping[str, Any]) -> list[RulePair] | None:
    """The rules an anchor kind generates from the branches and group names, or None when they cannot be built."""
    kind = section(draft, "attention").get("kind", "mixed")
    if kind not in _ANCHOR_PATTERNS and kind != "perceiver":
        return None
    rows = group_rows(draft)
    if kind == "perceiver" and rows is not None:
        patterns = perceiver_patterns([TokenSpec(name=row.name, size=None) for row in rows])
        return [(list(p.query_tokens), list(p.key_value_tokens)) for p in patterns]
    branches, suffix = branches_of(draft)
    if rows is None:
        return None
    specs = [TokenSpec(name=row.name, size=None) for row in rows]
    patterns = _ANCHOR_PATTERNS[kind](specs, branches, suffix)
    return [(list(p.query_tokens), list(p.key_value_tokens)) for p in patterns]


def set_kind(draft: Mapping[str, Any], kind: str) -> Draft:
    """Switch the attention kind, carrying the rules across.

    To mixed: the rules the anchor scheme generated become explicit (editable) rules; branches are dropped.
    To perceiver: explicit rules and branches are dropped (the first group attends to the second).
    To an anchor kind: explicit rules are dropped (the module generates them); branches are inferred from the
    anchor groups' names when none are set.
    """
    current = section(draft, "attention").get("kind", "mixed")
    result = set_value(draft, ["attention", "kind"], kind)
    if kind == current:
        return result
    if kind == "mixed":
        generated = generated_rules(draft)
        if generated is not None:
            result = _with_rules(result, generated)
        result = remove_value(remove_value(result, ["attention", "branches"]), ["attention", "anchor_suffix"])
        return result
    result.pop("attention_patterns", None)
    if kind == "perceiver":
        # One generated rule from the first two groups; branches mean nothing to a perceiver.
        return remove_value(remove_value(result, ["attention", "branches"]), ["attention", "anchor_suffix"])
    branches, suffix = branches_of(result)
    if not branches:
        result = set_value(result, ["attention", "branches"], infer_branches(group_names(result), suffix))
    if "anchor_suffix" not in section(result, "attention"):
        result = set_value(result, ["attention", "anchor_suffix"], DEFAULT_ANCHOR_SUFFIX)
    return result


def add_branch_groups(
    draft: Mapping[str, Any], anchors: int = 1024, queries: int = 2048, query_suffix: str = "_queries"
) -> Draft:
    """Add the missing "<branch><suffix>" anchor group and "<branch>_queries" group of every branch."""
    branches, suffix = branches_of(draft)
    rows = group_rows(draft)
    if rows is None:
        return copy.deepcopy(dict(draft))
    names = {row.name for row in rows}
    added = list(rows)
    for branch in branches:
        for name, size in ((f"{branch}{suffix}", anchors), (f"{branch}{query_suffix}", queries)):
            has_group = name in names or (name.endswith(query_suffix) and _branch_has_queries(names, branch, suffix))
            if not has_group:
                added.append(GroupRow(name, size, False))
    return update_groups(draft, added)


def _branch_has_queries(names: set[str], branch: str, suffix: str) -> bool:
    return any(n.startswith(branch) and n != f"{branch}{suffix}" for n in names)


def compose_draft(
    attention: Mapping[str, Any],
    rows: Sequence[GroupRow],
    rules: Sequence[RulePair] | None,
    run: Mapping[str, Any],
) -> Draft:
    """A draft from its edited pieces: attention config, groups table, rules (None for anchor kinds) and run settings.

    The tokens of cached rows go to run.kv_cache_sizes, as in :func:`update_groups`.
    """
    draft: Draft = {"attention": dict(attention), "token_specs": [], "run": copy.deepcopy(dict(run))}
    if rules is not None:
        draft = _with_rules(draft, rules)
    result = update_groups(draft, rows)
    return {key: result[key] for key in ("attention", "token_specs", "attention_patterns", "run") if key in result}


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


# --------------------------------------------------------------------------------------------------------------------
# Cache keys: what identifies a scenario, an uploaded file, a prepared run
# --------------------------------------------------------------------------------------------------------------------


def scenario_key(scenario: Scenario) -> str:
    """Compact canonical JSON: equal for equal scenarios, so it keys caches of runs and figures."""
    return json.dumps(scenario_to_dict(scenario), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def run_cache_key(
    scenario: Scenario,
    *,
    weights_digest: str = "",
    weights_prefix: str = "",
    cloud_digest: str = "",
    memory_budget_mb: float = 0.0,
) -> str:
    """What identifies a prepared run: the scenario, the trained weights, the point cloud (only when point-cloud
    inputs use it) and the memory budget."""
    cloud = cloud_digest if scenario.run.inputs == "point_cloud" else ""
    return "|".join((scenario_key(scenario), weights_digest, weights_prefix, cloud, f"{memory_budget_mb:g}"))


# --------------------------------------------------------------------------------------------------------------------
# Small coercions for widgets showing values of a draft that may be invalid
# --------------------------------------------------------------------------------------------------------------------


JS_MAX_SAFE_INTEGER = 2**53 - 1
"""Number widgets refuse values beyond what JavaScript represents exactly."""


def as_int(value: Any, default: int) -> int:
    """An int to show in a number widget (the draft may hold anything, e.g. 1e30 typed into the text)."""
    if isinstance(value, bool) or not _is_number(value):
        return default
    try:
        result = int(value)
    except (OverflowError, ValueError):
        return default
    return result if abs(result) <= JS_MAX_SAFE_INTEGER else default


def as_float(value: Any, default: float) -> float:
    if isinstance(value, bool) or not _is_number(value):
        return default
    try:
        result = float(value)
    except OverflowError:
        return default
    return result if math.isfinite(result) else default


def as_bool(value: Any, default: bool) -> bool:
    return value if isinstance(value, bool) else default


def choice(value: Any, options: Sequence[Any], default: Any) -> Any:
    """``value`` if it is one of ``options`` (compared as given), else ``default``."""
    return value if any(value == option and type(value) is type(option) for option in options) else default
