"""The rules (attention patterns) of a draft, its attention kind and its branches.

Part of :mod:`noether.explorer.editing`, which re-exports everything here.
"""

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from noether.core.schemas.modules.attention import TokenSpec
from noether.explorer.editing_draft import Draft, remove_value, section, set_value
from noether.explorer.editing_groups import GroupRow, group_names, group_rows, update_groups
from noether.explorer.scenario import perceiver_patterns
from noether.modeling.modules.attention.anchor_attention import (
    cross_anchor_patterns,
    joint_anchor_patterns,
    self_anchor_patterns,
)

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
DEFAULT_ANCHOR_SUFFIX = "_anchors"
_ANCHOR_PATTERNS = {
    "self_anchor": self_anchor_patterns,
    "cross_anchor": cross_anchor_patterns,
    "joint_anchor": joint_anchor_patterns,
}


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
