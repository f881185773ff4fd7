"""The model overview: per-call rows and statistics over a sequence of layers, checked against each layer's own
weight pass and against exact rows; bounded work and memory."""

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

from noether.explorer import chunk_stats, layer_stats
from noether.explorer.model_overview import LayerSource, call_table, layer_statistics, model_overview
from noether.explorer.run import ExplorerRun
from noether.explorer.weights import WeightOptions


def layer_doc(
    specs: dict[str, int | None],
    patterns: list[tuple[list[str], list[str]]],
    *,
    hidden_dim: int = 16,
    num_heads: int = 2,
    seed: int = 0,
    **run: Any,
) -> dict[str, Any]:
    return {
        "attention": {"hidden_dim": hidden_dim, "num_heads": num_heads, "use_rope": False},
        "token_specs": [{name: size} for name, size in specs.items()],
        "attention_patterns": [{"query_tokens": q, "key_value_tokens": k} for q, k in patterns],
        "run": {"device": "cpu", "seed": seed, "inputs": "random", **run},
    }


def model_layers(anchors: int = 12, queries: int = 7) -> list[LayerSource]:
    """A small AB-UPT-like stack: self over anchors, cross between domains, a decoder reading cached anchors."""
    a, q = anchors, queries
    both = {"surface_anchors": a, "volume_anchors": a + 3, "surface_queries": q}
    docs = [
        (
            "blocks.0.attention",
            "self anchor",
            layer_doc(
                both,
                [
                    (["surface_anchors", "surface_queries"], ["surface_anchors"]),
                    (["volume_anchors"], ["volume_anchors"]),
                ],
                seed=1,
            ),
        ),
        (
            "blocks.1.attention",
            "cross anchor",
            layer_doc(
                both,
                [
                    (["surface_anchors", "surface_queries"], ["volume_anchors"]),
                    (["volume_anchors"], ["surface_anchors"]),
                ],
                seed=2,
            ),
        ),
        (
            "decoder.surface.attention",
            "decoder",
            layer_doc(
                {"surface_anchors": None, "surface_queries": q},
                [(["surface_anchors", "surface_queries"], ["surface_anchors"])],
                seed=3,
                kv_cache_sizes={"surface_anchors": a},
            ),
        ),
    ]
    return [LayerSource(path, kind, ExplorerRun(doc), max_abs_diff=None) for path, kind, doc in docs]


def test_overview_matches_each_layers_weight_pass() -> None:
    layers = model_layers()
    reports: list[float] = []
    overview = model_overview(layers, top_k=4, top_k_rows=None, progress=lambda f, _m: reports.append(f))
    assert [c.path for c in overview.calls] == [layer.path for layer in layers]
    assert reports == sorted(reports) and reports[-1] == 1.0
    for layer, stats in zip(layers, overview.layers, strict=True):
        reference = layer.run.weights(pixels=8, options=WeightOptions(top_k=4))
        np.testing.assert_allclose(stats.group_mass, reference.group_mass.mean(0).numpy(), atol=1e-5)
        np.testing.assert_allclose(stats.entropy, reference.entropy.mean(0).numpy(), atol=1e-5)
        np.testing.assert_allclose(stats.top_k_mass, reference.top_k_mass.mean(0).numpy(), atol=1e-5)
        # Every query row's weights sum to 1 over the groups its pattern reads.
        np.testing.assert_allclose(stats.group_mass.sum(-1), 1.0, atol=1e-5)


def test_group_mass_equals_mean_of_exact_rows() -> None:
    layer = model_layers(anchors=5, queries=4)[1]
    stats = layer_statistics(layer.run, top_k=3)
    layout = layer.run.layout
    for qi, group in enumerate(layout.query_groups):
        assert group.query_offset is not None
        rows = torch.stack([layer.run.exact_row(group.query_offset + i)[0] for i in range(group.size)])
        for kj, key in enumerate(layout.key_groups):
            expected = rows[..., key.key_span].sum(-1).mean(0)
            np.testing.assert_allclose(stats.group_mass[:, qi, kj], expected.numpy(), atol=1e-6)


def test_mass_table_marks_pairs_a_layer_does_not_attend() -> None:
    overview = model_overview(model_layers())
    table = overview.mass_table("mean")
    assert table.layers == ["blocks.0.attention", "blocks.1.attention", "decoder.surface.attention"]
    column = table.columns.index("surface_queries → volume_anchors")
    assert np.isnan(table.values[0, column]) and table.values[1, column] == pytest.approx(1.0, abs=1e-5)
    assert np.isnan(table.values[2, column])
    self_column = table.columns.index("volume_anchors → volume_anchors")
    assert table.values[0, self_column] == pytest.approx(1.0, abs=1e-5)
    # A head picks that head's numbers; a head a layer lacks leaves its row empty.
    head0 = overview.mass_table(0)
    np.testing.assert_allclose(
        head0.values[0, table.columns.index("surface_anchors → surface_anchors")],
        overview.layers[0].group_mass[0, 0, 0],
    )
    assert np.isnan(overview.mass_table(5).values).all()


def test_row_stat_tables_and_call_rows() -> None:
    overview = model_overview(model_layers(), top_k=2)
    entropy = overview.row_stat_table("entropy")
    assert entropy.columns == ["surface_anchors", "volume_anchors", "surface_queries"]
    assert np.isnan(entropy.values[2, 0]) and np.isfinite(entropy.values[2, 2])
    top = overview.row_stat_table("top_k_mass", head=1)
    assert ((top.values[np.isfinite(top.values)] > 0) & (top.values[np.isfinite(top.values)] <= 1 + 1e-6)).all()
    rows = call_table(overview)
    assert rows[2]["groups"] == "surface_anchors (cache 12), surface_queries (7)"
    assert rows[2]["patterns"] == "surface_queries -> surface_anchors"
    assert rows[0]["attended pairs"] == (12 + 7) * 12 + 15 * 15
    assert rows[0]["verified max diff"] == "not verified"
    assert len(overview.notes) == 3


class LargestTensor(TorchFunctionMode):
    """Records the largest tensor any torch call returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel() * value.element_size())
        return result


@pytest.mark.slow
def test_overview_holds_no_tensor_past_one_chunk_and_scores_only_the_sampled_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No tensor of the pass exceeds the chunk budget (a layer's scores would be 144 times it), every query row is
    folded in once, and scores exist only for the rows behind the top-k mass."""
    n, chunk, sampled = 3000, 2**18, 40
    layers = [
        LayerSource(
            f"blocks.{i}",
            "self",
            ExplorerRun(layer_doc({"surface_anchors": n}, [(["surface_anchors"], ["surface_anchors"])], seed=i)),
        )
        for i in range(2)
    ]
    for layer in layers:
        layer.run.keys()  # inputs and keys belong to opening a layer, not to the pass
    scored: list[int] = []
    original = layer_stats.masked_scores

    def recording(queries: torch.Tensor, keys: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        scored.append(queries.shape[2])
        return original(queries, keys, real)

    monkeypatch.setattr(layer_stats, "masked_scores", recording)
    reports: list[float] = []
    with LargestTensor() as mode:
        overview = model_overview(
            layers, chunk_bytes=chunk, top_k_rows=sampled, progress=lambda f, _m: reports.append(f)
        )
    assert mode.largest <= chunk
    assert 2 * 2 * n * n * 4 >= 100 * chunk  # the dense scores would not have fitted
    assert sum(scored) == 2 * sampled
    assert reports[-2] == pytest.approx(1.0) and len(overview.calls) == 2


@settings(max_examples=30)
@given(keys=st.integers(1, 300), k=st.integers(1, 12), rows=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_folded_top_k_and_entropy_match_softmax(keys: int, k: int, rows: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(1, 2, rows, keys, generator=generator) * 4
    weights = torch.softmax(scores, -1)
    entropy, top = chunk_stats.row_statistics(scores, weights, k)
    expected = weights.topk(min(k, keys), -1).values.sum(-1)
    torch.testing.assert_close(top, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, -(weights * weights.clamp_min(1e-30).log()).sum(-1), atol=1e-4, rtol=1e-5)


def test_chunk_kernel_matches_softmax_statistics_with_padded_keys() -> None:
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(2, 3, 5, 16, generator=generator) * 3
    keys = torch.randn(2, 3, 900, 16, generator=generator)
    real = torch.arange(900) < 850  # padded keys at the end
    buffers = chunk_stats.ChunkBuffers(2 * 3 * 5 * 900)
    logits, weights = chunk_stats.chunk_weights(queries, keys, real, buffers)
    reference = torch.softmax((queries * 0.25) @ keys.transpose(-1, -2) + torch.where(real, 0.0, -torch.inf), -1)
    torch.testing.assert_close(weights, reference, atol=1e-6, rtol=1e-5)
    expected_entropy = -(reference * reference.clamp_min(1e-30).log()).sum(-1)
    entropy, top = chunk_stats.row_statistics(logits, weights, 8)
    torch.testing.assert_close(entropy, expected_entropy, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(top, reference.topk(8, -1).values.sum(-1), atol=1e-5, rtol=1e-5)
    assert bool(torch.isfinite(entropy).all())


@settings(max_examples=40)
@given(
    keys=st.integers(1, 2000),
    k=st.integers(1, 12),
    block=st.sampled_from([None, 1, 3, 16, 64]),
    seed=st.integers(0, 2**16),
)
def test_top_k_finds_the_row_maximum_key(keys: int, k: int, block: int | None, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.softmax(torch.randn(2, 3, keys, generator=generator) * 5, -1)
    values, best = chunk_stats._top_k(weights, k, block)
    torch.testing.assert_close(values.sum(-1), weights.topk(min(k, keys), -1).values.sum(-1))
    torch.testing.assert_close(weights.gather(-1, best).squeeze(-1), weights.amax(-1), atol=0, rtol=0)


def big_layer(size: int = 600, seed: int = 4) -> LayerSource:
    """One layer with groups larger than the top-k sample, and a padded key group."""
    doc = layer_doc(
        {"surface_anchors": size, "volume_anchors": size // 2},
        [(["surface_anchors"], ["surface_anchors", "volume_anchors"]), (["volume_anchors"], ["volume_anchors"])],
        seed=seed,
        num_heads=3,
        hidden_dim=24,
    )
    return LayerSource("blocks.big", "self", ExplorerRun(doc))


def test_sampled_top_k_is_within_its_standard_error_of_every_row() -> None:
    layer = big_layer()
    exact = layer_statistics(layer.run, top_k_rows=None)
    sampled = layer_statistics(layer.run, top_k_rows=50)
    assert all(s is not None and len(s.strata) == 50 for s in sampled.top_k_samples)
    errors = sampled.top_k_error("mean")
    assert (errors > 0).all()
    gap = np.abs(sampled.top_k_mass.mean(0) - exact.top_k_mass.mean(0))
    assert (gap <= 4 * errors).all()
    for head in range(3):
        assert (np.abs(sampled.top_k_mass[head] - exact.top_k_mass[head]) <= 4 * sampled.top_k_error(head)).all()
    # Masses and entropies never depend on the sample.
    np.testing.assert_array_equal(sampled.group_mass, exact.group_mass)
    np.testing.assert_array_equal(sampled.entropy, exact.entropy)
    assert (exact.top_k_error("mean") == 0).all()


def test_every_row_top_k_equals_the_weight_pass() -> None:
    layer = big_layer(size=300)
    stats = layer_statistics(layer.run, top_k=5, top_k_rows=None)
    reference = layer.run.weights(pixels=8, options=WeightOptions(top_k=5))
    np.testing.assert_allclose(stats.top_k_mass, reference.top_k_mass.mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(stats.group_mass, reference.group_mass.mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(stats.entropy, reference.entropy.mean(0).numpy(), atol=1e-5)


def test_fused_pass_equals_the_materialised_one() -> None:
    layer = big_layer(size=200)
    fused = layer_statistics(layer.run, top_k_rows=None)
    plain = layer_statistics(layer.run, top_k_rows=None, fused=False)
    np.testing.assert_allclose(fused.group_mass, plain.group_mass, atol=1e-6)
    np.testing.assert_allclose(fused.entropy, plain.entropy, atol=1e-5)
    np.testing.assert_allclose(fused.top_k_mass, plain.top_k_mass, atol=1e-6)


def test_the_same_seed_gives_the_same_overview_and_the_note_says_how_top_k_was_made() -> None:
    layers = [big_layer()]
    first, again = model_overview(layers, top_k_rows=30), model_overview(layers, top_k_rows=30)
    np.testing.assert_array_equal(first.layers[0].top_k_mass, again.layers[0].top_k_mass)
    other = model_overview(layers, top_k_rows=30, seed=7)
    assert not np.array_equal(first.layers[0].top_k_mass, other.layers[0].top_k_mass)
    assert "30 stratified random rows" in first.top_k_note and "2 groups" in first.top_k_note
    errors = first.top_k_error_table()
    assert errors.columns == first.row_stat_table("top_k_mass").columns and (errors.values > 0).all()
    assert model_overview(layers, top_k_rows=None).top_k_note == "Top-8 mass: every query row."
    assert "no group is larger than 1,000 rows" in model_overview(layers, top_k_rows=1000).top_k_note
    assert np.isnan(model_overview(layers, top_k=0).row_stat_table("top_k_mass").values).all()


@given(size=st.integers(1, 500), rows=st.one_of(st.none(), st.integers(1, 600)), seed=st.integers(0, 99))
def test_top_k_strata_pick_one_row_in_each_stratum(size: int, rows: int | None, seed: int) -> None:
    picked, strata = layer_stats._top_k_strata(size, rows, np.random.default_rng(seed))
    assert len(picked) == len(strata) == (size if rows is None else min(size, rows))
    assert strata.sum() == size and (strata >= 1).all()
    starts = np.concatenate([[0], np.cumsum(strata)[:-1]])
    assert ((picked >= starts) & (picked < starts + strata)).all()


def test_without_the_fused_kernel_the_pass_still_holds_one_chunk_of_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """On devices without the CPU kernel the scores come back, but never more than one chunk of them at once."""
    from noether.explorer import fused_stats

    n, chunk = 800, 2**15
    layer = LayerSource(
        "blocks.0",
        "self",
        ExplorerRun(layer_doc({"surface_anchors": n}, [(["surface_anchors"], ["surface_anchors"])])),
    )
    layer.run.keys()
    expected = layer_statistics(layer.run, top_k_rows=None)
    monkeypatch.setattr(fused_stats, "_CPU_FLASH", None)
    monkeypatch.setattr(fused_stats, "FALLBACK_CHUNK_BYTES", chunk)
    with LargestTensor() as mode:
        stats = layer_statistics(layer.run, top_k_rows=None, chunk_bytes=chunk)
    keys = 2 * n * 8 * 4  # the pattern's keys (heads x tokens x head_dim), gathered once per group
    assert mode.largest <= max(chunk, keys) and 20 * max(chunk, keys) < 2 * n * n * 4
    np.testing.assert_allclose(stats.group_mass, expected.group_mass, atol=1e-6)
    np.testing.assert_allclose(stats.entropy, expected.entropy, atol=1e-5)
    np.testing.assert_allclose(stats.top_k_mass, expected.top_k_mass, atol=1e-6)
