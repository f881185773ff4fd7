"""The logic behind the app's editors and views, free of Streamlit so that it can be unit-tested.

The app keeps the document being edited (the "draft") as a plain mapping that may be invalid in any way: the user's
edits are never thrown away because they do not validate. Every function here takes and returns such mappings (new
copies, never mutated in place) and never raises on bad content; validation itself is
:func:`noether.explorer.scenario.validate_scenario`.
"""

import base64
import binascii
import copy
import hashlib
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import yaml

from noether.core.schemas.modules.attention import TokenSpec
from noether.explorer.cost import CostSummary, cost_summary
from noether.explorer.guard import format_bytes
from noether.explorer.io import load_scenario_bytes
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.masks import GroupMask, group_mask, pooled_mask
from noether.explorer.png import heatmap_png
from noether.explorer.presets import load_preset
from noether.explorer.problems import Problem
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import (
    DEFAULT_CACHE_SIZE,
    Scenario,
    ScenarioReport,
    scenario_to_dict,
)
from noether.explorer.views import HeadChoice, Pooling, display_map, key_axis, query_axis, weight_map
from noether.explorer.weights import WeightResult
from noether.modeling.functional.init import SUPPORTED_INIT_MODES
from noether.modeling.modules.attention.anchor_attention import (
    cross_anchor_patterns,
    joint_anchor_patterns,
    self_anchor_patterns,
)

Draft = dict[str, Any]
"""The document being edited: a mapping with (ideally) attention, token_specs, attention_patterns and run."""

RulePair = tuple[list[str], list[str]]
"""(query groups, key/value groups) of one attention pattern."""

KINDS = ("mixed", "self_anchor", "cross_anchor", "joint_anchor")
KIND_LABELS = {
    "mixed": "mixed: explicit rules",
    "self_anchor": "self_anchor: each branch reads its own anchors",
    "cross_anchor": "cross_anchor: each branch reads the other branches' anchors",
    "joint_anchor": "joint_anchor: every group reads all anchors",
}
DTYPES = ("float32", "float64", "bfloat16", "float16")
ELEMENT_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
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


def scenario_key(scenario: Scenario) -> str:
    """Compact canonical JSON: equal for equal scenarios, so it keys caches of runs and figures."""
    return json.dumps(scenario_to_dict(scenario), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class _Flow(dict):
    """A mapping written on one line."""


class _FlowList(list):
    """A list written on one line."""


class _DraftDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


_DraftDumper.add_representer(
    _Flow, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)
_DraftDumper.add_representer(
    _FlowList, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _flow_styled(value: Any, depth: int = 0) -> Any:
    """Short collections of plain values on one line, like the example files (token specs, group lists)."""
    if isinstance(value, Mapping):
        items = {key: _flow_styled(child, depth + 1) for key, child in value.items()}
        if depth >= 2 and all(_is_scalar(child) for child in value.values()):
            return _Flow(items)
        return items
    if isinstance(value, list | tuple):
        items = [_flow_styled(child, depth + 1) for child in value]
        return _FlowList(items) if all(_is_scalar(child) for child in value) else items
    return value


def draft_to_text(draft: Mapping[str, Any], fmt: Literal["yaml", "json"] = "yaml") -> str:
    """The draft as YAML (token specs and group lists in flow style) or indented JSON."""
    if fmt == "json":
        return json.dumps(draft, indent=2, ensure_ascii=False, default=str) + "\n"
    try:
        return yaml.dump(_flow_styled(draft), Dumper=_DraftDumper, sort_keys=False, allow_unicode=True, width=120)
    except yaml.YAMLError:
        return json.dumps(draft, indent=2, ensure_ascii=False, default=str) + "\n"


@dataclass(frozen=True)
class ParsedText:
    """Text from the editor or a file: the document when it could be read (valid or not), and the problems found."""

    document: Draft | None
    problems: list[Problem]


_READING_PLACES = ("(file)", "(document)")


def _is_reading_problem(problem: Problem) -> bool:
    return problem.where in _READING_PLACES or problem.where.startswith("line ")


def parse_text(text: str, name: str = "editor") -> ParsedText:
    """Read YAML or JSON text with the bounded, safe loader of :mod:`noether.explorer.io`.

    ``document`` is None when the text is not a readable mapping of plain values (a syntax error, an over-large
    or over-deep document, dates or NaN); otherwise it is the mapping, even when the scenario is invalid.
    """
    data = text.encode("utf-8", "surrogatepass")
    report = load_scenario_bytes(data, name=name)
    reading = [p for p in report.problems if _is_reading_problem(p)]
    if reading:
        return ParsedText(None, reading)
    # The io loader accepted the syntax and the size/depth limits, so a plain safe load of the same text is bounded.
    try:
        document = json.loads(text) if text.lstrip()[:1] in ("{", "[") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        document = yaml.safe_load(text)
    if not isinstance(document, dict):
        return ParsedText(None, report.problems)
    try:
        json.dumps(document, allow_nan=False)
    except (TypeError, ValueError):
        return ParsedText(None, report.problems)
    return ParsedText(document, report.problems)


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
    tokens: int | float | None
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
            rows.append(GroupRow(name, tokens if _is_number(tokens) else None, True))
        elif size is _MISSING:
            rows.append(GroupRow(name, None, False))
        elif _is_number(size):
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
            COLUMN_TOKENS: pd.Series([r.tokens for r in rows], dtype="Float64"),
            COLUMN_CACHED: pd.Series([r.cached for r in rows], dtype="bool"),
        }
    )


def _clean_name(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _clean_tokens(value: Any) -> int | float | None:
    if value is None or isinstance(value, bool) or not _is_number(value):
        return None
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    # The editor hands back floats; whole numbers become ints, others stay floats so that validation names them.
    return int(value) if float(value).is_integer() else float(value)


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
    if kind not in _ANCHOR_PATTERNS:
        return None
    rows = group_rows(draft)
    branches, suffix = branches_of(draft)
    if rows is None:
        return None
    specs = [TokenSpec(name=row.name, size=None) for row in rows]
    patterns = _ANCHOR_PATTERNS[kind](specs, branches, suffix)
    return [(list(p.query_tokens), list(p.key_value_tokens)) for p in patterns]


def set_kind(draft: Mapping[str, Any], kind: str) -> Draft:
    """Switch the attention kind, carrying the rules across.

    To mixed: the rules the anchor scheme generated become explicit (editable) rules; branches are dropped.
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
# Share links: the canonical JSON, compressed, in one query parameter
# --------------------------------------------------------------------------------------------------------------------

SHARE_PARAM = "scenario"
MAX_SHARE_CHARS = 32_768
"""Longest accepted link parameter; real scenarios compress to a few hundred characters."""
MAX_SHARE_JSON_BYTES = 256 * 1024
"""Most bytes a link may decompress to (stops zip bombs before they inflate)."""
_BASE64_URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


def encode_share(scenario: Scenario) -> str:
    """Compact canonical JSON (generated rules left out), zlib-compressed, urlsafe base64 without padding."""
    text = json.dumps(draft_from_scenario(scenario), separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii").rstrip("=")


def _link_problem(message: str, hint: str = "Copy the whole link again from the Export tab.") -> ScenarioReport:
    return ScenarioReport(None, [Problem("link", message, hint)])


def decode_share(token: str) -> ScenarioReport:
    """The scenario a link parameter holds; a damaged, oversized or invalid one comes back as problems."""
    token = token.strip()
    if not token:
        return _link_problem("the scenario parameter is empty.")
    if len(token) > MAX_SHARE_CHARS:
        return _link_problem(
            f"the scenario parameter is {len(token):,} characters; links hold at most {MAX_SHARE_CHARS:,}."
        )
    if not _BASE64_URL.match(token):
        return _link_problem("the scenario parameter has characters a link never contains (it was cut or edited).")
    try:
        compressed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return _link_problem("the scenario parameter is not valid base64 (it was cut or edited).")
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(compressed, MAX_SHARE_JSON_BYTES)
    except zlib.error:
        return _link_problem("the scenario parameter is damaged: it does not decompress (it was cut or edited).")
    if inflater.unconsumed_tail:
        return _link_problem(f"the scenario parameter expands to more than {MAX_SHARE_JSON_BYTES // 1024} KiB.")
    if not inflater.eof:
        return _link_problem("the scenario parameter is incomplete (the link was cut off).")
    report = load_scenario_bytes(data, name="link.json", fmt="json")
    return report


def share_url(base_url: str, token: str) -> str:
    """The app's address with the scenario parameter (any query or fragment of ``base_url`` replaced)."""
    base = base_url.split("#")[0].split("?")[0]
    return f"{base}?{urlencode({SHARE_PARAM: token})}"


# --------------------------------------------------------------------------------------------------------------------
# Comparison of two scenarios
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskDifference:
    """Pooled mask of B minus pooled mask of A, when both have the same token axes."""

    values: np.ndarray | None
    """(row bins, column bins) in [-1, 1]: +1 attended only in B, -1 only in A; None when the axes differ."""
    rows: PoolGrid | None
    cols: PoolGrid | None
    message: str
    """What the map shows, or why there is none."""


def mask_difference(a: TokenLayout, b: TokenLayout, budget: int) -> MaskDifference:
    """Token-level mask difference on a shared pooled grid; only defined when the query and key axes have equal
    lengths (the groups may be named differently)."""
    if (a.n_queries, a.n_keys) != (b.n_queries, b.n_keys):
        return MaskDifference(
            None,
            None,
            None,
            f"The token axes differ (current: {a.n_queries:,} queries x {a.n_keys:,} keys, other: "
            f"{b.n_queries:,} x {b.n_keys:,}), so a token-by-token mask difference is not defined; "
            "compare the group diagrams and the cost table instead.",
        )
    rows, cols = PoolGrid.fit(a.n_queries, budget), PoolGrid.fit(a.n_keys, budget)
    values = pooled_mask(b, rows, cols) - pooled_mask(a, rows, cols)
    changed = int(np.count_nonzero(np.abs(values) > 1e-12))
    if changed == 0:
        message = "The two masks are identical: every (query, key) pair is attended in both or in neither."
    else:
        message = (
            f"{changed:,} of {values.size:,} cells differ. Blue: attended only in the other scenario; red: only in "
            "the current one (a pooled cell shows the share of its pairs that changed)."
        )
    return MaskDifference(values, rows, cols, message)


def scenario_cost(scenario: Scenario) -> CostSummary:
    """Analytic cost of a scenario from its groups alone (no module is built)."""
    return cost_summary(
        TokenLayout.from_scenario(scenario),
        scenario.attention.hidden_dim,
        scenario.run.batch_size,
        ELEMENT_BYTES.get(scenario.run.dtype, 4),
    )


def _ratio(a: float, b: float) -> str:
    if a == b:
        return "same"
    if a == 0:
        return "new"
    return f"{b / a:.2f}x"


def cost_difference(a: CostSummary, b: CostSummary) -> list[dict[str, str]]:
    """Side-by-side cost of the current scenario (A) and the other one (B), with B relative to A."""

    def count(value: float) -> str:
        return f"{value:,.0f}"

    def flops(value: float) -> str:
        return f"{value:.3g}"

    rows = [
        ("query tokens", a.n_queries, b.n_queries, count),
        ("key tokens", a.n_keys, b.n_keys, count),
        ("attended pairs (per head and sample)", a.attended_pairs, b.attended_pairs, count),
        ("attention FLOPs", a.attention_flops, b.attention_flops, flops),
        ("projection FLOPs", a.projection_flops, b.projection_flops, flops),
        ("dense bool mask", a.dense_mask_bytes, b.dense_mask_bytes, format_bytes),
        ("per-pattern extra activations", a.per_pattern_bytes, b.per_pattern_bytes, format_bytes),
    ]
    table = [
        {"quantity": name, "current": fmt(x), "other": fmt(y), "other / current": _ratio(x, y)}
        for name, x, y, fmt in rows
    ]
    table.insert(
        3,
        {
            "quantity": "sparsity",
            "current": f"{a.sparsity:.2%}",
            "other": f"{b.sparsity:.2%}",
            "other / current": f"{(b.sparsity - a.sparsity) * 100:+.2f} points",
        },
    )
    return table


# --------------------------------------------------------------------------------------------------------------------
# View data: heads, query tokens, colour ranges, per-token values
# --------------------------------------------------------------------------------------------------------------------

ALL_HEADS = "all"
HeadOption = HeadChoice | Literal["all"]


def head_options(num_heads: int, *, with_all: bool = False) -> list[HeadOption]:
    options: list[HeadOption] = ["mean", *range(num_heads)]
    return [*options, ALL_HEADS] if with_all and num_heads > 1 else options


def head_label(head: HeadOption) -> str:
    if head == "mean":
        return "mean over heads"
    if head == ALL_HEADS:
        return "all heads side by side"
    return f"head {head}"


def query_row(layout: TokenLayout, group: str, index: int) -> int:
    """Query-axis row of token ``index`` of input group ``group`` (index clamped into the group)."""
    found = layout.by_name[group]
    if found.query_offset is None:
        raise KeyError(f"group '{group}' is cached and has no queries")
    return found.query_offset + min(max(index, 0), max(found.size - 1, 0))


def query_key_column(layout: TokenLayout, row: int) -> int:
    """Key-axis column of the token at query row ``row`` (where the query token itself sits among the keys)."""
    group, index = layout.query_group_at(row)
    return group.key_offset + index


def key_labels(layout: TokenLayout) -> list[str]:
    """Group name of every key-axis token (for colouring token positions by group)."""
    names = np.array([g.name for g in layout.groups], dtype=object)
    return np.repeat(names, [g.size for g in layout.groups]).tolist()


def _select_head(values: np.ndarray, head: HeadChoice) -> np.ndarray:
    return values.mean(0) if head == "mean" else values[head]


def row_weights(run: ExplorerRun, row: int, batch: int, head: HeadChoice) -> np.ndarray:
    """Exact weights of query row ``row`` over every key: one head or the head mean."""
    return _select_head(run.exact_row(row)[batch].double().numpy(), head)


def received_weights(result: WeightResult, batch: int, head: HeadChoice) -> np.ndarray:
    """Total attention each key token receives from all queries: one head or the head mean."""
    return _select_head(result.received[batch].double().numpy(), head)


def token_positions(run: ExplorerRun, batch: int) -> np.ndarray:
    """(keys, 3) positions of every key-axis token of batch element ``batch``."""
    return run.inputs.positions[batch].double().numpy()


def weight_maps(
    result: WeightResult, budget: int, batch: int, heads: Sequence[HeadChoice], pooling: Pooling
) -> list[tuple[np.ndarray, PoolGrid, PoolGrid]]:
    """Display maps (see :func:`views.display_map`) of several heads."""
    return [display_map(result, budget, batch, head, pooling) for head in heads]


def colour_range(maps: Sequence[np.ndarray], *, log: bool) -> tuple[float, float]:
    """One colour range for several maps: 0 (log: the smallest positive value) to the largest value."""
    high = max((float(np.max(m)) for m in maps if m.size), default=1.0)
    if not log:
        return 0.0, high if high > 0 else 1.0
    positives = [float(np.min(m[m > 0])) for m in maps if (m > 0).any()]
    return (min(positives) if positives else 1e-12), high if high > 0 else 1.0


def head_colour_range(result: WeightResult, batch: int, pooling: Pooling, *, log: bool) -> tuple[float, float]:
    """The colour range shared by the head mean and every head, so that switching heads keeps one scale."""
    heads: list[HeadChoice] = ["mean", *range(result.mean.shape[1])]
    return colour_range([weight_map(result, batch, head, pooling) for head in heads], log=log)


def grid_note(rows: PoolGrid, cols: PoolGrid) -> str:
    """What one cell of a pooled map covers."""
    if rows.exact and cols.exact:
        return "exact: 1 cell = 1 query-key pair"
    return f"1 cell = {rows.factor:,} query x {cols.factor:,} key tokens"


@dataclass(frozen=True)
class MaskView:
    """Everything the Mask view draws, from the group structure alone (no module, no inputs)."""

    layout: TokenLayout
    groups: GroupMask
    pooled: np.ndarray
    """(row bins, column bins): share of attended (query, key) pairs in each cell."""
    rows: PoolGrid
    cols: PoolGrid


def mask_view(scenario: Scenario, budget: int) -> MaskView:
    layout = TokenLayout.from_scenario(scenario)
    rows, cols = PoolGrid.fit(layout.n_queries, budget), PoolGrid.fit(layout.n_keys, budget)
    return MaskView(layout, group_mask(layout), pooled_mask(layout, rows, cols), rows, cols)


def mask_png(view: MaskView) -> bytes:
    """The token-level mask as a PNG with group names and boundaries."""
    return heatmap_png(
        view.pooled,
        query_axis(view.layout, view.rows),
        key_axis(view.layout, view.cols),
        f"Attention mask ({grid_note(view.rows, view.cols)}): share of attended pairs",
        colorscale="Blues",
        zmin=0.0,
        zmax=1.0,
    )


def weights_png(
    result: WeightResult,
    layout: TokenLayout,
    budget: int,
    batch: int,
    head: HeadChoice,
    pooling: Pooling,
    *,
    log: bool = False,
    zrange: tuple[float, float] | None = None,
) -> bytes:
    """The attention-weight map of one head (or the head mean) as a PNG, as the Weights view shows it."""
    values, rows, cols = display_map(result, budget, batch, head, pooling)
    zmin, zmax = zrange if zrange is not None else (None, None)
    return heatmap_png(
        values,
        query_axis(layout, rows),
        key_axis(layout, cols),
        f"Attention weights, {head_label(head)}, {pooling} pooling ({grid_note(rows, cols)})",
        zmin=zmin,
        zmax=zmax,
        log=log,
    )


_STREAMLIT_PLACEHOLDER = re.compile(r"^#0000[0-9a-f]{2}$", re.IGNORECASE)


def keep_scale_colours(fig: go.Figure) -> go.Figure:
    """Nudge colours like #000004 (Inferno's black) to a visually identical #010005.

    Streamlit's chart theme uses #000001...#0000ff as placeholders that its front end replaces with theme colours,
    so a colour scale starting at #000004 would show its lowest values in lavender.
    """
    for trace in fig.data:
        for holder in (trace, getattr(trace, "marker", None)):
            scale = getattr(holder, "colorscale", None) if holder is not None else None
            if scale:
                holder.colorscale = [
                    [stop, "#010005" if isinstance(c, str) and _STREAMLIT_PLACEHOLDER.match(c) else c]
                    for stop, c in scale
                ]
    return fig


def mark_query_row(fig: go.Figure, row_bin: int, columns: int) -> go.Figure:
    """Outline the pooled row that holds the selected query token."""
    fig.add_shape(
        type="rect",
        x0=-0.5,
        x1=columns - 0.5,
        y0=row_bin - 0.5,
        y1=row_bin + 0.5,
        line={"color": "#00E5FF", "width": 1.5},
    )
    return fig


def device_options(current: str, available: Sequence[str]) -> list[str]:
    """ "auto" and the available devices, plus the scenario's own device when this machine lacks it."""
    options = ["auto", *available]
    return options if current in options or not isinstance(current, str) else [*options, current]


def device_label(device: str, available: Sequence[str]) -> str:
    if device == "auto":
        return f"auto (here: {available[0] if available else 'cpu'})"
    return device if device in available else f"{device} (not available here)"


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


def cloud_shortfall(cloud: Mapping[str, np.ndarray], layout: TokenLayout) -> list[str]:
    """Groups with more tokens than an uploaded cloud offers for their domain: the engine generates sample-car
    points for those instead (surface/volume by the name's first word, anything else draws from both)."""
    sizes = {key: len(cloud.get(key, ())) for key in ("surface", "volume")}
    short = []
    for group in layout.groups:
        domain = group.name.split("_")[0]
        available = sizes[domain] if domain in sizes else sizes["surface"] + sizes["volume"]
        if group.size > available:
            short.append(group.name)
    return short


def attention_prefixes(state_dict: Mapping[str, Any]) -> list[str]:
    """Prefixes under which a state_dict holds a whole attention layer (q, k, v and proj weights), sorted.

    Mirrors the checkpoint module's private helper so that the app can offer the layers as choices.
    """
    cores = ("q.weight", "k.weight", "v.weight", "proj.weight")
    found = {key[: -len("q.weight")] for key in state_dict if key.endswith("q.weight")}
    return sorted(p for p in found if all(p + core in state_dict for core in cores))


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
