"""Attention masks from the group structure: group blocks, pooled token images, and (small) dense masks.

Everything but :func:`dense_mask` works on group intervals, never on an N x M tensor.
"""

from collections.abc import Callable

import numpy as np
import torch

# The group-level mask needs no torch and lives with the layout; it is re-exported here with the other masks.
from noether.explorer.layout import GroupMask as GroupMask
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.layout import group_mask as group_mask


def _query_overlaps(layout: TokenLayout, rows: PoolGrid) -> np.ndarray:
    """(row bins x query groups) tokens of each group in each bin."""
    columns = [rows.overlap(g.query_offset or 0, (g.query_offset or 0) + g.size) for g in layout.query_groups]
    return np.stack(columns, axis=1).astype(np.float64) if columns else np.zeros((rows.bins, 0))


def _key_overlaps(layout: TokenLayout, cols: PoolGrid) -> np.ndarray:
    """(column bins x key groups) real (unpadded) key tokens of each group in each bin."""
    columns = [cols.overlap(g.key_span.start, g.key_span.start + g.real_keys) for g in layout.key_groups]
    return np.stack(columns, axis=1).astype(np.float64)


def pooled_mask(layout: TokenLayout, rows: PoolGrid, cols: PoolGrid) -> np.ndarray:
    """Fraction of attended cells in each (row bin, column bin); exact 0/1 when both grids are exact."""
    counts = _query_overlaps(layout, rows) @ layout.allowed.astype(np.float64) @ _key_overlaps(layout, cols).T
    return counts / np.outer(rows.bin_sizes(), cols.bin_sizes())


def token_group_ids(layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token lookups: query row -> query-group index, key column -> key-group index, key column -> not padded."""
    query_ids = torch.cat([torch.full((g.size,), i, dtype=torch.int32) for i, g in enumerate(layout.query_groups)])
    key_ids = torch.cat([torch.full((g.size,), j, dtype=torch.int32) for j, g in enumerate(layout.key_groups)])
    key_real = torch.cat([torch.arange(g.size) < g.real_keys for g in layout.key_groups])
    return query_ids, key_ids, key_real


def group_mask_mod(layout: TokenLayout, device: torch.device | str = "cpu") -> Callable[..., torch.Tensor]:
    """A FlexAttention ``mask_mod``: query q may attend key k iff their groups are allowed and k is not padding."""
    query_ids, key_ids, key_real = (t.to(device) for t in token_group_ids(layout))
    allowed = torch.as_tensor(layout.allowed, device=device)

    def attends_allowed_group(
        b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        return allowed[query_ids[q_idx], key_ids[kv_idx]] & key_real[kv_idx]

    return attends_allowed_group


def dense_mask(layout: TokenLayout, device: torch.device | str = "cpu") -> torch.Tensor:
    """The full bool (queries x keys) mask. N x M memory: only for small layouts and the dense-SDPA backend."""
    query_ids, key_ids, key_real = (t.to(device) for t in token_group_ids(layout))
    allowed = torch.as_tensor(layout.allowed, device=device)
    return allowed[query_ids[:, None], key_ids[None, :]] & key_real[None, :]


def _block_lists(selected: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of blocks: how many are selected, and their column indices first (the BlockMask layout)."""
    counts = torch.as_tensor(selected.sum(axis=1), dtype=torch.int32)
    order = np.argsort(~selected, axis=1, kind="stable")
    return counts[None, None], torch.as_tensor(order, dtype=torch.int32)[None, None]


def flex_block_mask(layout: TokenLayout, device: torch.device | str = "cpu", block_size: int = 128) -> object:
    """FlexAttention's BlockMask built from group intervals: fully attended tiles skip the mask function.

    ``create_block_mask`` would evaluate the mask over every (query, key) pair; here the tile occupancy comes from
    :func:`pooled_mask` at the tile size, so building it costs (tiles x groups), not (queries x keys).
    """
    from torch.nn.attention.flex_attention import BlockMask

    rows = PoolGrid(layout.n_queries, block_size)
    cols = PoolGrid(layout.n_keys, block_size)
    share = pooled_mask(layout, rows, cols)
    full = share >= 1.0 - 1e-12
    partial = (share > 0.0) & ~full
    kv_num, kv_index = _block_lists(partial)
    full_num, full_index = _block_lists(full)
    return BlockMask.from_kv_blocks(
        kv_num.to(device),
        kv_index.to(device),
        full_num.to(device),
        full_index.to(device),
        BLOCK_SIZE=block_size,
        mask_mod=group_mask_mod(layout, device),
        seq_lengths=(layout.n_queries, layout.n_keys),
    )
