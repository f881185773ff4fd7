"""The scenario model: the attention config, token groups, patterns and run settings of one layer to explore."""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from noether.core.schemas.modules.attention import AttentionConfig, AttentionPattern, TokenSpec
from noether.modeling.modules.attention import (
    CrossAnchorAttentionConfig,
    JointAnchorAttentionConfig,
    SelfAnchorAttentionConfig,
)
from noether.modeling.modules.attention.anchor_attention import (
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
