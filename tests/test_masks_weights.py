"""Pooling grids, masks and attention weights: the pooled, chunked results equal what the exact
(batch, heads, queries, keys) matrix gives when pooled by hand, and that matrix is the module's own."""

import math
import threading
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st

import noether.explorer.weights as weights_module
from noether.explorer.chunk_stats import top_k_mass
from noether.explorer.layout import PoolGrid, TokenLayout
from noether.explorer.masks import dense_mask, group_mask, group_mask_mod, pooled_mask, token_group_ids
from noether.explorer.presets import preset_text
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import Scenario, validate_scenario
from noether.explorer.views import display_map, repool, weight_map
from noether.explorer.weights import (
    Cancelled,
    WeightOptions,
    WeightResult,
    attention_weight_maps,
    chunk_rows,
    pool_dim,
)

ATOL = 1e-6

# Four groups with padding, patterns whose key order differs from the axis order, and a group ("iso") whose keys
# only its own queries read.
WEIGHT_DOC: dict[str, Any] = {
    "attention": {"hidden_dim": 12, "num_heads": 2, "use_rope": True},
    "token_specs": [{"lat": 5}, {"q1": 7}, {"q2": 6}, {"iso": 4}],
    "attention_patterns": [
        {"query_tokens": ["lat"], "key_value_tokens": ["lat"]},
        {"query_tokens": ["q1"], "key_value_tokens": ["lat", "q1"]},
        {"query_tokens": ["q2"], "key_value_tokens": ["q2", "lat"]},
        {"query_tokens": ["iso"], "key_value_tokens": ["iso", "lat"]},
    ],
    "run": {"batch_size": 2, "padding": {"lat": 1, "q2": 2}, "seed": 3},
}

CACHED_DOC: dict[str, Any] = {
    "attention": {"hidden_dim": 8, "num_heads": 2},
    "token_specs": [{"anc": None}, {"q": 5}, {"other_anchors": None}, {"r": 3}],
    "attention_patterns": [
        {"query_tokens": ["anc", "q"], "key_value_tokens": ["anc"]},
        {"query_tokens": ["other_anchors", "r"], "key_value_tokens": ["other_anchors", "anc"]},
    ],
    "run": {"kv_cache_sizes": {"anc": 7, "other_anchors": 4}},
}

BLOCK_DOC: dict[str, Any] = {
    "attention": {"hidden_dim": 8, "num_heads": 2},
    "token_specs": [{"c0": 3}, {"c1": 4}, {"c2": 2}],
    "attention_patterns": [
        {"query_tokens": ["c0"], "key_value_tokens": ["c0"]},
        {"query_tokens": ["c1"], "key_value_tokens": ["c0", "c1"]},
        {"query_tokens": ["c2"], "key_value_tokens": ["c0", "c1", "c2"]},
    ],
}

LAYOUT_DOCS = {"padding": WEIGHT_DOC, "cached": CACHED_DOC, "block_causal": BLOCK_DOC}


def scenario_of(doc: dict[str, Any], **run: Any) -> Scenario:
    data = {**doc, "run": {**doc.get("run", {}), **run}}
    report = validate_scenario(data)
    assert report.ok, [str(p) for p in report.problems]
    assert report.scenario is not None
    return report.scenario


def layout_of(doc: dict[str, Any]) -> TokenLayout:
    return TokenLayout.from_scenario(scenario_of(doc))


def hand_pool(values: torch.Tensor, row_factor: int, col_factor: int, how: str) -> torch.Tensor:
    """Pool the last two dims into (row_factor x col_factor) blocks (last blocks shorter): mean or max."""
    n_rows, n_cols = values.shape[-2:]
    out = torch.zeros(*values.shape[:-2], math.ceil(n_rows / row_factor), math.ceil(n_cols / col_factor))
    for i in range(out.shape[-2]):
        for j in range(out.shape[-1]):
            block = values[..., i * row_factor : (i + 1) * row_factor, j * col_factor : (j + 1) * col_factor]
            out[..., i, j] = block.mean((-1, -2)) if how == "mean" else block.amax((-1, -2))
    return out


def exact_result(run: ExplorerRun, options: WeightOptions | None = None) -> WeightResult:
    """Weights at one pixel per token: the mean map is the exact matrix."""
    result = run.weights(pixels=max(run.layout.n_queries, run.layout.n_keys), options=options)
    assert result.rows.exact and result.cols.exact
    return result


def maps_at(run: ExplorerRun, row_factor: int, col_factor: int, options: WeightOptions) -> WeightResult:
    """Weights pooled with exactly the given factors (bypassing the pixel budget)."""
    return attention_weight_maps(
        run.core,
        run.layout,
        run.x_queries,
        run.freqs_queries,
        run.keys(),
        PoolGrid(run.layout.n_queries, row_factor),
        PoolGrid(run.layout.n_keys, col_factor),
        options,
    )


def query_slice(layout: TokenLayout, name: str) -> slice:
    group = layout.by_name[name]
    assert group.query_offset is not None
    return slice(group.query_offset, group.query_offset + group.size)


def key_slice(layout: TokenLayout, name: str) -> slice:
    return layout.by_name[name].key_span


@pytest.fixture(scope="module")
def run() -> ExplorerRun:
    return ExplorerRun(scenario_of(WEIGHT_DOC))


@pytest.fixture(scope="module")
def exact(run: ExplorerRun) -> torch.Tensor:
    return exact_result(run).mean


# ----------------------------------------------------------------------------------------------------------------------
# PoolGrid
# ----------------------------------------------------------------------------------------------------------------------


@given(n=st.integers(0, 10**7), budget=st.integers(1, 5000))
def test_fit_is_the_smallest_factor_within_budget(n: int, budget: int) -> None:
    grid = PoolGrid.fit(n, budget)
    assert grid.n == n
    assert grid.bins <= budget
    assert grid.bins * grid.factor >= n
    assert grid.factor == 1 or math.ceil(n / (grid.factor - 1)) > budget
    assert grid.exact == (grid.factor == 1)


@given(n=st.integers(0, 5000), factor=st.integers(1, 300))
def test_bin_sizes_sum_to_n(n: int, factor: int) -> None:
    grid = PoolGrid(n, factor)
    sizes = grid.bin_sizes()
    assert len(sizes) == grid.bins
    assert int(sizes.sum()) == n
    assert (sizes > 0).all()
    assert (sizes[:-1] == factor).all()


@given(data=st.data(), n=st.integers(1, 3000), factor=st.integers(1, 200))
def test_overlap_sums_to_interval_length(data: st.DataObject, n: int, factor: int) -> None:
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, n))
    grid = PoolGrid(n, factor)
    overlap = grid.overlap(start, stop)
    assert int(overlap.sum()) == stop - start
    assert (overlap >= 0).all()
    assert (overlap <= grid.bin_sizes()).all()
    if stop > start:
        touched = np.flatnonzero(overlap)
        assert touched[0] == grid.bin_of(start)
        assert touched[-1] == grid.bin_of(stop - 1)


@given(n=st.integers(0, 10**6), factor=st.integers(1, 500), budget=st.integers(1, 3000))
def test_coarsen_factor_is_a_multiple_within_budget(n: int, factor: int, budget: int) -> None:
    grid = PoolGrid(n, factor)
    coarse = grid.coarsen(budget)
    assert coarse.n == n
    assert coarse.factor % factor == 0
    assert coarse.bins <= max(budget, 1) or coarse.bins == 0
    if grid.bins <= budget:
        assert coarse == grid


def test_fit_refuses_zero_budget() -> None:
    with pytest.raises(ValueError, match="budget"):
        PoolGrid.fit(10, 0)


def test_edge_in_bin_units() -> None:
    grid = PoolGrid(10, 4)
    assert grid.edge(6) == 1.5
    assert grid.bin_of(7) == 1
    assert grid.bins == 3


@given(
    data=st.data(),
    length=st.integers(1, 40),
    offset=st.integers(0, 50),
    factor=st.integers(1, 7),
    how=st.sampled_from(["sum", "max"]),
)
def test_pool_dim_matches_pooling_of_the_global_axis(
    data: st.DataObject, length: int, offset: int, factor: int, how: str
) -> None:
    values = torch.tensor(data.draw(st.lists(st.floats(0, 1), min_size=length, max_size=length)))
    bin0, pooled = pool_dim(values[None], 1, offset, factor, how)
    assert bin0 == offset // factor
    # Reference: place the chunk on the global axis and reduce each touched bin over the tokens present.
    expected = []
    for b in range(bin0, (offset + length - 1) // factor + 1):
        lo, hi = max(b * factor, offset), min((b + 1) * factor, offset + length)
        part = values[lo - offset : hi - offset]
        expected.append(float(part.sum() if how == "sum" else part.max()))
    assert torch.allclose(pooled[0].double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)


@given(
    batch=st.integers(1, 4),
    heads=st.integers(1, 8),
    keys=st.integers(1, 5000),
    factor=st.integers(1, 9),
    chunk_bytes=st.integers(1, 2**22),
)
def test_chunk_rows_fits_and_aligns(batch: int, heads: int, keys: int, factor: int, chunk_bytes: int) -> None:
    rows = chunk_rows(batch, heads, keys, factor, chunk_bytes)
    assert rows >= 1
    if rows >= factor:
        assert rows % factor == 0
    fitting = chunk_bytes // (batch * heads * keys * 4)
    assert rows <= max(fitting, factor, 1)
    if fitting < factor:
        assert rows * batch * heads * keys * 4 <= 2 * chunk_bytes or rows == 1


# ----------------------------------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LAYOUT_DOCS))
@pytest.mark.parametrize("row_factor", [1, 2, 3, 4])
@pytest.mark.parametrize("col_factor", [1, 2, 3, 4])
def test_pooled_mask_equals_dense_mask_pooled_by_hand(name: str, row_factor: int, col_factor: int) -> None:
    layout = layout_of(LAYOUT_DOCS[name])
    dense = dense_mask(layout).double()
    rows, cols = PoolGrid(layout.n_queries, row_factor), PoolGrid(layout.n_keys, col_factor)
    pooled = pooled_mask(layout, rows, cols)
    assert pooled.shape == (rows.bins, cols.bins)
    expected = hand_pool(dense, row_factor, col_factor, "mean").double().numpy()
    np.testing.assert_allclose(pooled, expected, atol=1e-12)


def test_dense_mask_by_hand_for_the_padded_layout() -> None:
    layout = layout_of(WEIGHT_DOC)
    dense = dense_mask(layout)
    assert dense.shape == (22, 22)
    # q2 rows (12..17) attend q2's real keys (12..15) and lat's real keys (0..3); padding and others are masked.
    q2_row = dense[12]
    assert q2_row.nonzero().flatten().tolist() == [0, 1, 2, 3, 12, 13, 14, 15]
    # Nobody but iso attends iso's keys.
    iso = key_slice(layout, "iso")
    assert dense[:, iso].any(dim=1).nonzero().flatten().tolist() == list(range(18, 22))


def test_dense_mask_of_a_cached_layout() -> None:
    layout = layout_of(CACHED_DOC)
    assert (layout.n_queries, layout.n_keys) == (8, 19)
    dense = dense_mask(layout)
    # q (rows 0..4) reads anc (columns 0..6); r (rows 5..7) reads other_anchors (12..15) and anc (0..6).
    assert dense[:5].nonzero()[:, 1].unique().tolist() == list(range(7))
    assert dense[5:].nonzero()[:, 1].unique().tolist() == [*range(7), *range(12, 16)]
    assert not dense[:, 7:12].any()  # input group q has no keys on a cached pass's read set


@pytest.mark.parametrize("name", sorted(LAYOUT_DOCS))
def test_group_mask_pairs_and_density(name: str) -> None:
    layout = layout_of(LAYOUT_DOCS[name])
    mask = group_mask(layout)
    dense = dense_mask(layout)
    assert mask.total_pairs == int(dense.sum())
    assert mask.density == pytest.approx(float(dense.double().mean()))
    for i, query in enumerate(mask.query_names):
        for j, key in enumerate(mask.key_names):
            block = dense[query_slice(layout, query), key_slice(layout, key)]
            assert mask.pairs[i, j] == int(block.sum())
            assert mask.allowed[i, j] == (key in layout.pattern_of(query).key_value_tokens)


@pytest.mark.parametrize("name", sorted(LAYOUT_DOCS))
def test_group_mask_mod_agrees_with_dense_mask(name: str) -> None:
    layout = layout_of(LAYOUT_DOCS[name])
    mod = group_mask_mod(layout)
    q_idx = torch.arange(layout.n_queries)[:, None]
    kv_idx = torch.arange(layout.n_keys)[None, :]
    zero = torch.tensor(0)
    assert torch.equal(mod(zero, zero, q_idx, kv_idx), dense_mask(layout))


def test_token_group_ids() -> None:
    layout = layout_of(WEIGHT_DOC)
    query_ids, key_ids, key_real = token_group_ids(layout)
    assert query_ids.tolist() == [0] * 5 + [1] * 7 + [2] * 6 + [3] * 4
    assert key_ids.tolist() == query_ids.tolist()
    assert (~key_real).nonzero().flatten().tolist() == [4, 16, 17]


# ----------------------------------------------------------------------------------------------------------------------
# The exact matrix is the module's
# ----------------------------------------------------------------------------------------------------------------------


def manual_weights(run: ExplorerRun) -> torch.Tensor:
    """Softmax of the forward pass's own projections (fused Q/K/V path), placed on the full key axis."""
    layout = run.layout
    groups = run.core.project_groups(run.x_queries, list(run.scenario.token_specs), run.freqs_queries, run.kv_cache())
    batch, heads = run.scenario.run.batch_size, run.core.num_heads
    full = torch.zeros(batch, heads, layout.n_queries, layout.n_keys)
    for group in layout.query_groups:
        kv = list(layout.pattern_of(group.name).key_value_tokens)
        keys = torch.cat([groups.k[name] for name in kv], dim=2)
        scores = groups.q[group.name] @ keys.transpose(-1, -2) / math.sqrt(run.core.head_dim)
        real = torch.cat([torch.arange(layout.by_name[n].size) < layout.by_name[n].real_keys for n in kv])
        weights = scores.masked_fill(~real, float("-inf")).softmax(-1)
        start = 0
        for name in kv:
            size = layout.by_name[name].size
            full[:, :, query_slice(layout, group.name), key_slice(layout, name)] = weights[..., start : start + size]
            start += size
    return full


@pytest.mark.slow
def test_exact_map_is_the_module_softmax(run: ExplorerRun, exact: torch.Tensor) -> None:
    assert exact.shape == (2, 2, 22, 22)
    torch.testing.assert_close(exact, manual_weights(run), atol=1e-5, rtol=0)


def test_exact_rows_sum_to_one_and_zero_outside_mask(run: ExplorerRun, exact: torch.Tensor) -> None:
    dense = dense_mask(run.layout)
    _, _, key_real = token_group_ids(run.layout)
    torch.testing.assert_close(exact.sum(-1), torch.ones(2, 2, 22), atol=1e-5, rtol=0)
    assert (exact[..., ~dense] == 0).all()
    assert (exact[..., ~key_real] == 0).all()
    assert (exact[..., dense] > 0).all()


def test_weights_times_values_is_the_attention_output(run: ExplorerRun, exact: torch.Tensor) -> None:
    layout = run.layout
    core = run.core
    groups = core.project_groups(run.x_queries, list(run.scenario.token_specs), run.freqs_queries)
    key_masks = {g.name: torch.arange(g.size).expand(2, -1) < g.real_keys for g in layout.groups}
    with torch.no_grad():
        outputs = core.attend_groups(groups, layout.patterns, key_masks)
    values = torch.cat([groups.v[g.name] for g in layout.groups], dim=2)
    product = exact @ values
    for group in layout.query_groups:
        torch.testing.assert_close(
            product[:, :, query_slice(layout, group.name)], outputs[group.name], atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("row", [0, 4, 5, 13, 17, 21])
def test_exact_row_equals_the_map_row(run: ExplorerRun, exact: torch.Tensor, row: int) -> None:
    torch.testing.assert_close(run.exact_row(row), exact[:, :, row], atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------------------------------
# Pooled maps and statistics equal hand computations on the exact matrix
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("row_factor", "col_factor"), [(2, 2), (2, 3), (3, 5), (4, 2), (5, 4), (5, 5)])
@pytest.mark.parametrize("chunk_bytes", [1, 200, 500])
def test_pooled_maps_equal_hand_pooling(
    run: ExplorerRun, exact: torch.Tensor, row_factor: int, col_factor: int, chunk_bytes: int
) -> None:
    result = maps_at(run, row_factor, col_factor, WeightOptions(chunk_bytes=chunk_bytes))
    assert result.max is not None and result.head_mean_max is not None
    torch.testing.assert_close(result.mean, hand_pool(exact, row_factor, col_factor, "mean"), atol=ATOL, rtol=0)
    torch.testing.assert_close(result.max, hand_pool(exact, row_factor, col_factor, "max"), atol=ATOL, rtol=0)
    torch.testing.assert_close(
        result.head_mean_max, hand_pool(exact.mean(1), row_factor, col_factor, "max"), atol=ATOL, rtol=0
    )


def test_tiny_chunks_really_are_many_and_unaligned(run: ExplorerRun) -> None:
    """The chunk sizes used above split groups into pieces that straddle row bins (else the test proves little)."""
    seen: list[float] = []
    maps_at_progress = attention_weight_maps(
        run.core,
        run.layout,
        run.x_queries,
        run.freqs_queries,
        run.keys(),
        PoolGrid(22, 3),
        PoolGrid(22, 3),
        WeightOptions(chunk_bytes=200),
        progress=lambda fraction, message: seen.append(fraction),
    )
    assert maps_at_progress.mean.shape == (2, 2, 8, 8)
    assert seen[-1] == 1.0
    ends = sorted({round(fraction * 22) for fraction in seen})
    group_edges = {5, 12, 18, 22}
    inside = [end for end in ends if end not in group_edges]
    assert len(ends) >= 8
    assert any(end % 3 for end in inside), ends


def test_group_mass_rows_sum_to_one_and_match_the_exact_matrix(run: ExplorerRun, exact: torch.Tensor) -> None:
    result = exact_result(run)
    torch.testing.assert_close(result.group_mass.sum(-1), torch.ones(2, 2, 4), atol=1e-5, rtol=0)
    layout = run.layout
    for i, query in enumerate(layout.query_groups):
        for j, key in enumerate(layout.groups):
            block = exact[:, :, query_slice(layout, query.name), key_slice(layout, key.name)]
            torch.testing.assert_close(result.group_mass[:, :, i, j], block.sum(-1).mean(-1), atol=ATOL, rtol=0)
    # lat and iso: lat's rows put all mass on lat; nobody but iso gives iso mass.
    assert torch.allclose(result.group_mass[:, :, 0, 0], torch.ones(2, 2))
    assert (result.group_mass[:, :, :3, 3] == 0).all()


def test_entropy_matches_the_exact_matrix(run: ExplorerRun, exact: torch.Tensor) -> None:
    result = exact_result(run)
    assert result.entropy is not None
    safe = torch.where(exact > 0, exact, torch.ones_like(exact))
    per_row = -(exact * safe.log()).sum(-1)
    for i, group in enumerate(run.layout.query_groups):
        expected = per_row[:, :, query_slice(run.layout, group.name)].mean(-1)
        torch.testing.assert_close(result.entropy[:, :, i], expected, atol=1e-5, rtol=0)
    # Bounded by the log of the real keys each group attends.
    assert (result.entropy[:, :, 0] <= math.log(4) + 1e-6).all()


@pytest.mark.parametrize("top_k", [1, 3, 30])
def test_top_k_mass_matches_the_exact_matrix(run: ExplorerRun, exact: torch.Tensor, top_k: int) -> None:
    result = exact_result(run, WeightOptions(top_k=top_k))
    assert result.top_k_mass is not None and result.top_k == top_k
    per_row = exact.topk(min(top_k, exact.shape[-1]), dim=-1).values.sum(-1)
    for i, group in enumerate(run.layout.query_groups):
        expected = per_row[:, :, query_slice(run.layout, group.name)].mean(-1)
        torch.testing.assert_close(result.top_k_mass[:, :, i], expected, atol=1e-5, rtol=0)


def test_received_equals_column_sums(run: ExplorerRun, exact: torch.Tensor) -> None:
    result = exact_result(run)
    torch.testing.assert_close(result.received, exact.sum(2), atol=1e-5, rtol=0)
    _, _, key_real = token_group_ids(run.layout)
    assert (result.received[..., ~key_real] == 0).all()


def test_options_switch_extras_off(run: ExplorerRun) -> None:
    result = run.weights(pixels=8, options=WeightOptions(max_pooling=False, head_mean_max=False, row_stats=False))
    assert result.max is None and result.head_mean_max is None
    assert result.entropy is None and result.top_k_mass is None and result.top_k == 0
    with pytest.raises(ValueError, match="max pooling"):
        weight_map(result, head=0, pooling="max")
    with pytest.raises(ValueError, match="head average"):
        weight_map(result, head="mean", pooling="max")


def test_chunk_size_does_not_change_results(run: ExplorerRun) -> None:
    small = run.weights(pixels=8, options=WeightOptions(chunk_bytes=200))
    default = run.weights(pixels=8)
    assert small is not default
    for name in ("mean", "max", "head_mean_max", "group_mass", "received", "entropy", "top_k_mass"):
        torch.testing.assert_close(getattr(small, name), getattr(default, name), atol=ATOL, rtol=0, msg=name)


def test_weights_are_memoised(run: ExplorerRun) -> None:
    assert run.weights(pixels=8) is run.weights(pixels=8)


# ----------------------------------------------------------------------------------------------------------------------
# Isolation, determinism, seeds
# ----------------------------------------------------------------------------------------------------------------------


def test_pattern_isolation_is_visible_in_the_weights(exact: torch.Tensor) -> None:
    changed = ExplorerRun(scenario_of(WEIGHT_DOC))
    iso = key_slice(changed.layout, "iso")
    generator = torch.Generator().manual_seed(123)
    changed.inputs.x[:, iso] = torch.randn(changed.inputs.x[:, iso].shape, generator=generator)
    weights = exact_result(changed).mean
    others = slice(0, 18)
    assert torch.equal(weights[:, :, others], exact[:, :, others])
    assert not torch.allclose(weights[:, :, 18:], exact[:, :, 18:], atol=1e-4)


def test_two_runs_of_the_same_scenario_give_identical_maps(run: ExplorerRun) -> None:
    first = run.weights(pixels=8)
    second = ExplorerRun(scenario_of(WEIGHT_DOC)).weights(pixels=8)
    for name in ("mean", "max", "head_mean_max", "group_mass", "received", "entropy", "top_k_mass"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name


def test_different_seeds_give_different_maps(run: ExplorerRun) -> None:
    other = ExplorerRun(scenario_of(WEIGHT_DOC, seed=4)).weights(pixels=8)
    assert not torch.allclose(run.weights(pixels=8).mean, other.mean, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# Cached scenarios read the cache
# ----------------------------------------------------------------------------------------------------------------------


def kv_cache_docs() -> tuple[dict[str, Any], dict[str, Any]]:
    """The kv_cache preset scaled down, and the same tokens with the anchors as input groups (one pass)."""
    cached = yaml.safe_load(preset_text("kv_cache"))
    cached["attention"].update(hidden_dim=12, num_heads=2)
    cached["token_specs"] = [
        {"surface_anchors": None},
        {"surface_queries": 7},
        {"volume_anchors": None},
        {"volume_queries": 4},
    ]
    cached["run"]["kv_cache_sizes"] = {"surface_anchors": 6, "volume_anchors": 5}
    single = yaml.safe_load(yaml.safe_dump(cached))
    single["token_specs"] = [
        {"surface_anchors": 6},
        {"surface_queries": 7},
        {"volume_anchors": 5},
        {"volume_queries": 4},
    ]
    single["run"]["kv_cache_sizes"] = {}
    return cached, single


def test_cached_scenario_weights_use_the_cache() -> None:
    cached_doc, single_doc = kv_cache_docs()
    cached, single = ExplorerRun(cached_doc), ExplorerRun(single_doc)
    assert cached.layout.has_cache and not single.layout.has_cache
    cache = cached.kv_cache()
    assert cache is not None
    keys = cached.keys()
    for name in ("surface_anchors", "volume_anchors"):
        assert keys[name] is cache[name]["k"]
        torch.testing.assert_close(keys[name], single.keys()[name], atol=1e-5, rtol=0)
    w_cached = exact_result(cached).mean
    w_single = exact_result(single).mean
    assert w_cached.shape == (1, 2, 11, 22)
    rows = torch.cat([w_single[:, :, 6:13], w_single[:, :, 18:22]], dim=2)
    torch.testing.assert_close(w_cached, rows, atol=1e-5, rtol=0)
    assert (w_cached[..., 6:13] == 0).all() and (w_cached[..., 18:22] == 0).all()


# ----------------------------------------------------------------------------------------------------------------------
# Re-pooling for display is exact
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [11, 7, 5, 4, 1])
@pytest.mark.parametrize("head", ["mean", 0, 1])
@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_display_map_equals_maps_computed_at_the_coarse_budget(
    run: ExplorerRun, budget: int, head: int | str, pooling: str
) -> None:
    fine = exact_result(run)
    values, rows, cols = display_map(fine, budget, batch=1, head=head, pooling=pooling)  # type: ignore[arg-type]
    direct = run.weights(pixels=budget)
    assert (rows, cols) == (direct.rows, direct.cols)
    expected = weight_map(direct, batch=1, head=head, pooling=pooling)  # type: ignore[arg-type]
    assert values.shape == (rows.bins, cols.bins)
    np.testing.assert_allclose(values, expected, atol=1e-6)


@pytest.mark.parametrize(("base", "budget"), [(2, 4), (2, 3), (3, 2)])
@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_repool_from_a_pooled_base_equals_direct_pooling(
    run: ExplorerRun, base: int, budget: int, pooling: str
) -> None:
    options = WeightOptions(chunk_bytes=300)
    fine = maps_at(run, base, base, options)
    values, rows, cols = display_map(fine, budget, head=1, pooling=pooling)  # type: ignore[arg-type]
    assert rows.factor % base == 0 and cols.factor % base == 0
    assert rows.bins <= budget and cols.bins <= budget
    direct = maps_at(run, rows.factor, cols.factor, options)
    np.testing.assert_allclose(values, weight_map(direct, head=1, pooling=pooling), atol=1e-6)  # type: ignore[arg-type]


def test_repool_to_the_same_grid_is_the_identity() -> None:
    values = np.arange(12.0).reshape(3, 4)
    grid_rows, grid_cols = PoolGrid(3, 1), PoolGrid(4, 1)
    assert repool(values, grid_rows, grid_cols, grid_rows, grid_cols, "mean") is values
    coarse = repool(values, grid_rows, grid_cols, PoolGrid(3, 2), PoolGrid(4, 3), "mean")
    np.testing.assert_allclose(coarse, [[(0 + 1 + 2 + 4 + 5 + 6) / 6, (3 + 7) / 2], [(8 + 9 + 10) / 3, 11]])


# ----------------------------------------------------------------------------------------------------------------------
# Zero-token groups
# ----------------------------------------------------------------------------------------------------------------------

ZERO_DOC: dict[str, Any] = {
    "attention": {"hidden_dim": 8, "num_heads": 2},
    "token_specs": [{"a": 0}, {"b": 4}, {"c": 3}],
    "attention_patterns": [
        {"query_tokens": ["a", "b"], "key_value_tokens": ["b", "a"]},
        {"query_tokens": ["c"], "key_value_tokens": ["c", "a", "b"]},
    ],
    "run": {"padding": {"b": 1}},
}


def test_zero_token_group_exact_weights() -> None:
    zero_run = ExplorerRun(scenario_of(ZERO_DOC))
    weights = exact_result(zero_run).mean
    assert weights.shape == (1, 2, 7, 7)
    torch.testing.assert_close(weights, manual_weights(zero_run), atol=1e-5, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2, 7), atol=1e-5, rtol=0)


@pytest.mark.parametrize("row_factor", [1, 2, 3])
@pytest.mark.parametrize("col_factor", [1, 2, 3])
def test_zero_token_group_pooled_mask(row_factor: int, col_factor: int) -> None:
    layout = layout_of(ZERO_DOC)
    pooled = pooled_mask(layout, PoolGrid(layout.n_queries, row_factor), PoolGrid(layout.n_keys, col_factor))
    expected = hand_pool(dense_mask(layout).double(), row_factor, col_factor, "mean").double().numpy()
    np.testing.assert_allclose(pooled, expected, atol=1e-12)


def test_pool_dim_of_an_empty_chunk() -> None:
    bin0, pooled = pool_dim(torch.zeros(1, 0), 1, 3, 2, "sum")
    assert bin0 == 1
    assert pooled.shape == (1, 0)


def test_zero_token_key_group_with_pooled_weights() -> None:
    zero_run = ExplorerRun(scenario_of(ZERO_DOC))
    exact = exact_result(zero_run).mean
    result = zero_run.weights(pixels=3)
    assert result.cols.factor == 3
    torch.testing.assert_close(result.mean, hand_pool(exact, 3, 3, "mean"), atol=ATOL, rtol=0)


@given(
    keys=st.integers(1, 3000),
    k=st.integers(1, 12),
    block=st.integers(1, 70),
    ties=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_top_k_mass_by_blocks_equals_full_top_k(keys: int, k: int, block: int, ties: bool, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.rand(2, 3, keys, generator=generator)
    if ties:
        weights = (weights * 4).round() / 4
    expected = weights.topk(min(k, keys), dim=-1).values.sum(-1)
    assert torch.allclose(top_k_mass(weights, k, block=block), expected, atol=1e-6)


def test_cancelled_pass_stops_between_chunks() -> None:
    run = ExplorerRun(WEIGHT_DOC)
    rows, cols = run.grids(64)
    stop = threading.Event()
    calls: list[float] = []

    def progress(fraction: float, message: str) -> None:
        calls.append(fraction)
        stop.set()

    with pytest.raises(Cancelled):
        attention_weight_maps(
            run.core,
            run.layout,
            run.x_queries,
            run.freqs_queries,
            run.keys(),
            rows,
            cols,
            WeightOptions(chunk_bytes=1),
            progress=progress,
            cancel=stop,
        )
    assert len(calls) == 1 and calls[0] < 1.0


def test_progress_reports_are_bounded_however_many_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights_module, "PROGRESS_STEPS", 4)
    run = ExplorerRun(WEIGHT_DOC)
    rows, cols = run.grids(64)
    calls: list[float] = []
    attention_weight_maps(
        run.core,
        run.layout,
        run.x_queries,
        run.freqs_queries,
        run.keys(),
        rows,
        cols,
        WeightOptions(chunk_bytes=1),
        progress=lambda fraction, _: calls.append(fraction),
    )
    # One row per chunk gives 22 chunks; the reports stay at one per quarter.
    assert calls[-1] == 1.0
    assert len(calls) <= 5 < run.layout.n_queries
