"""Head choices of the views: the mean over heads, one head, or all side by side; the types the views share."""

from typing import Literal

import torch

Pooling = Literal["mean", "max"]
HeadChoice = int | Literal["mean"]
ALL_HEADS = "all"
HeadOption = HeadChoice | Literal["all"]


def head_options(num_heads: int, *, with_all: bool = False) -> list[HeadOption]:
    options: list[HeadOption] = ["mean", *range(num_heads)]
    return [*options, ALL_HEADS] if with_all and num_heads > 1 else options


def head_label(head: HeadOption) -> str:
    if head == "mean":
        return "mean over heads"
    if head == ALL_HEADS:
        return "all heads side by side"
    return f"head {head}"


def head_slice(tensor: torch.Tensor, batch: int, head: HeadChoice) -> torch.Tensor:
    selected = tensor[batch]
    return selected.mean(0) if head == "mean" else selected[head]
