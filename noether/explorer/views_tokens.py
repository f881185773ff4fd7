"""Per-token values of the views: which token a (group, index) is on each axis, and values placed on the input axis
(the points of the geometry)."""

import numpy as np

from noether.explorer.inputs import on_input_axis
from noether.explorer.layout import TokenLayout
from noether.explorer.run import ExplorerRun
from noether.explorer.views_heads import HeadChoice, head_slice
from noether.explorer.weights import WeightResult


def query_row(layout: TokenLayout, group: str, index: int) -> int:
    """Query-axis row of token ``index`` of input group ``group`` (index clamped into the group)."""
    found = layout.by_name[group]
    if found.query_offset is None:
        raise KeyError(f"group '{group}' is cached and has no queries")
    return found.query_offset + min(max(index, 0), max(found.size - 1, 0))


def query_token_index(layout: TokenLayout, row: int) -> int:
    """Input-axis index (the row of :func:`token_positions`) of the token at query row ``row``."""
    group, index = layout.query_group_at(row)
    return group.input_offset + index


def token_labels(layout: TokenLayout) -> list[str]:
    """Group name of every input-axis token (for colouring token positions by group)."""
    names = np.array([g.name for g in layout.groups], dtype=object)
    return np.repeat(names, [g.size for g in layout.groups]).tolist()


def attended_keys(layout: TokenLayout, row: int) -> np.ndarray:
    """Bool over the key axis: the keys query row ``row`` may attend (its pattern's groups, padding excluded)."""
    group, _ = layout.query_group_at(row)
    attended = np.zeros(layout.n_keys, dtype=bool)
    for name in layout.pattern_of(group.name).key_value_tokens:
        span = layout.by_name[name].key_span
        attended[span.start : span.start + layout.by_name[name].real_keys] = True
    return attended


def on_tokens(layout: TokenLayout, key_values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Key-axis values placed on the input axis (the points of :func:`token_positions`), and which points have no
    key (a perceiver's queries: muted), or None when every point has one."""
    values = on_input_axis(layout, key_values)
    if layout.n_keys == layout.n_inputs:
        return values, None
    return values, ~on_input_axis(layout, np.ones(layout.n_keys, dtype=bool), fill=False)


def row_weights(run: ExplorerRun, row: int, batch: int, head: HeadChoice) -> np.ndarray:
    """Exact weights of query row ``row`` over every key: one head or the head mean."""
    return head_slice(run.exact_row(row).double(), batch, head).numpy()


def received_weights(result: WeightResult, batch: int, head: HeadChoice) -> np.ndarray:
    """Total attention each key token receives from all queries: one head or the head mean."""
    return head_slice(result.received.double(), batch, head).numpy()


def token_positions(run: ExplorerRun, batch: int) -> np.ndarray:
    """(input tokens, 3) positions of every group's tokens (cached ones and a perceiver's queries included) of
    batch element ``batch``."""
    return run.inputs.positions[batch].double().numpy()


def query_points(layout: TokenLayout, positions: np.ndarray) -> dict[str, np.ndarray]:
    """(tokens, 3) positions of every query group that has tokens, by group name in query-axis order: the candidates
    for picking a query token by clicking (``positions`` are :func:`token_positions`, on the input axis)."""
    return {g.name: positions[g.input_span] for g in layout.query_groups if g.size > 0}
