"""Tokens that two recorded calls name differently, matched the one way everywhere (rollout and layer positions).

A perceiver call names its tokens ``queries`` and ``keys_values`` while the calls around it name the same points
``surface_queries``, ``volume_queries`` or ``tokens``. Two rules say which tokens are the same:

- identical recorded positions: two groups whose recorded coordinates are equal are the same points;
- joined in order: a call's single output group as large as the next call's input groups together is their
  concatenation, in the next call's order.
"""

from collections.abc import Iterable, Mapping, Sequence

import torch

from noether.explorer.layout import Group


def same_positions(mine: torch.Tensor, others: Mapping[str, torch.Tensor], names: Iterable[str]) -> str | None:
    """The first of ``names`` whose recorded positions equal ``mine`` exactly, or None."""
    for name in names:
        other = others.get(name)
        if other is not None and other.shape == mine.shape and torch.equal(other, mine):
            return name
    return None


def joined_groups(outputs: Sequence[Group], following: Sequence[Group]) -> list[tuple[str, int]] | None:
    """``[(name, size), ...]`` of the next call's input groups that the single output group is, in order, or None.

    Only a call with one output group qualifies, and only when the sizes add up exactly: anything else would guess.
    """
    if len(outputs) != 1 or not following:
        return None
    parts = [(group.name, group.size) for group in following]
    if sum(size for _, size in parts) != outputs[0].size:
        return None
    return parts
