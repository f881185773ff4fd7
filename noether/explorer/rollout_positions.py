"""Where the tokens of a rollout are drawn: recorded coordinates per group, the candidates for picking an output token
by clicking, and the chosen token's own point.

A capture records coordinates per group name, but one name can mean other tokens in another call: a perceiver's
``queries`` are every anchor and query in the anchor pass and the queries alone in the inference pass. So tokens are
placed where the call they belong to places them (:func:`call_positions`), and by name only where no call does.
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from noether.explorer.model_overview import LayerSource

if TYPE_CHECKING:
    from noether.explorer.rollout import RolloutResult

CallPositions = Mapping[str, Mapping[str, np.ndarray]]
"""Per call (its path), (tokens, 3) coordinates per group of that call."""


def positions_of(positions: Mapping[str, torch.Tensor | np.ndarray], batch: int) -> dict[str, torch.Tensor]:
    """(tokens, dims) coordinates per group for one batch element."""
    result = {}
    for name, value in positions.items():
        tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        if tensor.dim() == 3:
            tensor = tensor[min(batch, tensor.shape[0] - 1)]
        result[name] = tensor.float()
    return result


def call_positions(layers: Sequence[LayerSource], batch: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Per call, the recorded coordinates of its groups exactly as the call's own tokens are placed (by name when the
    capture has one per token, else as the next call's groups joined: see ``capture_layers``); groups that the call
    places at random are left out."""
    placed: dict[str, dict[str, np.ndarray]] = {}
    for layer in layers:
        captured = layer.run.captured
        if captured is None:
            continue
        points = captured.positions[min(batch, captured.positions.shape[0] - 1)].double()
        placed[layer.path] = {
            group.name: points[group.input_span].numpy()
            for group in layer.run.layout.groups
            if group.name in captured.recorded_positions
        }
    return placed


def output_positions(layers: Sequence[LayerSource], batch: int = 0) -> dict[str, np.ndarray]:
    """Coordinates of each output group's tokens at the last call that outputs it (where its rollout starts), for the
    groups that call has recorded positions for."""
    by_call = call_positions(layers, batch)
    found: dict[str, np.ndarray] = {}
    for layer in layers:
        for group in layer.run.layout.query_groups:
            points = by_call.get(layer.path, {}).get(group.name)
            if points is None:
                found.pop(group.name, None)
            else:
                found[group.name] = points
    return found


def rollout_points(
    result: "RolloutResult",
    positions: Mapping[str, torch.Tensor | np.ndarray],
    batch: int = 0,
    by_call: CallPositions | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Points of every group that has positions, with their rollout weights: (xyz, weights, group per point, notes).

    Each part is placed where its call places that group (``by_call``, see :func:`call_positions`), else by name
    (``positions``). Groups without positions (or whose positions do not match their size) are left out and named in
    the notes.
    """
    points_of = positions_of(positions, batch)
    xyz, weights, labels, notes = [], [], [], []
    for name, part in result.merged_parts().items():
        values = part.weights
        placed = (by_call or {}).get(part.call or "", {}).get(part.group)
        points = torch.as_tensor(placed) if placed is not None else points_of.get(part.group)
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
