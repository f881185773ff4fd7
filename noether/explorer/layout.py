"""Where each group's tokens sit on the query and key axes, and how those axes pool onto a pixel grid."""

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from noether.core.schemas.modules.attention import AttentionPattern
from noether.explorer.scenario import Scenario
from noether.modeling.modules.attention.anchor_attention import query_patterns


@dataclass(frozen=True)
class Group:
    """One token group placed on the axes."""

    name: str
    size: int
    """Tokens on the key axis (the simulated cache size for a cached group)."""
    cached: bool
    padding: int
    """Trailing tokens masked out as keys (key_padding_mask False)."""
    query_offset: int | None
    """First row on the query axis; None for groups without queries (cached ones, a perceiver's keys/values)."""
    key_offset: int | None
    """First column on the key axis; None for a group without keys (a perceiver's queries)."""
    input_offset: int
    """First token in the input tensors (features, positions, RoPE), which hold every group in token_specs order."""

    @property
    def real_keys(self) -> int:
        return self.size - self.padding

    @property
    def key_span(self) -> slice:
        """Columns of this group on the key axis (a group without keys has none)."""
        return slice(0, 0) if self.key_offset is None else slice(self.key_offset, self.key_offset + self.size)

    @property
    def input_span(self) -> slice:
        """Tokens of this group in the input tensors."""
        return slice(self.input_offset, self.input_offset + self.size)


@dataclass(frozen=True)
class TokenLayout:
    """The token axes of a scenario.

    Three axes, each listing groups in token_specs order: the input axis holds every group (the rows of the
    features, positions and RoPE tensors); the query axis the groups the pass computes queries for (not the cached
    ones, nor a perceiver's keys/values); the key axis the groups with keys (all, but a perceiver's queries, which
    only read the keys/values input).
    """

    groups: tuple[Group, ...]
    patterns: tuple[AttentionPattern, ...]
    """Patterns as the computing pass applies them (cached groups removed from the query lists)."""
    perceiver: bool = False
    """A PerceiverAttention layer: its query group has no keys (keys come from the key/value input alone)."""

    @classmethod
    def from_scenario(cls, scenario: Scenario) -> "TokenLayout":
        groups = []
        query_offset = key_offset = input_offset = 0
        perceiver = scenario.attention.kind == "perceiver"
        # A perceiver's first group only gives queries, its second only keys/values.
        query_only = {spec.name for spec in scenario.token_specs[:1]} if perceiver else set()
        key_only = {spec.name for spec in scenario.token_specs[1:2]} if perceiver else set()
        for spec in scenario.token_specs:
            cached = spec.size is None
            queried = not cached and spec.name not in key_only
            keyed = spec.name not in query_only
            size = scenario.key_size(spec)
            groups.append(
                Group(
                    name=spec.name,
                    size=size,
                    cached=cached,
                    padding=scenario.run.padding.get(spec.name, 0),
                    query_offset=query_offset if queried else None,
                    key_offset=key_offset if keyed else None,
                    input_offset=input_offset,
                )
            )
            key_offset += size if keyed else 0
            query_offset += size if queried else 0
            input_offset += size
        patterns = query_patterns(scenario.patterns(), set(scenario.cached_names()))
        return cls(groups=tuple(groups), patterns=tuple(patterns), perceiver=perceiver)

    @cached_property
    def by_name(self) -> dict[str, Group]:
        return {group.name: group for group in self.groups}

    @property
    def query_groups(self) -> list[Group]:
        return [group for group in self.groups if group.query_offset is not None]

    @property
    def key_groups(self) -> list[Group]:
        """Groups on the key axis, in its order: the columns of every map, mask and group matrix."""
        return [group for group in self.groups if group.key_offset is not None]

    @property
    def n_queries(self) -> int:
        return sum(group.size for group in self.query_groups)

    @property
    def n_keys(self) -> int:
        """Width of the key axis (a perceiver's queries are not on it)."""
        return sum(group.size for group in self.key_groups)

    @property
    def n_key_tokens(self) -> int:
        """Tokens the module computes keys for: the key axis (kept as a name of its own for readers of counts)."""
        return self.n_keys

    @property
    def n_inputs(self) -> int:
        """Tokens of the input tensors: every group, cached ones (their filling pass's input) included."""
        return sum(group.size for group in self.groups)

    @property
    def has_cache(self) -> bool:
        return any(group.cached for group in self.groups)

    @property
    def has_padding(self) -> bool:
        return any(group.padding for group in self.groups)

    def pattern_of(self, query_group: str) -> AttentionPattern:
        """The pattern in which ``query_group`` is a query."""
        for pattern in self.patterns:
            if query_group in pattern.query_tokens:
                return pattern
        raise KeyError(f"group '{query_group}' is not a query in any pattern")

    @cached_property
    def allowed(self) -> np.ndarray:
        """Bool (query groups x key groups): True where the row group attends to the column group."""
        column = {group.name: j for j, group in enumerate(self.key_groups)}
        rows = {group.name: i for i, group in enumerate(self.query_groups)}
        allowed = np.zeros((len(rows), len(column)), dtype=bool)
        for pattern in self.patterns:
            for query in pattern.query_tokens:
                for key in pattern.key_value_tokens:
                    allowed[rows[query], column[key]] = True
        return allowed

    def query_group_at(self, row: int) -> tuple[Group, int]:
        """The query group holding query-axis ``row`` and the row's index inside it."""
        for group in self.query_groups:
            assert group.query_offset is not None
            if group.query_offset <= row < group.query_offset + group.size:
                return group, row - group.query_offset
        raise IndexError(f"query row {row} is outside 0..{self.n_queries - 1}")

    def key_group_at(self, column: int) -> tuple[Group, int]:
        """The group holding key-axis ``column`` and the column's index inside it."""
        for group in self.key_groups:
            assert group.key_offset is not None
            if group.key_offset <= column < group.key_offset + group.size:
                return group, column - group.key_offset
        raise IndexError(f"key column {column} is outside 0..{self.n_keys - 1}")


@dataclass(frozen=True)
class PoolGrid:
    """An axis of ``n`` tokens pooled into bins of ``factor`` consecutive tokens (the last bin may be shorter)."""

    n: int
    factor: int

    @classmethod
    def fit(cls, n: int, budget: int) -> "PoolGrid":
        """The smallest integer pooling factor that gives at most ``budget`` bins (factor 1 = exact)."""
        if budget < 1:
            raise ValueError(f"pixel budget must be >= 1, got {budget}")
        return cls(n=n, factor=max(1, math.ceil(n / budget)))

    @property
    def bins(self) -> int:
        return math.ceil(self.n / self.factor) if self.n else 0

    @property
    def exact(self) -> bool:
        return self.factor == 1

    def bin_sizes(self) -> np.ndarray:
        sizes = np.full(self.bins, self.factor, dtype=np.int64)
        if self.bins:
            sizes[-1] = self.n - self.factor * (self.bins - 1)
        return sizes

    def overlap(self, start: int, stop: int) -> np.ndarray:
        """Tokens of the interval [start, stop) falling in each bin."""
        edges = np.arange(self.bins + 1, dtype=np.int64) * self.factor
        lo = np.maximum(edges[:-1], start)
        hi = np.minimum(np.minimum(edges[1:], self.n), stop)
        return np.clip(hi - lo, 0, None)

    def coarsen(self, budget: int) -> "PoolGrid":
        """A grid with at most ``budget`` bins whose factor is a multiple of this one (so maps re-pool exactly)."""
        multiple = max(1, math.ceil(self.bins / max(budget, 1)))
        return PoolGrid(n=self.n, factor=self.factor * multiple)

    def bin_of(self, token: int) -> int:
        return token // self.factor

    def edge(self, token: int) -> float:
        """Position of a token boundary in bin units, for drawing group boundaries on pooled images."""
        return token / self.factor


@dataclass(frozen=True)
class GroupMask:
    """The "who attends to whom" matrix between groups."""

    query_names: list[str]
    key_names: list[str]
    query_sizes: np.ndarray
    key_sizes: np.ndarray
    allowed: np.ndarray
    """Bool (query groups x key groups)."""
    pairs: np.ndarray
    """Attended (query, key) token pairs per block; padded keys excluded."""
    key_tokens: int
    """Tokens with keys (a perceiver's query group has none): the width of the key axis and of the query x key
    matrix."""

    @property
    def total_pairs(self) -> int:
        return int(self.pairs.sum())

    @property
    def density(self) -> float:
        """Attended fraction of the full query x key matrix."""
        cells = int(self.query_sizes.sum()) * self.key_tokens
        return self.total_pairs / cells if cells else 0.0


def group_mask(layout: TokenLayout) -> GroupMask:
    queries = layout.query_groups
    query_sizes = np.array([g.size for g in queries], dtype=np.int64)
    keys = layout.key_groups
    real_keys = np.array([g.real_keys for g in keys], dtype=np.int64)
    return GroupMask(
        query_names=[g.name for g in queries],
        key_names=[g.name for g in keys],
        query_sizes=query_sizes,
        key_sizes=np.array([g.size for g in keys], dtype=np.int64),
        allowed=layout.allowed,
        pairs=layout.allowed * np.outer(query_sizes, real_keys),
        key_tokens=layout.n_key_tokens,
    )
