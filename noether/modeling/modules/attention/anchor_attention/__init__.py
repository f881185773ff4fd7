"""Anchor attention: mixed attention and the multi-branch anchor schemes built on it.

Configs and pattern functions are imported at once; the torch modules on first use, so that code which only
validates scenarios never imports torch.
"""

from importlib import import_module
from typing import Any

from noether.modeling.modules.attention.anchor_attention.patterns import (
    MissingAnchorTokenError,
    MissingBranchTokensError,
    UnexpectedTokenError,
    check_branches,
    cross_anchor_patterns,
    joint_anchor_patterns,
    query_patterns,
    self_anchor_patterns,
)
from noether.modeling.modules.attention.configs import (
    CrossAnchorAttentionConfig,
    JointAnchorAttentionConfig,
    MixedAttentionConfig,
    MultiBranchAnchorAttentionConfig,
    SelfAnchorAttentionConfig,
)

_PACKAGE = "noether.modeling.modules.attention.anchor_attention"
_TORCH_MODULES = {
    "CrossAnchorAttention": f"{_PACKAGE}.cross",
    "GroupTensors": f"{_PACKAGE}.mixed",
    "JointAnchorAttention": f"{_PACKAGE}.joint",
    "KVCache": f"{_PACKAGE}.mixed",
    "MixedAttention": f"{_PACKAGE}.mixed",
    "MultiBranchAnchorAttention": f"{_PACKAGE}.multi_branch",
    "SelfAnchorAttention": f"{_PACKAGE}.self_anchor",
}


def __getattr__(name: str) -> Any:
    if name in _TORCH_MODULES:
        return getattr(import_module(_TORCH_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_TORCH_MODULES])


__all__ = [
    "CrossAnchorAttention",
    "CrossAnchorAttentionConfig",
    "GroupTensors",
    "JointAnchorAttention",
    "JointAnchorAttentionConfig",
    "KVCache",
    "MissingAnchorTokenError",
    "MissingBranchTokensError",
    "MixedAttention",
    "MixedAttentionConfig",
    "MultiBranchAnchorAttention",
    "MultiBranchAnchorAttentionConfig",
    "SelfAnchorAttention",
    "SelfAnchorAttentionConfig",
    "UnexpectedTokenError",
    "check_branches",
    "cross_anchor_patterns",
    "joint_anchor_patterns",
    "query_patterns",
    "self_anchor_patterns",
]
