"""The scenario: the document people design, validate and export (attention config, groups, patterns, run)."""

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from noether.core.schemas.modules.attention import AttentionConfig, AttentionPattern, TokenSpec
from noether.core.types import SUPPORTED_INIT_MODES
from noether.explorer.problems import Problem, did_you_mean, errors
from noether.modeling.modules.attention import (
    CrossAnchorAttentionConfig,
    JointAnchorAttentionConfig,
    SelfAnchorAttentionConfig,
)
from noether.modeling.modules.attention.anchor_attention import (
    check_branches,
    cross_anchor_patterns,
    joint_anchor_patterns,
    self_anchor_patterns,
)

AttentionKind = Literal["mixed", "self_anchor", "cross_anchor", "joint_anchor", "perceiver"]
InputMode = Literal["random", "point_cloud"]
WeightsMode = Literal["init", "spatial"]
DTypeName = Literal["float32", "float64", "bfloat16", "float16"]

MAX_GROUPS = 1000
"""Token groups per scenario; group-level matrices are (groups x groups)."""
MAX_TOTAL_TOKENS = 2**31 - 1
"""Tokens on the key axis; keeps every (queries x keys) count inside int64. Larger is refused outright."""
MIN_WAVE_DIM = 6
"""Smallest feature count that sine-cosine waves over 3-D positions can fill (one sin/cos pair per axis)."""

DEFAULT_CACHE_SIZE = 1024
"""Tokens simulated for a cached group (size null) unless run.kv_cache_sizes names another count."""

ANCHOR_CONFIGS = {
    "self_anchor": SelfAnchorAttentionConfig,
    "cross_anchor": CrossAnchorAttentionConfig,
    "joint_anchor": JointAnchorAttentionConfig,
}
_ANCHOR_PATTERNS = {
    "self_anchor": self_anchor_patterns,
    "cross_anchor": cross_anchor_patterns,
    "joint_anchor": joint_anchor_patterns,
}


def perceiver_patterns(token_specs: Sequence[TokenSpec]) -> list[AttentionPattern]:
    """The one pattern of a perceiver layer: the first group (queries) attends to the second (keys/values)."""
    if len(token_specs) != 2:
        return []
    queries, keys_values = token_specs
    return [AttentionPattern(query_tokens=[queries.name], key_value_tokens=[keys_values.name])]


class ScenarioAttention(AttentionConfig):
    """The attention config of a scenario: every AttentionConfig field (extras allowed, as upstream) plus the kind."""

    kind: AttentionKind = Field("mixed")
    """Which module runs: "mixed" (explicit patterns), a multi-branch anchor scheme that generates them, or
    "perceiver" (the first group's queries attend to the second group's keys/values)."""


class RunSettings(BaseModel):
    """How the explorer runs a scenario: inputs, seed, device, cache and padding simulation."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    seed: int = Field(0, ge=0, le=2**32 - 1)
    """Seed of the module initialisation and of the inputs; the same seed gives the same picture."""

    batch_size: int = Field(1, ge=1, le=64)
    """Number of independent samples run through the module."""

    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    """"auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:N" or "mps"; an absent device falls back to cpu."""

    dtype: DTypeName = Field("float32")
    """Floating-point type of the module and inputs."""

    inputs: InputMode = Field("random")
    """"random": seeded Gaussian features; "point_cloud": sin-cos features of sample point-cloud positions."""

    weights: WeightsMode = Field("init")
    """"init": the module's own seeded initialisation; "spatial": identity Q/K projections (attention by proximity)."""

    kv_cache_sizes: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    """Tokens to simulate for each cached group (size null); unlisted cached groups get DEFAULT_CACHE_SIZE."""

    padding: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    """Trailing padding tokens per input group, turned into the module's key_padding_mask."""


def _is_explicit_item(item: Any) -> bool:
    """``{name: ..., size: ...}`` rather than ``{name: size}`` (a group literally called "name" stays compact)."""
    return isinstance(item, Mapping) and "name" in item and (len(item) > 1 or isinstance(item["name"], str))


def _token_item(item: Any) -> Any:
    """Accept both ``{name: size}`` (TokenSpec.from_dict) and ``{name: ..., size: ...}``."""
    if _is_explicit_item(item):
        return dict(item)
    if isinstance(item, Mapping) and len(item) == 1:
        name, size = next(iter(item.items()))
        return {"name": name, "size": size}
    return item


def _token_items(value: Any) -> Any:
    return [_token_item(item) for item in value] if isinstance(value, list) else value


class Scenario(BaseModel):
    """A complete, portable description of an attention layer to explore."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    attention: ScenarioAttention
    """Attention config (AttentionConfig fields, extras allowed) plus ``kind``."""

    token_specs: Annotated[list[TokenSpec], BeforeValidator(_token_items)]
    """Token groups in input order; items as ``{name: size}`` or ``{name: ..., size: ...}``; size null = cached."""

    attention_patterns: list[AttentionPattern] = Field(default_factory=list)
    """Which query groups attend to which key/value groups; generated from the branches for anchor kinds."""

    run: RunSettings = Field(default_factory=RunSettings)
    """How the explorer runs the scenario."""

    def patterns(self) -> list[AttentionPattern]:
        """The patterns the module applies: the given ones, or those the anchor scheme generates."""
        if self.attention.kind == "mixed":
            return list(self.attention_patterns)
        if self.attention.kind == "perceiver":
            return perceiver_patterns(self.token_specs)
        branches, suffix = self.branches()
        return _ANCHOR_PATTERNS[self.attention.kind](self.token_specs, branches, suffix)

    def branches(self) -> tuple[list[str], str]:
        """Branches and anchor suffix of an anchor kind (extras of the attention config)."""
        extra = self.attention.model_extra or {}
        return list(extra.get("branches") or []), str(extra.get("anchor_suffix", "_anchors"))

    def cached_names(self) -> list[str]:
        return [spec.name for spec in self.token_specs if spec.size is None]

    def cache_size(self, name: str) -> int:
        return self.run.kv_cache_sizes.get(name, DEFAULT_CACHE_SIZE)

    def key_size(self, spec: TokenSpec) -> int:
        """Tokens of a group on the key axis: its size, or the simulated cache size when cached."""
        return self.cache_size(spec.name) if spec.size is None else spec.size


# --------------------------------------------------------------------------------------------------------------------
# Validation: every problem at once, each naming the field or group and what to do.
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ScenarioReport:
    """Outcome of validating a document: the scenario when it has no errors, and every problem found."""

    scenario: Scenario | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.scenario is not None and not errors(self.problems)


_TOP_LEVEL = ("attention", "token_specs", "attention_patterns", "run")
_HINTS = {
    "missing": "Add it.",
    "int_parsing": "Use a whole number.",
    "int_from_float": "Use a whole number.",
    "int_type": "Use a whole number.",
    "float_parsing": "Use a number.",
    "float_type": "Use a number.",
    "bool_parsing": "Use true or false.",
    "bool_type": "Use true or false.",
    "string_type": "Use a text value.",
    "list_type": "Use a list, e.g. [a, b].",
    "dict_type": "Use a mapping of name: value.",
    "model_type": "Use a mapping of field: value.",
    "greater_than_equal": "Use a larger value.",
    "less_than_equal": "Use a smaller value.",
    "sequence_str": "Write a list, e.g. [surface_anchors].",
    "string_pattern_mismatch": "Use auto, cpu, cuda, cuda:N or mps.",
    "literal_error": "Use one of the listed values.",
    "too_short": "Add at least one entry.",
}


def _location(prefix: str, loc: Sequence[int | str]) -> str:
    text = prefix
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_PYDANTIC_PHRASES = (
    ("Input should be greater than or equal to", "must be at least"),
    ("Input should be less than or equal to", "must be at most"),
    ("Input should be greater than", "must be more than"),
    ("Input should be less than", "must be less than"),
    ("Input should be a valid integer, unable to parse string as an integer", "must be a whole number"),
    ("Input should be a valid integer, got a number with a fractional part", "must be a whole number"),
    ("Input should be a valid integer", "must be a whole number"),
    ("Input should be a valid number, unable to parse string as a number", "must be a number"),
    ("Input should be a valid", "must be a"),
    ("Input should be", "must be"),
    ("List should have at least 1 item after validation", "must not be empty"),
    ("List should have", "must have"),
    ("String should match pattern", "must match the pattern"),
    ("String should have", "must have"),
    ("Field required", "is missing."),
)


def _plain(message: str) -> str:
    """pydantic's phrasing ("Input should be ...", "after validation") in the words of the rest of the messages."""
    for phrase, plain in _PYDANTIC_PHRASES:
        if message.startswith(phrase):
            message = plain + message[len(phrase) :]
            break
    return message.replace(" items after validation", " items").replace(" item after validation", " item")


def _pydantic_problems(exc: ValidationError, prefix: str, known_fields: Sequence[str] = ()) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = [part for part in err["loc"] if part not in ("function-before[_token_items(), list[TokenSpec]]",)]
        where = _location(prefix, loc)
        message = _plain(err["msg"])
        if err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        elif err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            message = f"{message}, got {err['input']!r}."
        hint = _HINTS.get(err["type"], "")
        if err["type"] == "extra_forbidden":
            message = "unknown field."
            hint = (did_you_mean(str(loc[-1]), known_fields) + " Remove or rename it.").strip()
        problems.append(Problem(where, message, hint))
    return problems


def _parse(model: type[BaseModel], data: Any, prefix: str) -> tuple[Any, list[Problem]]:
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, _pydantic_problems(exc, prefix, list(model.model_fields))


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
    kv_dim = (attention.model_extra or {}).get("kv_dim")
    if kv_dim is None or kv_dim == attention.hidden_dim:
        return []
    return [
        Problem(
            "attention.kv_dim",
            f"is {kv_dim!r}, but the explorer feeds every group hidden_dim ({attention.hidden_dim}) features.",
            "Set kv_dim to null or to hidden_dim.",
        )
    ]


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


def _unknown_item_keys(item: Any, allowed: Sequence[str], where: str) -> list[Problem]:
    """Upstream's item models ignore unknown keys; here they are most likely typos or wishes, so say so."""
    if not isinstance(item, Mapping):
        return []
    return [
        Problem(
            f"{where}.{key}",
            "unknown field.",
            (did_you_mean(str(key), allowed) + f" Allowed: {list(allowed)}.").strip(),
        )
        for key in item
        if key not in allowed
    ]


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


def _declares_mixed(data: Mapping[str, Any]) -> bool:
    """The document asks for explicit rules (kind mixed, the default), however the rest of its attention fails."""
    attention = data.get("attention")
    return isinstance(attention, Mapping) and attention.get("kind", "mixed") == "mixed"


def validate_scenario(data: Any) -> ScenarioReport:
    """Validate a parsed document (a mapping) into a Scenario, collecting every problem at once."""
    if isinstance(data, Scenario):
        data = data.model_dump(exclude={"token_specs": {"__all__": {"domain", "attn_type"}}})
    if not isinstance(data, Mapping):
        return ScenarioReport(
            None,
            [
                Problem(
                    "(document)",
                    f"must be a mapping with keys {list(_TOP_LEVEL)}, got {type(data).__name__}.",
                    "Start the file with 'attention:'.",
                )
            ],
        )
    problems: list[Problem] = _bool_number_problems(data)
    for key in data:
        if key not in _TOP_LEVEL:
            problems.append(
                Problem(
                    str(key),
                    "is not a scenario key.",
                    (did_you_mean(str(key), _TOP_LEVEL) + f" Allowed: {list(_TOP_LEVEL)}.").strip(),
                )
            )
    for key in ("attention", "token_specs"):
        if key not in data:
            problems.append(Problem(key, "is missing.", "Add it; see the example scenarios."))
    attention, found = _check_attention(data["attention"]) if "attention" in data else (None, [])
    problems += found
    specs, found = _check_token_specs(data["token_specs"]) if "token_specs" in data else (None, [])
    problems += found
    patterns, found = _check_patterns(data.get("attention_patterns") or [])
    problems += found
    run, found = _check_run(data.get("run"))
    problems += found
    if attention is None and specs is not None and patterns and run is not None and _declares_mixed(data):
        # A bad attention section says nothing about the rules: report their problems in the same pass.
        problems += _pattern_problems(patterns, specs, run, "attention_patterns")
    if attention is None or specs is None or patterns is None or run is None:
        return ScenarioReport(None, problems)
    # The sections parsed; check how they fit together even if something unrelated (a typo'd key) failed.
    scenario = Scenario(attention=attention, token_specs=specs, attention_patterns=patterns, run=run)
    problems += semantic_problems(scenario)
    return ScenarioReport(None if errors(problems) else scenario, problems)


# --------------------------------------------------------------------------------------------------------------------
# Canonical form: the same scenario always gives the same mapping (stable key order), and it round-trips.
# --------------------------------------------------------------------------------------------------------------------

_ATTENTION_ORDER = ("kind", "hidden_dim", "num_heads", "use_rope", "qk_norm", "dropout", "bias", "init_weights")


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """Canonical mapping: fixed key order, derived fields (head_dim) left out, patterns made explicit."""
    attention = scenario.attention
    attention_dict: dict[str, Any] = {key: getattr(attention, key) for key in _ATTENTION_ORDER}
    attention_dict["dropout"] = float(attention.dropout)
    extra = attention.model_extra or {}
    for key in ("branches", "anchor_suffix"):
        if key in extra:
            attention_dict[key] = extra[key]
    for key in sorted(set(extra) - {"branches", "anchor_suffix"}):
        attention_dict[key] = extra[key]
    run = scenario.run
    return {
        "attention": attention_dict,
        "token_specs": [{"name": spec.name, "size": spec.size} for spec in scenario.token_specs],
        "attention_patterns": [
            {"query_tokens": list(p.query_tokens), "key_value_tokens": list(p.key_value_tokens)}
            for p in scenario.patterns()
        ],
        "run": {
            "seed": run.seed,
            "batch_size": run.batch_size,
            "device": run.device,
            "dtype": run.dtype,
            "inputs": run.inputs,
            "weights": run.weights,
            "kv_cache_sizes": dict(run.kv_cache_sizes),
            "padding": dict(run.padding),
        },
    }
