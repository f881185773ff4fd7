"""Weight initialisation of attention modules by the name given in their config."""

import torch
from torch import nn

from noether.core.types import SUPPORTED_INIT_MODES

__all__ = ["SUPPORTED_INIT_MODES", "apply_init_method"]


def _trunc_normal_zero_bias(module: nn.Module, std: float = 0.02) -> None:
    if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def apply_init_method(module: nn.Module, proj_weight: torch.Tensor, init_method: str) -> None:
    """Initialise every linear/conv layer of ``module`` the way ``init_method`` names.

    "torch" keeps PyTorch's defaults; "truncnormal"/"truncnormal002" draw weights from a truncated normal with
    std 0.02 and zero the biases; "truncnormal002-identity" does the same and zeroes ``proj_weight`` so that the
    residual branch starts as identity.
    """
    if init_method == "torch":
        return
    if init_method not in SUPPORTED_INIT_MODES:
        raise NotImplementedError(
            f"Weight initialization method '{init_method}' is not implemented for attention modules; "
            f"use one of {list(SUPPORTED_INIT_MODES)}."
        )
    module.apply(_trunc_normal_zero_bias)
    if init_method == "truncnormal002-identity":
        nn.init.zeros_(proj_weight)
