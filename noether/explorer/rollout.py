"""Attention rollout of one output token through a sequence of recorded attention calls (Abnar & Zuidema, 2020).

Per call, Â = 0.5·A + 0.5·I with A the head-mean attention weights (the identity stands for the residual
connection), each row re-normalised to sum to 1; the rollout of output token t is row t of Â_L ··· Â_1. It is
computed backwards as a chain of vector–matrix products r ← r·Â, and each product streams only the query rows
where r is non-zero, in cache-sized chunks, through the layer's own projections: never an N×N matrix.

What it approximates: how attention alone routes information. It ignores the MLPs, the value vectors and the
output projections (every head is weighted equally), so it shows where a token *can* draw from, not a gradient.

How calls whose token sets differ are chained (AB-UPT: physics blocks over anchors and queries, decoder blocks per
domain, a perceiver on the geometry, a second inference pass that reads anchors from the KV cache):

- Tokens are identified by group name and index. Walking backwards, a call transforms only the mass on the groups
  it outputs (its query groups); mass on any other group passes it unchanged. So a decoder over
  ``surface_anchors, surface_queries`` and a physics block over every domain chain by name.
- A key group that is not one of the call's inputs (a perceiver's geometry, a cached group) sends its mass to the
  tokens of that name as they were at that point: the output of an earlier call that produced them.
- A cached group (size ``None``) of a module that was called before holds keys/values computed from that group's
  input at the earlier call of the same module that filled the cache; its mass is parked and added to that call's
  input when the walk reaches it. When no earlier call of the module exists (a scenario's simulated cache), the
  cache counts as the group's tokens at the call's own input.
- The split between passes: walking back past the first call of a pass that read a cache, the mass still on that
  pass's inputs (e.g. the inference queries) is final: it is kept as "input of <call>" and does not flow into the
  earlier pass, whose tokens are different points with possibly the same names.

Each rollout sums to 1 (every Â row does), up to floating-point rounding.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from noether.explorer.group_match import joined_groups, same_positions
from noether.explorer.model_overview import LayerSource
from noether.explorer.problems import ExplorerError, Problem
from noether.explorer.weights import DEFAULT_CHUNK_BYTES, _logits, _pattern_keys, chunk_rows

Progress = Callable[[float, str], None]
EXPLANATION = (
    "Attention rollout (Abnar & Zuidema, 2020): at every call the head-averaged attention weights A are mixed with "
    "the identity for the residual connection, Â = 0.5·A + 0.5·I, rows re-normalised, and multiplied through the "
    "calls from the chosen output token back to the inputs. It shows where a token can draw information from "
    "through attention alone: it ignores the MLPs, the value vectors and the output projections, and weights every "
    "head equally. Tokens are matched across calls by group name and index (where a call names them differently: "
    "by their recorded positions, or as the next call's groups in order). Keys read from a KV cache count as the "
    "anchors they were computed from, at the input of the call that filled the cache; the inference pass's own "
    "inputs (its queries) are kept separately and do not flow into the earlier anchor pass. Grey points are not "
    "reached."
)


@dataclass(frozen=True)
class RolloutPart:
    """Rollout weights over the tokens of one group at one point of the model."""

    group: str
    where: str
    """The call whose input these tokens are (or that produced them)."""
    weights: np.ndarray
    """(tokens of the group,) float64, non-negative."""


@dataclass
class RolloutResult:
    """Where one output token draws from, over every input token reached."""

    group: str
    index: int
    start: str
    """The last call that outputs the chosen token (the rollout starts at its output)."""
    parts: list[RolloutPart]
    calls: list[str]
    """Calls the walk went through, last first."""
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return float(sum(part.weights.sum() for part in self.parts))

    def by_group(self) -> dict[str, np.ndarray]:
        """Weights per group name, parts of the same name and size summed (they are the same points)."""
        merged: dict[str, np.ndarray] = {}
        for part in self.parts:
            if part.group in merged and merged[part.group].shape == part.weights.shape:
                merged[part.group] = merged[part.group] + part.weights
            elif part.group in merged:
                merged[f"{part.group} ({part.where})"] = part.weights
            else:
                merged[part.group] = part.weights
        return merged


def output_groups(layer: LayerSource) -> list[str]:
    return [group.name for group in layer.run.layout.query_groups]


def _problem(field_name: str, message: str, hint: str) -> ExplorerError:
    return ExplorerError(Problem(field_name, message, hint))


def rollout_start(layers: Sequence[LayerSource], group: str, index: int) -> int:
    """Index of the last call outputting ``group``; clear errors for an unknown group or an index out of range."""
    candidates = [i for i, layer in enumerate(layers) if group in output_groups(layer)]
    if not candidates:
        names = sorted({name for layer in layers for name in output_groups(layer)})
        raise _problem("token", f"no call outputs a group named '{group}'.", f"Pick one of: {', '.join(names)}.")
    start = candidates[-1]
    size = layers[start].run.layout.by_name[group].size
    if not 0 <= index < size:
        raise _problem(
            "token",
            f"index {index} is outside '{group}' (0..{size - 1} at {layers[start].path}).",
            "Pick an index inside the group.",
        )
    return start


@torch.no_grad()
def propagate(
    layer: LayerSource,
    r_out: Mapping[str, torch.Tensor],
    *,
    batch: int = 0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> dict[str, torch.Tensor]:
    """r·Â for one call: rollout mass on its output tokens -> mass on its key-axis groups (by name).

    Only query rows with non-zero mass are recomputed, in chunks; the head-mean rows are re-normalised after mixing
    in the identity, whose mass goes to the row's own input token.
    """
    run = layer.run
    layout, core = run.layout, run.core
    x_queries, freqs_queries, keys = run.x_queries, run.freqs_queries, run.keys()
    result = {g.name: torch.zeros(g.size, dtype=torch.float64) for g in layout.groups}
    for group in layout.query_groups:
        mass = r_out.get(group.name)
        if mass is None or group.size == 0:
            continue
        rows = torch.nonzero(mass).flatten()
        if rows.numel() == 0:
            continue
        pattern = layout.pattern_of(group.name)
        key_tensor, real, segments = _pattern_keys(layout, keys, list(pattern.key_value_tokens), run.key_real())
        key_tensor = key_tensor[batch : batch + 1]
        if real is not None and real.dim() == 4:
            real = real[batch : batch + 1]
        step = chunk_rows(1, core.num_heads, key_tensor.shape[2], 1, chunk_bytes)
        assert group.query_offset is not None
        for start in range(0, rows.numel(), step):
            chosen = rows[start : start + step]
            positions = (chosen + group.query_offset).to(x_queries.device)
            x = x_queries[batch : batch + 1].index_select(1, positions)
            freqs = None if freqs_queries is None else freqs_queries[batch : batch + 1].index_select(1, positions)
            weights = torch.softmax(_logits(core.project_queries(x, freqs=freqs), key_tensor, real), dim=-1)
            head_mean = weights[0].mean(0).double().cpu()
            coefficient = mass[chosen] / (0.5 * head_mean.sum(-1) + 0.5)
            spread = 0.5 * (coefficient @ head_mean)
            for seg in segments:
                name = layout.key_groups[seg.index].name
                result[name] += spread[seg.start : seg.start + seg.size]
            result[group.name].index_add_(0, chosen, 0.5 * coefficient)
    return result


@dataclass
class _Walk:
    """State of the backward walk: live mass per group, parked cache mass per (module, group), final parts."""

    live: dict[str, torch.Tensor] = field(default_factory=dict)
    parked: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    parts: list[RolloutPart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    entered: dict[str, str] = field(default_factory=dict)
    """Per live group, the earliest call (so far in the backward walk) that takes it as input."""

    def add(self, name: str, mass: torch.Tensor, where: str) -> None:
        self.entered[name] = where
        if name not in self.live:
            self.live[name] = mass.clone()
        elif self.live[name].shape == mass.shape:
            self.live[name] += mass
        else:
            # The same name with another size is another set of tokens: keep it apart rather than mix them.
            self.parts.append(RolloutPart(name, where, mass.numpy()))
            self.notes.append(f"'{name}' has {mass.numel()} tokens at {where} but {self.live[name].numel()} later.")

    def freeze(self, where: str) -> None:
        """End the walk for the live groups: each is kept where it entered the model, ``where`` if unknown."""
        for name, mass in self.live.items():
            if float(mass.sum()) > 0:
                self.parts.append(RolloutPart(name, self.entered.get(name, where), mass.numpy()))
        self.live, self.entered = {}, {}


def attention_rollout(
    layers: Sequence[LayerSource],
    group: str,
    index: int,
    *,
    batch: int = 0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    positions: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    progress: Progress | None = None,
) -> RolloutResult:
    """Rollout of output token ``group[index]`` of the last call that outputs it, back through every earlier call.

    Args:
        layers: Calls in the order the model made them.
        group, index: The output token.
        batch: Which batch element to follow.
        chunk_bytes: Bytes of one chunk of scores.
        positions: Recorded coordinates per group (a capture's), used to match groups that differ in name only.
        progress: Called with (fraction done, message) after each call.
    """
    start = rollout_start(layers, group, index)
    size = layers[start].run.layout.by_name[group].size
    points = _positions_of(positions or {}, batch)
    walk = _Walk()
    walk.live[group] = torch.zeros(size, dtype=torch.float64)
    walk.live[group][index] = 1.0
    visited: list[str] = []
    passes = pass_numbers(layers)
    for position in range(start, -1, -1):
        layer = layers[position]
        module, layout = layer.module, layer.run.layout
        if position < start and passes[position] != passes[position + 1]:
            walk.freeze(f"input of {layers[position + 1].path}")
        following = layers[position + 1] if position + 1 <= start else None
        split = _align_outputs(walk, layer, following, points)
        outputs = output_groups(layer)
        r_out = {name: walk.live.pop(name) for name in outputs if name in walk.live}
        earlier_call = any(other.module == module for other in layers[:position])
        if r_out:
            visited.append(layer.path)
            for name, mass in propagate(layer, r_out, batch=batch, chunk_bytes=chunk_bytes).items():
                if float(mass.sum()) == 0:
                    continue
                if layout.by_name[name].cached and earlier_call:
                    key = (module, name)
                    walk.parked[key] = walk.parked[key] + mass if key in walk.parked else mass
                else:
                    walk.add(name, mass, f"input of {layer.path}")
        if split is not None and split[0] in walk.live:
            _split_back(walk, *split, where=f"input of {layer.path}")
        inputs = {g.name for g in layout.groups if not g.cached}
        for key in [k for k in walk.parked if k[0] == module and k[1] in inputs]:
            walk.add(key[1], walk.parked.pop(key), f"input of {layer.path}")
        if progress is not None:
            progress((start - position + 1) / (start + 1), f"rollout through {layer.path}")
    walk.freeze(f"input of {layers[0].path}" if layers else "input")
    for (module, name), mass in walk.parked.items():
        walk.parts.append(RolloutPart(name, f"cache of {module}", mass.numpy()))
        walk.notes.append(f"the call that filled the cache of '{name}' in {module} was not recorded.")
    return RolloutResult(
        group=group, index=index, start=layers[start].path, parts=walk.parts, calls=visited, notes=walk.notes
    )


def pass_numbers(layers: Sequence[LayerSource]) -> list[int]:
    """Which forward pass each call belongs to: a pass ends where a module it already called reads a KV cache.

    A module called twice within one pass without a cache (shared weights) stays in the same pass.
    """
    numbers, current, called = [], 0, set()
    for layer in layers:
        if layer.module in called and layer.run.layout.has_cache:
            current, called = current + 1, set()
        called.add(layer.module)
        numbers.append(current)
    return numbers


def _positions_of(positions: Mapping[str, torch.Tensor | np.ndarray], batch: int) -> dict[str, torch.Tensor]:
    """(tokens, dims) coordinates per group for one batch element."""
    result = {}
    for name, value in positions.items():
        tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        if tensor.dim() == 3:
            tensor = tensor[min(batch, tensor.shape[0] - 1)]
        result[name] = tensor.float()
    return result


def _align_outputs(
    walk: _Walk, layer: LayerSource, following: LayerSource | None, points: Mapping[str, torch.Tensor]
) -> tuple[str, list[tuple[str, int]]] | None:
    """Give the call's output groups the live mass of the same tokens under other names.

    Tried when no output group of the call carries live mass by name: (1) a live group with exactly the same
    recorded positions is the same tokens (a perceiver's ``keys_values`` are the geometry block's ``tokens``);
    (2) a single output group as large as the next call's input groups together is their concatenation (a
    perceiver's ``queries`` are the physics blocks' anchors and queries, in their order). For (2) the mass is
    split back into those groups after the call. Returns (group, [(name, size), ...]) to split back, or None.
    """
    outputs = layer.run.layout.query_groups
    if not walk.live or any(g.name in walk.live for g in outputs):
        return None
    for group in outputs:
        mine = points.get(group.name)
        if mine is None or mine.shape[0] != group.size:
            continue
        name = same_positions(mine, points, list(walk.live))
        if name is not None:
            walk.live[group.name] = walk.live.pop(name)
            walk.notes.append(f"'{name}' entered {layer.path} as its group '{group.name}' (same positions).")
    if any(g.name in walk.live for g in outputs) or following is None:
        return None
    parts = joined_groups(outputs, following.run.layout.query_groups)
    if parts is None or not any(name in walk.live for name, _ in parts):
        return None
    target = outputs[0]
    pieces = []
    for name, size in parts:
        mass = walk.live.get(name)
        pieces.append(walk.live.pop(name) if mass is not None and mass.numel() == size else torch.zeros(size).double())
    walk.live[target.name] = torch.cat(pieces)
    walk.notes.append(
        f"{layer.path}'s '{target.name}' taken as {', '.join(n for n, _ in parts)} in that order (sizes add up)."
    )
    return target.name, parts


def _split_back(walk: _Walk, name: str, parts: list[tuple[str, int]], where: str) -> None:
    mass, start = walk.live.pop(name), 0
    for part, size in parts:
        walk.entered[part] = where
        walk.live[part] = walk.live.get(part, torch.zeros(size, dtype=torch.float64)) + mass[start : start + size]
        start += size


def parse_token(text: str) -> tuple[str, int]:
    """``GROUP:INDEX`` -> (group, index), with a clear message for anything else."""
    group, sep, index = text.rpartition(":")
    if not sep or not group or not index.strip().lstrip("-").isdigit():
        raise _problem("--token", f"'{text}' is not GROUP:INDEX.", "Write e.g. surface_queries:0.")
    return group.strip(), int(index)


def rollout_points(
    result: RolloutResult, positions: Mapping[str, torch.Tensor | np.ndarray], batch: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Points of every group that has positions, with their rollout weights: (xyz, weights, group per point, notes).

    Groups without positions (or whose positions do not match their size) are left out and named in the notes.
    """
    points_of = _positions_of(positions, batch)
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
    points_of = _positions_of(positions, batch)
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
    points = _positions_of(positions, batch).get(group)
    if points is None or not 0 <= index < points.shape[0] or points.shape[-1] != 3:
        return None
    return points[index].double().numpy()
