"""Where the tokens of a rollout are drawn: recorded coordinates per group, the candidates for picking an output token
by clicking, and the chosen token's own point."""

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from noether.explorer.rollout import RolloutResult


def positions_of(positions: Mapping[str, torch.Tensor | np.ndarray], batch: int) -> dict[str, torch.Tensor]:
    """(tokens, dims) coordinates per group for one batch element."""
    result = {}
    for name, value in positions.items():
        tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        if tensor.dim() == 3:
            tensor = tensor[min(batch, tensor.shape[0] - 1)]
        result[name] = tensor.float()
    return result


def rollout_points(
    result: "RolloutResult", positions: Mapping[str, torch.Tensor | np.ndarray], batch: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Points of every group that has positions, with their rollout weights: (xyz, weights, group per point, notes).

    Groups without positions (or whose positions do not match their size) are left out and named in the notes.
    """
    points_of = positions_of(positions, batch)
    xyz, weights, labels, notes = [], [], [], []
    for name, values in result.by_group().items():
        points = points_of.get(name)
        if points is None:
            notes.append(f"'{name}' has no positions ({values.sum():.3f} of the rollout is not drawn).")
            continue
        if points.shape[0] != values.shape[0] or points.shape[-1] != 3:
            notes.append(f"'{name}': {points.shape[0]} positions for {values.shape[0]} tokens; not drawn.")
            continue
        xyz.append(points.double().numpy())
        weights.append(values)
        labels += [name] * len(values)
    if not xyz:
        return np.zeros((0, 3)), np.zeros(0), [], notes
    return np.concatenate(xyz), np.concatenate(weights), labels, notes


def pickable_points(
    positions: Mapping[str, torch.Tensor | np.ndarray], sizes: Mapping[str, int], batch: int = 0
) -> tuple[dict[str, np.ndarray], list[str]]:
    """(tokens, 3) positions of the groups in ``sizes`` that have one position per token, and notes naming the others
    (those can still be picked by group and index)."""
    points_of = positions_of(positions, batch)
    points, notes = {}, []
    for name, size in sizes.items():
        found = points_of.get(name)
        if found is None:
            notes.append(f"'{name}' has no recorded positions; pick its tokens by index.")
        elif found.shape[0] != size or found.shape[-1] != 3:
            notes.append(f"'{name}': {found.shape[0]} positions for {size} tokens; pick its tokens by index.")
        else:
            points[name] = found.numpy()
    return points, notes


def chosen_point(
    positions: Mapping[str, torch.Tensor | np.ndarray], group: str, index: int, batch: int = 0
) -> np.ndarray | None:
    """Coordinates of the chosen token, when recorded."""
    points = positions_of(positions, batch).get(group)
    if points is None or not 0 <= index < points.shape[0] or points.shape[-1] != 3:
        return None
    return points[index].double().numpy()
