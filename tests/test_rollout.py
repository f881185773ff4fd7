"""Attention rollout: against a dense reference built from exact rows, mass conservation, the KV-cache pass split,
bounded work, and clear errors for a bad token."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_model_overview import layer_doc, model_layers

from noether.explorer import rollout as ro
from noether.explorer.model_overview import LayerSource
from noether.explorer.problems import ExplorerError
from noether.explorer.rollout import attention_rollout, parse_token, rollout_points
from noether.explorer.run import ExplorerRun


def dense_rollout(layers: list[LayerSource], group: str, index: int) -> dict[str, np.ndarray]:
    """Row ``group[index]`` of Â_L ··· Â_1 with every Â a dense (tokens x tokens) matrix over all groups by name."""
    sizes: dict[str, int] = {}
    for layer in layers:
        for g in layer.run.layout.groups:
            sizes.setdefault(g.name, g.size)
    offsets = dict(zip(sizes, np.cumsum([0, *sizes.values()])[:-1].tolist(), strict=True))
    total = sum(sizes.values())
    last = max(i for i, layer in enumerate(layers) if group in [g.name for g in layer.run.layout.query_groups])
    r = np.zeros(total)
    r[offsets[group] + index] = 1.0
    for layer in reversed(layers[: last + 1]):
        layout = layer.run.layout
        matrix = np.eye(total)
        for q in layout.query_groups:
            assert q.query_offset is not None
            for i in range(q.size):
                row = np.zeros(total)
                weights = layer.run.exact_row(q.query_offset + i)[0].double().mean(0).numpy()
                for key in layout.key_groups:
                    row[offsets[key.name] : offsets[key.name] + key.size] += 0.5 * weights[key.key_span]
                row[offsets[q.name] + i] += 0.5
                matrix[offsets[q.name] + i] = row / row.sum()
        r = r @ matrix
    return {name: r[offsets[name] : offsets[name] + size] for name, size in sizes.items()}


@pytest.mark.parametrize(("group", "index"), [("surface_queries", 3), ("volume_anchors", 11), ("surface_anchors", 0)])
def test_rollout_equals_dense_reference(group: str, index: int) -> None:
    layers = model_layers(anchors=9, queries=6)
    result = attention_rollout(layers, group, index)
    reference = dense_rollout(layers, group, index)
    got = result.by_group()
    for name, expected in reference.items():
        np.testing.assert_allclose(got.get(name, np.zeros_like(expected)), expected, atol=1e-5, rtol=0)
    assert result.total == pytest.approx(1.0, abs=1e-6)
    # The chosen token keeps at least its own residual share through every call it passes.
    calls = len(result.calls)
    assert got[group][index] >= 0.5**calls - 1e-6


@settings(max_examples=12)
@given(anchors=st.integers(1, 9), queries=st.integers(1, 6), data=st.data())
def test_every_rollout_row_sums_to_one(anchors: int, queries: int, data: st.DataObject) -> None:
    layers = model_layers(anchors=anchors, queries=queries)
    group = data.draw(st.sampled_from(["surface_anchors", "volume_anchors", "surface_queries"]))
    size = {"surface_anchors": anchors, "volume_anchors": anchors + 3, "surface_queries": queries}[group]
    index = data.draw(st.integers(0, size - 1))
    result = attention_rollout(layers, group, index)
    assert result.total == pytest.approx(1.0, abs=1e-6)
    assert all((part.weights >= 0).all() for part in result.parts)


def two_pass_layers(anchors: int = 8, queries: int = 5) -> list[LayerSource]:
    """An anchor pass over anchors and training queries, then an inference pass reading the anchors from the cache."""
    first = {"surface_anchors": anchors, "surface_queries": queries}
    second = {"surface_anchors": None, "surface_queries": queries + 2}
    patterns = [(["surface_anchors", "surface_queries"], ["surface_anchors"])]
    cache = {"kv_cache_sizes": {"surface_anchors": anchors}}
    docs = [
        ("blocks.0.attention#0", layer_doc(first, patterns, seed=1)),
        ("blocks.1.attention#0", layer_doc(first, patterns, seed=2)),
        ("blocks.0.attention#1", layer_doc(second, patterns, seed=1, **cache)),
        ("blocks.1.attention#1", layer_doc(second, patterns, seed=2, **cache)),
    ]
    return [LayerSource(path, "self anchor", ExplorerRun(doc)) for path, doc in docs]


def test_cached_anchors_flow_into_the_anchor_pass_and_queries_stop_at_their_pass() -> None:
    layers = two_pass_layers()
    result = attention_rollout(layers, "surface_queries", 6)
    assert result.start == "blocks.1.attention#1"
    where = {(part.group, part.where): part.weights for part in result.parts}
    # The inference queries keep their own share at the input of the inference pass, and nothing of them leaks
    # into the anchor pass's training queries (different points with the same name and another size).
    queries = where[("surface_queries", "input of blocks.0.attention#1")]
    assert queries.shape == (7,) and queries[6] >= 0.25 - 1e-6 and queries[:6].sum() == 0
    anchors = where[("surface_anchors", "input of blocks.0.attention#0")]
    assert anchors.shape == (8,) and anchors.sum() > 0.5
    assert ("surface_queries", "input of blocks.0.attention#0") not in where
    # blocks.1's cache holds its own anchor-pass input: that mass starts below blocks.1#0, which transforms nothing.
    assert result.calls == ["blocks.1.attention#1", "blocks.0.attention#1", "blocks.0.attention#0"]
    assert result.total == pytest.approx(1.0, abs=1e-6)
    assert set(result.by_group()) == {"surface_queries", "surface_anchors"}


def test_last_inference_call_parks_cache_mass_for_the_call_that_filled_it() -> None:
    """Stopping at the last anchor-pass call (the rollout of an anchor) never visits the inference pass."""
    layers = two_pass_layers()
    result = attention_rollout(layers[:2], "surface_anchors", 2)
    assert result.calls == ["blocks.1.attention#0", "blocks.0.attention#0"]
    assert result.total == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(
        result.by_group()["surface_anchors"],
        dense_rollout(layers[:2], "surface_anchors", 2)["surface_anchors"],
        atol=1e-5,
    )


def test_rollout_recomputes_only_rows_that_carry_mass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last call computes one query row; earlier calls only the rows reached, in chunks within the budget."""
    n, chunk = 2000, 2**16
    doc = layer_doc({"surface_anchors": n}, [(["surface_anchors"], ["surface_anchors"])])
    layers = [
        LayerSource(f"blocks.{i}", "self", ExplorerRun({**doc, "run": {**doc["run"], "seed": i}})) for i in range(2)
    ]
    blocks: list[tuple[int, int]] = []
    original = ro._logits

    def recording(queries: torch.Tensor, keys: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        scores = original(queries, keys, real)
        blocks.append((scores.shape[-2], scores.numel()))
        return scores

    monkeypatch.setattr(ro, "_logits", recording)
    result = attention_rollout(layers, "surface_anchors", 5, chunk_bytes=chunk)
    assert blocks[0][0] == 1
    assert max(numel for _, numel in blocks) * 4 <= chunk
    assert sum(rows for rows, _ in blocks) == 1 + n  # one row, then every row it reached
    assert result.total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("group", "index", "expected"),
    [("nowhere", 0, "no call outputs a group named 'nowhere'"), ("surface_queries", 99, "index 99 is outside")],
)
def test_bad_token_is_a_clear_problem(group: str, index: int, expected: str) -> None:
    with pytest.raises(ExplorerError, match=expected) as info:
        attention_rollout(model_layers(), group, index)
    assert info.value.problems[0].hint


@pytest.mark.parametrize("text", ["surface", "surface:", ":3", "surface:x", "surface:1.5"])
def test_parse_token_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ExplorerError, match="GROUP:INDEX"):
        parse_token(text)


def test_parse_token() -> None:
    assert parse_token("surface_queries:17") == ("surface_queries", 17)


def test_rollout_points_follow_positions_and_name_what_is_not_drawn() -> None:
    layers = model_layers(anchors=4, queries=3)
    result = attention_rollout(layers, "surface_queries", 1)
    positions = {"surface_anchors": np.random.default_rng(0).normal(size=(4, 3)), "volume_anchors": np.zeros((2, 3))}
    xyz, weights, labels, notes = rollout_points(result, positions)
    assert xyz.shape == (4, 3) and labels == ["surface_anchors"] * 4
    np.testing.assert_allclose(weights, result.by_group()["surface_anchors"])
    assert any("'volume_anchors': 2 positions for 7 tokens" in note for note in notes)
    assert any("'surface_queries' has no positions" in note for note in notes)
