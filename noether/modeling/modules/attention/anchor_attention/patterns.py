"""Which groups attend to which: the patterns the anchor schemes generate and the rules on branches, free of torch."""

from collections.abc import Sequence

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec


def query_patterns(attention_patterns: Sequence[AttentionPattern], cached_names: set[str]) -> list[AttentionPattern]:
    """The patterns as a pass computes them: cached groups have no queries, so they leave the query lists."""
    if not cached_names:
        return list(attention_patterns)
    kept = []
    for pattern in attention_patterns:
        queries = [name for name in pattern.query_tokens if name not in cached_names]
        if queries:
            kept.append(AttentionPattern(query_tokens=queries, key_value_tokens=list(pattern.key_value_tokens)))
    return kept


class MissingBranchTokensError(ValueError):
    """Raised when expected tokens for a configured branch are not present."""


class MissingAnchorTokenError(ValueError):
    """Raised when a required anchor token is not present."""


class UnexpectedTokenError(ValueError):
    """Raised when an unexpected token is present."""


def check_branches(token_specs: Sequence[TokenSpec], branches: Sequence[str], anchor_suffix: str) -> None:
    """Every group belongs to a configured branch, and every branch has groups and its anchor group."""
    names = {spec.name for spec in token_specs}
    for spec in token_specs:
        if not any(spec.name.startswith(branch) for branch in branches):
            raise UnexpectedTokenError(
                f"Unexpected token in input: Token '{spec.name}' does not belong to any configured branch. "
                f"Configured branches: {list(branches)}; rename the group to start with a branch name."
            )
    for branch in branches:
        if not any(spec.name.startswith(branch) for spec in token_specs):
            raise MissingBranchTokensError(
                f"Configured branch '{branch}' has no tokens present in the input `token_specs`."
            )
        if f"{branch}{anchor_suffix}" not in names:
            raise MissingAnchorTokenError(
                f"Configured branch '{branch}' is missing its required anchor token '{branch}{anchor_suffix}'."
            )


def branch_groups(token_specs: Sequence[TokenSpec], branch: str) -> list[str]:
    """Names of the groups that belong to ``branch``, in input order."""
    return [spec.name for spec in token_specs if spec.name.startswith(branch)]


def self_anchor_patterns(
    token_specs: Sequence[TokenSpec], branches: Sequence[str], anchor_suffix: str = "_anchors"
) -> list[AttentionPattern]:
    """All groups of a branch attend to that branch's anchors."""
    return [
        AttentionPattern(query_tokens=branch_groups(token_specs, branch), key_value_tokens=[f"{branch}{anchor_suffix}"])
        for branch in branches
    ]


def cross_anchor_patterns(
    token_specs: Sequence[TokenSpec], branches: Sequence[str], anchor_suffix: str = "_anchors"
) -> list[AttentionPattern]:
    """All groups of a branch attend to the anchors of every other branch."""
    return [
        AttentionPattern(
            query_tokens=branch_groups(token_specs, branch),
            key_value_tokens=[f"{other}{anchor_suffix}" for other in branches if other != branch],
        )
        for branch in branches
    ]


def joint_anchor_patterns(
    token_specs: Sequence[TokenSpec], branches: Sequence[str], anchor_suffix: str = "_anchors"
) -> list[AttentionPattern]:
    """One pattern: all groups attend to the anchors of all branches."""
    return [
        AttentionPattern(
            query_tokens=[spec.name for spec in token_specs],
            key_value_tokens=[f"{branch}{anchor_suffix}" for branch in branches],
        )
    ]
