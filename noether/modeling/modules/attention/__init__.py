"""Attention modules and their configs (each module file re-exports its config).

Configs are imported at once; the torch modules on first use, so that validating a scenario never imports torch.
"""

from importlib import import_module
from typing import Any

from noether.modeling.modules.attention.configs import (
    CrossAnchorAttentionConfig,
    DotProductAttentionConfig,
    JointAnchorAttentionConfig,
    MixedAttentionConfig,
    MultiBranchAnchorAttentionConfig,
    PerceiverAttentionConfig,
    SelfAnchorAttentionConfig,
)

_TORCH_MODULES = {
    "CrossAnchorAttention": "noether.modeling.modules.attention.anchor_attention.cross",
    "DotProductAttention": "noether.modeling.modules.attention.dot_product",
    "JointAnchorAttention": "noether.modeling.modules.attention.anchor_attention.joint",
    "MixedAttention": "noether.modeling.modules.attention.anchor_attention.mixed",
    "MultiBranchAnchorAttention": "noether.modeling.modules.attention.anchor_attention.multi_branch",
    "PerceiverAttention": "noether.modeling.modules.attention.perceiver",
    "SelfAnchorAttention": "noether.modeling.modules.attention.anchor_attention.self_anchor",
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
    "DotProductAttention",
    "DotProductAttentionConfig",
    "JointAnchorAttention",
    "JointAnchorAttentionConfig",
    "MixedAttention",
    "MixedAttentionConfig",
    "MultiBranchAnchorAttention",
    "MultiBranchAnchorAttentionConfig",
    "PerceiverAttention",
    "PerceiverAttentionConfig",
    "SelfAnchorAttention",
    "SelfAnchorAttentionConfig",
]
