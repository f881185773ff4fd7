"""How the parsed sections of a scenario fit together: names, coverage, NaN risks, anchors, perceiver, run."""

from collections import Counter
from collections.abc import Sequence

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.explorer.problems import Problem, did_you_mean
from noether.explorer.scenario_model import DEFAULT_CACHE_SIZE, MIN_WAVE_DIM, RunSettings, Scenario
from noether.explorer.scenario_sections import _branch_problems
from noether.modeling.modules.attention.anchor_attention import check_branches


def _perceiver_problems(scenario: Scenario) -> list[Problem]:
    """A perceiver layer has exactly two groups: input queries, then the keys/values they attend to."""
    specs = scenario.token_specs
    if len(specs) != 2:
        return [
            Problem(
                "token_specs",
                f"a perceiver layer has exactly two groups (queries, then keys/values), got {len(specs)}.",
                "List the query group first and the key/value group second.",
            )
        ]
    problems = []
    if specs[1].size == 0:
        problems.append(
            Problem(
                "token_specs[1]",
                f"'{specs[1].name}' holds the keys/values and has 0 tokens, so the softmax has nothing to attend to.",
                "Give it tokens.",
            )
        )
    if specs[0].size is None:
        problems.append(
            Problem(
                "token_specs[0]",
                f"'{specs[0].name}' holds the perceiver's queries, which are always computed from the input.",
                "Give it a size; only the key/value group (the second) may come from a KV cache (size null).",
            )
        )
    problems += _perceiver_width_problems(scenario)
    if any(scenario.run.padding.values()):
        problems.append(
            Problem(
                "run.padding",
                "PerceiverAttention takes no key_padding_mask.",
                "Remove the padding, or give fewer key/value tokens.",
            )
        )
    if scenario.attention_patterns:
        given = [(list(p.query_tokens), list(p.key_value_tokens)) for p in scenario.attention_patterns]
        generated = [(list(p.query_tokens), list(p.key_value_tokens)) for p in scenario.patterns()]
        if given != generated:
            problems.append(
                Problem(
                    "attention_patterns",
                    f"differ from the perceiver's one pattern {generated}.",
                    "Remove attention_patterns (it is generated from the two groups).",
                )
            )
    return problems


def _perceiver_width_problems(scenario: Scenario) -> list[Problem]:
    """A kv_dim other than hidden_dim: what the generated inputs and weights can and cannot give it."""
    attention = scenario.attention
    kv_dim = (attention.model_extra or {}).get("kv_dim")
    if not isinstance(kv_dim, int) or kv_dim == attention.hidden_dim:
        return []
    problems = []
    if scenario.run.weights == "spatial":
        problems.append(
            Problem(
                "run.weights",
                f"spatial weights compare query and key features, but kv_dim ({kv_dim}) differs from hidden_dim "
                f"({attention.hidden_dim}), so the two inputs have different features.",
                "Use weights: init, or set kv_dim to null.",
            )
        )
    if scenario.run.inputs == "point_cloud" and kv_dim < MIN_WAVE_DIM:
        problems.append(
            Problem(
                "attention.kv_dim",
                f"point-cloud features are sine-cosine waves over 3-D positions and need kv_dim >= {MIN_WAVE_DIM} "
                f"(got {kv_dim}).",
                "Raise kv_dim or use inputs: random.",
            )
        )
    return problems


def _pattern_problems(
    patterns: Sequence[AttentionPattern], specs: Sequence[TokenSpec], run: RunSettings, where: str
) -> list[Problem]:
    """What upstream's MixedAttention rejects, plus what would silently produce NaN."""
    problems: list[Problem] = []
    sizes = {spec.name: spec.size for spec in specs}
    cached = {name for name, size in sizes.items() if size is None}
    padding = run.padding
    query_of: dict[str, int] = {}
    for index, pattern in enumerate(patterns):
        loc = f"{where}[{index}]"
        for field_name in ("query_tokens", "key_value_tokens"):
            names = list(getattr(pattern, field_name))
            if not names:
                what = "queries" if field_name == "query_tokens" else "keys/values: its queries would attend to nothing"
                problems.append(Problem(f"{loc}.{field_name}", f"is empty (no {what}).", "List at least one group."))
            for name, count in Counter(names).items():
                if count > 1:
                    problems.append(Problem(f"{loc}.{field_name}", f"lists '{name}' {count} times.", "List it once."))
            for name in dict.fromkeys(names):
                if name not in sizes:
                    problems.append(
                        Problem(
                            f"{loc}.{field_name}",
                            f"'{name}' is not a group in token_specs.",
                            (did_you_mean(name, sizes) + " Add the group or fix the name.").strip(),
                        )
                    )
        for name in dict.fromkeys(pattern.query_tokens):
            if name in query_of and query_of[name] != index:
                problems.append(
                    Problem(
                        f"{loc}.query_tokens",
                        f"'{name}' is already a query in {where}[{query_of[name]}]; "
                        "a group may be a query in exactly one pattern.",
                        "Remove it from one of the two patterns (list both key/value sets in one pattern instead).",
                    )
                )
            query_of.setdefault(name, index)
        known_kv = [name for name in pattern.key_value_tokens if name in sizes]
        has_input_queries = any(sizes.get(name, 0) is not None for name in pattern.query_tokens)
        query_tokens = sum(sizes.get(name) or 0 for name in dict.fromkeys(pattern.query_tokens))
        if known_kv and has_input_queries and query_tokens > 0:
            real_keys = sum(
                run.kv_cache_sizes.get(name, DEFAULT_CACHE_SIZE)
                if sizes[name] is None
                else max(sizes[name] - padding.get(name, 0), 0)
                for name in dict.fromkeys(known_kv)
            )
            if real_keys == 0:
                problems.append(
                    Problem(
                        f"{loc}.key_value_tokens",
                        f"{known_kv} hold 0 real tokens, so the queries' softmax has nothing to attend to (NaN).",
                        "Give a key/value group tokens, or reduce its padding.",
                    )
                )
        if cached and has_input_queries:
            for name in dict.fromkeys(known_kv):
                if name not in cached:
                    problems.append(
                        Problem(
                            f"{loc}.key_value_tokens",
                            f"'{name}' is an input group, but with cached groups present the module computes "
                            "only queries, so input queries can read keys/values of cached groups only.",
                            f"Make '{name}' cached (size null) or drop it from this pattern.",
                        )
                    )
    missing = [spec.name for spec in specs if spec.name not in query_of]
    for name in missing:
        problems.append(
            Problem(
                where,
                f"group '{name}' is not a query in any pattern; its tokens would get no output.",
                f"Add '{name}' to the query_tokens of one pattern.",
            )
        )
    return problems


def _run_problems(run: RunSettings, specs: Sequence[TokenSpec]) -> list[Problem]:
    problems: list[Problem] = []
    sizes = {spec.name: spec.size for spec in specs}
    cached = [name for name, size in sizes.items() if size is None]
    for name in run.kv_cache_sizes:
        if name not in sizes:
            problems.append(
                Problem(
                    f"run.kv_cache_sizes.{name}",
                    "is not a group in token_specs.",
                    did_you_mean(name, cached).strip() or "Remove it.",
                )
            )
        elif sizes[name] is not None:
            problems.append(
                Problem(
                    f"run.kv_cache_sizes.{name}",
                    f"'{name}' is an input group (size {sizes[name]}), not a cached one; the entry is ignored.",
                    "Remove it.",
                    "warning",
                )
            )
    for name, pad in run.padding.items():
        if name not in sizes:
            problems.append(
                Problem(
                    f"run.padding.{name}",
                    "is not a group in token_specs.",
                    (did_you_mean(name, sizes) + " Remove or rename it.").strip(),
                )
            )
        elif sizes[name] is None:
            problems.append(Problem(f"run.padding.{name}", "cached groups cannot be padded.", "Remove it."))
        elif pad > (sizes[name] or 0):
            problems.append(
                Problem(
                    f"run.padding.{name}",
                    f"pads {pad} tokens but the group has {sizes[name]}.",
                    f"Use at most {sizes[name]}.",
                )
            )
    if any(run.padding.values()) and cached:
        problems.append(
            Problem(
                "run.padding",
                f"a key padding mask cannot be combined with cached groups {cached} (MixedAttention refuses it).",
                "Remove the padding or the cached groups.",
            )
        )
    return problems


def _anchor_problems(scenario: Scenario) -> list[Problem]:
    branches, suffix = scenario.branches()
    problems = _branch_membership_problems(scenario.token_specs, branches, suffix)
    if problems:
        return problems
    if scenario.attention_patterns:
        given = [(list(p.query_tokens), list(p.key_value_tokens)) for p in scenario.attention_patterns]
        generated = [(list(p.query_tokens), list(p.key_value_tokens)) for p in scenario.patterns()]
        if given != generated:
            return [
                Problem(
                    "attention_patterns",
                    f"differ from the patterns {scenario.attention.kind} generates for branches {branches}.",
                    "Remove attention_patterns (they are generated), or use kind: mixed to set them freely.",
                )
            ]
    return []


def _branch_membership_problems(specs: Sequence[TokenSpec], branches: Sequence[str], suffix: str) -> list[Problem]:
    """What the anchor modules would refuse (see :func:`check_branches`), said per group and branch."""
    names = [spec.name for spec in specs]
    shown = ", ".join(branches)
    problems = [
        Problem(
            f"token_specs[{index}].name",
            f"group '{name}' belongs to no branch: its name starts with none of the branches ({shown}).",
            "Rename the group to start with a branch name, or add its branch to attention.branches.",
        )
        for index, name in enumerate(names)
        if not any(name.startswith(branch) for branch in branches)
    ]
    for branch in branches:
        if not any(name.startswith(branch) for name in names):
            problems.append(
                Problem(
                    "attention.branches",
                    f"branch '{branch}' has no groups (no group name starts with '{branch}').",
                    f"Add groups '{branch}{suffix}' and e.g. '{branch}_queries', or remove the branch.",
                )
            )
        elif f"{branch}{suffix}" not in names:
            problems.append(
                Problem(
                    "attention.branches",
                    f"branch '{branch}' has no anchor group '{branch}{suffix}'.",
                    f"Add a group named '{branch}{suffix}', or rename the branch's anchor group to it.",
                )
            )
    if not problems:
        check_branches(specs, branches, suffix)  # the module's own rule; the checks above say why it would fail
    return problems


def _input_problems(scenario: Scenario) -> list[Problem]:
    if scenario.run.inputs == "point_cloud" and scenario.attention.hidden_dim < MIN_WAVE_DIM:
        return [
            Problem(
                "run.inputs",
                f"point-cloud features are sine-cosine waves over 3-D positions and need "
                f"hidden_dim >= {MIN_WAVE_DIM} (got {scenario.attention.hidden_dim}).",
                "Raise hidden_dim or use inputs: random.",
            )
        ]
    return []


def semantic_problems(scenario: Scenario) -> list[Problem]:
    """Problems of a structurally valid scenario (names, coverage, NaN risks, run settings)."""
    problems = _run_problems(scenario.run, scenario.token_specs) + _input_problems(scenario)
    if scenario.attention.kind == "perceiver":
        return problems + _perceiver_problems(scenario)
    if scenario.attention.kind != "mixed":
        branches, _ = scenario.branches()
        if not branches or _branch_problems(scenario.attention.kind, branches):
            return problems  # reported under attention.branches; generated patterns would only echo it
        anchor = _anchor_problems(scenario)
        if anchor:
            return problems + anchor
        return problems + _pattern_problems(
            scenario.patterns(), scenario.token_specs, scenario.run, "generated patterns"
        )
    if not scenario.attention_patterns:
        return [
            *problems,
            Problem(
                "attention_patterns",
                "is empty; every group must be a query in one pattern.",
                "Add e.g. {query_tokens: [all groups], key_value_tokens: [all groups]}.",
            ),
        ]
    return problems + _pattern_problems(
        scenario.attention_patterns, scenario.token_specs, scenario.run, "attention_patterns"
    )
