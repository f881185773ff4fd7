"""Parsing each section of a scenario document (attention, token_specs, attention_patterns, run) on its own."""

from collections.abc import Mapping, Sequence
from typing import Any

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.core.types import SUPPORTED_INIT_MODES
from noether.explorer.problems import Problem, did_you_mean
from noether.explorer.scenario_messages import _parse, _unknown_item_keys
from noether.explorer.scenario_model import (
    ANCHOR_CONFIGS,
    MAX_GROUPS,
    MAX_TOTAL_TOKENS,
    MIN_WAVE_DIM,
    RunSettings,
    ScenarioAttention,
    _is_explicit_item,
    _token_item,
)


def _check_attention(data: Any) -> tuple[ScenarioAttention | None, list[Problem]]:
    attention, problems = _parse(ScenarioAttention, data, "attention")
    if attention is None:
        return None, problems
    known = set(ScenarioAttention.model_fields) | {"branches", "anchor_suffix", "kv_dim"}
    for key in attention.model_extra or {}:
        if key not in known:
            problems.append(
                Problem(
                    f"attention.{key}",
                    "is not a field of AttentionConfig; it is kept as an extra (as upstream does) but nothing uses it.",
                    did_you_mean(key, known).strip(),
                    "warning",
                )
            )
    if attention.init_weights not in SUPPORTED_INIT_MODES:
        problems.append(
            Problem(
                "attention.init_weights",
                f"'{attention.init_weights}' is accepted by the schema but the attention modules do not implement it.",
                f"Use one of {list(SUPPORTED_INIT_MODES)}.",
            )
        )
    head_dim = attention.head_dim or 0
    if attention.use_rope and (head_dim % 2 or head_dim < MIN_WAVE_DIM):
        problems.append(
            Problem(
                "attention.use_rope",
                f"RoPE rotates feature pairs of each head over 3-D positions, so the head dimension "
                f"(hidden_dim / num_heads = {head_dim}) must be even and at least {MIN_WAVE_DIM}.",
                "Raise hidden_dim, lower num_heads, or turn use_rope off.",
            )
        )
    if attention.kind == "perceiver":
        problems += _kv_dim_problems(attention)
    elif attention.kind != "mixed":
        config_cls = ANCHOR_CONFIGS[attention.kind]
        anchor, anchor_problems = _parse(config_cls, attention.model_dump(), "attention")
        problems += anchor_problems
        if anchor is not None:
            problems += _branch_problems(attention.kind, anchor.branches)
    return attention, problems


def _kv_dim_problems(attention: ScenarioAttention) -> list[Problem]:
    """kv_dim is the perceiver's key/value input width: a positive whole number, or null for hidden_dim."""
    kv_dim = (attention.model_extra or {}).get("kv_dim")
    if kv_dim is None or (isinstance(kv_dim, int) and not isinstance(kv_dim, bool) and kv_dim >= 1):
        return []
    return [
        Problem(
            "attention.kv_dim",
            f"is {kv_dim!r}, but it is the number of features of the key/value input.",
            f"Give a positive whole number, or null for hidden_dim ({attention.hidden_dim}).",
        )
    ]


def _branch_problems(kind: str, branches: Sequence[str]) -> list[Problem]:
    """Branches own groups by name prefix: they must be distinct, non-empty, and no one a prefix of another."""
    problems = []
    if kind != "self_anchor" and len(branches) < 2:
        problems.append(
            Problem(
                "attention.branches",
                f"{kind} needs at least two branches, got {list(branches)}.",
                "Add a branch or use kind: self_anchor.",
            )
        )
    for index, branch in enumerate(branches):
        if not branch:
            problems.append(Problem(f"attention.branches[{index}]", "is empty.", "Name the branch, e.g. surface."))
        elif branch in branches[:index]:
            problems.append(Problem(f"attention.branches[{index}]", f"'{branch}' is listed twice.", "List it once."))
        else:
            longer = [other for other in branches if other != branch and other.startswith(branch)]
            if longer:
                problems.append(
                    Problem(
                        f"attention.branches[{index}]",
                        f"'{branch}' is a prefix of {longer}: groups join a branch by name prefix, so "
                        f"'{longer[0]}…' groups would belong to both.",
                        "Use branch names where none starts another.",
                    )
                )
    return problems


def _bool_number_problems(data: Mapping[str, Any]) -> list[Problem]:
    """YAML reads yes/no/on/off as booleans and pydantic would take them as 1/0: refuse them where numbers go."""
    found: list[tuple[str, Any]] = []
    attention = data.get("attention")
    if isinstance(attention, Mapping):
        found += [(f"attention.{key}", attention.get(key)) for key in ("hidden_dim", "num_heads", "dropout")]
    specs = data.get("token_specs")
    if isinstance(specs, list):
        for index, item in enumerate(specs):
            normal = _token_item(item)
            if isinstance(normal, Mapping):
                found.append((f"token_specs[{index}].size", normal.get("size")))
    run = data.get("run")
    if isinstance(run, Mapping):
        found += [(f"run.{key}", run.get(key)) for key in ("seed", "batch_size")]
        for table in ("kv_cache_sizes", "padding"):
            if isinstance(run.get(table), Mapping):
                found += [(f"run.{table}.{name}", value) for name, value in run[table].items()]
    return [
        Problem(
            where,
            f"is a boolean ({value!r}), not a number.",
            "Write the number (YAML reads yes/no/on/off as booleans).",
        )
        for where, value in found
        if isinstance(value, bool)
    ]


def _check_token_specs(data: Any) -> tuple[list[TokenSpec] | None, list[Problem]]:
    if not isinstance(data, list):
        return None, [Problem("token_specs", f"must be a list of groups, got {type(data).__name__}.", _TOKEN_HINT)]
    if not data:
        return None, [Problem("token_specs", "is empty; a scenario needs at least one token group.", _TOKEN_HINT)]
    if len(data) > MAX_GROUPS:
        return None, [
            Problem(
                "token_specs",
                f"has {len(data):,} groups; the explorer supports at most {MAX_GROUPS}.",
                "Merge groups that share a role.",
            )
        ]
    specs: list[TokenSpec] = []
    problems: list[Problem] = []
    for index, item in enumerate(data):
        where = f"token_specs[{index}]"
        if _is_explicit_item(item):
            problems += _unknown_item_keys(item, ("name", "size"), where)
        if isinstance(item, Mapping) and len(item) != 1 and "name" not in item:
            problems.append(
                Problem(
                    where,
                    f"has {len(item)} keys {list(item)}; a {{name: size}} item holds exactly one group.",
                    "Split it into one item per group.",
                )
            )
            continue
        spec, item_problems = _parse(TokenSpec, _token_item(item), where)
        problems += [_size_problem(p, _token_item(item)) for p in item_problems]
        if spec is not None:
            specs.append(spec)
    if problems:
        return None, problems
    first: dict[str, int] = {}
    for index, spec in enumerate(specs):
        where = f"token_specs[{index}].name"
        if not spec.name.strip():
            problems.append(Problem(where, "is empty.", "Give every group a name, e.g. surface_anchors."))
        elif spec.name in first:
            # One problem per extra group: a name used twice is one thing to fix, not two.
            problems.append(
                Problem(
                    where,
                    f"'{spec.name}' is already the name of group {first[spec.name] + 1}.",
                    "Names must be unique; rename one of them.",
                )
            )
        else:
            first[spec.name] = index
    for index, spec in enumerate(specs):
        if spec.size is not None and spec.size > MAX_TOTAL_TOKENS:
            problems.append(
                Problem(
                    f"token_specs[{index}].size",
                    f"{spec.size:,} tokens is more than the explorer supports: "
                    f"at most {MAX_TOTAL_TOKENS:,} in all groups together.",
                    SIZE_RULE,
                )
            )
    total = sum(spec.size or 0 for spec in specs)
    if total > MAX_TOTAL_TOKENS and not any(p.where.endswith(".size") for p in problems):
        problems.append(
            Problem(
                "token_specs",
                f"the groups hold {total:,} tokens; the explorer supports at most {MAX_TOTAL_TOKENS:,} in total.",
                "Use smaller groups.",
            )
        )
    if all(spec.size is None for spec in specs):
        problems.append(
            Problem(
                "token_specs",
                "every group is cached (size null), so there are no input tokens to run.",
                "Give at least one group a size.",
            )
        )
    return specs, problems


SIZE_RULE = "Sizes are whole numbers ≥ 0, or null for a group whose keys/values come from a KV cache."


def _size_problem(problem: Problem, item: Any) -> Problem:
    """A group size that pydantic refused, named as typed and with the rule for sizes instead of its phrasing."""
    if not problem.where.endswith(".size") or not isinstance(item, Mapping) or "size" not in item:
        return problem
    value = item["size"]
    shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    return Problem(problem.where, f"{shown} is not a group size.", SIZE_RULE)


_TOKEN_HINT = "Write e.g. token_specs: [{surface_anchors: 2048}, {name: surface_queries, size: 4096}]."


def _check_patterns(data: Any) -> tuple[list[AttentionPattern] | None, list[Problem]]:
    if not isinstance(data, list):
        return None, [
            Problem(
                "attention_patterns",
                f"must be a list of patterns, got {type(data).__name__}.",
                "Write e.g. [{query_tokens: [a], key_value_tokens: [a]}].",
            )
        ]
    if len(data) > MAX_GROUPS:
        return None, [
            Problem(
                "attention_patterns",
                f"has {len(data):,} patterns; at most {MAX_GROUPS} are supported.",
                "Each group is a query in one pattern, so there are never more patterns than groups.",
            )
        ]
    patterns: list[AttentionPattern] = []
    problems: list[Problem] = []
    for index, item in enumerate(data):
        problems += _unknown_item_keys(item, ("query_tokens", "key_value_tokens"), f"attention_patterns[{index}]")
        pattern, item_problems = _parse(AttentionPattern, item, f"attention_patterns[{index}]")
        problems += item_problems
        if pattern is not None:
            patterns.append(pattern)
    return (None if problems else patterns), problems


def _check_run(data: Any) -> tuple[RunSettings | None, list[Problem]]:
    return _parse(RunSettings, {} if data is None else data, "run")
